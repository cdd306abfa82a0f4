"""One utterance through the daemon: play it into the microphone, wait for its final, and place the
daemon's stream time on this process's clock."""

from __future__ import annotations

import time

from bench.procfs import cpu_seconds
from bench.report import BenchError, log
from tests.harness.daemon import DaemonProcess
from tests.harness.events import Subscribers
from tests.harness.pulse import PulseServer
from tests.harness.speech import SpeechFile
from tests.harness.processes import stop_process


def wait_utterances_done(subs: Subscribers, daemon: DaemonProcess, since: float,
                         timeout: float) -> list[tuple[float, dict]]:
    """Wait until speech that started after ``since`` is over: a vad speech=false event, no speech open
    after it, a final after it, and the daemon back to ``listening``. Returns the recorder's events."""
    deadline = time.monotonic() + timeout
    last_poll = 0.0
    while time.monotonic() < deadline:
        events = subs.events(0, since)
        vads = [(t, m) for t, m in events if m["type"] == "vad"]
        if vads and not vads[-1][1]["speech"]:
            t_end = vads[-1][0]
            after = [m for t, m in events if t >= t_end]
            # "listening" after the last speech end means the pipeline is idle: every final is out (a final
            # is published before the state changes); a too-short segment is cancelled without a final
            has_final = any(m["type"] == "final" for _, m in events)
            listening = any(m["type"] == "state" and m["state"] == "listening" for m in after)
            if has_final and listening:
                return events
            if has_final and time.monotonic() - last_poll > 0.5:  # no state event seen (changed between polls)
                last_poll = time.monotonic()
                status = daemon.control("status")
                if status["state"] == "listening" and status["pending_utterances"] == 0:
                    return subs.events(0, since)
        time.sleep(0.02)
    raise BenchError(f"no final within {timeout:.0f} s (events: {[m['type'] for _, m in subs.events(0, since)]}); "
                     f"daemon log:\n{daemon.log_tail()}")


def play_and_wait(daemon: DaemonProcess, subs: Subscribers, pulse: PulseServer, speech: SpeechFile) -> dict:
    """Play one utterance into the microphone; returns timing facts from the recorder's events."""
    pid = daemon.pid()
    cpu0, own0 = cpu_seconds(pid), time.process_time()
    t_play = time.monotonic()
    player = pulse.play(speech.path, wait=False)
    t_speech_end = t_play + speech.speech_end_s
    try:
        player.wait(timeout=speech.speech_end_s + speech.tail_s + 60)
    finally:
        stop_process(player)
    events = wait_utterances_done(subs, daemon, t_play, timeout=120 + 10 * speech.speech_s)
    t_done = time.monotonic()
    cpu1, own1 = cpu_seconds(pid), time.process_time()
    return {"t_play": t_play, "t_speech_end": t_speech_end, "t_done": t_done, "cpu_s": cpu1 - cpu0,
            "bench_cpu_s": own1 - own0, "events": events,
            "finals": [(t, m) for t, m in events if m["type"] == "final"],
            "partials": sum(1 for _, m in events if m["type"] == "partial")}


def engine_final_ms(timings: dict) -> float | None:
    """The engine's own final compute, if the daemon puts it into the final's timings."""
    for key in ("final_ms", "total_ms", "engine_final_ms"):
        if isinstance(timings.get(key), (int, float)):
            return float(timings[key])
    return None


def stream_clock(events: list[tuple[float, dict]], t_final: float, onset_s: float) -> dict | None:
    """Map the daemon's stream clock to this process's wall clock for the utterance whose final arrived
    at ``t_final``.

    ``vad`` events carry stream time (samples captured / 16000). speech=true is decided ``onset_s`` after
    its ``time`` (the start of the voiced run), speech=false at its ``time`` (hangover over); each event
    arrives at wall = offset + decision time + lag, lag >= 0 (capture block, processing, WebSocket; large
    while the decoder is busy). The smallest offset over the utterance's events is the best estimate.
    Returns the wall times of the speech start (first voiced frame), of the utterance end, and the offset."""
    vads = [(t, m) for t, m in events if m["type"] == "vad" and t <= t_final]
    ends = [(t, m) for t, m in vads if not m["speech"]]
    starts = [(t, m) for t, m in vads if m["speech"]]
    if not ends or not starts:
        return None
    offsets = [t - float(m["time"]) - (onset_s if m["speech"] else 0.0) for t, m in vads]
    offset = min(offsets)
    return {"offset": offset, "speech_start": offset + float(starts[0][1]["time"]),
            "utt_end": offset + float(ends[-1][1]["time"])}


def warmup(daemon: DaemonProcess, subs: Subscribers, pulse: PulseServer, speech: SpeechFile,
           warmed: set[int]) -> None:
    """One utterance that is not reported: the first one after start-up pays one-time costs. ``warmed``
    holds the pids of the daemons already warmed up."""
    if daemon.pid() in warmed:
        return
    warmed.add(daemon.pid())
    daemon.wait_state(("listening",), timeout=120)
    got = play_and_wait(daemon, subs, pulse, speech)
    log(f"warm-up utterance: {len(got['finals'])} final(s), daemon cpu {got['cpu_s']:.2f} s")


def counters_delta(before: dict, after: dict) -> dict:
    a, b = before.get("counters", {}), after.get("counters", {})
    return {k: b.get(k, 0) - a.get(k, 0) for k in sorted(set(a) | set(b)) if b.get(k, 0) != a.get(k, 0)}
