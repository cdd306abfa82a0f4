#!/usr/bin/env python3
"""Key release -> last character on the desktop, Wayland (headless sway + foot) vs X11 (Xvfb + xterm),
for the `type` and `paste` sinks, 3 s and 10 s utterances; and characters per second of each Wayland sink.

The daemon runs with the tiny random test bundle (its own final takes milliseconds) and a replacement
rule that turns each final into English text of the length such an utterance has (~15 characters a
second of speech), so what is measured is the desktop path of a realistic final. "Key release" is the
`stop-utterance` control command (what a compositor binding sends); the clock stops when the terminal's
`cat` has written the last character. Prints a Markdown table for docs/benchmarks.md.

    .venv/bin/python scripts/bench_wayland_output.py [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.daemon import DaemonProcess  # noqa: E402
from tests.harness.events import Subscribers  # noqa: E402
from tests.harness.pulse import PulseServer  # noqa: E402
from tests.harness.speech import make_speech_file  # noqa: E402
from tests.harness.sway import FootLine, Sway  # noqa: E402
from tests.harness.xvfb import Xvfb  # noqa: E402

WORDS = ("please write down the following notes about the quarterly planning meeting we discussed the "
         "budget for the new office and the schedule for hiring two engineers next week").split()
CHARS_PER_SPEECH_S = 15


def text_of(chars: int) -> str:
    out = ""
    i = 0
    while len(out) < chars:
        out += ("" if not out else " ") + WORDS[i % len(WORDS)]
        i += 1
    return out[:chars].rstrip()


class XtermCat:
    def __init__(self, display: str, out: Path) -> None:
        self.out = out
        out.write_text("")
        self.proc = subprocess.Popen(["xterm", "-u8", "-T", "qasr-bench", "-e", "sh", "-c",
                                      f"stty -icanon -echo; exec cat >> '{out}'"],
                                     env=dict(os.environ, DISPLAY=display, LC_ALL="C.UTF-8"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = dict(os.environ, DISPLAY=display)
        wid = subprocess.run(["xdotool", "search", "--sync", "--name", "^qasr-bench$"], env=env, check=True,
                             capture_output=True, text=True, timeout=30).stdout.split()[0]
        subprocess.run(["xdotool", "windowfocus", "--sync", wid], env=env, check=True, timeout=30)
        time.sleep(0.5)

    def text(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    def clear(self) -> None:
        self.out.write_text("")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def dictate(env: DaemonProcess, sub: Subscribers, pulse: PulseServer, speech, target, expected: str) -> dict:
    target.clear()
    mark = sub.mark()
    env.control("start-utterance")
    sub.wait(mark, "state", 20, state="recording")
    pulse.play(speech.path)
    released = time.monotonic()
    env.control("stop-utterance")
    final = sub.wait(mark, "final", 120)
    deadline = time.monotonic() + 60
    while len(target.text()) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.002)
    last = time.monotonic()
    got = target.text()
    assert got == expected, (got, expected)
    final_at = next(t for t, m in sub.events(0) if m is final)
    delivered = [line for line in env.log().splitlines() if "delivered" in line and "characters by" in line]
    deliver_s = float(delivered[-1].rsplit(" in ", 1)[1].split()[0]) if delivered else float("nan")
    return {"final_ms": (final_at - released) * 1000, "last_ms": (last - released) * 1000, "sink": final["sink"],
            "deliver_ms": deliver_s * 1000, "tool": delivered[-1].split("(")[-1].split(")")[0] if delivered else ""}


def run_session(kind: str, bundle: Path, pulse: PulseServer, speeches: dict, tmp: Path, reps: int) -> list[dict]:
    rows = []
    sway = xvfb = None
    extra = dict(pulse.client_env)
    display = None
    if kind == "wayland":
        sway = Sway()
        extra.update(sway.start())
    else:
        xvfb = Xvfb()
        display = xvfb.start()
    env = DaemonProcess(tmp / kind, extra_env=extra, display=display)
    rules = tmp / f"{kind}-rules.txt"
    try:
        for sink in ("type", "paste"):
            for seconds, speech in speeches.items():
                expected = text_of(int(seconds * CHARS_PER_SPEECH_S))
                rules.write_text(f"(?s)^.*$ = {expected}\n", encoding="utf-8")
                env.write_config(f'[shaping]\nreplacements_file = "{rules}"\ntrailing_space = false\n'
                                 f'[output]\nsink = "{sink}"\nrestore_delay_s = 1.0\n')
                if env.pid() is None:
                    env.start(bundle, "--set", "vad.mode=ptt", "--set", "engine.language=English",
                              "--set", "engine.max_new_tokens=16", "--set", "hotkey.enabled=false")
                    env.wait_status(lambda s: s["state"] == "listening", timeout=60)
                    sub = Subscribers.of(env)
                else:
                    env.cli("reload", timeout=60)
                if sway:
                    target = FootLine(sway, "foot", tmp / "foot.txt")
                    target.focus()
                elif sink == "type":
                    target = XtermCat(display, tmp / "xterm.txt")
                else:  # X11 paste: a Tk entry, as in tests/test_desktop_dictation.py
                    from tests.test_x11_output import TK_APP, TkEntry

                    (tmp / "tk_entry.py").write_text(TK_APP)
                    os.environ["DISPLAY"] = display
                    target = TkEntry(tmp / "tk_entry.py", "QasrBench", "qasr bench entry")
                    target.focus()
                try:
                    runs = [dictate(env, sub, pulse, speech, target, expected) for _ in range(reps)]
                finally:
                    target.close()
                rows.append({"session": kind, "sink": sink, "tool": runs[0]["tool"], "speech_s": seconds,
                             "chars": len(expected), "deliver_ms": statistics.median(r["deliver_ms"] for r in runs),
                             "final_ms": statistics.median(r["final_ms"] for r in runs),
                             "last_ms": statistics.median(r["last_ms"] for r in runs)})
                print(rows[-1], flush=True)
        if sway:
            rows += sink_speed(sway, tmp)
        sub.close()
    finally:
        env.stop()
        if sway:
            sway.stop()
        if xvfb:
            xvfb.stop()
    return rows


def sink_speed(sway: Sway, tmp: Path) -> list[dict]:
    """Characters per second of each Wayland sink, straight through TextOutput into foot."""
    from qasr.daemon.desktop.output import OutputOptions, TextOutput

    saved = {k: os.environ.get(k) for k in sway.client_env}
    os.environ.update(sway.client_env)
    rows = []
    try:
        for sink in ("type", "paste"):
            for label, text in (("ASCII", text_of(1000)), ("CJK", "".join(chr(0x4E00 + (i * 37) % 2000)
                                                                         for i in range(300)))):
                term = FootLine(sway, "foot", tmp / "speed.txt")
                term.focus()
                out = TextOutput(OutputOptions(sink=sink, restore_delay_s=0.5))
                try:
                    start = time.monotonic()
                    result = out.deliver(text)
                    while term.text() != text and time.monotonic() - start < 120:
                        time.sleep(0.002)
                    took = time.monotonic() - start
                    assert term.text() == text
                finally:
                    out.close()
                    term.close()
                rows.append({"session": "wayland", "sink": f"{sink} ({result.tool})", "text": label,
                             "chars": len(text), "seconds": took, "cps": len(text) / took})
                print(rows[-1], flush=True)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sessions", default="wayland,x11", help="wayland,x11 (default both)")
    args = parser.parse_args()
    for tool in ("sway", "foot", "wtype", "wl-copy", "Xvfb", "xterm", "xdotool", "espeak-ng", "pulseaudio"):
        if not shutil.which(tool):
            print(f"{tool} is missing: run scripts/install.sh --dev", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="qasr-bench-wl-"))
    from qasr.daemon.bench.random_checkpoint import make_checkpoint
    from qasr.engine.convert import convert_checkpoint

    # the test suite's tiny random bundle (seed 0, fp32/f32)
    bundle = convert_checkpoint(make_checkpoint(tmp / "ckpt", preset="tiny", seed=0), tmp / "bundle", "fp32", "f32")
    pulse = PulseServer(tmp / "pulse")
    os.environ.update(pulse.client_env)
    pulse.start()
    try:
        speeches = {s: make_speech_file(s, tmp) for s in (3.0, 10.0)}
        rows = []
        for kind in args.sessions.split(","):
            rows += run_session(kind, bundle, pulse, speeches, tmp, args.reps)
    finally:
        pulse.stop()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"\nhost: {cpu}, {os.cpu_count()} cores\n")
    print("| session | sink (tool) | utterance | characters | release → last character | of which typing/pasting "
          "| release → final event |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "speech_s" in r:
            print(f"| {r['session']} | {r['sink']} ({r['tool']}) | {r['speech_s']:.0f} s | {r['chars']} "
                  f"| {r['last_ms']:.0f} ms | {r['deliver_ms']:.0f} ms | {r['final_ms']:.0f} ms |")
    print("\n| Wayland sink (tool) | text | characters | seconds | characters/s |\n|---|---|---|---|---|")
    for r in rows:
        if "cps" in r:
            print(f"| {r['sink']} | {r['text']} | {r['chars']} | {r['seconds']:.2f} | {r['cps']:.0f} |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
