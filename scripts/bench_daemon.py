#!/usr/bin/env python3
"""Daemon-level benchmarks (issues 4 and 5): the real daemon as a process, a virtual microphone, Xvfb.

    .venv/bin/python scripts/bench_daemon.py --model DIR [--threads N] [--skip-typing] [--json]

Built on tests/harness (PulseAudio, Xvfb, speech, the daemon process driver, WebSocket subscribers); the
measurements live in scripts/bench/. Everything runs in a private temp folder: XDG dirs for the daemon, a private PulseAudio server whose
null sink ``vsink`` is the microphone (its monitor is the default source), an Xvfb display for the
typing part, and a Tk window with a focused Entry as the typing target. Everything started is stopped
at the end (also on Ctrl-C). One line per measurement (``--json``: one JSON object per line, with
``"bench"`` naming the measurement).

Measurements
- ``idle``: the daemon listens to a silent microphone for ``--idle-s`` seconds. ``cpu_pct`` = CPU time
  of the daemon process (all threads, /proc/PID/stat utime+stime) over wall time, in % of one core.
  Evidence of no model work: the deltas over the window of the server's /metrics counters
  (published_partial/final/vad), of status ``utterances``, and the events a subscriber received.
- ``memory``: VmRSS and VmHWM (peak RSS) from /proc/PID/status after start-up and after the speech runs.
- ``final_latency`` (vad mode, streaming engine): espeak-ng speech played into the null sink while a
  WebSocket subscriber records the arrival time (time.monotonic) of every event. The ``vad`` events
  carry the daemon's stream time; with their arrival times they map stream time to wall time (see
  ``stream_clock``), which places the end of speech (first voiced frame + the file's voiced duration)
  and the end of the utterance (hangover over) on this process's clock. Per utterance:
  ``speech_end_to_final_ms`` = final arrival − end of speech, as the daemon heard it.
  ``hangover_ms`` = vad.hangover_ms (configuration; ``speech_end_to_utt_end_ms`` is it, measured).
  ``engine_final_ms`` = the engine's own finish() compute when the final's timings carry it
  (``final_ms``/``total_ms``), else None; ``prepared`` = the final was computed at the pause, during the
  hangover (then ``engine_final_ms`` is that computation). ``overhead_ms`` = speech_end_to_final −
  hangover − engine_final (target ≤ 100 ms; only for finals not prepared). ``utt_end_to_final_ms`` = final arrival − end of the utterance;
  ``daemon_latency_ms`` = the final's ``timings.latency_ms`` (pipeline: utterance end → final emitted:
  decoder queueing behind a partial step + final compute, the engine's final latency as the daemon runs
  it); ``ws_overhead_ms`` = utt_end_to_final − daemon_latency (text shaping, journal, publish, WebSocket).
  ``played_end_to_final_ms`` = final arrival − (paplay start + offset of the speech end in the file):
  adds paplay start-up and the playback → capture path (``playback_delay_ms``, measured at speech start).
  ``partials``, ``compute_ms`` (engine time for the utterance), ``cpu_s`` (daemon CPU during it).
- ``clients``: daemon CPU seconds for the same utterance (the longest of ``--lengths``) with 1 and with
  ``--clients`` subscribers, alternating for ``--client-rounds`` rounds; ``extra_cpu_pct`` = (median CPU
  with N / median CPU with 1 − 1) × 100 (target ≤ 5 %). ``noise_pct`` = spread of the 1-subscriber runs
  over their median: an extra below it is not significant. The number of partials per run is shown
  because the engine's step cadence adapts to load (one step more or less moves CPU by a few %);
  ``bench_cpu_s_*`` is this process's own CPU (it shares the cores); ``final_spread_ms`` = last − first
  final arrival over the N clients.
- ``typing`` (push-to-talk, issue 5): daemon started with DISPLAY, vad.mode=ptt, hotkey F9 in hold
  mode, output.sink=type or paste, and a replacements.txt rule mapping every final to a fixed
  40-character string. F9 is pressed (XTEST), the speech is played, F9 is released at the end of the
  speech; the Tk helper timestamps every change of the Entry. ``release_to_last_char_ms`` = last
  character visible − key release; the fixed tails (the segmenter's 100 ms ptt release tail, the
  hotkey's 40 ms release debounce; hotkey.release_tail_s only adds audio while the VAD still hears
  voice) are part of it and reported apart, with ``release_to_end_ms`` (release → the pipeline's end()).
- ``sink_speed``: each sink (type, paste) driven directly in this process (qasr.daemon.desktop.output) into
  the same Entry: ``cps`` = characters / (deliver call start → last character visible).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.harness; scripts/ (bench) is sys.path[0]

from bench.env import BenchEnv, missing_tools  # noqa: E402
from bench.phases import phase_clients, phase_idle, phase_latency  # noqa: E402
from bench.procfs import machine, memory_mb  # noqa: E402
from bench.report import BenchError, Reporter, log  # noqa: E402
from bench.typing_phases import HOTKEY, phase_sink_speed, phase_typing  # noqa: E402
from tests.harness.speech import make_speech_file  # noqa: E402


def run(args: argparse.Namespace) -> int:
    report = Reporter(args.json)
    model = Path(args.model).expanduser().resolve()
    if not (model / "manifest.json").is_file():
        print(f"bench_daemon: {model} is not a model bundle (no manifest.json)", file=sys.stderr)
        return 2
    args.model = str(model)
    need = missing_tools(("pulseaudio", "pactl", "paplay") + (("espeak-ng",) if args.speech == "espeak" else ()))
    if need:
        print(f"bench_daemon: missing {', '.join(need)} (apt install pulseaudio pulseaudio-utils espeak-ng)",
              file=sys.stderr)
        return 2
    phases = set(args.only.split(",")) if args.only else {"idle", "latency", "clients", "typing", "sinks"}
    if args.skip_typing:
        phases -= {"typing", "sinks"}
    env = BenchEnv(args)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        log(f"{machine()}; model {model}; work dir {env.root}")
        report("setup", model=model.name, machine=machine(), threads=args.threads or "auto",
               hangover_ms=args.hangover_ms)
        env.pulse.start()
        speeches = [make_speech_file(s, env.root, args.speech) for s in args.lengths]
        if phases & {"idle", "latency", "clients"}:
            daemon = env.new_daemon(["vad.mode=vad", f"vad.hangover_ms={args.hangover_ms}",
                                     f"vad.onset_ms={args.onset_ms}", "output.sink=none",
                                     "hotkey.enabled=false"])
            subs = env.subscribe(daemon)
            report("memory", when="after_start", **memory_mb(daemon.pid()))
            if "idle" in phases:
                phase_idle(daemon, subs, report, args.idle_s, args.settle_s)
            if "latency" in phases:
                phase_latency(daemon, subs, env.pulse, report, speeches, args.repeats, args.hangover_ms,
                              args.onset_ms, env.warmed)
            if "clients" in phases:
                phase_clients(daemon, subs, env.pulse, report, speeches[-1], args.clients, args.client_rounds,
                              env.warmed)
            report("memory", when="after_speech", **memory_mb(daemon.pid()))
            env.stop_daemon()
        if phases & {"typing", "sinks"}:
            need = missing_tools(("Xvfb",))
            try:
                import tkinter  # noqa: F401
            except ImportError:
                need.append("python3-tk")
            if need:
                report("typing", measured=False, reason=f"missing {', '.join(need)}")
            else:
                env.start_desktop(HOTKEY)
                sinks = [s.strip() for s in args.sinks.split(",") if s.strip()]
                if "typing" in phases:
                    phase_typing(env, report, speeches, args.repeats, sinks, args.hotkey_tail_s)
                if "sinks" in phases:
                    phase_sink_speed(env, report, sinks)
        return 0
    except BenchError as exc:
        print(f"bench_daemon: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_daemon: interrupted", file=sys.stderr)
        return 130
    finally:
        env.close()
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_daemon", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="model bundle directory")
    p.add_argument("--threads", type=int, default=0, help="engine.threads for the daemon (0: its default)")
    p.add_argument("--skip-typing", action="store_true", help="no Xvfb/typing/sink measurements")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--idle-s", type=float, default=20.0, help="idle measurement window (seconds)")
    p.add_argument("--settle-s", type=float, default=3.0, help="wait after start-up before the idle window")
    p.add_argument("--lengths", type=float, nargs="+", default=[3.0, 10.0], help="utterance lengths (s)")
    p.add_argument("--repeats", type=int, default=2, help="runs per utterance length (latency, typing)")
    p.add_argument("--client-rounds", type=int, default=3, help="alternating 1 / N subscriber rounds")
    p.add_argument("--clients", type=int, default=20, help="subscribers in the many-clients run")
    p.add_argument("--hangover-ms", type=int, default=600, help="vad.hangover_ms of the daemon")
    p.add_argument("--onset-ms", type=int, default=150, help="vad.onset_ms of the daemon")
    p.add_argument("--hotkey-tail-s", type=float, default=0.2, help="hotkey.release_tail_s of the typing daemon")
    p.add_argument("--sinks", default="type,paste", help="output sinks for the typing measurements")
    p.add_argument("--speech", choices=("espeak", "synthetic"), default="espeak",
                   help="espeak-ng speech (default) or qasr.daemon.bench.synthetic_audio")
    p.add_argument("--only", help="comma list of phases: idle,latency,clients,typing,sinks")
    p.add_argument("--daemon-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra --set for every daemon started")
    p.add_argument("--keep", action="store_true", help="keep the work folder (daemon logs) for inspection")
    args = p.parse_args(argv)
    if args.clients < 2:
        p.error("--clients must be at least 2")
    return args


if __name__ == "__main__":
    raise SystemExit(run(parse_args()))
