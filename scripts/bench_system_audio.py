#!/usr/bin/env python3
"""System audio benchmark (issue 25): the real daemon, a private PulseAudio with an output null sink.

    .venv/bin/python scripts/bench_system_audio.py --model DIR [--rounds 3] [--idle-s 30] [--json]

- ``idle``: nothing playing, for ``--idle-s`` seconds, first with the microphone alone (``vsink.monitor``),
  then with system audio on too (``system-audio on``: ``speakers.monitor``): CPU of the daemon and of its
  children (parec, pactl subscribe) in % of one core, and the events that came (must be 0).
- ``system_final``: espeak-ng speech played into the default output ``speakers``; ``end_to_final_ms`` =
  arrival of the system ``final`` − end of the speech (paplay's exit − the file's trailing silence),
  alone and ``with_dictation`` (other speech played into the microphone at the same time, starting 0.4 s
  later and ending after it: the LIVE lane waits for dictation's final). ``daemon_latency_ms`` = the final's
  ``timings.latency_ms`` (the utterance's end, after the VAD hangover → final emitted; includes any wait
  behind dictation); ``mic_latency_ms``: the same for dictation's final. Medians over ``--rounds``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.bench.procfs import cpu_seconds, machine  # noqa: E402
from tests.harness.daemon import DaemonProcess  # noqa: E402
from tests.harness.events import Subscribers  # noqa: E402
from tests.harness.pulse import PulseServer  # noqa: E402
from tests.harness.speech import espeak_wav, load_wav  # noqa: E402

SYSTEM_TEXT = "the weather today will be sunny with a light breeze from the west"
MIC_TEXT = "please remind me to call the office tomorrow morning about the new schedule"


def trailing_silence_s(path: Path) -> float:
    audio = load_wav(path)
    voiced = np.flatnonzero(np.abs(audio) > 0.02)
    return (audio.size - (voiced[-1] + 1 if voiced.size else audio.size)) / 16000


def family_cpu(pid: int) -> float:
    import psutil

    total = cpu_seconds(pid)
    for child in psutil.Process(pid).children(recursive=True):
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def run_round(daemon, events, pulse, with_dictation: bool) -> tuple[float, float, float] | None:
    system_wav, mic_wav = espeak_wav(SYSTEM_TEXT), espeak_wav(MIC_TEXT)
    mark = events.mark()
    player = pulse.play(system_wav, wait=False, sink="speakers")
    dictation = None
    if with_dictation:
        time.sleep(0.4)
        dictation = threading.Thread(target=pulse.play, args=(mic_wav,), kwargs={"sink": "vsink"})
        dictation.start()
    player.wait(timeout=60)
    speech_end = time.monotonic() - trailing_silence_s(system_wav)
    final = events.wait(mark, "final", timeout_s=120, source="system")
    mic_latency = float("nan")
    if dictation is not None:
        dictation.join()
        mic = events.wait(mark, "final", timeout_s=120, source="mic")
        mic_latency = float((mic or {}).get("timings", {}).get("latency_ms", float("nan")))
    time.sleep(1.0)
    arrival = next((t for t, m in events.events() if m is final), None)
    if arrival is None or len(events.since(mark, "final", source="system")) != 1:
        return None  # no final, or the speech was cut in two: not this measurement
    return (arrival - speech_end) * 1000.0, float(final["timings"].get("latency_ms", float("nan"))), mic_latency


def idle(daemon, events, seconds: float, label: str) -> dict:
    pid = daemon.pid()
    mark, cpu0, t0 = events.mark(), family_cpu(pid), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return {"bench": "idle", "sources": label, "seconds": round(wall, 1),
            "cpu_pct": round(100.0 * (family_cpu(pid) - cpu0) / wall, 2), "events": len(events.since(mark))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-s", type=float, default=30.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="qasr-bench-system-"))
    pulse = PulseServer(root / "pulse", outputs=("speakers",))
    daemon = events = None
    results = []
    try:
        pulse.start()
        daemon = DaemonProcess(root / "daemon", extra_env=pulse.client_env)
        daemon.start(Path(args.model), "--set", "vad.hangover_ms=450")
        daemon.wait_state(("listening",), timeout=60)
        events = Subscribers.of(daemon)
        time.sleep(3.0)
        results.append(idle(daemon, events, args.idle_s, "mic"))
        daemon.control("system-audio", action="on")
        daemon.wait_status(lambda s: (s.get("system_audio") or {}).get("state") == "running", timeout=60)
        time.sleep(3.0)
        results.append(idle(daemon, events, args.idle_s, "mic+system"))
        for with_dictation in (False, True):
            runs = [run_round(daemon, events, pulse, with_dictation) for _ in range(args.rounds)]
            got = [x for x in runs if x is not None]
            results.append({"bench": "system_final", "with_dictation": with_dictation,
                            "end_to_final_ms": round(statistics.median(x[0] for x in got), 1) if got else None,
                            "daemon_latency_ms": round(statistics.median(x[1] for x in got), 1) if got else None,
                            "mic_latency_ms": round(statistics.median(x[2] for x in got), 1) if with_dictation and got
                            else None,
                            "runs_ms": [round(float(x[0]), 1) for x in got], "cut_or_missing": len(runs) - len(got)})
    finally:
        if events is not None:
            events.close()
        if daemon is not None:
            daemon.stop()
        pulse.stop()
        shutil.rmtree(root, ignore_errors=True)
    host = machine()
    for result in results:
        result["host"] = host
        print(json.dumps(result) if args.json else "  ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
