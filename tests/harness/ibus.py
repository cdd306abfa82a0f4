"""A private IBus session on an X display: its own D-Bus session bus, ibus-daemon reading only qasr's
component file, and GTK 3 windows using the IBus IM module (``GTK_IM_MODULE=ibus``).

- ``IBusSession(display, runtime, root)``: ``start()`` runs ``dbus-daemon --session`` and ``ibus-daemon``
  (``IBUS_COMPONENT_PATH`` = a folder holding only qasr.xml, ``--config disable``: hermetic), both
  children killed by pid in ``stop()``. The engine process ibus-daemon starts inherits its environment:
  ``XDG_RUNTIME_DIR`` = the daemon's runtime folder, so it finds the daemon's control socket.
- ``GtkEntries``: a GTK 3 window with two entries (system python3-gi) reporting ``preedit-changed``,
  text changes and focus as JSON lines; commands on stdin. With the IBus session's ``env`` it uses the
  IBus IM module; with a Wayland ``env`` plus ``GDK_BACKEND=wayland GTK_IM_MODULE=wayland``, text-input-v3.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from tests.harness import HarnessError
from tests.harness.processes import stop_process

SYSTEM_PYTHON = "/usr/bin/python3"

GTK_ENTRIES = r'''
import json, sys, threading, time
import gi
gi.require_version("Gtk", "3.0")
from gi.repository import GLib, Gtk

def emit(**event):
    event["t"] = time.monotonic()
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()

GLib.set_prgname(sys.argv[1] if len(sys.argv) > 1 else "qasr-ime-gtk")  # the Wayland app_id
Gtk.Settings.get_default().set_property("gtk-entry-select-on-focus", False)
window = Gtk.Window(title="qasr ime test")
box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL)
entries = []
for i in range(2):
    entry = Gtk.Entry(width_chars=60)
    entry.connect("preedit-changed", lambda e, text, i=i: emit(ev="preedit", entry=i, text=text))
    entry.connect("changed", lambda e, i=i: emit(ev="changed", entry=i, text=e.get_text()))
    entry.connect("focus-in-event", lambda e, _ev, i=i: emit(ev="focus", entry=i) and False)
    box.pack_start(entry, False, False, 0)
    entries.append(entry)
window.add(box)
window.connect("destroy", Gtk.main_quit)
window.show_all()

def command(line):
    parts = line.split(" ", 2)
    if parts[0] == "focus":
        window.present()
        entries[int(parts[1])].grab_focus()
        emit(ev="ok", cmd="focus")
    elif parts[0] == "set":
        entry = entries[int(parts[1])]
        entry.set_text(json.loads(parts[2]))
        entry.set_position(-1)
        emit(ev="ok", cmd="set")
    elif parts[0] == "get":
        emit(ev="text", texts=[e.get_text() for e in entries])
    return False

def reader():
    for line in sys.stdin:
        GLib.idle_add(command, line.strip())
    GLib.idle_add(Gtk.main_quit)

threading.Thread(target=reader, daemon=True).start()
GLib.timeout_add(200, lambda: emit(ev="ready") and False)
Gtk.main()
'''


def ibus_missing() -> list[str]:
    """What the IBus tests need and this machine lacks."""
    missing = [tool for tool in ("ibus-daemon", "ibus", "dbus-daemon", "xdotool", "Xvfb") if not shutil.which(tool)]
    if not Path(SYSTEM_PYTHON).exists():
        return [*missing, SYSTEM_PYTHON]
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('IBus', '1.0'); "
                            "gi.require_version('Gtk', '3.0'); from gi.repository import IBus, Gtk"],
                           capture_output=True, timeout=60, env={**os.environ, "DISPLAY": ""})
    return missing + ([] if probe.returncode == 0 else ["python3-gi gir1.2-ibus-1.0 gir1.2-gtk-3.0"])


class IBusSession:
    def __init__(self, display: str, runtime: Path, root: Path, component_xml: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        components = root / "component"
        components.mkdir(exist_ok=True)
        (components / "qasr.xml").write_text(component_xml, encoding="utf-8")
        self.env = {**os.environ, "DISPLAY": display, "HOME": str(root), "XDG_CONFIG_HOME": str(root / "config"),
                    "XDG_CACHE_HOME": str(root / "cache"), "XDG_RUNTIME_DIR": str(runtime),
                    "IBUS_COMPONENT_PATH": str(components), "NO_AT_BRIDGE": "1",
                    "QASR_IME_LOG": str(root / "engine.log"),
                    "GTK_IM_MODULE": "ibus", "XMODIFIERS": "@im=ibus", "QT_IM_MODULE": "ibus"}
        self.env.pop("WAYLAND_DISPLAY", None)
        self.dbus: subprocess.Popen | None = None
        self.ibus: subprocess.Popen | None = None
        self.log = root / "ibus.log"
        self.engine_log = root / "engine.log"

    def start(self, timeout_s: float = 30) -> None:
        self.dbus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--print-address=1"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env, text=True)
        address = self.dbus.stdout.readline().strip()
        if not address:
            self.stop()
            raise HarnessError("dbus-daemon did not print its address")
        self.env["DBUS_SESSION_BUS_ADDRESS"] = address
        self.start_ibus(timeout_s)

    def start_ibus(self, timeout_s: float = 30) -> None:
        with open(self.log, "ab") as log:
            self.ibus = subprocess.Popen(["ibus-daemon", "--xim", "--panel", "disable", "--emoji-extension",
                                          "disable", "--config", "disable", "--replace", "--cache=refresh"],
                                         env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            address = self.run("address")
            if address.returncode == 0 and address.stdout.strip():
                engines = self.run("list-engine", "--name-only")
                if "qasr" in engines.stdout.split():
                    return
            time.sleep(0.2)
        raise HarnessError(f"ibus-daemon did not list the qasr engine: {self.log.read_text()[-2000:]}")

    def run(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(["ibus", *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def select(self, engine: str = "qasr", timeout_s: float = 20) -> None:
        """``ibus engine qasr`` (its setxkbmap step fails for layout "default"; the engine is set anyway)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.run("engine", engine)
            if self.run("engine").stdout.strip() == engine:
                return
            time.sleep(0.2)
        raise HarnessError(f"ibus did not select {engine}: {self.log.read_text()[-2000:]}")

    def xdotool(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], env=self.env, check=True, timeout=20, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        stop_process(self.ibus, timeout=5)
        stop_process(self.dbus, timeout=5)
        self.ibus = self.dbus = None


