"""Client -> server text frames: validation (the server's side) and a builder (the client's side)."""

from __future__ import annotations

from typing import Any

from qasr.protocol.constants import (
    CLIENT_TYPES,
    MAX_CHANNELS,
    MAX_CONTEXT_CHARS,
    MAX_HISTORY_COUNT,
    MAX_ID_CHARS,
    MAX_LANGUAGE_CHARS,
    MAX_SEARCH_CHARS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    PCM_FORMAT_NAMES,
    RECORD_CALL_ACTIONS,
    SEGMENT_MODES,
    SUBSCRIBABLE,
    ErrorCode,
    ProtocolError,
)
from qasr.protocol.json_text import decode_object


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, message)


def _optional_str(msg: dict, key: str, max_chars: int) -> None:
    if key in msg and msg[key] is not None:
        _require(isinstance(msg[key], str), f"'{key}' must be a string or null")
        _require(len(msg[key]) <= max_chars, f"'{key}' is longer than {max_chars} characters")


def parse_client_message(text: str | bytes) -> dict[str, Any]:
    """Validate one client text frame and return it normalised; raise ProtocolError otherwise."""
    msg = decode_object(text)
    mtype = msg.get("type")
    if not isinstance(mtype, str):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "message has no string 'type' field")
    if "id" in msg:
        rid = msg["id"]
        _require(
            rid is None or (isinstance(rid, (str, int)) and not isinstance(rid, bool)),
            "'id' must be a string or an integer",
        )
        _require(not isinstance(rid, str) or len(rid) <= MAX_ID_CHARS, f"'id' is longer than {MAX_ID_CHARS} characters")
    try:
        if mtype not in CLIENT_TYPES:
            raise ProtocolError(
                ErrorCode.UNKNOWN_TYPE, f"unknown message type {mtype!r}; expected one of {', '.join(CLIENT_TYPES)}"
            )
        validator = _VALIDATORS.get(mtype)
        if validator is not None:
            validator(msg)
    except ProtocolError as exc:
        exc.request_id = msg.get("id")
        exc.command = mtype if mtype in CLIENT_TYPES else None
        raise
    return msg


def _validate_set(msg: dict) -> None:
    _optional_str(msg, "language", MAX_LANGUAGE_CHARS)
    _optional_str(msg, "context", MAX_CONTEXT_CHARS)
    _require("language" in msg or "context" in msg, "'set' needs 'language' and/or 'context'")


def _validate_audio_start(msg: dict) -> None:
    fmt = msg.get("format")
    _require(fmt in PCM_FORMAT_NAMES, f"'format' must be one of {', '.join(PCM_FORMAT_NAMES)}")
    rate = msg.get("sample_rate")
    _require(
        isinstance(rate, int) and not isinstance(rate, bool) and MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE,
        f"'sample_rate' must be an integer between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE}",
    )
    msg.setdefault("segment", "vad")
    _require(msg["segment"] in SEGMENT_MODES, f"'segment' must be one of {', '.join(SEGMENT_MODES)}")
    msg.setdefault("channels", 1)
    ch = msg["channels"]
    _require(
        isinstance(ch, int) and not isinstance(ch, bool) and 1 <= ch <= MAX_CHANNELS,
        f"'channels' must be 1 or {MAX_CHANNELS}",
    )
    _optional_str(msg, "language", MAX_LANGUAGE_CHARS)
    _optional_str(msg, "context", MAX_CONTEXT_CHARS)


def _validate_subscribe(msg: dict) -> None:
    events = msg.get("events")
    _require(
        isinstance(events, list) and all(isinstance(e, str) for e in events),
        "'events' must be a list of event types",
    )
    unknown = sorted(set(events) - set(SUBSCRIBABLE))
    _require(not unknown, f"cannot subscribe to {', '.join(unknown)}; choose from {', '.join(SUBSCRIBABLE)}")


def _optional_int(msg: dict, key: str, low: int, high: int) -> None:
    if key in msg and msg[key] is not None:
        value = msg[key]
        _require(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
                 f"'{key}' must be an integer from {low} to {high}")


def _validate_history(msg: dict) -> None:
    _optional_int(msg, "count", 1, MAX_HISTORY_COUNT)
    _optional_str(msg, "search", MAX_SEARCH_CHARS)


def _validate_history_copy(msg: dict) -> None:
    _optional_int(msg, "n", 1, 1 << 31)


def _validate_system_audio(msg: dict) -> None:
    _require(msg.get("enabled") is None or isinstance(msg["enabled"], bool),
             "'enabled' must be true, false or null (null: only the status)")


def _validate_record_call(msg: dict) -> None:
    msg.setdefault("action", "status")
    _require(msg["action"] in RECORD_CALL_ACTIONS, f"'action' must be one of {', '.join(RECORD_CALL_ACTIONS)}")


_VALIDATORS = {"set": _validate_set, "audio.start": _validate_audio_start, "subscribe": _validate_subscribe,
               "history": _validate_history, "history.copy": _validate_history_copy,
               "system_audio": _validate_system_audio, "record_call": _validate_record_call}


def client_message(mtype: str, request_id: Any = None, **fields: Any) -> dict[str, Any]:
    """A client request: ``{"type": mtype, "id": request_id, **fields}`` (``id`` left out when None)."""
    msg: dict[str, Any] = {"type": mtype}
    if request_id is not None:
        msg["id"] = request_id
    msg.update({k: v for k, v in fields.items() if k not in ("type", "id")})
    return msg
