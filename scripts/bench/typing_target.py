"""The typing target and the key presses of the typing measurements: a Tk window with a focused Entry
(a subprocess that timestamps every change of its text) and XTEST key events from this process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time

from bench.report import BenchError
from tests.harness.processes import stop_process

TK_HELPER = r"""
import json, sys, time, tkinter as tk
root = tk.Tk()
root.title("qasr-bench-target")
root.geometry("900x80+10+10")
var = tk.StringVar(master=root)
entry = tk.Entry(root, textvariable=var, width=120)
entry.pack(fill="x", padx=5, pady=5)
def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
def changed(*_):
    say({"t": time.monotonic(), "text": var.get()})
var.trace_add("write", changed)
def command(*_):
    line = sys.stdin.readline()
    if not line or line.strip() == "quit":
        root.destroy(); return
    if line.strip() == "clear":
        var.set("")
    elif line.strip() == "focus":
        root.focus_force(); entry.focus_force(); root.update()
    say({"ack": line.strip(), "t": time.monotonic(), "focus": str(root.focus_get()), "window": root.winfo_id(),
         "frame": int(root.wm_frame(), 16) if root.wm_frame() else 0})
root.tk.createfilehandler(sys.stdin, tk.READABLE, command)
def ready():
    root.focus_force(); entry.focus_force(); root.update()
    say({"ready": True, "t": time.monotonic(), "focus": str(root.focus_get())})
root.after(300, ready)
root.mainloop()
"""


class TkTarget:
    """A Tk window with a focused Entry in a subprocess; every change of its text is timestamped."""

    def __init__(self, display: str) -> None:
        env = dict(os.environ, DISPLAY=display)
        self.proc = subprocess.Popen([sys.executable, "-c", TK_HELPER], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.changes: list[tuple[float, str]] = []
        self.acks: list[dict] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        with self.cond:
            if not self.cond.wait_for(lambda: any(a.get("ready") for a in self.acks), timeout=30):
                err = self.proc.stderr.read() if self.proc.poll() is not None else ""
                raise BenchError(f"the Tk target window did not come up: {err.strip()[-300:]}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                if "text" in msg:
                    self.changes.append((msg["t"], msg["text"]))
                else:
                    self.acks.append(msg)
                self.cond.notify_all()

    def command(self, name: str) -> dict:
        with self.cond:
            n = len(self.acks)
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.acks) > n, timeout=10):
                raise BenchError(f"the Tk target did not answer {name!r}")
            return self.acks[n]

    def clear(self) -> None:
        self.command("clear")
        self.command("focus")
        with self.cond:
            self.changes.clear()

    def wait_text(self, expected: str, timeout: float) -> list[tuple[float, str]] | None:
        with self.cond:
            ok = self.cond.wait_for(lambda: bool(self.changes) and self.changes[-1][1] == expected, timeout=timeout)
            return list(self.changes) if ok else None

    def text(self) -> str:
        with self.cond:
            return self.changes[-1][1] if self.changes else ""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        stop_process(self.proc)


def typing_chars(changes: list[tuple[float, str]], expected: str) -> tuple[float, float, int]:
    """(time of the first change that starts the expected text, time it became complete, change count)."""
    started = [t for t, text in changes if text and expected.startswith(text)]
    complete = [t for t, text in changes if text == expected]
    return started[0], complete[0], len(changes)


class Keyboard:
    """Presses of one key through XTEST from this process (precise timestamps, no xdotool start-up)."""

    def __init__(self, display: str, key: str) -> None:
        from Xlib import XK, display as xdisplay
        from Xlib.ext import xtest  # noqa: F401 - registers the extension

        self.disp = xdisplay.Display(display)
        if not self.disp.has_extension("XTEST"):
            raise BenchError("the X server has no XTEST extension")
        self.keycode = self.disp.keysym_to_keycode(XK.string_to_keysym(key))

    def _send(self, kind: int) -> float:
        from Xlib.ext import xtest

        xtest.fake_input(self.disp, kind, self.keycode)
        self.disp.sync()
        return time.monotonic()

    def down(self) -> float:
        from Xlib import X

        return self._send(X.KeyPress)

    def up(self) -> float:
        from Xlib import X

        return self._send(X.KeyRelease)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.disp.close()
