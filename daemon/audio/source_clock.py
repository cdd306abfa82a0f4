"""A source's audio clock → wall-clock time, so utterances of different sources can be put in one order.

Each source's segmenter counts its own samples (``t_s``); the source marks, after each block it processed,
which stream time that block ended at and when. ``wall(t_s)`` maps a stream time through the newest mark,
so capture gaps (a device reopened) and slow clock drift never accumulate."""

from __future__ import annotations

import threading
import time


class SourceClock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mark: tuple[float, float] | None = None  # (stream seconds, wall seconds)

    def mark(self, t_s: float, wall: float | None = None) -> None:
        with self._lock:
            self._mark = (float(t_s), time.time() if wall is None else float(wall))

    def wall(self, t_s: float) -> float | None:
        """Wall-clock (epoch seconds) of stream time ``t_s``; None before the first mark."""
        with self._lock:
            mark = self._mark
        return None if mark is None else mark[1] - (mark[0] - float(t_s))
