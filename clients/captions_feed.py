"""The captions clients' network side: follow the daemon's events on a background thread.

    feed = EventFeed(queue.Queue())      # url/token default to the running daemon's (server info file)
    feed.start()                         # thread "qasr-captions-feed" with its own asyncio loop
    event = feed.events.get_nowait()     # qasr.v1 event dicts, plus {"type": "disconnected", "reason": ...}
    feed.stop()

The daemon need not be running yet: the feed keeps trying with exponential back-off and reports each
failed attempt as a ``disconnected`` event. Once connected, QasrClient itself reconnects (and re-reads the
daemon's info file, so a restarted daemon on another port is found); a fresh ``hello`` means connected.
With ``system_audio`` the feed asks the daemon for system audio captions at every (re)connection
(``system_audio`` request) and gives the request back when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from dataclasses import dataclass

from qasr.errors import QasrError
from qasr.protocol import client_message

SUBSCRIBE = ("state", "vad", "partial", "final")


@dataclass(frozen=True)
class FeedOptions:
    url: str | None = None  # None: the running daemon's ws_url
    token: str | None = None  # None: the daemon's token file
    first_delay_s: float = 0.5
    max_delay_s: float = 5.0
    system_audio: bool = False  # ask for captions of system audio while the feed runs


class EventFeed:
    def __init__(self, events: queue.Queue, options: FeedOptions | None = None) -> None:
        self.events = events
        self.options = options or FeedOptions()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._main, name="qasr-captions-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._cancel)
            self._thread.join(timeout_s)

    def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _main(self) -> None:
        self._task = self._loop.create_task(self._follow())
        with contextlib.suppress(asyncio.CancelledError):
            self._loop.run_until_complete(self._task)
        self._loop.close()

    async def _follow(self) -> None:
        from qasr.clients.client import QasrClient, ReconnectPolicy

        o = self.options
        delay = o.first_delay_s
        while True:
            client = QasrClient(o.url, o.token, subscribe=list(SUBSCRIBE),
                                reconnect=ReconnectPolicy(initial_delay=o.first_delay_s, max_delay=o.max_delay_s))
            try:
                await client.connect()
            except QasrError as exc:
                self.events.put({"type": "disconnected", "reason": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, o.max_delay_s)
                continue
            delay = o.first_delay_s
            try:
                async for event in client:
                    if o.system_audio and event.raw.get("type") == "hello":
                        with contextlib.suppress(QasrError):
                            await client.send(client_message("system_audio", enabled=True))
                    self.events.put(event.raw)
            finally:
                if o.system_audio:
                    with contextlib.suppress(Exception):
                        await client.send(client_message("system_audio", enabled=False))
                await client.close()
