"""The local pool: N worker processes on this machine, each with one warm model and its share of the threads.

Processes, not threads: llama.cpp and onnxruntime would run in parallel in threads too, but every worker
needs its own model (a Decoder is one KV cache), and a crash in native code then takes one worker, not the
run. Workers are spawned (no fork of a process that holds native thread pools) and ignore SIGINT: Ctrl+C is
the parent's to handle, which stops them. Each worker has its own pipe and gets one file at a time, so the
parent always knows which file a worker holds; a worker that dies fails that file and is replaced.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Iterator

from qasr.daemon.batch.work import EngineSpec, FileWorker, Job, JobResult
from qasr.errors import QasrError


def _worker_main(spec: EngineSpec, conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        worker = FileWorker(spec)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("failed", str(exc) if isinstance(exc, QasrError) else f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", worker.name))
    try:
        while True:
            try:
                job = conn.recv()
            except EOFError:  # the parent is gone
                break
            if job is None:
                break
            conn.send(("result", worker.run(job)))
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        worker.close()


@dataclass(eq=False)
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection
    ready: bool = False
    job: Job | None = None
    name: str = field(default="")


class LocalPool:
    def __init__(self, spec: EngineSpec, workers: int):
        self.spec = spec
        self.size = workers
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []

    def _start_one(self) -> None:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(self.spec, child), daemon=True, name="qasr-batch-worker")
        process.start()
        child.close()
        self._workers.append(_Worker(process, parent))

    def run(self, jobs: list[Job], tick: float = 1.0) -> Iterator[JobResult | None]:
        """Results as files finish, in the order given to idle workers (longest first if so sorted); None
        every `tick` seconds without a result, so the caller can redraw its progress."""
        queue = deque(jobs)
        while len(self._workers) < min(self.size, max(len(jobs), 1)):
            self._start_one()
        while queue or any(w.job is not None for w in self._workers):
            for worker in self._workers:
                if worker.ready and worker.job is None and queue:
                    worker.job = queue.popleft()
                    worker.conn.send(worker.job)
            waitables = {}
            for worker in self._workers:
                waitables[worker.conn] = worker
                waitables[worker.process.sentinel] = worker
            ready = wait(list(waitables), timeout=tick)
            if not ready:
                yield None
            for worker in {waitables[obj] for obj in ready}:
                yield from self._handle(worker)

    def _handle(self, worker: _Worker) -> Iterator[JobResult]:
        message = None
        if worker.conn.poll():
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                message = None
        if message is None:
            if worker.process.is_alive():
                return
            worker.process.join()
            self._workers.remove(worker)
            how = exit_reason(worker.process.exitcode)
            if not worker.ready:
                self.close()
                raise QasrError(f"a worker process died while loading the model ({how})")
            if worker.job is not None:
                yield JobResult(worker.job.key, ok=False, worker=worker.name,
                                error=f"the worker process died on this file ({how})")
            self._start_one()
            return
        kind, payload = message
        if kind == "ready":
            worker.ready, worker.name = True, payload
        elif kind == "failed":
            self.close()
            raise QasrError(f"a worker could not load the model: {payload}")
        else:
            worker.job = None
            yield payload

    def close(self) -> None:
        """Stop every worker now (a file in progress is abandoned: it has no manifest line, so it runs again)."""
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in self._workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers.clear()


def exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
