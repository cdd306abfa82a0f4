"""Protocol qasr.v1, sans-I/O: message types, client-message validation, server-message builders, PCM decoding.

Every message is a JSON text frame with a ``type`` field; audio travels only in binary frames.
The full description is docs/protocol.md and the JSON Schema is config/protocol.schema.json.

Nothing here does I/O: the WebSocket server (``ws_server.py``) and the Python client
(``qasr.clients.client``) both build on these pure functions, and so can the app:

- ``parse_client_message(text) -> dict`` validates one client text frame or raises ``ProtocolError``
  (with a ``code`` from ``ErrorCode``); the returned dict is normalised (defaults filled in).
- ``hello / state / vad / partial / final / error / warning / ack`` build server events. The app should
  build its transcript events with ``partial()`` and ``final()`` so every field has the documented name.
- ``PcmDecoder`` turns a stream of s16le/f32le binary frames (any rate, 1-2 channels, frames split
  anywhere) into float32 mono 16 kHz numpy arrays; ``pcm_to_float32_16k`` is the one-shot form.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from qasr import __version__
from qasr.errors import QasrError

PROTOCOL = "qasr.v1"
TARGET_SAMPLE_RATE = 16000

PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
SEGMENT_MODES = ("vad", "none")
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
MAX_CHANNELS = 2
MAX_CONTEXT_CHARS = 10000
MAX_ID_CHARS = 128

COMMANDS = ("start", "stop", "toggle", "cancel", "set")
CLIENT_TYPES = COMMANDS + ("audio.start", "audio.end", "audio.cancel", "subscribe", "ping")
SERVER_TYPES = ("hello", "state", "vad", "partial", "final", "error", "warning", "ack", "pong")
# Event types a client may subscribe to (broadcasts); replies to its own requests always arrive.
SUBSCRIBABLE = ("state", "vad", "partial", "final", "warning", "error")


class ErrorCode:
    """Machine-readable ``code`` of ``error`` and ``warning`` events."""

    BAD_JSON = "bad_json"  # the text frame is not a JSON object
    BAD_MESSAGE = "bad_message"  # a field is missing, has the wrong type or an invalid value
    UNKNOWN_TYPE = "unknown_type"  # no such message type in qasr.v1
    RATE_LIMITED = "rate_limited"  # too many messages; this one was dropped
    NOT_SUPPORTED = "not_supported"  # the daemon does not offer this request
    INGEST_ACTIVE = "ingest_active"  # audio.start while a stream is already open
    NO_INGEST = "no_ingest"  # binary frame or audio.end without audio.start
    BAD_AUDIO = "bad_audio"  # audio bytes cannot be decoded
    BUSY = "busy"  # the engine cannot take the request now
    INVALID_STATE = "invalid_state"  # e.g. stop while idle (app's choice)
    FAILED = "failed"  # the daemon could not do it; the message says why and what to do
    INTERNAL = "internal"  # a bug; the server log has the details


class CloseCode:
    """WebSocket close codes the server uses (reason text always says what happened)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down
    POLICY = 1008  # rate limit kept being exceeded
    TOO_BIG = 1009  # frame larger than max_size (sent by the websockets library itself)
    INTERNAL = 1011
    TRY_AGAIN_LATER = 1013  # too many clients
    SLOW_CLIENT = 4000  # the client did not read its events; its queue of finals overflowed


