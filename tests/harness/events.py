"""WebSocket subscribers of a daemon on a private asyncio loop (a thread); every event is recorded with its
arrival time (time.monotonic).

Client 0 records every event; the others (``resize(n)`` opens or closes them) keep only finals, so that
many subscribers cost this process little CPU. Two ways to read client 0's record:
- by time: ``events(index, since=t)`` → ``[(arrival, event)]``;
- by position: ``m = mark()`` before an action, then ``since(m, "final", utterance_id=3)`` or
  ``wait(m, "final", timeout_s)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

from tests.harness import HarnessError


class Subscribers:
    def __init__(self, ws_url: str, token: str, n: int = 1) -> None:
        self.ws_url, self.token = ws_url, token
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="harness-ws", daemon=True)
        self.thread.start()
        self.clients: list[dict] = []  # {"ws", "task", "all", "events": [(t, event)]}
        self.cond = threading.Condition()
        self.closed = False
        self.resize(n)

    @classmethod
    def of(cls, daemon, n: int = 1) -> "Subscribers":
        """Subscribers of a running ``tests.harness.daemon.DaemonProcess``."""
        return cls(daemon.server_info()["ws_url"], daemon.token(), n)

    def _run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open(self) -> dict:
        from websockets.asyncio.client import connect

        ws = await connect(self.ws_url, additional_headers={"Authorization": f"Bearer {self.token}"},
                           max_size=None, open_timeout=30)
        hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if hello.get("type") != "hello":
            raise HarnessError(f"expected hello, got {hello}")
        client = {"ws": ws, "events": [], "all": not self.clients}
        client["task"] = asyncio.ensure_future(self._reader(client))
        return client

    async def _reader(self, client: dict) -> None:
        from websockets.exceptions import ConnectionClosed

        record_all = client["all"]
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            async for message in client["ws"]:
                t = time.monotonic()
                if isinstance(message, str) and (record_all or '"final"' in message[:40]):
                    with self.cond:
                        client["events"].append((t, json.loads(message)))
                        self.cond.notify_all()

    def resize(self, n: int) -> None:
        """Open or close clients until ``n`` are connected (client 0 is kept while n > 0)."""
        async def go():
            while len(self.clients) < n:
                opened = await asyncio.gather(*(self._open() for _ in range(min(8, n - len(self.clients)))))
                self.clients.extend(opened)
            while len(self.clients) > n:
                client = self.clients.pop()
                await client["ws"].close()
                client["task"].cancel()
        self._run(go(), timeout=120)

    def send(self, message: dict | bytes, index: int = 0) -> None:
        payload = message if isinstance(message, bytes) else json.dumps(message)
        self._run(self.clients[index]["ws"].send(payload), timeout=30)

    # ------------------------------------------------------------------ reading the record

    def events(self, index: int = 0, since: float = 0.0) -> list[tuple[float, dict]]:
        with self.cond:
            return [(t, m) for t, m in self.clients[index]["events"] if t >= since]

    def mark(self) -> int:
        with self.cond:
            return len(self.clients[0]["events"])

    def since(self, mark: int, kind: str | None = None, **fields) -> list[dict]:
        """Client 0's events after ``mark`` of this type whose fields have these values."""
        with self.cond:
            return [m for _, m in self.clients[0]["events"][mark:] if (kind is None or m["type"] == kind)
                    and all(m.get(k) == v for k, v in fields.items())]

    def wait(self, mark: int, kind: str, timeout_s: float = 120.0, **fields) -> dict | None:
        """The first such event after ``mark``, waiting up to ``timeout_s``; None if none came."""
        with self.cond:
            found = self.cond.wait_for(lambda: self.since(mark, kind, **fields), timeout_s)
        return found[0] if found else None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.resize(0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
