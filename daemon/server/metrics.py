"""Run-time metrics: latency percentiles, real-time factor, counters. Thread-safe, no I/O.

The WebSocket server feeds it from every transcript event it sends (``observe_event``): the app only has to
put the standard timing keys into ``partial``/``final`` events:

- ``timings.latency_ms``: wall time from the end of the audio the event covers to the event being emitted;
- ``timings.compute_ms`` (finals): engine time spent on the utterance; with the audio span it gives the RTF;
- ``prepared`` (finals): the final was computed at a pause ahead of the end; counted as ``finals_prepared``.

Anything else can be recorded directly: ``observe(name, value)``, ``count(name, n)``, ``set_gauge(name, v)``.
``snapshot()`` returns JSON for ``/metrics``; ``prometheus()`` the text exposition format.
"""

from __future__ import annotations

import math
import re
import threading
from collections import deque

DEFAULT_WINDOW = 1000  # samples kept per series for the percentiles


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class Metrics:
    def __init__(self, window: int = DEFAULT_WINDOW):
        self._lock = threading.Lock()
        self._window = window
        self._series: dict[str, deque[float]] = {}
        self._counters: dict[str, int] = {}
        self._gauges: dict[str, float] = {}

    def observe(self, name: str, value: float) -> None:
        if not math.isfinite(value):
            return
        with self._lock:
            series = self._series.get(name)
            if series is None:
                series = self._series[name] = deque(maxlen=self._window)
            series.append(float(value))

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + n

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self._gauges[name] = float(value)

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters.get(name, 0)

    def observe_event(self, event: dict) -> None:
        """Record the standard timings of a ``partial`` or ``final`` event (see module docstring)."""
        etype = event.get("type")
        if etype not in ("partial", "final"):
            return
        timings = event.get("timings") or {}
        latency = timings.get("latency_ms")
        if isinstance(latency, (int, float)):
            self.observe(f"{etype}_latency_ms", float(latency))
        if etype == "final":
            if event.get("prepared") is True:
                self.count("finals_prepared")
            compute = timings.get("compute_ms")
            try:
                audio_s = float(event["audio_end"]) - float(event["audio_start"])
            except (KeyError, TypeError, ValueError):
                audio_s = 0.0
            if isinstance(compute, (int, float)) and audio_s > 0:
                self.observe("rtf", float(compute) / 1000.0 / audio_s)
            align = timings.get("align_ms")  # word timestamps: the aligner's time for this final
            if isinstance(align, (int, float)):
                self.observe("final_align_ms", float(align))

    def snapshot(self) -> dict:
        """``{"series": {name: {count, p50, p95, mean}}, "counters": {...}, "gauges": {...}}``."""
        with self._lock:
            series = {name: list(values) for name, values in self._series.items()}
            counters = dict(self._counters)
            gauges = dict(self._gauges)
        summary = {}
        for name, values in series.items():
            summary[name] = {
                "count": len(values),
                "p50": _round(percentile(values, 50)),
                "p95": _round(percentile(values, 95)),
                "mean": _round(sum(values) / len(values)) if values else None,
            }
        return {"series": summary, "counters": counters, "gauges": gauges}

    def prometheus(self, extra_gauges: dict[str, float] | None = None, prefix: str = "qasr") -> str:
        snap = self.snapshot()
        lines: list[str] = []
        for name, stats in sorted(snap["series"].items()):
            metric = _metric_name(prefix, name)
            lines.append(f"# TYPE {metric} summary")
            for q, key in ((0.5, "p50"), (0.95, "p95")):
                if stats[key] is not None:
                    lines.append(f'{metric}{{quantile="{q}"}} {stats[key]}')
            lines.append(f"{metric}_count {stats['count']}")
        for name, value in sorted(snap["counters"].items()):
            metric = _metric_name(prefix, name) + "_total"
            lines += [f"# TYPE {metric} counter", f"{metric} {value}"]
        gauges = dict(snap["gauges"])
        for name, value in (extra_gauges or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                gauges[name] = float(value)
        for name, value in sorted(gauges.items()):
            metric = _metric_name(prefix, name)
            lines += [f"# TYPE {metric} gauge", f"{metric} {_format(value)}"]
        return "\n".join(lines) + "\n"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _format(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _metric_name(prefix: str, name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", f"{prefix}_{name}")
