"""Blocking use of the qasr client: ``iter_events`` (a QasrClient on a background thread) and
``send_command`` (one request, one reply). Import them from ``qasr.clients.client``."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import Any

from qasr.clients.async_client import _END, QasrClient
from qasr.protocol import Ack, Event, Pong


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
