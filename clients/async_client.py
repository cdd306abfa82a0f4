"""The asyncio client of the qasr daemon: ``QasrClient`` (connect, follow events, send requests, stream
audio, reconnect with back-off) and the one-shot ``transcribe_pcm``. Import it from ``qasr.clients.client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from qasr.config.runtime import DaemonNotRunning, discover
from qasr.errors import QasrError
from qasr.protocol import (
    PROTOCOL,
    Ack,
    Error,
    Event,
    Final,
    Hello,
    Pong,
    ProtocolError,
    client_message,
    encode_pcm,
    frame_bytes,
    parse_server_message,
)

log = logging.getLogger("qasr.client")


class CommandFailed(QasrError):
    """The daemon answered a request with an ``error`` event."""

    def __init__(self, code: str, message: str, command: str | None = None):
        super().__init__(f"{command or 'request'} failed: {message}")
        self.code = code
        self.message = message
        self.command = command


@dataclass(frozen=True)
class Disconnected(Event):
    """Client side only: the connection was lost; the client is reconnecting (if allowed)."""

    TYPE: ClassVar[str] = "disconnected"

    reason: str = ""

_END = object()  # end of the event stream


@dataclass(frozen=True)
class ReconnectPolicy:
    enabled: bool = True
    initial_delay: float = 0.2
    max_delay: float = 5.0
    factor: float = 2.0
    jitter: float = 0.2  # +/- fraction of each delay


class QasrClient:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        subscribe: Sequence[str] | None = None,
        reconnect: ReconnectPolicy | bool = True,
        open_timeout: float = 5.0,
        info_path: Path | None = None,
        token_path: Path | None = None,
        max_size: int | None = 16 * 1024 * 1024,
    ):
        """``url``/``token`` default to the running daemon's; ``subscribe`` limits broadcast event types
        (e.g. ``["final"]``; ``[]`` for none: replies to this client's own requests always arrive)."""
        self._url, self._token = url, token
        self._info_path, self._token_path = info_path, token_path
        self.subscribe = list(subscribe) if subscribe is not None else None
        if isinstance(reconnect, bool):
            reconnect = ReconnectPolicy(enabled=reconnect)
        self.reconnect = reconnect
        self.open_timeout = open_timeout
        self.max_size = max_size
        self.hello: Hello | None = None
        self._ws: ClientConnection | None = None
        self._events: asyncio.Queue = asyncio.Queue()
        self._pending: dict[str, asyncio.Future] = {}
        self._ids = itertools.count(1)
        self._runner: asyncio.Task | None = None
        self._closing = False

    # ---- connection ----------------------------------------------------------------------------

    def _target(self) -> tuple[str, str]:
        if self._url is not None and self._token is not None:
            return self._url, self._token
        info = discover(self._info_path, self._token_path)
        return self._url or info.ws_url, self._token or info.token

    async def _open(self) -> ClientConnection:
        url, token = self._target()
        try:
            ws = await connect(
                url,
                additional_headers={"Authorization": f"Bearer {token}"},
                open_timeout=self.open_timeout,
                max_size=self.max_size,
                compression=None,
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode("utf-8", "replace").strip()
            raise QasrError(f"the daemon at {url} refused the connection: {body or exc}") from None
        except (OSError, InvalidHandshake, InvalidURI, asyncio.TimeoutError) as exc:
            raise DaemonNotRunning(
                f"cannot reach the qasr daemon at {url} ({exc or type(exc).__name__}); is it running? "
                "see `qasr-daemon status`"
            ) from None
        try:
            hello = parse_server_message(await asyncio.wait_for(ws.recv(), self.open_timeout))
            if not isinstance(hello, Hello) or hello.protocol != PROTOCOL:
                raise QasrError(f"{url} does not speak {PROTOCOL} (got {hello.raw!r:.80}); is it a qasr daemon?")
            if self.subscribe is not None:
                await ws.send(json.dumps(client_message("subscribe", events=self.subscribe)))
        except ConnectionClosed as exc:
            await ws.close()
            reason = f"{exc.rcvd.code} {exc.rcvd.reason}" if exc.rcvd else "connection dropped"
            raise QasrError(f"the daemon at {url} closed the connection ({reason})") from None
        except (asyncio.TimeoutError, ProtocolError, TypeError):
            await ws.close()
            raise QasrError(f"{url} sent no valid qasr.v1 hello; is it a qasr daemon?") from None
        except BaseException:
            await ws.close()
            raise
        self.hello = hello
        self._events.put_nowait(hello)
        return ws

    async def connect(self) -> Hello:
        """First connection (raises DaemonNotRunning/QasrError); then events flow in the background."""
        if self._runner is None:
            self._closing = False
            self._ws = await self._open()
            self._runner = asyncio.create_task(self._run())
        return self.hello

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        self._fail_pending("client closed")
        self._events.put_nowait(_END)

    async def __aenter__(self) -> QasrClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._ws.state.name == "OPEN"

    async def _run(self) -> None:
        delay = self.reconnect.initial_delay
        while True:
            reason = await self._read(self._ws)
            self._ws = None
            self._fail_pending(f"connection lost ({reason})")
            if self._closing:
                return
            self._events.put_nowait(Disconnected(raw={"type": "disconnected", "reason": reason}, reason=reason))
            if not self.reconnect.enabled:
                self._events.put_nowait(_END)
                return
            while self._ws is None:
                jitter = 1 + random.uniform(-self.reconnect.jitter, self.reconnect.jitter)
                await asyncio.sleep(delay * jitter)
                delay = min(delay * self.reconnect.factor, self.reconnect.max_delay)
                try:
                    self._ws = await self._open()
                except Exception as exc:  # keep trying: the daemon may be restarting
                    log.debug("reconnect failed: %s", exc)
            delay = self.reconnect.initial_delay

    async def _read(self, ws: ClientConnection) -> str:
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    continue
                try:
                    event = parse_server_message(frame)
                except ProtocolError as exc:
                    log.debug("ignoring a server frame: %s", exc)
                    continue
                future = self._pending.pop(str(getattr(event, "id", None)), None) if hasattr(event, "id") else None
                if future is not None and not future.done():
                    if isinstance(event, Error):
                        future.set_exception(CommandFailed(event.code, event.message, event.command))
                    else:
                        future.set_result(event)
                    continue
                self._events.put_nowait(event)
        except ConnectionClosed:
            pass
        code, why = ws.close_code, ws.close_reason
        return f"{code} {why}".strip() if code is not None else "connection dropped"

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(QasrError(f"no reply from the daemon: {why}"))

    # ---- events ----------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._runner is None and self._events.empty():
            await self.connect()
        event = await self._events.get()
        if event is _END:
            self._events.put_nowait(_END)  # stay exhausted
            raise StopAsyncIteration
        return event

    async def next_event(self, timeout: float | None = None) -> Event:
        return await asyncio.wait_for(self.__anext__(), timeout)

    # ---- requests --------------------------------------------------------------------------------

    async def send(self, message: dict) -> None:
        """Send one JSON request without waiting for its reply."""
        ws = self._ws
        if ws is None:
            raise QasrError("not connected to the qasr daemon (reconnecting); try again in a moment")
        await ws.send(json.dumps(message))

    async def request(self, mtype: str, timeout: float | None = 30.0, **fields: Any) -> Ack | Pong:
        """Send a request with a fresh ``id`` and wait for its ack; CommandFailed on an ``error`` reply."""
        rid = f"r{next(self._ids)}"
        future = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            await self.send(client_message(mtype, rid, **fields))
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(rid, None)

    async def start(self) -> Ack:
        return await self.request("start")

    async def stop(self) -> Ack:
        return await self.request("stop")

    async def toggle(self) -> Ack:
        return await self.request("toggle")

    async def cancel(self) -> Ack:
        return await self.request("cancel")

    async def set(self, language: str | None = None, context: str | None = None, **more: Any) -> Ack:
        """Set the decoding language (None: automatic) and/or the context (hotwords, domain text)."""
        fields_ = {**more}
        if language is not None:
            fields_["language"] = language
        if context is not None:
            fields_["context"] = context
        return await self.request("set", **fields_)

    async def ping(self) -> Pong:
        return await self.request("ping")

    async def transcribe_pcm(
        self,
        pcm: np.ndarray | bytes,
        sample_rate: int = 16000,
        *,
        fmt: str | None = None,
        channels: int = 1,
        segment: str = "none",
        language: str | None = None,
        context: str | None = None,
        chunk_seconds: float = 0.5,
        timeout: float | None = 600.0,
    ) -> list[Final]:
        """Stream audio to the daemon, transcribed for this client alone; returns its finals in order.

        ``pcm``: float32 array (f32le) or int16 array (s16le), shaped (n,) or (n, channels); or raw bytes
        with ``fmt``. Consumes this client's events while it runs: use a client of its own (``subscribe=[]``).
        """
        data, fmt, channels = encode_pcm(pcm, fmt, channels)
        start: dict[str, Any] = {"format": fmt, "sample_rate": int(sample_rate), "channels": channels, "segment": segment}
        if language is not None:
            start["language"] = language
        if context is not None:
            start["context"] = context
        await self.request("audio.start", **start)
        frame = frame_bytes(fmt, channels)
        step = max(frame, int(sample_rate * chunk_seconds) * frame)
        for offset in range(0, len(data), step):
            await self._ws_or_fail().send(data[offset : offset + step])
        try:
            await self.request("audio.end", timeout=timeout)
        except CommandFailed as exc:
            # The server cancels a stream it cannot decode and says why in an error without an id.
            errors = [e for e in self._drain() if isinstance(e, Error)]
            if exc.code == "no_ingest" and errors:
                raise CommandFailed(errors[-1].code, errors[-1].message, "audio") from None
            raise
        return [e for e in self._drain() if isinstance(e, Final)]  # they arrived before the ack

    def _drain(self) -> list[Event]:
        events = []
        while not self._events.empty():
            event = self._events.get_nowait()
            if event is _END:
                self._events.put_nowait(_END)
                break
            events.append(event)
        return events

    def _ws_or_fail(self) -> ClientConnection:
        if self._ws is None:
            raise QasrError("lost the connection to the qasr daemon while sending audio; try again")
        return self._ws


async def transcribe_pcm(pcm: np.ndarray | bytes, sample_rate: int = 16000, **kwargs: Any) -> list[Final]:
    """One-shot: connect to the daemon (no broadcasts, no reconnect), stream ``pcm``, return the finals."""
    connection = {k: kwargs.pop(k) for k in ("url", "token", "info_path", "token_path") if k in kwargs}
    async with QasrClient(subscribe=[], reconnect=False, **connection) as client:
        return await client.transcribe_pcm(pcm, sample_rate, **kwargs)
