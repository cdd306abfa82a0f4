"""WebSocket event server (protocol qasr.v1) plus ``/health`` and ``/metrics`` over HTTP on the same port.

Transport only: the app owns the engine and plugs in through ``ServerHandler``.

    server = EventServer(ServerOptions(port=0), handler)
    await server.start()            # binds 127.0.0.1, writes paths.server_info_file()
    server.publish(event)           # thread-safe: broadcast to every subscribed client
    server.send_to(client_id, ev)   # thread-safe: one client (ingestion results)
    server.port, server.clients_count, server.metrics
    await server.stop()             # closes clients with 1001, removes the info file

``ServerHandler`` (handler.py: implement it, or subclass ``BaseServerHandler`` and override what you offer)
is how the app answers commands, takes streamed audio and serves pages. The app's pages need the token
(``?token=``) unless ``ServerOptions.http_requires_token`` is false (the daemon sets it false: its pages are
static and carry the token in the URL fragment).

A WebSocket on ``/v1/realtime`` (OpenAI's Realtime API) is handed to the handler's ``realtime_app()``
(``realtime_bridge.RealtimeEndpoint``): it checks its own handshake, and gets the client's queue, limits
and worker threads through ``_Link``.

This module does only I/O: each client's decisions (queue, rate limits, subscriptions, ingestion) are made
by its sans-I/O ``connection.Connection``; HTTP responses are built by ``http_routes``.

Security: every WebSocket proves the token in ``paths.token_file()`` (``Authorization: Bearer`` header or
``token`` query parameter); connections with an ``Origin`` header (browsers) must come from an allowed origin
(by default only this server's own ``http://127.0.0.1:PORT`` / ``http://localhost:PORT`` pages).

Back-pressure: each client has its own queue (in its Connection) and sender task. A queued partial is
replaced by a newer one for the same utterance (and dropped when its final arrives), finals are never
dropped; a client whose queue of other events passes ``max_queued_events`` is closed with 4000 so it never
slows anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from qasr import __version__, protocol
from qasr.config import paths
from qasr.config.runtime import load_or_create_token, write_private_json
from qasr.daemon.server import http_routes
from qasr.daemon.server.connection import (
    CancelIngest,
    Close,
    Connection,
    ConnectionLimits,
    EndIngest,
    FeedIngest,
    IngestRequest,
    IngestSink,
    OpenIngest,
    Request as ConnectionRequest,
    RunCommand,
)
from qasr.daemon.server.handler import BaseServerHandler, HttpReply, ServerHandler
from qasr.daemon.server.http_front import FrontOptions, Guard, HttpFront
from qasr.daemon.server.http_routes import HEALTH_PATH, METRICS_PATH
from qasr.daemon.server.metrics import Metrics
from qasr.errors import QasrError
from qasr.protocol import CloseCode

log = logging.getLogger("qasr.server")

# Importable from here as before (the app and its tests use these names).
__all__ = [
    "BaseServerHandler", "EventServer", "HEALTH_PATH", "HttpReply", "IngestRequest", "IngestSink", "METRICS_PATH",
    "ServerHandler", "ServerOptions", "load_or_create_token",
]


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

    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(
            commands_per_second=self.commands_per_second,
            command_burst=self.command_burst,
            rate_violation_limit=self.rate_violation_limit,
            audio_bytes_per_second=self.audio_bytes_per_second,
            max_queued_events=self.max_queued_events,
        )


class _Peer:
    """A connected client: its socket, its sans-I/O state, and the event that wakes its sender."""

    def __init__(self, conn: Connection, ws: ServerConnection):
        self.conn = conn
        self.ws = ws
        self.wakeup = asyncio.Event()
        self.broadcasts = True  # qasr.v1 broadcasts (state, vad, the microphone's transcripts); not for /v1/realtime

    @property
    def id(self) -> str:
        return self.conn.id


class _Link:
    """What the ``/v1/realtime`` app gets of its client: the same queue, limits and worker threads as a
    ``qasr.v1`` client."""

    def __init__(self, server: "EventServer", peer: _Peer) -> None:
        self._server, self._peer = server, peer
        self.id = peer.id
        self.limits = server.options.connection_limits()
        self.metrics = server.metrics

    @property
    def closing(self) -> bool:
        return self._peer.conn.closing

    def send(self, event: dict) -> None:
        self._server._queue(self._peer, event)

    def close(self, code: int, reason: str) -> None:
        self._server._close_client(self._peer, Close(code, reason))

    async def run(self, fn, *args):
        return await self._server._call(fn, *args)


# ---------------------------------------------------------------------------------------------


class EventServer:
    def __init__(self, options: ServerOptions, handler: ServerHandler):
        self.options = options
        self.handler = handler
        self.metrics = Metrics()
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clients: dict[str, _Peer] = {}
        self._tasks: set[asyncio.Task] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._front: HttpFront | None = None  # other HTTP requests (POST /v1/...): the handler's http_app()
        self._realtime = None  # WebSockets on /v1/realtime: the handler's realtime_app() (realtime_bridge)
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
        app = getattr(self.handler, "http_app", lambda: None)()
        if app is not None:
            front = getattr(app, "front_options", FrontOptions())
            self._front = HttpFront(app, replace(front, max_connections=self.options.max_clients), self.metrics.count)
        self._realtime = getattr(self.handler, "realtime_app", lambda: None)()
        try:
            self._server = await serve(
                self._serve_connection,
                self.options.host,
                self.options.port,
                process_request=self._process_request,
                select_subprotocol=self._select_subprotocol,
                max_size=self.options.max_message_bytes,
                ping_interval=self.options.ping_interval,
                ping_timeout=self.options.ping_timeout,
                close_timeout=self.options.close_timeout,
                compression="deflate" if self.options.compression else None,
                server_header=f"qasr/{__version__}",
                create_connection=self._front.connection_class() if self._front is not None else None,
            )
        except OSError as exc:
            raise QasrError(
                f"cannot listen on {self.options.host}:{self.options.port}: {exc.strerror}; "
                "choose another server.port (0 picks a free one) or stop the program using it"
            ) from exc
        self._port = self._server.sockets[0].getsockname()[1]
        self._started = time.monotonic()
        if self._front is not None:
            self._front.app.bind(Guard(self._token, str(self._token_path), self._origins()), self.metrics)
        if self.options.write_info_file:
            write_private_json(self._info_path, self.server_info())
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
        if self._front is not None:
            self._front.close()
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
        for peer in list(self._clients.values()):
            if peer.broadcasts and peer.conn.wants(etype):
                self._queue(peer, event, data)

    def _deliver(self, client_id: str, event: dict) -> None:
        peer = self._clients.get(client_id)
        if peer is None:
            return
        self.metrics.observe_event(event)
        self._queue(peer, event)

    def _queue(self, peer: _Peer, event: dict, data: str | None = None) -> None:
        close = peer.conn.queue_event(event, data)
        if close is not None:
            self._close_client(peer, close)
        else:
            peer.wakeup.set()

    def _close_client(self, peer: _Peer, close: Close) -> None:
        """Start the closing handshake without waiting for it: the reader keeps draining (and ignoring)
        incoming frames meanwhile, otherwise the client's close frame could never be read."""
        peer.conn.closing = True
        task = asyncio.ensure_future(peer.ws.close(close.code, close.reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sender(self, peer: _Peer) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                data = peer.conn.next_outgoing()
                if data is None:
                    peer.wakeup.clear()
                    await peer.wakeup.wait()
                    continue
                await peer.ws.send(data)
                self.metrics.count("events_sent")

    # ---- HTTP side -----------------------------------------------------------------------------

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if url.path == HEALTH_PATH:
            try:
                info = await self._optional("health_info") or {}
            except Exception as exc:
                log.exception("health_info failed")
                info = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            return http_routes.health(info, time.monotonic() - self._started, len(self._clients))
        if url.path == METRICS_PATH:
            app = await self._optional("metrics_info") or {}
            uptime = time.monotonic() - self._started
            return http_routes.metrics(request, query, app, self.metrics, uptime, len(self._clients))
        upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        origin = request.headers.get("Origin")
        origin_ok = http_routes.origin_allowed(origin, self._origins())
        if self._is_realtime(url.path):
            refusal = self._realtime.refuse(request.headers, query, self._token, str(self._token_path), origin_ok,
                                            len(self._clients) >= self.options.max_clients, upgrade)
            if refusal is None:
                return None
            self.metrics.count(f"realtime_rejected_{refusal[0]}")
            return http_routes.http(refusal[0], refusal[1], "application/json")
        if url.path.rstrip("/") == "/v1/realtime":  # served only beside the OpenAI endpoint
            return http_routes.text(404, "OpenAI's Realtime API is off here; set openai.enabled = true")
        if not upgrade:
            return await self._app_page(request, url.path, query)

        if not origin_ok:
            self.metrics.count("rejected_origin")
            return http_routes.text(403, http_routes.origin_refused(origin))
        token_ok = http_routes.token_ok(request, query, self._token)
        if not token_ok:
            self.metrics.count("rejected_auth")
            if token_ok is None:
                return http_routes.text(
                    401,
                    f"missing token: send 'Authorization: Bearer <token>' or '?token=<token>' with the token "
                    f"from {self._token_path}",
                )
            return http_routes.text(401, f"invalid token: use the one in {self._token_path}")
        if len(self._clients) >= self.options.max_clients:
            self.metrics.count("rejected_full")
            return http_routes.text(
                503, f"too many clients ({self.options.max_clients}); close one or raise server.max_clients"
            )
        return None

    async def _app_page(self, request: Request, path: str, query: dict[str, list[str]]) -> Response:
        hook = getattr(self.handler, "http_response", None)
        if hook is not None:
            if self.options.http_requires_token and not http_routes.token_ok(request, query, self._token):
                self.metrics.count("rejected_auth")
                return http_routes.text(401, f"add ?token=<token from {self._token_path}> to the address")
            reply = await self._call(hook, path, query)
            if reply is not None:
                return http_routes.http(reply.status, reply.body, reply.content_type, reply.headers)
        return http_routes.no_page(path)

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

    # ---- WebSocket side ------------------------------------------------------------------------

    def _origins(self) -> frozenset[str]:
        return http_routes.allowed_origins(self._port, self.options.allowed_origins)

    def _is_realtime(self, path: str) -> bool:
        return self._realtime is not None and urlsplit(path).path.rstrip("/") == self._realtime.path

    def _select_subprotocol(self, connection: ServerConnection, offered) -> str | None:
        if self._is_realtime(connection.request.path):
            return self._realtime.select_subprotocol(list(offered))
        return None

    async def _serve_connection(self, ws: ServerConnection) -> None:
        if len(self._clients) >= self.options.max_clients:
            await ws.close(CloseCode.TRY_AGAIN_LATER, f"too many clients ({self.options.max_clients})")
            return
        self._next_id += 1
        conn = Connection(f"c{self._next_id}", self.options.connection_limits(), time.monotonic(), self.metrics)
        peer = _Peer(conn, ws)
        self._clients[peer.id] = peer
        self.metrics.count("connections")
        sender = asyncio.create_task(self._sender(peer))
        try:
            if self._is_realtime(ws.request.path):
                peer.broadcasts = False
                await self._realtime.serve(_Link(self, peer), ws)
                return
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
            self._queue(peer, protocol.hello(peer.id, model, rate, limits=limits, **info))
            async for message in ws:
                if conn.closing:
                    continue
                if isinstance(message, str):
                    await self._carry_out(peer, conn.receive_text(message, time.monotonic()))
                else:
                    delay = conn.pace_audio(len(message), time.monotonic())
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self._carry_out(peer, conn.receive_binary(message, time.monotonic()))
                peer.wakeup.set()
        except ConnectionClosed:
            pass
        finally:
            self._clients.pop(peer.id, None)
            await self._carry_out(peer, conn.close())
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _carry_out(self, peer: _Peer, request: ConnectionRequest | None) -> None:
        """Do what the connection asked (handler calls, closing), and tell it how that went."""
        while request is not None:
            if isinstance(request, Close):
                self._close_client(peer, request)
                return
            try:
                result = await self._perform(peer, request)
            except Exception as exc:
                request = peer.conn.fail(request, exc)
            else:
                request = peer.conn.complete(request, result)

    async def _perform(self, peer: _Peer, request: ConnectionRequest):
        if isinstance(request, RunCommand):
            return await self._call(self.handler.on_command, peer.id, request.msg)
        if isinstance(request, OpenIngest):
            return await self._call(self.handler.open_ingest, peer.id, request.request)
        if isinstance(request, FeedIngest):
            return await self._call(request.ingest.sink.feed, request.samples)
        if isinstance(request, EndIngest):
            if request.tail.size:
                await self._call(request.ingest.sink.feed, request.tail)
            return await self._call(request.ingest.sink.end)
        if isinstance(request, CancelIngest):
            if request.ingest is not None:
                await self._call(request.ingest.sink.cancel)
            return None
        raise TypeError(f"unknown connection request {request!r}")
