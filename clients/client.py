"""Python client for the qasr daemon (protocol qasr.v1): find it, follow its events, send it commands.

    async with QasrClient() as client:          # finds the daemon via paths.server_info_file() + token
        await client.start()
        async for event in client:               # Hello, State, Vad, Partial, Final, Error, Warning, ...
            if isinstance(event, Final):
                print(event.text)

    for event in iter_events():                  # the same, blocking (runs the client in a thread)
        ...

    finals = await transcribe_pcm(samples, 16000) # stream your own audio, get its finals (token_ids included)

The client reconnects with exponential back-off when the connection drops (re-reading the daemon's info
and token files, so a restarted daemon on a new port is found); it yields a ``Disconnected`` event when the
link is lost and a fresh ``Hello`` once it is back. Failing to reach the daemon at the very first connect
raises ``DaemonNotRunning`` (a QasrError with a one-line message).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import queue
import random
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from qasr.config import paths
from qasr.daemon.lifecycle import process_alive
from qasr.errors import QasrError

PROTOCOL = "qasr.v1"
log = logging.getLogger("qasr.client")


class DaemonNotRunning(QasrError):
    """No daemon to talk to (no info file, stale pid, or nothing listening)."""


class CommandFailed(QasrError):
    """The daemon answered a request with an ``error`` event."""

    def __init__(self, code: str, message: str, command: str | None = None):
        super().__init__(f"{command or 'request'} failed: {message}")
        self.code = code
        self.message = message
        self.command = command


# ---------------------------------------------------------------------------------------------
# events


@dataclass(frozen=True)
class Event:
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def type(self) -> str:
        return self.raw.get("type", "")


@dataclass(frozen=True)
class Hello(Event):
    protocol: str = ""
    version: str = ""
    model: str | None = None
    sample_rate: int = 16000
    client_id: str = ""
    state: str | None = None


@dataclass(frozen=True)
class State(Event):
    state: str = ""


@dataclass(frozen=True)
class Vad(Event):
    speech: bool = False
    time: float = 0.0
    utterance_id: str | None = None


@dataclass(frozen=True)
class Partial(Event):
    utterance_id: str = ""
    seq: int = 0
    committed: str = ""
    tentative: str = ""
    language: str | None = None
    audio_start: float = 0.0
    audio_end: float = 0.0
    timings: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.committed + self.tentative


@dataclass(frozen=True)
class Final(Event):
    utterance_id: str = ""
    seq: int = 0
    text: str = ""
    language: str | None = None
    token_ids: list = field(default_factory=list)
    audio_start: float = 0.0
    audio_end: float = 0.0
    timings: dict = field(default_factory=dict)
    sink: str | None = None


@dataclass(frozen=True)
class Error(Event):
    code: str = ""
    message: str = ""
    id: Any = None
    command: str | None = None


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - the protocol's name for it
    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class Ack(Event):
    command: str = ""
    id: Any = None

    @property
    def result(self) -> dict:
        return {k: v for k, v in self.raw.items() if k not in ("type", "command", "id")}


@dataclass(frozen=True)
class Pong(Event):
    id: Any = None


@dataclass(frozen=True)
class Unknown(Event):
    """An event type this client does not know (a newer daemon); ``raw`` has it all."""


@dataclass(frozen=True)
class Disconnected(Event):
    """Client side only: the connection was lost; the client is reconnecting (if allowed)."""

    reason: str = ""


EVENT_TYPES: dict[str, type[Event]] = {
    "hello": Hello,
    "state": State,
    "vad": Vad,
    "partial": Partial,
    "final": Final,
    "error": Error,
    "warning": Warning,
    "ack": Ack,
    "pong": Pong,
}


def parse_event(data: dict) -> Event:
    """Typed event from a server message dict; unknown fields stay in ``.raw``."""
    cls = EVENT_TYPES.get(data.get("type"), Unknown)
    names = {f.name for f in fields(cls)} - {"raw"}
    return cls(raw=data, **{k: v for k, v in data.items() if k in names})


# ---------------------------------------------------------------------------------------------
# finding the daemon


@dataclass(frozen=True)
class ServerInfo:
    ws_url: str
    http_url: str
    pid: int
    port: int
    token: str


def discover(info_path: Path | None = None, token_path: Path | None = None) -> ServerInfo:
    """Read the running daemon's address (``server_info_file``) and token; DaemonNotRunning if none."""
    info_path = Path(info_path) if info_path else paths.server_info_file()
    hint = "start it with `qasr-daemon start`"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DaemonNotRunning(f"the qasr daemon is not running (no {info_path}); {hint}") from None
    except (OSError, ValueError) as exc:
        raise DaemonNotRunning(f"cannot read {info_path} ({exc}); restart the daemon") from None
    pid = int(info.get("pid", 0))
    if pid and not process_alive(pid):
        raise DaemonNotRunning(f"the qasr daemon is not running (stale {info_path}, pid {pid} is gone); {hint}")
    token_file = Path(token_path or info.get("token_file") or paths.token_file())
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DaemonNotRunning(f"cannot read the daemon's token {token_file}: {exc.strerror}; restart the daemon") from None
    return ServerInfo(info["ws_url"], info.get("http_url", ""), pid, int(info.get("port", 0)), token)


