"""Constants of protocol qasr.v1: name, message types, limits, error and close codes, ProtocolError."""

from __future__ import annotations

from typing import Any

from qasr.errors import QasrError

PROTOCOL = "qasr.v1"
TARGET_SAMPLE_RATE = 16000

PCM_FORMAT_NAMES = ("s16le", "f32le")
SEGMENT_MODES = ("vad", "none")
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000
MAX_CHANNELS = 2
MAX_CONTEXT_CHARS = 10000
MAX_LANGUAGE_CHARS = 64
MAX_ID_CHARS = 128

COMMANDS = ("start", "stop", "toggle", "cancel", "set", "history", "history.copy", "history.clear", "paste_last",
            "undo", "system_audio", "record_call")
RECORD_CALL_ACTIONS = ("start", "stop", "status")
# ``source`` of partial/final events: the microphone, system audio (what the computer plays), or
# ``ws:<client>`` / ``openai:<n>`` / ``wyoming:<n>`` for streamed and uploaded audio
SOURCES = ("mic", "system")
MAX_HISTORY_COUNT = 10000
MAX_SEARCH_CHARS = 1000
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
    """A message that cannot be served; on the server it becomes an ``error`` event with ``code``."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
        # Filled in by parse_client_message when the bad message still had them, for the error reply.
        self.request_id: Any = None
        self.command: str | None = None
