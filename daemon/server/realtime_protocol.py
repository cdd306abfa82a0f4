"""OpenAI's Realtime API in transcription mode, sans-I/O: client events in, server events out.

Client events (GA names and the beta names the SDKs still send): ``session.update`` /
``transcription_session.update``, ``input_audio_buffer.append`` (base64 PCM16), ``.commit``, ``.clear``.
``parse_event`` checks one text frame and ``apply_update`` one session update against a ``SessionConfig``;
anything wrong is a ``RealtimeError`` that becomes an ``error`` event (``error_event``), never a close.
The server events are built by the functions at the end, each with a fresh ``event_id`` from ``EventIds``.

Sessions are always transcription sessions. The session object has the GA shape
(``{"type": "transcription", "audio": {"input": {...}}}``) or, for a client that used the beta names,
the beta one (``input_audio_format``, ``input_audio_transcription``, ``turn_detection``).
"""

from __future__ import annotations

import base64
import binascii
import itertools
from dataclasses import dataclass, replace
from typing import Any, Callable

from qasr.protocol import MAX_CONTEXT_CHARS, ProtocolError, decode_object

PATH = "/v1/realtime"
RATES = (24000, 16000)  # OpenAI's one rate, and the one vLLM takes
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less audio than this
MAX_LANGUAGE_CHARS = 64

# Client event types → the kind of work; the beta names are the same events.
CLIENT_EVENTS = {
    "session.update": "update",
    "transcription_session.update": "update",
    "input_audio_buffer.append": "append",
    "input_audio_buffer.commit": "commit",
    "input_audio_buffer.clear": "clear",
}
# Events of a conversation (responses, items) that a transcription session does not take.
CONVERSATION_EVENTS = ("response.create", "response.cancel", "conversation.item.create", "conversation.item.delete",
                       "conversation.item.retrieve", "conversation.item.truncate", "output_audio_buffer.clear")


class RealtimeError(Exception):
    """One ``error`` event: ``code`` and ``param`` as OpenAI names them, ``event_id`` of the client event."""

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None,
                 event_id: str | None = None, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.event_id, self.kind = message, code, param, event_id, kind


@dataclass(frozen=True)
class TurnDetection:
    """``server_vad``: qasr's VAD (webrtcvad) cuts the audio into items; the times map onto its settings."""

    prefix_padding_ms: int = 500  # [vad] preroll_ms
    silence_duration_ms: int = 600  # [vad] hangover_ms
    threshold: float = 0.5  # echoed only: webrtcvad's aggressiveness comes from [vad]


@dataclass(frozen=True)
class SessionConfig:
    rate: int = 24000
    language: str | None = None  # the model's language name
    language_code: str | None = None  # as the client gave it (echoed back)
    prompt: str = ""  # → the engine's context
    model: str = ""
    turn_detection: TurnDetection | None = TurnDetection()
    beta: bool = False  # the client speaks the beta event names

    @property
    def vad(self) -> bool:
        return self.turn_detection is not None


@dataclass(frozen=True)
class ClientEvent:
    type: str
    kind: str  # update / append / commit / clear
    event_id: str | None
    body: dict