# ---------------------------------------------------------------------------------------------
# async client

_END = object()


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
            hello = parse_event(json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout)))
            if not isinstance(hello, Hello) or hello.protocol != PROTOCOL:
                raise QasrError(f"{url} does not speak {PROTOCOL} (got {hello.raw!r:.80}); is it a qasr daemon?")
            if self.subscribe is not None:
                await ws.send(json.dumps({"type": "subscribe", "events": self.subscribe}))
        except ConnectionClosed as exc:
            await ws.close()
            reason = f"{exc.rcvd.code} {exc.rcvd.reason}" if exc.rcvd else "connection dropped"
            raise QasrError(f"the daemon at {url} closed the connection ({reason})") from None
        except (asyncio.TimeoutError, ValueError, TypeError):
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
                    event = parse_event(json.loads(frame))
                except (ValueError, TypeError):
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
            await self.send({"type": mtype, "id": rid, **fields})
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
        data, fmt, channels = _pcm_bytes(pcm, fmt, channels)
        start: dict[str, Any] = {"format": fmt, "sample_rate": int(sample_rate), "channels": channels, "segment": segment}
        if language is not None:
            start["language"] = language
        if context is not None:
            start["context"] = context
        await self.request("audio.start", **start)
        frame = (4 if fmt == "f32le" else 2) * channels
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


def _pcm_bytes(pcm: np.ndarray | bytes, fmt: str | None, channels: int) -> tuple[bytes, str, int]:
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        if fmt not in ("s16le", "f32le"):
            raise QasrError("raw PCM bytes need fmt='s16le' or fmt='f32le'")
        return bytes(pcm), fmt, channels
    array = np.asarray(pcm)
    if array.ndim == 2:
        channels = array.shape[1]
    elif array.ndim != 1:
        raise QasrError(f"PCM must be shaped (samples,) or (samples, channels), not {array.shape}")
    if array.dtype == np.int16:
        return array.astype("<i2").tobytes(), "s16le", channels
    return array.astype("<f4").tobytes(), "f32le", channels


async def transcribe_pcm(pcm: np.ndarray | bytes, sample_rate: int = 16000, **kwargs: Any) -> list[Final]:
    """One-shot: connect to the daemon (no broadcasts, no reconnect), stream ``pcm``, return the finals."""
    connection = {k: kwargs.pop(k) for k in ("url", "token", "info_path", "token_path") if k in kwargs}
    async with QasrClient(subscribe=[], reconnect=False, **connection) as client:
        return await client.transcribe_pcm(pcm, sample_rate, **kwargs)


# ---------------------------------------------------------------------------------------------
# blocking use


def iter_events(**client_kwargs: Any) -> Iterator[Event]:
    """Blocking iterator over the daemon's events (a QasrClient on a background thread).

    Raises what the first connect raises (e.g. DaemonNotRunning). Closing the generator stops the thread.
    """
    out: queue.Queue = queue.Queue(maxsize=10000)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def pump() -> None:
        client = QasrClient(**client_kwargs)
        try:
            await client.connect()
        except BaseException as exc:
            out.put(exc)
            return
        try:
            async def forward():
                async for event in client:
                    out.put(event)

            forwarding = asyncio.create_task(forward())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({forwarding, stopping}, return_when=asyncio.FIRST_COMPLETED)
            forwarding.cancel()
            stopping.cancel()
        finally:
            await client.close()
            out.put(_END)

    thread = threading.Thread(target=loop.run_until_complete, args=(pump(),), name="qasr-client", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()


def send_command(mtype: str, timeout: float = 30.0, **fields: Any) -> Ack | Pong:
    """Blocking one-shot request (``start``, ``stop``, ``toggle``, ``cancel``, ``set``, ``ping``)."""

    async def run() -> Ack | Pong:
        async with QasrClient(subscribe=[], reconnect=False) as client:
            return await client.request(mtype, timeout=timeout, **fields)

    return asyncio.run(run())
