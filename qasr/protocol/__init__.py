"""Protocol qasr.v1, sans-I/O: the one definition of the wire shared by the daemon and the clients.

Every message is a JSON text frame with a ``type`` field; audio travels only in binary frames.
The full description is docs/protocol.md and the JSON Schema is config/protocol.schema.json.

Nothing here does I/O. The modules, by job:

- ``constants``: ``PROTOCOL`` (``qasr.v1``), message types, limits, ``ErrorCode``, ``CloseCode``,
  ``ProtocolError``.
- ``client_messages``: ``parse_client_message(text) -> dict`` validates one client text frame or raises
  ``ProtocolError`` (with a ``code`` from ``ErrorCode``); the returned dict is normalised (defaults filled
  in). ``client_message()`` builds a request.
- ``builders``: ``hello / state / vad / partial / final / error / warning / ack / pong`` build server events
  as dicts; the daemon builds its transcript events with ``partial()`` and ``final()`` (``word_times``:
  a final's optional ``words``).
- ``events``: the same server events as typed objects (``Hello``, ``Final``, ...) and
  ``parse_server_message`` / ``parse_event`` for clients.
- ``json_text``: ``encode`` a message; ``decode_object`` one text frame (bad or absurdly nested JSON is a
  ``ProtocolError``, never a traceback).
- ``pcm``: ``PcmDecoder`` turns a stream of s16le/f32le binary frames (any rate, 1-2 channels, frames split
  anywhere) into float32 mono 16 kHz numpy arrays; ``pcm_to_float32_16k`` is the one-shot form;
  ``encode_pcm`` is the client's side.
"""

from qasr.protocol.builders import ack, error, final, hello, partial, pong, state, vad, warning, word_times
from qasr.protocol.client_messages import client_message, parse_client_message
from qasr.protocol.constants import (
    CLIENT_TYPES,
    COMMANDS,
    MAX_CHANNELS,
    MAX_CONTEXT_CHARS,
    MAX_ID_CHARS,
    MAX_LANGUAGE_CHARS,
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    PCM_FORMAT_NAMES,
    PROTOCOL,
    SEGMENT_MODES,
    SERVER_TYPES,
    SUBSCRIBABLE,
    TARGET_SAMPLE_RATE,
    CloseCode,
    ErrorCode,
    ProtocolError,
)
from qasr.protocol.events import (
    EVENT_TYPES,
    Ack,
    Error,
    Event,
    Final,
    Hello,
    Partial,
    Pong,
    State,
    Unknown,
    Vad,
    Warning,
    parse_event,
    parse_server_message,
)
from qasr.protocol.json_text import decode_object, encode
from qasr.protocol.pcm import (
    PCM_FORMATS,
    AudioFormat,
    PcmDecoder,
    decode_pcm,
    encode_pcm,
    frame_bytes,
    pcm_to_float32_16k,
)

__all__ = [
    "CLIENT_TYPES", "COMMANDS", "EVENT_TYPES", "MAX_CHANNELS", "MAX_CONTEXT_CHARS", "MAX_ID_CHARS",
    "MAX_LANGUAGE_CHARS", "MAX_SAMPLE_RATE", "MIN_SAMPLE_RATE", "PCM_FORMATS", "PCM_FORMAT_NAMES", "PROTOCOL",
    "SEGMENT_MODES", "SERVER_TYPES", "SUBSCRIBABLE", "TARGET_SAMPLE_RATE",
    "Ack", "AudioFormat", "CloseCode", "Error", "ErrorCode", "Event", "Final", "Hello", "Partial", "PcmDecoder",
    "Pong", "ProtocolError", "State", "Unknown", "Vad", "Warning",
    "ack", "client_message", "decode_object", "decode_pcm", "encode", "encode_pcm", "error", "final",
    "frame_bytes", "hello", "parse_client_message", "parse_event", "parse_server_message", "partial",
    "pcm_to_float32_16k", "pong", "state", "vad", "warning", "word_times",
]
