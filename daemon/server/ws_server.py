"""WebSocket event server (protocol qasr.v1) plus ``/health`` and ``/metrics`` over HTTP on the same port.

Transport only: the app owns the engine and plugs in through ``ServerHandler``.

    server = EventServer(ServerOptions(port=0), handler)
    await server.start()            # binds 127.0.0.1, writes paths.server_info_file()
    server.publish(event)           # thread-safe: broadcast to every subscribed client
    server.send_to(client_id, ev)   # thread-safe: one client (ingestion results)
    server.port, server.clients_count, server.metrics
    await server.stop()             # closes clients with 1001, removes the info file

``ServerHandler`` (implement it, or subclass ``BaseServerHandler`` and override what you offer). Handler
methods may be plain functions, which the server runs in a worker thread (so they may block), or coroutine
functions, which run on the server's event loop (so they must not block):

- ``hello_info() -> dict``: fields merged into each ``hello`` (``model``, ``sample_rate``, ``state``, ...).
- ``on_command(client_id, msg) -> dict | None``: ``start``/``stop``/``toggle``/``cancel``/``set`` (``msg`` is
  validated, see protocol.py). Return extra ack fields, or raise ``ProtocolError(code, message)``.
- ``open_ingest(client_id, request: IngestRequest) -> IngestSink``: a client streams its own audio.
  ``IngestSink.feed(samples)`` receives float32 mono 16 kHz numpy arrays (the server decodes and resamples),
  ``IngestSink.end() -> dict | None`` flushes and returns once the stream's last ``final`` has been given to
  ``send_to`` (the ack for ``audio.end`` follows it), ``IngestSink.cancel()`` discards. A closed connection
  cancels its ingest. Results go to that client only, via ``server.send_to(client_id, event)``.
- ``health_info() -> dict``: merged into ``/health`` (``ok``, ``state``, ``model``...).
- ``metrics_info() -> dict``: numbers added to ``/metrics``.
- ``http_response(path, query) -> HttpReply | None``: hook for the app's own pages (``/captions``); None: 404.
  Those pages need the token (``?token=``) unless ``ServerOptions.http_requires_token`` is false (the
  daemon sets it false: its pages are static and carry the token in the URL fragment).

Security: every WebSocket proves the token in ``paths.token_file()`` (``Authorization: Bearer`` header or
``token`` query parameter); connections with an ``Origin`` header (browsers) must come from an allowed origin
(by default only this server's own ``http://127.0.0.1:PORT`` / ``http://localhost:PORT`` pages).

Back-pressure: each client has its own queue and sender task. A queued partial is replaced by a newer one for
the same utterance (and dropped when its final arrives), finals are never dropped; a client whose queue of
other events passes ``max_queued_events`` is closed with 4000 so it never slows anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import inspect
import json
import logging
import os
import secrets
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from qasr import __version__
from qasr.config import paths
from qasr.errors import QasrError

from qasr import protocol
from .metrics import Metrics
from qasr.protocol import AudioFormat, CloseCode, ErrorCode, PcmDecoder, ProtocolError

log = logging.getLogger("qasr.server")

HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 0  # 0: ephemeral; the bound port is EventServer.port
    token: str | None = None  # None: read token_path, creating it (0600) when absent
    token_path: Path | None = None  # None: paths.token_file()
    allowed_origins: tuple[str, ...] = ()  # besides this server's own http://127.0.0.1:PORT pages
    max_message_bytes: int = 1 << 20  # larger frames close the connection with 1009
    max_clients: int = 32
    commands_per_second: float = 20.0  # text frames; excess ones are dropped with an error
    command_burst: int = 40
    rate_violation_limit: int = 200  # dropped frames (refilling at the command rate) before closing with 1008
    audio_bytes_per_second: float = 32 * 1024 * 1024  # binary frames beyond this are paced, not refused
    max_queued_events: int = 2000  # undelivered non-partial events per client before closing it with 4000
    write_info_file: bool = True
    info_path: Path | None = None  # None: paths.server_info_file()
    http_requires_token: bool = True  # for the app's pages; /health and /metrics are always open
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0
    compression: bool = False  # permessage-deflate costs CPU and memory per client for no gain on loopback


@dataclass(frozen=True)
class IngestRequest:
    """An ``audio.start`` request. ``format``/``sample_rate``/``channels`` describe the client's bytes;
    the sink always receives float32 mono 16 kHz."""

    format: str
    sample_rate: int
    channels: int
    segment: str  # "vad": split into utterances at pauses; "none": the whole stream is one utterance
    language: str | None = None
    context: str | None = None
    request_id: Any = None


@dataclass(frozen=True)
class HttpReply:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class IngestSink(Protocol):
    def feed(self, samples: np.ndarray) -> None: ...
    def end(self) -> dict | None: ...
    def cancel(self) -> None: ...


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


# ---------------------------------------------------------------------------------------------
# token and info file


def load_or_create_token(path: Path) -> str:
    """The daemon's secret: read ``path`` or create it (0600, in a 0700 folder) with a fresh random token."""
    path = Path(path)
    paths.ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise QasrError(f"the token file {path} is empty; delete it and restart the daemon") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token


