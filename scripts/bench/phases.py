"""The daemon measurements with a silent and a speaking microphone: idle, final_latency, clients."""

from __future__ import annotations

import time

from bench.procfs import cpu_seconds, thread_count
from bench.report import Reporter, log, median, r1
from bench.utterance import counters_delta, engine_final_ms, play_and_wait, stream_clock, warmup
from tests.harness.daemon import DaemonProcess
from tests.harness.events import Subscribers
from tests.harness.pulse import PulseServer
from tests.harness.speech import SpeechFile


def phase_idle(daemon: DaemonProcess, subs: Subscribers, report: Reporter, idle_s: float, settle_s: float) -> None:
    daemon.wait_state(("listening",), timeout=60)
    time.sleep(settle_s)
    pid = daemon.pid()
    status0, metrics0 = daemon.control("status"), daemon.metrics()
    t0, cpu0 = time.monotonic(), cpu_seconds(pid)
    time.sleep(idle_s)
    cpu1, t1 = cpu_seconds(pid), time.monotonic()
    status1, metrics1 = daemon.control("status"), daemon.metrics()
    seen: dict[str, int] = {}
    for t, m in subs.events(0, t0):
        if t0 <= t <= t1:
            seen[m["type"]] = seen.get(m["type"], 0) + 1
    delta = counters_delta(metrics0, metrics1)
    model_work = {
        "utterances": status1["utterances"] - status0["utterances"],
        "published_partial": delta.get("published_partial", 0),
        "published_final": delta.get("published_final", 0),
        "published_vad": delta.get("published_vad", 0),
    }
    report("idle", seconds=round(t1 - t0, 1), cpu_pct=round(100.0 * (cpu1 - cpu0) / (t1 - t0), 2),
           cpu_s=round(cpu1 - cpu0, 2), no_model_work=not any(model_work.values()), model_work=model_work,
           state=status1["state"], events_seen=seen, threads=thread_count(pid),
           input_device=status1.get("input_device"))


def phase_latency(daemon: DaemonProcess, subs: Subscribers, pulse: PulseServer, report: Reporter,
                  speeches: list[SpeechFile], repeats: int, hangover_ms: int, onset_ms: int,
                  warmed: set[int]) -> None:
    onset_s = max(1, -(-onset_ms // 30)) * 0.03  # the segmenter decides after ceil(onset / 30 ms) voiced frames
    warmup(daemon, subs, pulse, speeches[0], warmed)
    for speech in speeches:
        for run in range(repeats):
            daemon.wait_state(("listening",), timeout=120)
            time.sleep(0.5)
            got = play_and_wait(daemon, subs, pulse, speech)
            base = {"speech_s": round(speech.speech_s, 2), "run": run}
            clock = stream_clock(got["events"], got["finals"][-1][0], onset_s) if got["finals"] else None
            if clock is None:
                report("final_latency", **base, measured=False,
                       reason="no final (the VAD found no speech, or the utterance was too short)")
                continue
            t_final, final = got["finals"][-1]
            timings = final.get("timings") or {}
            engine_ms, daemon_ms = engine_final_ms(timings), timings.get("latency_ms")
            speech_end = clock["speech_start"] + speech.speech_s  # the played file's voiced span, on the stream
            to_final = (t_final - speech_end) * 1000.0
            after_utt = (t_final - clock["utt_end"]) * 1000.0
            report("final_latency", **base, utterances=len(got["finals"]),
                   audio_s=round(final["audio_end"] - final["audio_start"], 2), partials=got["partials"],
                   speech_end_to_final_ms=r1(to_final), hangover_ms=hangover_ms,
                   engine_final_ms=r1(engine_ms), prepared=final.get("prepared"),
                   # a prepared final's compute ran during the hangover: no overhead to derive
                   overhead_ms=(r1(to_final - hangover_ms - engine_ms)
                                if engine_ms is not None and not final.get("prepared") else None),
                   utt_end_to_final_ms=r1(after_utt), daemon_latency_ms=r1(daemon_ms),
                   ws_overhead_ms=r1(after_utt - daemon_ms) if daemon_ms is not None else None,
                   speech_end_to_utt_end_ms=r1((clock["utt_end"] - speech_end) * 1000.0),
                   played_end_to_final_ms=r1((t_final - got["t_speech_end"]) * 1000.0),
                   playback_delay_ms=r1((clock["speech_start"] - (got["t_play"] + speech.lead_s)) * 1000.0),
                   compute_ms=r1(timings.get("compute_ms")), cpu_s=round(got["cpu_s"], 2))


def _final_spread(subs: Subscribers, n: int, got: dict) -> tuple[float | None, int]:
    """(last − first arrival of the final over the ``n`` clients in ms, clients that missed it)."""
    final_id = got["finals"][-1][1]["utterance_id"]
    arrivals, missing = [], 0
    for i in range(n):
        times = [t for t, m in subs.events(i, got["t_play"])
                 if m["type"] == "final" and m["utterance_id"] == final_id]
        if times:
            arrivals.append(times[0])
        else:
            missing += 1
    return ((max(arrivals) - min(arrivals)) * 1000.0 if arrivals else None), missing


def phase_clients(daemon: DaemonProcess, subs: Subscribers, pulse: PulseServer, report: Reporter,
                  speech: SpeechFile, n_clients: int, repeats: int, warmed: set[int]) -> None:
    cpu: dict[int, list[float]] = {1: [], n_clients: []}
    partials: dict[int, list[int]] = {1: [], n_clients: []}
    bench_cpu: dict[int, list[float]] = {1: [], n_clients: []}
    spreads: list[float] = []
    missing = 0
    warmup(daemon, subs, pulse, speech, warmed)
    for run in range(repeats):
        for n in (1, n_clients):
            subs.resize(n)
            daemon.wait_state(("listening",), timeout=120)
            time.sleep(0.5)
            got = play_and_wait(daemon, subs, pulse, speech)
            cpu[n].append(got["cpu_s"])
            partials[n].append(got["partials"])
            bench_cpu[n].append(got["bench_cpu_s"])
            if n > 1 and got["finals"]:
                time.sleep(0.3)
                spread, lost = _final_spread(subs, n, got)
                missing += lost
                if spread is not None:
                    spreads.append(spread)
            log(f"clients run {run}: {n} subscriber(s), daemon cpu {got['cpu_s']:.2f} s over "
                f"{got['t_done'] - got['t_play']:.1f} s")
    subs.resize(1)
    one, many = median(cpu[1]), median(cpu[n_clients])
    report("clients", clients=n_clients, speech_s=round(speech.speech_s, 2), rounds=repeats,
           cpu_s_1=round(one, 3), cpu_s_n=round(many, 3),
           extra_cpu_pct=round(100.0 * (many / one - 1.0), 1) if one else None,
           extra_cpu_s=round(many - one, 3),
           noise_pct=round(100.0 * (max(cpu[1]) - min(cpu[1])) / one, 1) if one and len(cpu[1]) > 1 else None,
           cpu_s_1_all=[round(c, 3) for c in cpu[1]],
           cpu_s_n_all=[round(c, 3) for c in cpu[n_clients]],
           partials_1=partials[1], partials_n=partials[n_clients],
           bench_cpu_s_1=round(median(bench_cpu[1]), 3), bench_cpu_s_n=round(median(bench_cpu[n_clients]), 3),
           final_spread_ms=r1(median(spreads)), finals_missing=missing)
