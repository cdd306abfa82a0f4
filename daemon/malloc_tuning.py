"""glibc malloc settings for a process that runs all day (called before any worker thread starts).

By default glibc gives threads their own heaps (up to 8 per core) and raises its mmap threshold after
the first large block is freed, so later large blocks (encoder intermediates, audio buffers) come from
those heaps and stay resident once freed: the daemon's RSS grew by ~250 MB over its first minutes of
speech. Two heaps and a fixed 128 KiB threshold hand large blocks back to the system when they are
freed (measured with scripts/bench_soak.py, docs/benchmarks.md). Elsewhere than glibc, nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("qasr.malloc")

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENA_MAX = 2
MMAP_THRESHOLD_BYTES = 128 * 1024


def tune_malloc() -> bool:
    """True when glibc accepted both settings."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(M_ARENA_MAX, ARENA_MAX)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    if not ok:
        log.debug("mallopt refused the arena/mmap settings")
    return ok
