"""Plain HTTP requests (any method) on the WebSocket port, next to the ``websockets`` server.

The ``websockets`` server parses only ``GET`` requests (the WebSocket handshake, plus ``/health``,
``/metrics`` and the pages its ``process_request`` hook answers), but ``POST /v1/audio/transcriptions``
must reach the same port. So every accepted connection starts as a ``FrontConnection`` (the
``websockets`` connection class, passed to ``serve(create_connection=...)``) that only *looks* at the
request line: a ``GET`` outside ``/v1/`` (or of ``/v1/realtime``, a WebSocket) carries on as the ordinary WebSocket connection, byte for byte
as before (the same object, fed the bytes it would have read); any other request is handed, with the
bytes read so far, to an ``HttpProtocol`` (``transport.set_protocol``) that speaks HTTP/1.1 through
``h11`` and asks the ``HttpApp`` for the answer. No proxying, no second port, no copy of the WebSocket
traffic; the WebSocket's own handshake, limits and timeouts are untouched.

``HttpApp`` (the OpenAI endpoint implements it; the WebSocket server's handler offers it as ``http_app()``):
- ``bind(guard, metrics)``: once the server listens: the token, the allowed origins, the server's metrics.
- ``check_head(request) -> HttpResponse | None``: called on the request line and headers, before the
  body is read: an answer here (401, 413, 415, 429 ...) is sent at once, the body is read and dropped.
- ``async handle(request) -> HttpResponse``: the full request; the response may stream its body
  (``HttpResponse.stream``, an async iterator of bytes: server-sent events). ``request.disconnected``
  is set when the client goes away.

Limits: the request head (``max_head_bytes``), the body (``max_body_bytes``: 413, checked on
``Content-Length`` and while reading), a deadline for the whole request (``read_timeout_s``: 408) and
for the request line (a silent connection is closed), and connections open at once (503). One request
per connection (``Connection: close``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field
from typing import AsyncIterator, Awaitable, Callable, Protocol
from urllib.parse import parse_qs, urlsplit

import h11
from websockets.asyncio.server import ServerConnection

from qasr import __version__

log = logging.getLogger("qasr.http")

SNIFF_LIMIT = 8192  # bytes to find the request line in


@dataclass(frozen=True)
class FrontOptions:
    max_head_bytes: int = 16384
    max_body_bytes: int = 25 << 20
    read_timeout_s: float = 120.0  # the whole request must arrive within this
    line_timeout_s: float = 10.0  # the request line must arrive within this
    drain_timeout_s: float = 5.0  # after an early answer, the unread body is dropped this long at most
    max_connections: int = 32


@dataclass
class HttpRequest:
    method: str
    target: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes = b""
    peer: str = ""
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class HttpResponse:
    status: int
    content_type: str = "application/json"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: AsyncIterator[bytes] | None = None  # instead of ``body``: sent chunked as it comes


@dataclass(frozen=True)
class Guard:
    """What the server tells the app once it listens: the token, where it lives, the allowed browser origins."""

    token: str
    token_path: str
    origins: frozenset[str]


class HttpApp(Protocol):
    def bind(self, guard: Guard, metrics) -> None: ...
    def check_head(self, request: HttpRequest) -> HttpResponse | None: ...
    def handle(self, request: HttpRequest) -> Awaitable[HttpResponse]: ...


WEBSOCKET_PATHS = (b"/v1/realtime", b"/v1/realtime/")  # under /v1/ but served by the websockets server


def goes_to_front(request_line: bytes) -> bool:
    """Everything but a ``GET`` outside ``/v1/`` (WebSocket handshakes, /health, /metrics, pages) or of
    ``/v1/realtime`` (OpenAI's Realtime API: a WebSocket)."""
    parts = request_line.split(b" ")
    if len(parts) < 2 or parts[0] != b"GET":
        return True
    path = parts[1].split(b"?", 1)[0]
    if path in WEBSOCKET_PATHS:
        return False
    return path == b"/v1" or path.startswith(b"/v1/")


class HttpFront:
    """The HTTP side's shared state: the app, the limits, the open connections (to close at shutdown)."""

    def __init__(self, app: HttpApp, options: FrontOptions, on_error: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.options = options
        self.on_error = on_error or (lambda name: None)
        self.open: set[asyncio.BaseTransport] = set()
        self.tasks: set[asyncio.Task] = set()

    def connection_class(self) -> Callable[..., ServerConnection]:
        """For ``websockets.asyncio.server.serve(create_connection=...)``."""
        return functools.partial(FrontConnection, front=self)

    def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for transport in list(self.open):
            transport.abort()
        self.open.clear()


class FrontConnection(ServerConnection):
    """A ``websockets`` connection that first reads the request line and decides who serves it."""

    def __init__(self, *args, front: HttpFront, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._front = front
        self._sniffed = b""
        self._decided = False
        self._websocket = False  # the websockets side took the connection
        self._raw: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = transport  # the websockets side is told only once the request is known to be its own
        self._front.open.add(transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._front.options.line_timeout_s, self._silent)

    def _silent(self) -> None:
        if not self._decided and self._raw is not None:
            log.info("http: a client sent no request line within %.0f s; closed", self._front.options.line_timeout_s)
            self._front.on_error("http_timeouts")
            self._decided = True
            self._front.open.discard(self._raw)
            self._raw.abort()

    def data_received(self, data: bytes) -> None:
        if self._decided:
            super().data_received(data)
            return
        self._sniffed += data
        end = self._sniffed.find(b"\n")
        if end < 0 and len(self._sniffed) < SNIFF_LIMIT:
            return
        self._decided = True
        if self._timer is not None:
            self._timer.cancel()
        transport, sniffed = self._raw, self._sniffed
        self._sniffed = b""
        if goes_to_front(sniffed[:end].rstrip(b"\r") if end >= 0 else sniffed):
            protocol = HttpProtocol(self._front)
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
            protocol.data_received(sniffed)
        else:
            self._front.open.discard(transport)
            self._websocket = True
            super().connection_made(transport)
            super().data_received(sniffed)

    def eof_received(self) -> bool | None:
        if not self._websocket:
            return None  # close: nothing was asked
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._websocket:
            if self._timer is not None:
                self._timer.cancel()
            self._front.open.discard(self._raw)
            self._decided = True
            return
        super().connection_lost(exc)


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 request and its response (h11), then the connection closes."""

    def __init__(self, front: HttpFront) -> None:
        self.front = front
        self.options = front.options
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.options.max_head_bytes)
        self.transport: asyncio.Transport | None = None
        self.request: HttpRequest | None = None
        self._body = bytearray()
        self._state = "head"  # head -> body -> handling -> done; "draining" after an early answer
        self._timer: asyncio.TimerHandle | None = None
        self._peer = ""

    # -- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.front.open.add(transport)
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
        if len(self.front.open) > self.options.max_connections:
            self.front.on_error("http_rejected_full")
            self._respond_early(_plain(503, f"too many HTTP connections ({self.options.max_connections}); retry later"))
            return
        self._timer = asyncio.get_running_loop().call_later(self.options.read_timeout_s, self._timed_out)

    def data_received(self, data: bytes) -> None:
        if self._state == "draining":
            return  # the answer is out; the rest of the body is dropped
        if self._state not in ("head", "body"):
            return
        try:
            self.conn.receive_data(data)
            self._events()
        except h11.RemoteProtocolError as exc:
            status = getattr(exc, "error_status_hint", 400)
            self.front.on_error("http_bad_requests")
            log.info("http %s: bad request (%s)", self._peer, exc)
            self._respond_early(_plain(status, f"bad HTTP request: {exc}"), drain=False)

    def eof_received(self) -> bool | None:
        if self._state in ("head", "body"):
            try:
                self.conn.receive_data(b"")
                self._events()
            except h11.RemoteProtocolError:
                self._close()
            return True  # keep the transport open to write the answer
        return None  # while handling or after: the client went away (its job is dropped)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.open.discard(self.transport)
        if self._timer is not None:
            self._timer.cancel()
        if self.request is not None:
            self.request.disconnected.set()
        self._state = "done"

    # -- reading -------------------------------------------------------------------------------
    def _events(self) -> None:
        while self._state in ("head", "body"):
            event = self.conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._head(event)
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self.options.max_body_bytes:
                    self._respond_early(self._too_large())
            elif isinstance(event, h11.EndOfMessage):
                self._state = "handling"
                if self._timer is not None:
                    self._timer.cancel()
                self.request.body = bytes(self._body)
                self._body = bytearray()
                self._spawn(self._handle())
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _head(self, event: h11.Request) -> None:
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self.request = HttpRequest(event.method.decode("latin-1"), event.target.decode("latin-1"), headers,
                                   peer=self._peer)
        self._state = "body"
        head_bytes = len(event.target) + sum(len(name) + len(value) + 4 for name, value in event.headers)
        if head_bytes > self.options.max_head_bytes:  # h11 limits only a head that arrives in pieces
            self.front.on_error("http_bad_requests")
            self._respond_early(_plain(431, f"request head over {self.options.max_head_bytes} bytes"), drain=False)
            return
        try:
            early = self.front.app.check_head(self.request)  # route, origin, key, rate: before the size
        except Exception:
            log.exception("http: checking a request failed")
            early = _plain(500, "internal error; see the daemon log")
        length = headers.get("content-length")
        if early is None and length is not None and length.isdigit() and int(length) > self.options.max_body_bytes:
            early = self._too_large()
        if early is not None:
            self._respond_early(early)
        elif self.conn.they_are_waiting_for_100_continue:
            self.transport.write(self.conn.send(h11.InformationalResponse(status_code=100, headers=[])))

    def _too_large(self) -> HttpResponse:
        self.front.on_error("http_too_large")
        limit = getattr(self.front.app, "too_large", None)
        if limit is not None:
            return limit(self.options.max_body_bytes)
        return _plain(413, f"request body over {self.options.max_body_bytes} bytes")

    def _timed_out(self) -> None:
        if self._state in ("head", "body"):
            self.front.on_error("http_timeouts")
            log.info("http %s: request not received within %.0f s; closed", self._peer, self.options.read_timeout_s)
            if self.request is None:
                self._close()
            else:
                self._respond_early(_plain(408, f"the request did not arrive within {self.options.read_timeout_s:.0f} s"),
                                    drain=False)

    # -- answering -----------------------------------------------------------------------------
    def _respond_early(self, response: HttpResponse, drain: bool = True) -> None:
        """Answer before the body is read: the answer goes out, the rest of the body is dropped, then close."""
        self._state = "draining"
        if self._timer is not None:
            self._timer.cancel()
        self._write_response(response)
        if drain and self.transport is not None and not self.transport.is_closing():
            self._timer = asyncio.get_running_loop().call_later(self.options.drain_timeout_s, self._close)
        else:
            self._close()

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.front.tasks.add(task)
        task.add_done_callback(self.front.tasks.discard)

    async def _handle(self) -> None:
        # Reading goes on (anything more is dropped) so that a client going away is seen: EOF closes the
        # transport and sets ``request.disconnected``, which cancels its job.
        try:
            response = await self.front.app.handle(self.request)
        except asyncio.CancelledError:
            self._close()
            raise
        except Exception:
            log.exception("http %s %s failed", self.request.method, self.request.path)
            response = _plain(500, "internal error; see the daemon log")
        if self.transport.is_closing():
            if response.stream is not None:
                await _close_stream(response.stream)
            return
        self._write_response(response, with_body=response.stream is None)
        if response.stream is not None:
            try:
                async for chunk in response.stream:
                    if self.transport.is_closing():
                        break
                    self.transport.write(self.conn.send(h11.Data(data=chunk)))
                else:
                    self.transport.write(self.conn.send(h11.EndOfMessage()))
            except h11.LocalProtocolError:
                pass
            finally:
                await _close_stream(response.stream)
        self._state = "done"
        self._close()

    def _write_response(self, response: HttpResponse, with_body: bool = True) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        headers = [("Server", f"qasr/{__version__}"), ("Content-Type", response.content_type),
                   ("Cache-Control", "no-store"), ("Connection", "close")]
        if response.stream is None:
            headers.append(("Content-Length", str(len(response.body))))
        headers += list(response.headers.items())
        try:
            if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
                return
            if self.request is None:  # no request parsed: h11 cannot answer, write HTTP/1.1 by hand
                self.transport.write(_raw_response(response, headers))
                return
            data = self.conn.send(h11.Response(status_code=response.status, headers=headers))
            if with_body:
                data += self.conn.send(h11.Data(data=response.body)) if response.body else b""
                data += self.conn.send(h11.EndOfMessage())
            self.transport.write(data)
        except h11.LocalProtocolError:
            self.transport.write(_raw_response(response, headers))

    def _close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.front.open.discard(self.transport)


async def _close_stream(stream: AsyncIterator[bytes]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:
            log.debug("closing a response stream failed", exc_info=True)


def _plain(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, "text/plain; charset=utf-8", (message.rstrip("\n") + "\n").encode("utf-8"))


def _raw_response(response: HttpResponse, headers: list[tuple[str, str]]) -> bytes:
    from http import HTTPStatus

    try:
        reason = HTTPStatus(response.status).phrase
    except ValueError:
        reason = "Error"
    head = f"HTTP/1.1 {response.status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return head.encode("latin-1") + (response.body if response.stream is None else b"")
