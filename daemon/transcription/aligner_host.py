"""The forced aligner (word timestamps) inside the daemon: loaded once, used by one low-priority thread.

    host = AlignerHost(path, AlignerHostOptions(threads=2), warn=log_line)
    host.preload()                                   # [output] word_timestamps: load while idle
    host.submit(job)                                 # job(host) on the aligner thread, foreground lane
    words = await asyncio.wrap_future(host.submit(fn, background=True))   # the OpenAI endpoint
    host.in_order(publish)                           # now, or after the foreground jobs queued before it

Where the alignment runs, and why: on one thread of its own ("aligner"), never on the decoder worker.
The decoder worker hands a final to the desktop output first and then queues its alignment here, so
typing never waits for it and the next utterance's partials and final are decoded while it runs. The
thread lowers its own scheduling priority (nice +10) before it loads the model, and the threads that
ONNX Runtime and llama.cpp start from it inherit that: on a machine with few cores the decoder of the
next utterance gets the CPU first, and the alignment takes what is left. Jobs run one at a time (one
aligner, one llama.cpp context, not thread-safe) in two lanes: foreground (finals of dictation and
WebSocket streams, in order) before background (OpenAI requests, whose files may be long).

``in_order(fn)`` keeps events in the order the pipeline made them: while finals wait for their words,
later events of dictation and WebSocket streams (the next utterance's partials) queue behind them
instead of overtaking them (OpenAI and Wyoming results go to their own requests and never wait).

Failures: no bundle, or one that does not load → ONE warning line (what to run), and the host is
unavailable from then on (finals go out without words); ``retry()`` (a reload that turns word
timestamps on) tries again. A failed alignment is the caller's one log line; the final still goes out.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

log = logging.getLogger("qasr.aligner")

PULL_HINT = "run `qasr-daemon models pull aligner`"
NICE = 10  # added to the aligner thread's nice value (and so to the compute threads it starts)


@dataclass(frozen=True)
class AlignerHostOptions:
    threads: int = 0  # 0 = physical cores (engine.threads)
    device: str = "cpu"  # engine.device
    verify: str = "size"  # model.verify


class AlignerHost:
    """``path``: the aligner bundle (None: none installed). ``warn(line)``: the one warning when it cannot load."""

    def __init__(self, path: Path | None, options: AlignerHostOptions = AlignerHostOptions(),
                 warn: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.options = options
        self._warn = warn or (lambda line: log.warning("%s", line))
        self._aligner: Any = None  # qasr.engine.align.aligner.ForcedAligner, once loaded
        self.error: str | None = None if path is not None else self._missing()
        self._warned = False
        self._cond = threading.Condition()
        self._foreground: collections.deque = collections.deque()
        self._background: collections.deque = collections.deque()
        self._running_foreground = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.aligned = 0  # alignments done
        self.failed = 0  # alignments that raised

    @staticmethod
    def _missing() -> str:
        return f"word timestamps need the forced aligner, which is not installed; {PULL_HINT}"

    # -- state -----------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """True unless there is no bundle or it failed to load (before loading: True if there is one)."""
        return self.error is None

    @property
    def loaded(self) -> bool:
        return self._aligner is not None

    @property
    def closing(self) -> bool:
        return self._stopping

    def warn_unavailable(self) -> None:
        """Say once why there are no word timestamps."""
        if self.error is not None and not self._warned:
            self._warned = True
            self._warn(self.error)

    def retry(self, path: Path | None) -> None:
        """Try again after a failure (a reload turned word timestamps on; the user may have pulled it)."""
        with self._cond:
            if self._aligner is not None:
                return
            self.path = path
            self.error = None if path is not None else self._missing()
            self._warned = False

    # -- jobs --------------------------------------------------------------------------------------
    def preload(self) -> None:
        """Load on the aligner thread now (a background job), so the first final does not wait for it."""
        self.submit(lambda host: host.aligner(), background=True)

    def submit(self, job: Callable[["AlignerHost"], Any], background: bool = False) -> Future:
        """Run ``job(host)`` on the aligner thread; its result or exception in the returned future."""
        future: Future = Future()
        with self._cond:
            if self._stopping:
                future.set_exception(RuntimeError("the daemon is stopping"))
                return future
            (self._background if background else self._foreground).append((job, future))
            self._start()
            self._cond.notify_all()
        return future

    def in_order(self, fn: Callable[[], None]) -> None:
        """``fn()`` now if no foreground job is queued or running, else after them (same lane, in order)."""
        with self._cond:
            if self._foreground or self._running_foreground:
                self._foreground.append((lambda host: fn(), None))
                self._cond.notify_all()
                return
            self._call(fn)  # under the lock: a job queued meanwhile cannot overtake it

    def drain(self, timeout_s: float) -> bool:
        """Wait until no foreground job is queued or running (finals waiting for words are out)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._foreground and not self._running_foreground, timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        if self._aligner is not None and (thread is None or not thread.is_alive()):
            try:
                self._aligner.close()
            except Exception:
                log.debug("closing the aligner failed", exc_info=True)
            self._aligner = None

    # -- on the aligner thread -------------------------------------------------------------------
    def aligner(self) -> Any:
        """The loaded ForcedAligner (aligner thread only); QasrError when there is none."""
        from qasr.errors import QasrError

        if self._aligner is None:
            if self.error is not None:
                raise QasrError(self.error)
            try:
                from qasr.engine.align.aligner import AlignerOptions, ForcedAligner

                o = self.options
                self._aligner = ForcedAligner(self.path, AlignerOptions(threads=o.threads, device=o.device,
                                                                        verify=o.verify))
                log.info("forced aligner loaded from %s", self.path)
            except Exception as exc:  # BundleError, a missing optional module, a broken file
                detail = str(exc) if isinstance(exc, QasrError) else f"{type(exc).__name__}: {exc}"
                self.error = f"word timestamps are off: the aligner at {self.path} did not load ({detail}); {PULL_HINT}"
                self.warn_unavailable()
                raise QasrError(self.error) from None
        return self._aligner

    def align(self, audio: np.ndarray, text: str, language: str | None) -> list[dict]:
        """Words of ``text`` in ``audio`` (aligner thread only): ``[{"word", "start", "end"}]``, seconds."""
        try:
            words = self.aligner().align(audio, text, language)
        except Exception:
            self.failed += 1
            raise
        self.aligned += 1
        return [w.to_dict() for w in words]

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="aligner", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        lower_priority(NICE)
        while True:
            with self._cond:
                while not self._foreground and not self._background and not self._stopping:
                    self._cond.wait()
                if self._foreground:
                    job, future = self._foreground.popleft()
                    self._running_foreground = True
                elif self._background and not self._stopping:
                    job, future = self._background.popleft()
                else:  # stopping: queued foreground jobs ran (their finals went out); drop the rest
                    dropped, self._background = list(self._background), collections.deque()
                    self._cond.notify_all()
                    for _, future in dropped:
                        future.set_exception(RuntimeError("the daemon is stopping"))
                    return
            try:
                result = job(self)
            except BaseException as exc:
                if future is not None:
                    future.set_exception(exc)
                else:
                    log.exception("aligner job failed")
            else:
                if future is not None:
                    future.set_result(result)
            finally:
                with self._cond:
                    self._running_foreground = False
                    self._cond.notify_all()

    @staticmethod
    def _call(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("publishing an event failed")


def lower_priority(nice: int) -> None:
    """Raise this thread's nice value by ``nice`` (Linux: per thread; threads started later inherit it)."""
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run at normal priority
        log.debug("aligner thread keeps its priority: %s", exc)
