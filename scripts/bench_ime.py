#!/usr/bin/env python3
"""Input-method measurements (issue 22), one run, one daemon: key release → text in a GTK 3 entry through
the IBus engine (`ime` sink) against the `type` and `paste` sinks into GTK 3 entries without IBus;
preedit updates per second while speaking; the IBus engine process's CPU while idle and per key.

    .venv/bin/python scripts/bench_ime.py --model BUNDLE [--runs 3]

Everything is private (Xvfb, D-Bus, ibus-daemon, PulseAudio null-sink microphone, espeak-ng speech).
The same push-to-talk key (F9, XTEST) drives all three: in the IBus window the engine takes it, in the
other two the daemon's X11 hotkey does. A replacement rule makes every final the same 40-character text,
so the three sinks deliver the same thing. Key release → text: from the XTEST key release to GTK's
``changed`` signal with the whole text (both CLOCK_MONOTONIC). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qasr.daemon.desktop.ime_install import component_xml, engine_script  # noqa: E402
from tests.harness.daemon import DaemonProcess  # noqa: E402
from tests.harness.events import Subscribers  # noqa: E402
from tests.harness.ibus import SYSTEM_PYTHON, GtkEntries, IBusSession  # noqa: E402
from tests.harness.pulse import PulseServer  # noqa: E402
from tests.harness.speech import SAMPLE_RATE, espeak_speech, with_silence, write_wav  # noqa: E402
from tests.harness.xvfb import Xvfb  # noqa: E402

TEXT = "The quick brown fox jumps over a lazy dog"[:40]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engine_pid() -> int:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ibus_engine.py" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
            except OSError:
                continue
    raise RuntimeError("the IBus engine process is not running")


def run_once(ibus: IBusSession, gtk: GtkEntries, subs: Subscribers, pulse: PulseServer, speech: Path,
             speech_s: float) -> dict:
    gtk.set_text(0, "")
    time.sleep(0.3)
    mark, gtk_mark = subs.mark(), gtk.mark()
    ibus.xdotool("keydown", "F9")
    if subs.wait(mark, "state", 20, state="recording") is None:
        ibus.xdotool("keyup", "F9")
        raise RuntimeError(f"the key press in {gtk.name} started no utterance")
    started = time.monotonic()
    pulse.play(speech)
    ibus.xdotool("keyup", "F9")
    released = time.monotonic()
    final = subs.wait(mark, "final", 120)
    done = gtk.wait(lambda e: e["ev"] == "changed" and e["text"].strip() == TEXT, 30, gtk_mark)  # type/paste: + " "
    if final is None or done is None:
        raise RuntimeError(f"no text: final {final}, entry {gtk.texts()}")
    preedits = [e for e in gtk.since(gtk_mark, "preedit") if e["text"] and e["t"] < done["t"]]
    return {"sink": final["sink"], "release_to_text_ms": (done["t"] - released) * 1000,
            "final_latency_ms": (final.get("timings") or {}).get("latency_ms"),
            "preedits_per_s": len(preedits) / max(0.1, released - started), "speech_s": speech_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a qasr bundle folder")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="qasr-bi-", dir="/tmp"))
    pulse, xvfb = PulseServer(root / "pulse"), Xvfb()
    daemon = ibus = subs = None
    windows: list[GtkEntries] = []
    try:
        pulse.start()
        display = xvfb.start()
        speeches = {}
        for seconds in (3.0, 10.0):
            pcm = with_silence(espeak_speech(seconds), 0.3, 0.3)
            speeches[seconds] = write_wav(root / f"speech{int(seconds)}.wav", pcm)
            assert len(pcm) / SAMPLE_RATE > seconds
        daemon = DaemonProcess(root / "d", pulse.client_env, display)
        daemon.write_config(f"(?s)\\A.*\\Z = \"{TEXT}\"\n", name="replacements.txt")
        daemon.write_config('[output]\n[output.auto_rules]\n"qasr-type*" = "type"\n"qasr-paste*" = "paste"\n'
                            '[hotkey]\ncombo = "<f9>"\nmode = "hold"\n')
        ibus = IBusSession(display, daemon.runtime, root / "ibus", component_xml(SYSTEM_PYTHON, engine_script()))
        ibus.start()
        plain = {k: v for k, v in ibus.env.items() if k not in ("GTK_IM_MODULE", "XMODIFIERS")}
        simple = {**plain, "GTK_IM_MODULE": "gtk-im-context-simple"}
        windows = [GtkEntries(ibus.env, root / "w0.py", "qasr-ime"), GtkEntries(simple, root / "w1.py", "qasr-type"),
                   GtkEntries(simple, root / "w2.py", "qasr-paste")]
        windows[0].focus(0)
        ibus.select()
        print(f"# desktop: starting the daemon", file=sys.stderr)
        daemon.start(Path(args.model), "--set", "vad.mode=ptt", "--set", "engine.language=English",
                     "--set", "journal.enabled=false")
        daemon.wait_status(lambda s: s["state"] == "listening" and (s.get("ime") or {}).get("engines"), 120)
        subs = Subscribers.of(daemon)
        print(f"# hotkey: {daemon.status()['desktop'].get('hotkey')}", file=sys.stderr)
        pid = engine_pid()
        time.sleep(2)
        c0, t0 = cpu_s(pid), time.monotonic()
        time.sleep(10)
        idle = (cpu_s(pid) - c0) / (time.monotonic() - t0) * 100
        windows[0].focus(0)
        windows[0].set_text(0, "")
        c0 = cpu_s(pid)
        ibus.xdotool("type", "--delay", "10", "a" * 200)
        per_key_ms = (cpu_s(pid) - c0) / 400 * 1000  # 200 presses + 200 releases
        results = []
        for window in windows:  # the IBus window first; closing it ends its input context (focus out)
            if window is windows[1]:
                windows[0].close()
                state = daemon.wait_status(lambda st: not (st.get("ime") or {}).get("active"), 10)
                print(f"# IBus window closed: ime {state.get('ime')}", file=sys.stderr)
            window.focus(0)
            for seconds, speech in speeches.items():
                for _ in range(args.runs):
                    results.append(run_once(ibus, window, subs, pulse, speech, seconds))
        summary = {}
        for seconds in speeches:
            for sink in ("ime", "type", "paste"):
                rows = [r for r in results if r["sink"] == sink and r["speech_s"] == seconds]
                if rows:
                    summary[f"{sink}_{int(seconds)}s"] = {
                        "release_to_text_ms_median": round(statistics.median(r["release_to_text_ms"] for r in rows), 1),
                        "runs": len(rows),
                        "preedits_per_s": round(statistics.mean(r["preedits_per_s"] for r in rows), 2)}
        print(json.dumps({"engine_idle_cpu_percent": round(idle, 3), "engine_cpu_ms_per_key_event": round(per_key_ms, 3),
                          "summary": summary, "runs": results, "load": os.getloadavg()}, indent=1))
        return 0
    finally:
        if subs is not None:
            subs.close()
        if daemon is not None:
            daemon.stop()
        for window in windows:
            window.close()
        if ibus is not None:
            ibus.stop()
        xvfb.stop()
        pulse.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
