"""A headless sway session (wlroots: WLR_BACKENDS=headless, pixman renderer) and Wayland clients in it.

sway refuses to run as root, so as root the harness creates an unprivileged user (``qasr-sway``) and
runs sway as that user (``setpriv``) in a 0700 runtime folder it owns. Root's clients (the daemon under
test, foot, wtype, wl-copy) reach it through absolute paths: ``WAYLAND_DISPLAY=/tmp/…/wayland-1`` and
``SWAYSOCK=/tmp/…/sway-ipc.….sock`` (``client_env``). Run as an ordinary user, sway runs as that user.

- ``Sway.start()`` / ``stop()``; ``swaymsg(*args)``; ``focused()`` → the focused node of ``get_tree``;
  ``focus(app_id)``; ``wait_window(app_id)``.
- ``FootLine``: a foot terminal whose shell copies what it receives (raw mode) into a file.
- ``GtkEntry``: a GTK 3 ``Gtk.Entry`` (system python3-gi, native Wayland) that mirrors its text to a file.
- ``wl(cmd…)``: run a wl-clipboard tool against the session.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.harness import HarnessError
from tests.harness.processes import stop_process

USER = "qasr-sway"
TOOLS = ("sway", "swaymsg", "foot", "wtype", "wl-copy", "wl-paste")

GTK_ENTRY = r'''
import os, signal, sys
import gi
gi.require_version("Gtk", "3.0")
from gi.repository import GLib, Gtk
GLib.set_prgname(sys.argv[2])
out = sys.argv[1]
win = Gtk.Window(title=sys.argv[2])
entry = Gtk.Entry()
def changed(widget):
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        f.write(widget.get_text())
    os.replace(out + ".tmp", out)
entry.connect("changed", changed)
GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGUSR1, lambda: entry.set_text("") or True)  # clear()
win.add(entry)
win.connect("destroy", Gtk.main_quit)
win.show_all()
changed(entry)
Gtk.main()
'''


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def gtk_available() -> bool:
    if not Path("/usr/bin/python3").exists():
        return False
    probe = subprocess.run(["/usr/bin/python3", "-c", "import gi; gi.require_version('Gtk', '3.0')"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                       check=True, capture_output=True, timeout=30)
        return pwd.getpwnam(USER)


class Sway:
    def __init__(self, resolution: str = "1280x800") -> None:
        self.resolution = resolution
        self.proc: subprocess.Popen | None = None
        self.runtime = Path()
        self.client_runtime = Path()
        self.client_env: dict[str, str] = {}

    def start(self, timeout: float = 30) -> dict[str, str]:
        self.runtime = Path(tempfile.mkdtemp(prefix="qasr-sway-"))
        self.client_runtime = Path(tempfile.mkdtemp(prefix="qasr-wlc-"))
        config = self.runtime / "config"
        config.write_text(f"output HEADLESS-1 resolution {self.resolution}\n"
                          "default_border none\nfocus_follows_mouse no\nxwayland enable\n")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.runtime),
               "XDG_RUNTIME_DIR": str(self.runtime), "WLR_BACKENDS": "headless", "WLR_RENDERER": "pixman",
               "WLR_LIBINPUT_NO_DEVICES": "1", "LANG": "C.UTF-8"}
        cmd = ["sway", "-c", str(config)]
        if os.geteuid() == 0:
            user = _ensure_user()
            os.chown(self.runtime, user.pw_uid, user.pw_gid)
            os.chmod(config, 0o644)
            cmd = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *cmd]
        self.log = self.runtime / "sway.log"
        with open(os.devnull, "rb") as devnull:
            self.proc = subprocess.Popen(cmd, env=env, stdin=devnull, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            socks = list(self.runtime.glob("sway-ipc.*.sock"))
            display = self.runtime / "wayland-1"
            if socks and display.exists():
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise HarnessError("headless sway did not start (is the pixman renderer available?)")
            time.sleep(0.05)
        self.client_env = {"WAYLAND_DISPLAY": str(display), "SWAYSOCK": str(socks[0]),
                           "XDG_CURRENT_DESKTOP": "sway", "XDG_SESSION_TYPE": "wayland"}
        while self.swaymsg("-t", "get_outputs", check=False) is None:
            if time.monotonic() > deadline:
                self.stop()
                raise HarnessError("sway IPC does not answer")
            time.sleep(0.05)
        return self.client_env

    @property
    def env(self) -> dict[str, str]:
        """Environment of a client process: this one's, without DISPLAY, plus the session's."""
        env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
        env.update(self.client_env, XDG_RUNTIME_DIR=str(self.client_runtime))
        return env

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        for folder in (self.runtime, self.client_runtime):
            if folder != Path():
                shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ IPC
    def swaymsg(self, *args: str, check: bool = True):
        proc = subprocess.run(["swaymsg", "-r", *args], env=self.env, capture_output=True, text=True, timeout=20)
        if proc.returncode != 0:
            if check:
                raise HarnessError(f"swaymsg {' '.join(args)} failed: {proc.stderr or proc.stdout}")
            return None
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def focused(self) -> dict | None:
        def walk(node: dict) -> dict | None:
            if node.get("focused"):
                return node
            for child in node.get("nodes", []) + node.get("floating_nodes", []):
                found = walk(child)
                if found:
                    return found
            return None
        return walk(self.swaymsg("-t", "get_tree"))

    def windows(self) -> list[dict]:
        found: list[dict] = []

        def walk(node: dict) -> None:
            if node.get("pid"):
                found.append(node)
            for child in node.get("nodes", []) + node.get("floating_nodes", []):
                walk(child)
        walk(self.swaymsg("-t", "get_tree"))
        return found

    def wait_window(self, app_id: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.windows():
                if node.get("app_id") == app_id:
                    return node
            time.sleep(0.05)
        raise HarnessError(f"no window with app_id {app_id!r} appeared")

    def focus(self, app_id: str) -> None:
        self.swaymsg(f'[app_id="^{app_id}$"]', "focus")
        deadline = time.monotonic() + 10
        while (self.focused() or {}).get("app_id") != app_id:
            if time.monotonic() > deadline:
                raise HarnessError(f"could not focus {app_id}")
            time.sleep(0.02)

    def xwayland_display(self, timeout: float = 20) -> str:
        """The DISPLAY of sway's XWayland (started lazily on the first X client); "" without Xwayland."""
        if shutil.which("Xwayland") is None:
            return ""
        out = self.runtime / "display.txt"
        # XWayland runs as the sway user and asks for authorization: let this process's user in.
        user = pwd.getpwuid(os.geteuid()).pw_name
        script = f"xhost +si:localuser:{user} >/dev/null 2>&1 && printenv DISPLAY > {out}.tmp && mv {out}.tmp {out}"
        self.swaymsg("exec", f"sh -c '{script}'")
        deadline = time.monotonic() + timeout
        while not out.exists() or not out.read_text().strip():
            if time.monotonic() > deadline:
                return ""
            time.sleep(0.05)
        return out.read_text().strip()

    def screenshot(self, path: Path) -> Path | None:
        """The whole output as PNG (grim, wlroots screencopy); None without grim."""
        if shutil.which("grim") is None:
            return None
        subprocess.run(["grim", "-t", "ppm", str(path)], env=self.env, check=True, capture_output=True, timeout=30)
        return path

    def wl(self, *cmd: str, data: bytes | None = None) -> str:
        """wl-copy / wl-paste against the session (wl-copy's server child gets no pipes)."""
        out = subprocess.DEVNULL if cmd[0] == "wl-copy" else subprocess.PIPE
        proc = subprocess.run(list(cmd), input=data, env=self.env, stdout=out, stderr=subprocess.DEVNULL,
                              timeout=20, stdin=None if data is not None else subprocess.DEVNULL)
        return proc.stdout.decode("utf-8", "replace") if out is subprocess.PIPE and proc.returncode == 0 else ""


