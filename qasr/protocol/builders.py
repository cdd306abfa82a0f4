"""Server -> client events as plain dicts, ready for ``encode``: one builder per event type.

The daemon builds every event it sends with these (``partial()`` and ``final()`` for transcripts) so each
field has the documented name and shape (docs/protocol.md, config/protocol.schema.json).
"""

from __future__ import annotations

import math
from typing import Any

from qasr import __version__
from qasr.protocol.constants import PROTOCOL, TARGET_SAMPLE_RATE


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
    """Daemon state change: ``listening``, ``recording``, ``transcribing``, ``paused``, ``no-device``, ``error``, …"""
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
    words: list | None = None,
    **info: Any,
) -> dict:
    """Last event of an utterance. ``sink`` names the text output that delivered it (null: none).
    ``words`` (word timestamps, optional): ``[{"word", "start", "end"}]``, seconds from ``audio_start``."""
    event = {
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
    if words is not None:
        event["words"] = word_times(words)
    return event


def word_times(words: list) -> list[dict]:
    """``final.words``: each ``{"word", "start", "end"}`` (a dict or an object with those attributes)."""
    out = []
    for w in words:
        get = w.get if isinstance(w, dict) else (lambda key, w=w: getattr(w, key))
        out.append({"word": str(get("word")), "start": _seconds(get("start")), "end": _seconds(get("end"))})
    return out


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
