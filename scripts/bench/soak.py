"""The soak: a working day of dictation compressed — espeak-ng phrases with pauses into the virtual
microphone for ``minutes``, while the daemon's resident memory is sampled from /proc.

Counts that must agree at the end: phrases played, utterances the daemon saw (status), finals a
subscriber received, journal lines; errors are ERROR lines in the daemon's log plus ``error`` events.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.procfs import memory_mb
from tests.harness.daemon import DaemonProcess
from tests.harness.events import Subscribers
from tests.harness.pulse import PulseServer
from tests.harness.speech import SPEECH_WORDS, espeak_wav

PHRASE_WORDS = (3, 25)  # words per phrase: a short command to a long sentence
PAUSE_S = (1.0, 4.0)  # silence between phrases (beyond the VAD hangover)


class RssSampler:
    """``(minutes since start, VmRSS MB)`` every ``every_s`` seconds on a thread."""

    def __init__(self, pid: int, every_s: float) -> None:
        self.pid, self.every_s = pid, every_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            rss = memory_mb(self.pid)["rss_mb"]
            if rss is not None:
                self.samples.append(((time.monotonic() - self._t0) / 60.0, rss))
            if self._stop.wait(self.every_s):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def phrases(seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    while True:
        n = rng.randint(*PHRASE_WORDS)
        start = rng.randrange(len(SPEECH_WORDS))
        yield " ".join(SPEECH_WORDS[(start + i) % len(SPEECH_WORDS)] for i in range(n))


def slope_mb_per_hour(samples: list[tuple[float, float]], skip_min: float) -> float | None:
    """Least-squares slope of RSS over time after the first ``skip_min`` minutes (warm-up)."""
    points = [(t, r) for t, r in samples if t >= skip_min]
    if len(points) < 3 or points[-1][0] - points[0][0] <= 0:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mr = sum(r for _, r in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    cov = sum((t - mt) * (r - mr) for t, r in points)
    return round(cov / var * 60.0, 1) if var else None


def run_soak(root: Path, model: Path, minutes: float, sample_s: float, overrides: list[str], seed: int = 0) -> dict:
    pulse = PulseServer(root / "pulse")
    pulse.start()
    daemon = DaemonProcess(root / "daemon", pulse.client_env)
    sampler = subs = None
    try:
        sets = ["output.sink=none", "hotkey.enabled=false", "journal.enabled=true", *overrides]
        daemon.start(model, *[a for s in sets for a in ("--set", s)])
        daemon.wait_state(("listening",), timeout=120)
        pid = daemon.pid()
        subs = Subscribers.of(daemon)
        start_mb = memory_mb(pid)["rss_mb"]
        sampler = RssSampler(pid, sample_s)
        rng = random.Random(seed)
        played, first_final_mb, t0 = 0, None, time.monotonic()
        for text in phrases(seed):
            if time.monotonic() - t0 >= minutes * 60.0:
                break
            mark = subs.mark()
            pulse.play(espeak_wav(text))
            played += 1
            time.sleep(rng.uniform(*PAUSE_S))
            if first_final_mb is None and subs.wait(mark, "final", timeout_s=120) is not None:
                first_final_mb = memory_mb(pid)["rss_mb"]
        wall_min = (time.monotonic() - t0) / 60.0
        daemon.wait_status(lambda s: s.get("pending_utterances") == 0 and s["state"] == "listening", timeout=300)
        sampler.stop()
        status = daemon.status()
        events = [e for _, e in subs.events()]
        journal = daemon.journal_file.read_text().splitlines() if daemon.journal_file.exists() else []
        errors = sum(" ERROR " in line for line in daemon.log().splitlines())
        rss = [r for _, r in sampler.samples]
        return {
            "minutes": round(wall_min, 1), "phrases": played, "utterances": status.get("utterances"),
            "pending_at_end": status.get("pending_utterances"),
            "finals": sum(e["type"] == "final" for e in events),
            "nonempty_finals": sum(e["type"] == "final" and bool(e["text"].strip()) for e in events),
            "journal_lines": len(journal), "errors": errors + sum(e["type"] == "error" for e in events),
            "rss_start_mb": start_mb, "rss_first_final_mb": first_final_mb,
            "rss_max_mb": max(rss) if rss else None, "rss_end_mb": rss[-1] if rss else None,
            "rss_slope_mb_per_h": slope_mb_per_hour(sampler.samples, skip_min=min(5.0, wall_min / 4)),
            "curve": [(round(t, 2), r) for t, r in sampler.samples],
        }
    finally:
        if sampler is not None:
            sampler.stop()
        if subs is not None:
            subs.close()
        daemon.stop()
        pulse.stop()