class GtkEntries:
    """A GTK 3 window with two entries under the IBus IM module; every event it reports is kept."""

    def __init__(self, env: dict[str, str], script: Path, name: str = "qasr-ime-gtk") -> None:
        script.write_text(GTK_ENTRIES, encoding="utf-8")
        self.name = name
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(script), name], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, encoding="utf-8")
        threading.Thread(target=self._read, daemon=True).start()
        if self.wait(lambda e: e["ev"] == "ready", 30) is None:
            self.close()
            raise HarnessError("the GTK window did not start")

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.events.append(event)

    def mark(self) -> int:
        with self._lock:
            return len(self.events)

    def since(self, mark: int, ev: str | None = None) -> list[dict]:
        with self._lock:
            return [e for e in self.events[mark:] if ev is None or e["ev"] == ev]

    def wait(self, predicate, timeout_s: float = 20, mark: int = 0) -> dict | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                found = next((e for e in self.events[mark:] if predicate(e)), None)
            if found is not None:
                return found
            time.sleep(0.02)
        return None

    def command(self, line: str, timeout_s: float = 10) -> None:
        mark = self.mark()
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        if self.wait(lambda e: e["ev"] in ("ok", "text"), timeout_s, mark) is None:
            raise HarnessError(f"the GTK window did not answer {line!r}")

    def focus(self, index: int) -> None:
        self.command(f"focus {index}")

    def set_text(self, index: int, text: str) -> None:
        self.command(f"set {index} {json.dumps(text)}")

    def texts(self) -> list[str]:
        mark = self.mark()
        self.command("get")
        return self.wait(lambda e: e["ev"] == "text", 10, mark)["texts"]

    def wait_text(self, index: int, text: str, timeout_s: float = 20) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            current = self.texts()[index]
            if current == text:
                return current
            time.sleep(0.05)
        return self.texts()[index]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        stop_process(self.proc, timeout=5)
