"""Wyoming frames, sans-I/O and validated: bytes in, ``wyoming.event.Event`` objects out.

A Wyoming event is a JSON header line (``type``, optional ``data``, ``data_length``, ``payload_length``),
then ``data_length`` bytes of JSON merged into ``data``, then ``payload_length`` bytes of payload. The
``wyoming`` package's own reader trusts the header (it waits forever for a huge ``data_length``, skips a
negative ``payload_length``, raises ``KeyError`` on a header without ``type``), so the daemon reads
frames here and uses the package for the event classes and for writing. Every problem is a
``FrameError`` whose message is the one log line the server writes before closing the connection.

    reader = FrameReader(max_event_bytes=1 << 20)
    for event in reader.feed(data): ...        # raises FrameError
"""

from __future__ import annotations

import json
from typing import Any

from wyoming.event import Event

MAX_TYPE_CHARS = 64


class FrameError(ValueError):
    pass


class FrameReader:
    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        self._header: dict[str, Any] | None = None
        self._need = 0  # bytes of data + payload the current header announced
        self.events = 0

    @property
    def mid_event(self) -> bool:
        return self._header is not None or bool(self._buffer)

    def feed(self, data: bytes) -> list[Event]:
        self._buffer += data
        events: list[Event] = []
        while True:
            if self._header is None:
                end = self._buffer.find(b"\n")
                if end < 0:
                    if len(self._buffer) > self.max_event_bytes:
                        raise FrameError(f"header line over {self.max_event_bytes} bytes without a newline")
                    return events
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
                if not line.strip():
                    continue  # blank lines between events are tolerated
                self._header = self._parse_header(line)
            if len(self._buffer) < self._need:
                return events
            events.append(self._complete())

    def _parse_header(self, line: bytes) -> dict[str, Any]:
        if len(line) > self.max_event_bytes:
            raise FrameError(f"header line of {len(line)} bytes is over {self.max_event_bytes}")
        try:
            header = json.loads(line)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise FrameError(f"header line is not JSON: {_preview(line)}") from None
        if not isinstance(header, dict):
            raise FrameError(f"header is a JSON {type(header).__name__}, not an object")
        kind = header.get("type")
        if not isinstance(kind, str) or not kind or len(kind) > MAX_TYPE_CHARS:
            raise FrameError(f"header has no valid 'type': {_preview(line)}")
        data = header.get("data")
        if data is not None and not isinstance(data, dict):
            raise FrameError(f"{kind}: 'data' is a {type(data).__name__}, not an object")
        data_length = _length(header, "data_length", kind)
        payload_length = _length(header, "payload_length", kind)
        total = len(line) + 1 + data_length + payload_length
        if total > self.max_event_bytes:
            raise FrameError(f"{kind}: event of {total} bytes (data_length {data_length}, payload_length "
                             f"{payload_length}) is over {self.max_event_bytes} (wyoming.max_event_bytes)")
        self._need = data_length + payload_length
        header["_lengths"] = (data_length, payload_length)
        return header

    def _complete(self) -> Event:
        header, self._header = self._header, None
        data_length, payload_length = header.pop("_lengths")
        data = dict(header.get("data") or {})
        if data_length:
            raw = bytes(self._buffer[:data_length])
            try:
                extra = json.loads(raw)
            except (UnicodeDecodeError, ValueError, RecursionError):
                raise FrameError(f"{header['type']}: data is not JSON: {_preview(raw)}") from None
            if not isinstance(extra, dict):
                raise FrameError(f"{header['type']}: data is a JSON {type(extra).__name__}, not an object")
            data.update(extra)
        payload = bytes(self._buffer[data_length:data_length + payload_length]) if payload_length else None
        del self._buffer[:data_length + payload_length]
        self._need = 0
        self.events += 1
        return Event(type=header["type"], data=data, payload=payload)


def _length(header: dict, key: str, kind: str) -> int:
    value = header.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError(f"{kind}: {key} is {value!r}, not a whole number")
    if value < 0:
        raise FrameError(f"{kind}: negative {key} ({value})")
    return value


def _preview(raw: bytes, limit: int = 60) -> str:
    text = raw[:limit].decode("utf-8", errors="replace")
    return repr(text + ("..." if len(raw) > limit else ""))