class ProtocolError(QasrError):
    """A client request that cannot be served; becomes an ``error`` event with ``code``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
        # Filled in by parse_client_message when the bad message still had them, for the error reply.
        self.request_id: Any = None
        self.command: str | None = None


# ---------------------------------------------------------------------------------------------
# client -> server


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, message)


def _optional_str(msg: dict, key: str, max_chars: int) -> None:
    if key in msg and msg[key] is not None:
        _require(isinstance(msg[key], str), f"'{key}' must be a string or null")
        _require(len(msg[key]) <= max_chars, f"'{key}' is longer than {max_chars} characters")


def parse_client_message(text: str | bytes) -> dict[str, Any]:
    """Validate one client text frame and return it normalised; raise ProtocolError otherwise."""
    try:
        msg = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"message is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "message must be a JSON object with a 'type' field")
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
    _optional_str(msg, "language", 64)
    _optional_str(msg, "context", MAX_CONTEXT_CHARS)
    _require("language" in msg or "context" in msg, "'set' needs 'language' and/or 'context'")


def _validate_audio_start(msg: dict) -> None:
    fmt = msg.get("format")
    _require(fmt in PCM_FORMATS, f"'format' must be one of {', '.join(PCM_FORMATS)}")
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
    _optional_str(msg, "language", 64)
    _optional_str(msg, "context", MAX_CONTEXT_CHARS)


def _validate_subscribe(msg: dict) -> None:
    events = msg.get("events")
    _require(
        isinstance(events, list) and all(isinstance(e, str) for e in events),
        "'events' must be a list of event types",
    )
    unknown = sorted(set(events) - set(SUBSCRIBABLE))
    _require(not unknown, f"cannot subscribe to {', '.join(unknown)}; choose from {', '.join(SUBSCRIBABLE)}")


_VALIDATORS = {"set": _validate_set, "audio.start": _validate_audio_start, "subscribe": _validate_subscribe}


# ---------------------------------------------------------------------------------------------
# server -> client


def _with_id(event: dict, request_id: Any) -> dict:
    if request_id is not None:
        event["id"] = request_id
    return event


def _seconds(value: float) -> float:
    return round(float(value), 3)


def _timings(timings: dict[str, float] | None) -> dict[str, float]:
    out = {}
    for key, value in (timings or {}).items():
        v = float(value)
        if math.isfinite(v):
            out[str(key)] = round(v, 3)
    return out


def hello(client_id: str, model: str | None, sample_rate: int = TARGET_SAMPLE_RATE, **info: Any) -> dict:
    """First event on every connection. ``info`` adds app fields (state, languages, limits...)."""
    event = {
        "type": "hello",
        "protocol": PROTOCOL,
        "version": __version__,
        "model": model,
        "sample_rate": int(sample_rate),
        "client_id": client_id,
    }
    event.update({k: v for k, v in info.items() if k not in event})
    return event


def state(state_name: str, **info: Any) -> dict:
    """Daemon state change, e.g. ``loading``, ``idle``, ``recording``, ``finishing``, ``error``."""
    return {"type": "state", "state": str(state_name), **info}


def vad(speech: bool, time_s: float, utterance_id: str | None = None, **info: Any) -> dict:
    """Voice activity edge: ``speech`` true at speech onset, false at its end (``time`` = stream seconds)."""
    event = {"type": "vad", "speech": bool(speech), "time": _seconds(time_s)}
    if utterance_id is not None:
        event["utterance_id"] = str(utterance_id)
    event.update(info)
    return event


def partial(
    utterance_id: str,
    seq: int,
    committed: str,
    tentative: str,
    audio_start: float,
    audio_end: float,
    timings: dict[str, float] | None = None,
    language: str | None = None,
    **info: Any,
) -> dict:
    """Interim result. ``committed`` only ever grows within an utterance; ``tentative`` may change."""
    return {
        "type": "partial",
        "utterance_id": str(utterance_id),
        "seq": int(seq),
        "committed": committed,
        "tentative": tentative,
        "language": language,
        "audio_start": _seconds(audio_start),
        "audio_end": _seconds(audio_end),
        "timings": _timings(timings),
        **info,
    }


def final(
    utterance_id: str,
    seq: int,
    text: str,
    language: str | None,
    token_ids: list[int],
    audio_start: float,
    audio_end: float,
    timings: dict[str, float] | None = None,
    sink: str | None = None,
    **info: Any,
) -> dict:
    """Last event of an utterance. ``sink`` names the text output that delivered it (null: none)."""
    return {
        "type": "final",
        "utterance_id": str(utterance_id),
        "seq": int(seq),
        "text": text,
        "language": language,
        "token_ids": [int(t) for t in token_ids],
        "audio_start": _seconds(audio_start),
        "audio_end": _seconds(audio_end),
        "timings": _timings(timings),
        "sink": sink,
        **info,
    }


def error(code: str, message: str, request_id: Any = None, command: str | None = None) -> dict:
    event = {"type": "error", "code": code, "message": message}
    if command is not None:
        event["command"] = command
    return _with_id(event, request_id)


def warning(code: str, message: str, **info: Any) -> dict:
    return {"type": "warning", "code": code, "message": message, **info}


def ack(command: str, request_id: Any = None, **result: Any) -> dict:
    """Reply to a successful request; ``result`` carries whatever the handler returned."""
    event = {"type": "ack", "command": command}
    event.update({k: v for k, v in result.items() if k not in ("type", "command", "id")})
    return _with_id(event, request_id)


def pong(request_id: Any = None) -> dict:
    return _with_id({"type": "pong"}, request_id)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def encode(event: dict) -> str:
    """Serialise a server event (compact, UTF-8 text kept as is; numpy values become plain JSON)."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=_jsonable)