class _Client:
    def __init__(self, sway: Sway, app_id: str, out: Path, cmd: list[str]) -> None:
        self.sway, self.app_id, self.out = sway, app_id, out
        out.unlink(missing_ok=True)
        self.proc = subprocess.Popen(cmd, env=sway.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.node = sway.wait_window(app_id)
        deadline = time.monotonic() + 20
        while not out.exists():  # the client is ready to receive
            if time.monotonic() > deadline:
                raise HarnessError(f"{app_id} did not create {out}")
            time.sleep(0.02)
        time.sleep(0.2)

    @property
    def window_id(self) -> int:
        return int(self.node["id"])

    def focus(self) -> None:
        self.sway.focus(self.app_id)

    def text(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace") if self.out.exists() else ""

    def wait_text(self, expected: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while (got := self.text()) != expected and time.monotonic() < deadline:
            time.sleep(0.02)
        return got

    def close(self) -> None:
        stop_process(self.proc, timeout=5)


class FootLine(_Client):
    """foot running ``cat`` in raw mode (no echo, no line buffering): the file holds exactly what was typed."""

    def __init__(self, sway: Sway, app_id: str, out: Path) -> None:
        script = f"stty -icanon -echo; : > '{out}'; exec cat >> '{out}'"
        super().__init__(sway, app_id, out, ["foot", "--app-id", app_id, "--title", app_id, "sh", "-c", script])

    def clear(self) -> None:
        self.out.write_text("")


class GtkEntry(_Client):
    def __init__(self, sway: Sway, app_id: str, out: Path, script: Path) -> None:
        script.write_text(GTK_ENTRY)
        super().__init__(sway, app_id, out, ["env", "GDK_BACKEND=wayland", "/usr/bin/python3", str(script),
                                             str(out), app_id])

    def clear(self) -> None:
        """Empty the entry through the app itself (SIGUSR1): GTK 3 ignores wtype's BackSpace and Ctrl."""
        if not self.text():
            return
        self.proc.send_signal(signal.SIGUSR1)
        if self.wait_text("") != "":
            raise HarnessError(f"the GTK entry {self.app_id} did not clear: {self.text()!r}")