def _write_private_json(path: Path, data: dict) -> None:
    paths.ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# per-client state


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock=time.monotonic):
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, n: float = 1.0) -> bool:
        self._refill()
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def debt_delay(self, n: float) -> float:
        """Take ``n`` even into debt; seconds to wait until the balance is back to zero."""
        self._refill()
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class _Entry:
    __slots__ = ("etype", "utterance_id", "data", "dead")

    def __init__(self, etype: str, utterance_id: str | None, data: str):
        self.etype = etype
        self.utterance_id = utterance_id
        self.data = data
        self.dead = False


class _Ingest:
    def __init__(self, sink: IngestSink, decoder: PcmDecoder, request: IngestRequest):
        self.sink = sink
        self.decoder = decoder
        self.request = request


class _Client:
    def __init__(self, client_id: str, ws: ServerConnection, options: ServerOptions):
        self.id = client_id
        self.ws = ws
        self.queue: deque[_Entry] = deque()
        self.partials: dict[str | None, _Entry] = {}
        self.held = 0  # queued entries that are not partials
        self.wakeup = asyncio.Event()
        self.subscribed: set[str] = set(protocol.SUBSCRIBABLE)
        self.ingest: _Ingest | None = None
        self.closing = False
        self.commands = TokenBucket(options.commands_per_second, options.command_burst)
        self.violations = TokenBucket(options.commands_per_second, options.rate_violation_limit)
        self.audio = TokenBucket(options.audio_bytes_per_second, options.audio_bytes_per_second)
        self.last_rate_error = float("-inf")
        self.last_audio_error = float("-inf")


# ---------------------------------------------------------------------------------------------