# ---------------------------------------------------------------------------------------------
# audio


def decode_pcm(data: bytes, fmt: str, channels: int = 1) -> np.ndarray:
    """Interleaved little-endian PCM bytes -> float32 mono in [-1, 1]. ``len(data)`` must be whole frames."""
    dtype = PCM_FORMATS[fmt]
    frame_bytes = dtype.itemsize * channels
    if len(data) % frame_bytes:
        raise ProtocolError(ErrorCode.BAD_AUDIO, f"{len(data)} bytes is not a whole number of {fmt} frames")
    samples = np.frombuffer(data, dtype=dtype)
    if fmt == "s16le":
        samples = samples.astype(np.float32) / np.float32(32768.0)
    else:
        samples = samples.astype(np.float32)
        if not np.all(np.isfinite(samples)):
            raise ProtocolError(ErrorCode.BAD_AUDIO, "f32le audio contains NaN or infinite samples")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples


@dataclass(frozen=True)
class AudioFormat:
    format: str
    sample_rate: int
    channels: int = 1

    @classmethod
    def from_message(cls, msg: dict) -> AudioFormat:
        return cls(msg["format"], int(msg["sample_rate"]), int(msg.get("channels", 1)))


class PcmDecoder:
    """Streaming bytes -> float32 mono 16 kHz. Carries partial frames between chunks; resamples with soxr."""

    def __init__(self, audio: AudioFormat, target_rate: int = TARGET_SAMPLE_RATE):
        self.audio = audio
        self.target_rate = target_rate
        self._frame_bytes = PCM_FORMATS[audio.format].itemsize * audio.channels
        self._pending = b""
        self._resampler = None
        if audio.sample_rate != target_rate:
            import soxr

            self._resampler = soxr.ResampleStream(audio.sample_rate, target_rate, 1, dtype="float32", quality="HQ")
        self.bytes_in = 0
        self.samples_out = 0

    def feed(self, data: bytes) -> np.ndarray:
        self.bytes_in += len(data)
        data = self._pending + bytes(data)
        whole = len(data) - len(data) % self._frame_bytes
        self._pending = data[whole:]
        samples = decode_pcm(data[:whole], self.audio.format, self.audio.channels)
        return self._out(samples, last=False)

    def flush(self) -> np.ndarray:
        """End of stream: returns the resampler's tail (a dangling partial frame is dropped)."""
        self._pending = b""
        return self._out(np.zeros(0, np.float32), last=True)

    def _out(self, samples: np.ndarray, last: bool) -> np.ndarray:
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        self.samples_out += samples.size
        return samples


def pcm_to_float32_16k(data: bytes, fmt: str, sample_rate: int, channels: int = 1) -> np.ndarray:
    """One-shot: whole PCM buffer -> float32 mono 16 kHz."""
    samples = decode_pcm(data, fmt, channels)
    if sample_rate != TARGET_SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, sample_rate, TARGET_SAMPLE_RATE, quality="HQ").astype(np.float32)
    return samples
