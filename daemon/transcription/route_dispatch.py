"""Pipeline events → their source's route, off the decoder thread.

    dispatch = RouteDispatcher()
    pipeline = Pipeline(backend, dispatch, delivery=dispatch)

Each source kind has its own queue and thread (``route-mic``, ``route-stream``, …), started at its first
event: typing, pasting, the journal's fsync or a slow requester never delay the next decode, and the
microphone's delivery never waits behind a WebSocket client's. One kind's events keep the order the
decoder made them in (so one utterance's do); nothing is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

from qasr.daemon.transcription.routes import PipelineEvent, Source, route_call
from qasr.engine.events import FinalEvent

log = logging.getLogger("qasr.routes")

_STOP = object()


class RouteDispatcher:
    def __init__(self, after: Callable[[], None] = lambda: None) -> None:
        self._after = after  # after each event (the daemon's state may have changed)
        self._lock = threading.Lock()
        self._queues: dict[str, queue.Queue] = {}
        self._threads: list[threading.Thread] = []
        self._finals = 0  # finals handed over, not yet through their route

    def __call__(self, source: Source, event: PipelineEvent) -> None:
        """Queue ``event`` for ``source.route`` (any thread, never blocks)."""
        final = isinstance(event, FinalEvent)
        if final:
            with self._lock:
                self._finals += 1
        self._queue(source.kind).put((source.name, final, *route_call(source.route, event)))

    def _queue(self, kind: str) -> queue.Queue:
        with self._lock:
            q = self._queues.get(kind)
            if q is None:
                q = self._queues[kind] = queue.Queue()
                thread = threading.Thread(target=self._run, args=(q,), name=f"route-{kind}", daemon=True)
                self._threads.append(thread)
                thread.start()
            return q

    def _run(self, q: queue.Queue) -> None:
        while True:
            item = q.get()
            if item is _STOP:
                q.task_done()
                return
            name, final, method, args = item
            try:
                method(*args)
            except Exception:
                log.exception("route of %s: %s failed", name, method.__name__)
            finally:
                if final:
                    with self._lock:
                        self._finals -= 1
                q.task_done()
            self._after()

    def delivering_final(self) -> bool:
        with self._lock:
            return self._finals > 0

    def idle(self) -> bool:
        with self._lock:
            return all(q.unfinished_tasks == 0 for q in self._queues.values())

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every event handed over so far was delivered; True if it was."""
        deadline = time.monotonic() + timeout_s
        while not self.idle():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued, then end the threads."""
        with self._lock:
            queues, threads = list(self._queues.values()), list(self._threads)
            self._queues.clear()
            self._threads.clear()
        for q in queues:
            q.put(_STOP)
        for thread in threads:
            thread.join(timeout=timeout_s)
