"""What the app plugs into the WebSocket server: ``ServerHandler`` and its defaults, ``BaseServerHandler``.

Handler methods may be plain functions, which the server runs in a worker thread (so they may block), or
coroutine functions, which run on the server's event loop (so they must not block):

- ``hello_info() -> dict``: fields merged into each ``hello`` (``model``, ``sample_rate``, ``state``, ...).
- ``on_command(client_id, msg) -> dict | None``: ``start``/``stop``/``toggle``/``cancel``/``set`` (``msg`` is
  validated, see qasr.protocol). Return extra ack fields, or raise ``ProtocolError(code, message)``.
- ``open_ingest(client_id, request: IngestRequest) -> IngestSink``: a client streams its own audio.
  ``IngestSink.feed(samples)`` receives float32 mono 16 kHz numpy arrays (the server decodes and resamples),
  ``IngestSink.end() -> dict | None`` flushes and returns once the stream's last ``final`` has been given to
  ``send_to`` (the ack for ``audio.end`` follows it), ``IngestSink.cancel()`` discards. A closed connection
  cancels its ingest. Results go to that client only, via ``server.send_to(client_id, event)``.
- ``health_info() -> dict``: merged into ``/health`` (``ok``, ``state``, ``model``...).
- ``metrics_info() -> dict``: numbers added to ``/metrics``.
- ``http_response(path, query) -> HttpReply | None``: hook for the app's own pages (``/captions``); None: 404.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from qasr.daemon.server.connection import IngestRequest, IngestSink
from qasr.protocol import ErrorCode, ProtocolError


@dataclass(frozen=True)
class HttpReply:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class ServerHandler(Protocol):
    def hello_info(self) -> dict: ...
    def on_command(self, client_id: str, msg: dict) -> dict | None: ...
    def open_ingest(self, client_id: str, request: IngestRequest) -> IngestSink: ...
    def health_info(self) -> dict: ...
    def metrics_info(self) -> dict: ...
    def http_response(self, path: str, query: dict[str, list[str]]) -> HttpReply | None: ...


class BaseServerHandler:
    """Defaults: no commands, no ingestion, healthy, no pages. Override what the app offers."""

    def hello_info(self) -> dict:
        return {}

    def on_command(self, client_id: str, msg: dict) -> dict | None:
        raise ProtocolError(ErrorCode.NOT_SUPPORTED, f"this daemon does not accept {msg['type']!r}")

    def open_ingest(self, client_id: str, request: IngestRequest) -> IngestSink:
        raise ProtocolError(ErrorCode.NOT_SUPPORTED, "this daemon does not accept audio streams")

    def health_info(self) -> dict:
        return {"ok": True}

    def metrics_info(self) -> dict:
        return {}

    def http_response(self, path: str, query: dict[str, list[str]]) -> HttpReply | None:
        return None