class EventServer:
    def __init__(self, options: ServerOptions, handler: ServerHandler):
        self.options = options
        self.handler = handler
        self.metrics = Metrics()
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: dict[str, _Client] = {}
        self._tasks: set[asyncio.Task] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._next_id = 0
        self._token = ""
        self._port = 0
        self._started = 0.0
        self._info_path = options.info_path or paths.server_info_file()
        self._token_path = options.token_path or paths.token_file()

    # ---- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def clients_count(self) -> int:
        return len(self._clients)

    @property
    def ws_url(self) -> str:
        return f"ws://{self._connect_host()}:{self._port}/"

    @property
    def http_url(self) -> str:
        return f"http://{self._connect_host()}:{self._port}"

    @property
    def token(self) -> str:
        return self._token

    def _connect_host(self) -> str:
        host = self.options.host
        if host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if host == "::":
            return "[::1]"
        return f"[{host}]" if ":" in host else host

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Each client runs at most one handler call at a time; a few more threads serve HTTP hooks.
        self._executor = ThreadPoolExecutor(max_workers=self.options.max_clients + 4, thread_name_prefix="qasr-ws")
        self._token = self.options.token or load_or_create_token(self._token_path)
        if self.options.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("listening on %s: other machines can reach the daemon (the token still applies)", self.options.host)
        try:
            self._server = await serve(
                self._serve_connection,
                self.options.host,
                self.options.port,
                process_request=self._process_request,
                max_size=self.options.max_message_bytes,
                ping_interval=self.options.ping_interval,
                ping_timeout=self.options.ping_timeout,
                close_timeout=self.options.close_timeout,
                compression="deflate" if self.options.compression else None,
                server_header=f"qasr/{__version__}",
            )
        except OSError as exc:
            raise QasrError(
                f"cannot listen on {self.options.host}:{self.options.port}: {exc.strerror}; "
                "choose another server.port (0 picks a free one) or stop the program using it"
            ) from exc
        self._port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()
        if self.options.write_info_file:
            _write_private_json(self._info_path, self.server_info())
        log.info("serving %s (http %s)", self.ws_url, self.http_url)

    def server_info(self) -> dict:
        return {
            "ws_url": self.ws_url,
            "http_url": self.http_url,
            "pid": os.getpid(),
            "port": self._port,
            "token_file": str(self._token_path),
            "protocol": protocol.PROTOCOL,
            "version": __version__,
        }

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close(close_connections=True)
        await server.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self.options.write_info_file:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(self._info_path.read_text()).get("pid") == os.getpid():
                    self._info_path.unlink()

    # ---- publishing (thread-safe) ------------------------------------------------------------

    def publish(self, event: dict) -> None:
        """Broadcast ``event`` to every client subscribed to its type. Safe from any thread."""
        self._post(self._broadcast, event)

    def send_to(self, client_id: str, event: dict) -> None:
        """Send ``event`` to one client (dropped if it is gone). Safe from any thread."""
        self._post(self._deliver, client_id, event)

    def _post(self, fn, *args) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or self._server is None:
            return
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed between the check and the call
            pass

    def _broadcast(self, event: dict) -> None:
        etype = event.get("type", "")
        data = protocol.encode(event)
        self.metrics.observe_event(event)
        self.metrics.count(f"published_{etype.replace('.', '_')}")
        for client in list(self._clients.values()):
            if etype in client.subscribed or etype not in protocol.SUBSCRIBABLE:
                self._enqueue(client, etype, event.get("utterance_id"), data)

    def _deliver(self, client_id: str, event: dict) -> None:
        client = self._clients.get(client_id)
        if client is None:
            return
        self.metrics.observe_event(event)
        self._enqueue(client, event.get("type", ""), event.get("utterance_id"), protocol.encode(event))

    def _reply(self, client: _Client, event: dict) -> None:
        self._enqueue(client, event["type"], None, protocol.encode(event))

    def _enqueue(self, client: _Client, etype: str, utterance_id: str | None, data: str) -> None:
        if client.closing:
            return
        if etype == "partial":
            queued = client.partials.get(utterance_id)
            if queued is not None:  # newest partial replaces the one still waiting
                queued.data = data
                self.metrics.count("partials_dropped")
                client.wakeup.set()
                return
            entry = _Entry(etype, utterance_id, data)
            client.partials[utterance_id] = entry
        else:
            if etype == "final" and utterance_id in client.partials:
                client.partials.pop(utterance_id).dead = True
                self.metrics.count("partials_dropped")
            entry = _Entry(etype, utterance_id, data)
            client.held += 1
            if client.held > self.options.max_queued_events:
                self._drop_slow_client(client)
                return
        client.queue.append(entry)
        client.wakeup.set()

    def _drop_slow_client(self, client: _Client) -> None:
        log.warning("client %s does not read its events; disconnecting it", client.id)
        self.metrics.count("slow_client_disconnects")
        client.closing = True
        client.queue.clear()
        client.partials.clear()
        reason = f"client too slow: more than {self.options.max_queued_events} events waiting"
        self._close_client(client, CloseCode.SLOW_CLIENT, reason)

    def _close_client(self, client: _Client, code: int, reason: str) -> None:
        """Start the closing handshake without waiting for it: the reader keeps draining (and ignoring)
        incoming frames meanwhile, otherwise the client's close frame could never be read."""
        client.closing = True
        task = asyncio.ensure_future(client.ws.close(code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sender(self, client: _Client) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                while not client.queue:
                    client.wakeup.clear()
                    await client.wakeup.wait()
                entry = client.queue.popleft()
                if entry.dead:
                    continue
                if entry.etype == "partial":
                    if client.partials.get(entry.utterance_id) is entry:
                        del client.partials[entry.utterance_id]
                else:
                    client.held -= 1
                await client.ws.send(entry.data)
                self.metrics.count("events_sent")

    # ---- HTTP side -----------------------------------------------------------------------------

    @staticmethod
    def _http(status: int, body: bytes | str, content_type: str, extra: dict[str, str] | None = None) -> Response:
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = Headers(
            [
                ("Content-Type", content_type),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                ("Connection", "close"),
            ]
        )
        for key, value in (extra or {}).items():
            headers[key] = value
        return Response(status, HTTPStatus(status).phrase, headers, body)

    def _text(self, status: int, text: str) -> Response:
        return self._http(status, text.rstrip("\n") + "\n", "text/plain; charset=utf-8")

    def _allowed_origins(self) -> set[str]:
        own = {f"http://127.0.0.1:{self._port}", f"http://localhost:{self._port}", f"http://[::1]:{self._port}"}
        return own | {o.rstrip("/") for o in self.options.allowed_origins}

    def _token_ok(self, request: Request, query: dict[str, list[str]]) -> bool | None:
        """True: valid token; False: wrong token; None: no token at all."""
        offered = None
        auth = request.headers.get("Authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer":
                offered = value.strip()
        if offered is None and query.get("token"):
            offered = query["token"][0]
        if offered is None:
            return None
        return hmac.compare_digest(offered.encode("utf-8"), self._token.encode("utf-8"))

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if url.path == HEALTH_PATH:
            return await self._health()
        if url.path == METRICS_PATH:
            return await self._metrics_response(request, query)
        is_websocket = "websocket" in request.headers.get("Upgrade", "").lower()
        if not is_websocket:
            return await self._app_page(request, url.path, query)

        origin = request.headers.get("Origin")
        if origin is not None and origin.rstrip("/") not in self._allowed_origins():
            self.metrics.count("rejected_origin")
            return self._text(403, f"origin {origin} is not allowed; add it to server.allowed_origins")
        token_ok = self._token_ok(request, query)
        if not token_ok:
            self.metrics.count("rejected_auth")
            if token_ok is None:
                return self._text(
                    401,
                    f"missing token: send 'Authorization: Bearer <token>' or '?token=<token>' with the token "
                    f"from {self._token_path}",
                )
            return self._text(401, f"invalid token: use the one in {self._token_path}")
        if len(self._clients) >= self.options.max_clients:
            self.metrics.count("rejected_full")
            return self._text(503, f"too many clients ({self.options.max_clients}); close one or raise server.max_clients")
        return None

    async def _call(self, fn, *args):
        """Coroutine functions run on the loop; plain ones in the server's own worker threads (they may
        block: one client's long ``end()`` must not starve another client's commands)."""
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        result = await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args))
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _optional(self, name: str, *args):
        method = getattr(self.handler, name, None)
        return None if method is None else await self._call(method, *args)

    async def _health(self) -> Response:
        try:
            info = await self._optional("health_info") or {}
        except Exception as exc:
            log.exception("health_info failed")
            info = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        body = {
            "ok": bool(info.get("ok", True)),
            "state": info.get("state"),
            "model": info.get("model"),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "clients": len(self._clients),
            "protocol": protocol.PROTOCOL,
            "version": __version__,
        }
        body.update({k: v for k, v in info.items() if k not in body})
        return self._http(200 if body["ok"] else 503, json.dumps(body) + "\n", "application/json")

    async def _metrics_response(self, request: Request, query: dict[str, list[str]]) -> Response:
        app = await self._optional("metrics_info") or {}
        uptime = round(time.monotonic() - self._started, 3)
        fmt = (query.get("format") or [""])[0]
        wants_json = fmt == "json" or (not fmt and "application/json" in request.headers.get("Accept", ""))
        if wants_json:
            body = {"clients": len(self._clients), "uptime_s": uptime, **self.metrics.snapshot(), "app": app}
            return self._http(200, json.dumps(body) + "\n", "application/json")
        gauges = {"clients": len(self._clients), "uptime_seconds": uptime}
        gauges.update({k: v for k, v in app.items() if isinstance(v, (int, float))})
        return self._http(200, self.metrics.prometheus(gauges), "text/plain; version=0.0.4; charset=utf-8")

    async def _app_page(self, request: Request, path: str, query: dict[str, list[str]]) -> Response:
        hook = getattr(self.handler, "http_response", None)
        if hook is not None:
            if self.options.http_requires_token and not self._token_ok(request, query):
                self.metrics.count("rejected_auth")
                return self._text(401, f"add ?token=<token from {self._token_path}> to the address")
            reply = await self._call(hook, path, query)
            if reply is not None:
                return self._http(reply.status, reply.body, reply.content_type, reply.headers)
        if path in ("/", ""):
            return self._text(426, f"this is the qasr {protocol.PROTOCOL} WebSocket endpoint; connect with a WebSocket client")
        return self._text(404, f"nothing at {path}; try {HEALTH_PATH} or {METRICS_PATH}")

    # ---- WebSocket side ------------------------------------------------------------------------

    async def _serve_connection(self, ws: ServerConnection) -> None:
        if len(self._clients) >= self.options.max_clients:
            await ws.close(CloseCode.TRY_AGAIN_LATER, f"too many clients ({self.options.max_clients})")
            return
        self._next_id += 1
        client = _Client(f"c{self._next_id}", ws, self.options)
        self._clients[client.id] = client
        self.metrics.count("connections")
        sender = asyncio.create_task(self._sender(client))
        try:
            try:
                info = dict(await self._optional("hello_info") or {})
            except Exception:
                log.exception("hello_info failed")
                info = {}
            model = info.pop("model", None)
            rate = info.pop("sample_rate", protocol.TARGET_SAMPLE_RATE)
            limits = {
                "max_message_bytes": self.options.max_message_bytes,
                "commands_per_second": self.options.commands_per_second,
            }
            self._reply(client, protocol.hello(client.id, model, rate, limits=limits, **info))
            async for message in ws:
                if client.closing:
                    continue
                if isinstance(message, str):
                    await self._on_text(client, message)
                else:
                    await self._on_binary(client, message)
        except ConnectionClosed:
            pass
        finally:
            client.closing = True
            self._clients.pop(client.id, None)
            await self._cancel_ingest(client)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _on_text(self, client: _Client, text: str) -> None:
        self.metrics.count("messages_received")
        if not client.commands.take():
            self.metrics.count("rate_limited")
            if not client.violations.take():
                self._close_client(client, CloseCode.POLICY, "rate limit exceeded: too many messages")
                return
            now = time.monotonic()
            if now - client.last_rate_error >= 1.0:
                client.last_rate_error = now
                self._reply(
                    client,
                    protocol.error(
                        ErrorCode.RATE_LIMITED,
                        f"more than {self.options.commands_per_second:g} messages per second; messages are being dropped",
                    ),
                )
            return
        request_id = None
        command = None
        try:
            msg = protocol.parse_client_message(text)
            request_id, command = msg.get("id"), msg["type"]
            reply = await self._dispatch(client, msg)
        except ProtocolError as exc:
            if command is None:  # raised while parsing
                request_id, command = exc.request_id, exc.command
            reply = protocol.error(exc.code, exc.message, request_id, command)
        except QasrError as exc:
            reply = protocol.error(ErrorCode.FAILED, str(exc), request_id, command)
        except Exception as exc:  # a bug in a handler must not kill the connection
            log.exception("handling %s from %s failed", command, client.id)
            reply = protocol.error(ErrorCode.INTERNAL, f"internal error ({type(exc).__name__}); see the daemon log", request_id, command)
        if reply is not None:
            self._reply(client, reply)

    async def _dispatch(self, client: _Client, msg: dict) -> dict | None:
        mtype, rid = msg["type"], msg.get("id")
        if mtype == "ping":
            return protocol.pong(rid)
        if mtype == "subscribe":
            client.subscribed = set(msg["events"])
            return protocol.ack(mtype, rid, events=sorted(client.subscribed))
        if mtype in protocol.COMMANDS:
            result = await self._call(self.handler.on_command, client.id, msg)
            return protocol.ack(mtype, rid, **(result or {}))
        if mtype == "audio.start":
            return await self._start_ingest(client, msg)
        if mtype == "audio.end":
            return await self._end_ingest(client, rid)
        if mtype == "audio.cancel":
            if client.ingest is None:
                raise ProtocolError(ErrorCode.NO_INGEST, "no audio stream is open; nothing to cancel")
            await self._cancel_ingest(client)
            return protocol.ack(mtype, rid)
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {mtype!r}")

    async def _start_ingest(self, client: _Client, msg: dict) -> dict:
        if client.ingest is not None:
            raise ProtocolError(ErrorCode.INGEST_ACTIVE, "an audio stream is already open; send audio.end first")
        request = IngestRequest(
            format=msg["format"],
            sample_rate=msg["sample_rate"],
            channels=msg["channels"],
            segment=msg["segment"],
            language=msg.get("language"),
            context=msg.get("context"),
            request_id=msg.get("id"),
        )
        sink = await self._call(self.handler.open_ingest, client.id, request)
        client.ingest = _Ingest(sink, PcmDecoder(AudioFormat.from_message(msg)), request)
        return protocol.ack("audio.start", request.request_id, sample_rate=protocol.TARGET_SAMPLE_RATE)

    async def _end_ingest(self, client: _Client, request_id: Any) -> dict:
        ingest = client.ingest
        if ingest is None:
            raise ProtocolError(ErrorCode.NO_INGEST, "no audio stream is open; send audio.start first")
        client.ingest = None
        tail = ingest.decoder.flush()
        if tail.size:
            await self._call(ingest.sink.feed, tail)
        result = await self._call(ingest.sink.end) or {}
        return protocol.ack(
            "audio.end",
            request_id,
            bytes=ingest.decoder.bytes_in,
            samples=ingest.decoder.samples_out,
            **result,
        )

    async def _cancel_ingest(self, client: _Client) -> None:
        ingest, client.ingest = client.ingest, None
        if ingest is None:
            return
        try:
            await self._call(ingest.sink.cancel)
        except Exception:
            log.exception("cancelling the audio stream of %s failed", client.id)

    async def _on_binary(self, client: _Client, data: bytes) -> None:
        self.metrics.count("audio_bytes_received", len(data))
        delay = client.audio.debt_delay(len(data))
        if delay > 0:
            await asyncio.sleep(delay)
        ingest = client.ingest
        if ingest is None:
            now = time.monotonic()
            if now - client.last_audio_error >= 1.0:  # one error per second, not one per frame
                client.last_audio_error = now
                self._reply(client, protocol.error(ErrorCode.NO_INGEST, "binary frame without audio.start; send audio.start first"))
            return
        try:
            samples = ingest.decoder.feed(data)
            if samples.size:
                await self._call(ingest.sink.feed, samples)
        except ProtocolError as exc:
            await self._cancel_ingest(client)
            self._reply(client, protocol.error(exc.code, exc.message + "; the audio stream was cancelled"))
        except Exception as exc:
            log.exception("audio stream of %s failed", client.id)
            await self._cancel_ingest(client)
            message = str(exc) if isinstance(exc, QasrError) else f"internal error ({type(exc).__name__}); see the daemon log"
            self._reply(client, protocol.error(ErrorCode.INTERNAL, message + "; the audio stream was cancelled"))