class EventIds:
    """``event_<prefix>_<n>``: unique server event ids within a daemon run."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._n = itertools.count(1)

    def __call__(self) -> str:
        return f"event_{self.prefix}_{next(self._n)}"


# ---- client events --------------------------------------------------------------------------

def parse_event(text: str | bytes) -> ClientEvent:
    try:
        msg = decode_object(text)
    except ProtocolError as exc:
        raise RealtimeError(exc.message, code="invalid_json") from None
    event_id = msg.get("event_id")
    if event_id is not None and not (isinstance(event_id, str) and len(event_id) <= 512):
        raise RealtimeError("event_id must be a string of at most 512 characters", param="event_id")
    etype = msg.get("type")
    if not isinstance(etype, str):
        raise RealtimeError("every event needs a 'type' string", code="missing_required_parameter", param="type",
                            event_id=event_id)
    kind = CLIENT_EVENTS.get(etype)
    if kind is None:
        if etype in CONVERSATION_EVENTS:
            raise RealtimeError(f"{etype!r} belongs to conversation sessions; qasr serves transcription sessions "
                                "only (audio in, transcripts out)", param="type", event_id=event_id)
        shown = etype if len(etype) <= 64 else etype[:64] + "…"
        raise RealtimeError(f"unknown event type {shown!r}; a transcription session takes "
                            f"{', '.join(CLIENT_EVENTS)}", param="type", event_id=event_id)
    return ClientEvent(etype, kind, event_id, msg)


def decode_audio(event: ClientEvent) -> bytes:
    """The base64 PCM16 of an ``input_audio_buffer.append``."""
    audio = event.body.get("audio")
    if not isinstance(audio, str):
        raise RealtimeError("input_audio_buffer.append needs 'audio': base64 of PCM16 little-endian mono",
                            code="missing_required_parameter", param="audio", event_id=event.event_id)
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError("'audio' is not valid base64 (send PCM16 little-endian mono, base64-encoded)",
                            param="audio", event_id=event.event_id) from None


def apply_update(config: SessionConfig, event: ClientEvent, resolve_language: Callable[[str], str]) -> SessionConfig:
    """``config`` with the fields the update names changed. ``resolve_language(code) -> model language
    name`` raises ``ValueError`` with a one-line message for a language the model does not have."""
    session = event.body.get("session")
    if not isinstance(session, dict):
        raise RealtimeError(f"{event.type} needs a 'session' object", code="missing_required_parameter",
                            param="session", event_id=event.event_id)
    stype = session.get("type")
    beta = event.type == "transcription_session.update" or (stype is None and _beta_shaped(session))
    if stype not in (None, "transcription"):
        raise RealtimeError(f"session type {stype!r} is not served: qasr offers transcription sessions only "
                            "(session.type = \"transcription\")", param="session.type", event_id=event.event_id)
    check = _Checker(event.event_id, "session")
    if beta:
        fmt = session.get("input_audio_format")
        audio_in = {"transcription": session.get("input_audio_transcription")} if "input_audio_transcription" in session else {}
        if "turn_detection" in session:
            audio_in["turn_detection"] = session["turn_detection"]
        if fmt is not None:
            if fmt != "pcm16":
                raise check.fail("input_audio_format", f"input_audio_format {fmt!r} is not served; send \"pcm16\" "
                                                       "(16-bit PCM, 24 kHz, mono)")
            audio_in["format"] = {"type": "audio/pcm", "rate": 24000}
        prefix = "session"
    else:
        audio = check.obj(session.get("audio"), "audio")
        audio_in = check.obj(audio.get("input"), "audio.input")
        prefix = "session.audio.input"
    check.prefix = prefix
    changes: dict[str, Any] = {"beta": beta}
    if audio_in.get("format") is not None:
        changes["rate"] = _rate(check, audio_in["format"], "input_audio_format" if beta else "format")
    if "transcription" in audio_in:
        _transcription(check, audio_in["transcription"], changes, resolve_language,
                       "input_audio_transcription" if beta else "transcription", config)
    if "turn_detection" in audio_in:
        changes["turn_detection"] = _turn_detection(check, audio_in["turn_detection"], config.turn_detection)
    return replace(config, **changes)


def _beta_shaped(session: dict) -> bool:
    return any(k in session for k in ("input_audio_format", "input_audio_transcription", "turn_detection",
                                      "modalities", "input_audio_noise_reduction"))


class _Checker:
    def __init__(self, event_id: str | None, prefix: str) -> None:
        self.event_id, self.prefix = event_id, prefix

    def fail(self, name: str, message: str, code: str = "invalid_value") -> RealtimeError:
        return RealtimeError(message, code=code, param=f"{self.prefix}.{name}", event_id=self.event_id)

    def obj(self, value: Any, name: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(name, f"{self.prefix}.{name} must be an object", "invalid_type")
        return value

    def number(self, value: Any, name: str, low: float, high: float) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise self.fail(name, f"{self.prefix}.{name} must be a number from {low:g} to {high:g}")
        return value


def _rate(check: _Checker, fmt: Any, name: str) -> int:
    fmt = check.obj(fmt, name)
    kind = fmt.get("type", "audio/pcm")
    if kind != "audio/pcm":
        raise check.fail(f"{name}.type", f"audio format {kind!r} is not served; send \"audio/pcm\" "
                                         "(16-bit little-endian mono PCM)")
    rate = fmt.get("rate", 24000)
    if rate not in RATES or isinstance(rate, bool):
        raise check.fail(f"{name}.rate", f"rate {rate!r} is not served; audio/pcm takes 24000 (OpenAI's rate) "
                                         "or 16000 Hz")
    return int(rate)


def _transcription(check: _Checker, value: Any, changes: dict, resolve_language, name: str,
                   config: SessionConfig) -> None:
    if value is None:  # "turn transcription off": a transcription session transcribes all the same
        return
    value = check.obj(value, name)
    model = value.get("model")
    if model is not None:
        if not isinstance(model, str) or len(model) > 256:
            raise check.fail(f"{name}.model", "model must be a string (any name: the daemon's model answers)")
        changes["model"] = model
    if "language" in value:
        code = value["language"]
        if code in (None, ""):
            changes["language"] = changes["language_code"] = None
        elif not isinstance(code, str) or len(code) > MAX_LANGUAGE_CHARS:
            raise check.fail(f"{name}.language", "language must be an ISO-639-1 code such as \"en\"")
        else:
            try:
                changes["language"] = resolve_language(code)
            except ValueError as exc:
                raise check.fail(f"{name}.language", str(exc)) from None
            changes["language_code"] = code
    if "prompt" in value:
        prompt = value["prompt"] if value["prompt"] is not None else ""
        if not isinstance(prompt, str) or len(prompt) > MAX_CONTEXT_CHARS:
            raise check.fail(f"{name}.prompt", f"prompt must be a string of at most {MAX_CONTEXT_CHARS} characters")
        changes["prompt"] = prompt


def _turn_detection(check: _Checker, value: Any, current: TurnDetection | None) -> TurnDetection | None:
    if value is None:
        return None
    value = check.obj(value, "turn_detection")
    kind = value.get("type", "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise check.fail("turn_detection.type", f"turn_detection type {kind!r} is not served; use \"server_vad\" "
                                                "or null (commit the buffer yourself)")
    base = current or TurnDetection()
    out = {}
    for key, high in (("prefix_padding_ms", 5000), ("silence_duration_ms", 10000)):
        if value.get(key) is not None:
            out[key] = int(check.number(value[key], f"turn_detection.{key}", 0, high))
    if value.get("threshold") is not None:
        out["threshold"] = float(check.number(value["threshold"], "turn_detection.threshold", 0.0, 1.0))
    return replace(base, **out)


# ---- server events --------------------------------------------------------------------------

def session_object(config: SessionConfig, session_id: str) -> dict:
    transcription = {"model": config.model or None, "language": config.language_code, "prompt": config.prompt}
    td = config.turn_detection
    turn = None if td is None else {"type": "server_vad", "threshold": td.threshold,
                                    "prefix_padding_ms": td.prefix_padding_ms,
                                    "silence_duration_ms": td.silence_duration_ms}
    if config.beta:
        return {"id": session_id, "object": "realtime.transcription_session", "modalities": ["text"],
                "input_audio_format": "pcm16",
                "input_audio_transcription": transcription, "turn_detection": turn,
                "input_audio_noise_reduction": None, "include": []}
    return {"type": "transcription", "id": session_id, "object": "realtime.transcription_session",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": config.rate}, "transcription": transcription,
                                "turn_detection": turn, "noise_reduction": None}},
            "include": []}


def session_event(ids: EventIds, config: SessionConfig, session_id: str, created: bool) -> dict:
    name = ("transcription_session." if config.beta else "session.") + ("created" if created else "updated")
    return {"type": name, "event_id": ids(), "session": session_object(config, session_id)}


def error_event(ids: EventIds, error: RealtimeError) -> dict:
    return {"type": "error", "event_id": ids(),
            "error": {"type": error.kind, "code": error.code, "message": error.message, "param": error.param,
                      "event_id": error.event_id}}


def speech_started(ids: EventIds, item_id: str, audio_start_ms: int) -> dict:
    return {"type": "input_audio_buffer.speech_started", "event_id": ids(), "audio_start_ms": audio_start_ms,
            "item_id": item_id}


def speech_stopped(ids: EventIds, item_id: str, audio_end_ms: int) -> dict:
    return {"type": "input_audio_buffer.speech_stopped", "event_id": ids(), "audio_end_ms": audio_end_ms,
            "item_id": item_id}


def committed(ids: EventIds, item_id: str, previous_item_id: str | None) -> dict:
    return {"type": "input_audio_buffer.committed", "event_id": ids(), "previous_item_id": previous_item_id,
            "item_id": item_id}


def item_event(ids: EventIds, name: str, item_id: str, previous_item_id: str | None,
               transcript: str | None = None) -> dict:
    """``conversation.item.added`` / ``.done`` (GA), ``conversation.item.created`` (beta): the user item of
    the committed audio (its ``transcript`` once known)."""
    item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "user",
            "status": "completed" if transcript is not None else "in_progress",
            "content": [{"type": "input_audio", "transcript": transcript}]}
    return {"type": name, "event_id": ids(), "previous_item_id": previous_item_id, "item": item}


def cleared(ids: EventIds) -> dict:
    return {"type": "input_audio_buffer.cleared", "event_id": ids()}


def delta(ids: EventIds, item_id: str, text: str) -> dict:
    return {"type": "conversation.item.input_audio_transcription.delta", "event_id": ids(), "item_id": item_id,
            "content_index": 0, "delta": text}


def completed(ids: EventIds, item_id: str, transcript: str, seconds: float) -> dict:
    return {"type": "conversation.item.input_audio_transcription.completed", "event_id": ids(), "item_id": item_id,
            "content_index": 0, "transcript": transcript,
            "usage": {"type": "duration", "seconds": round(max(0.0, seconds), 3)}}


def failed(ids: EventIds, item_id: str, message: str) -> dict:
    return {"type": "conversation.item.input_audio_transcription.failed", "event_id": ids(), "item_id": item_id,
            "content_index": 0, "error": {"type": "server_error", "code": "transcription_failed", "message": message,
                                          "param": None}}
