"""`qasr-daemon doctor`: every desktop back-end, whether it works here, and the one command that fixes it.

States: ``works``, ``missing package``, ``needs permission``, ``not supported`` (by this session or
compositor), ``not running``, ``not implemented`` (a route qasr does not offer yet, with the reason).
Probes are cheap and harmless: ``wtype -s 1`` connects and types nothing; nothing is typed or copied.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from . import session as sessions
from .evdev_hotkey import readable_keyboards
from .wayland_typing import Dotool, Uinput, Ydotool

WORKS, MISSING, PERMISSION, UNSUPPORTED, NOT_RUNNING, NOT_IMPLEMENTED = (
    "works", "missing package", "needs permission", "not supported", "not running", "not implemented")


@dataclass(frozen=True)
class Check:
    area: str          # session | typing | clipboard | focus | hotkey | input method
    name: str
    state: str
    detail: str = ""
    fix: str = ""      # the one command (or step) that fixes it

    def as_dict(self) -> dict:
        return asdict(self)


def _classify(problem: str) -> str:
    if "not installed" in problem:
        return MISSING
    if "not running" in problem:
        return NOT_RUNNING
    return PERMISSION


UDEV_RULE = ("echo 'KERNEL==\"uinput\", GROUP=\"input\", MODE=\"0660\", OPTIONS+=\"static_node=uinput\"' | "
             "sudo tee /etc/udev/rules.d/60-qasr-uinput.rules && sudo udevadm control --reload && "
             "sudo udevadm trigger && sudo usermod -aG input $USER  (then log out and in)")
_FIXES = (  # (words in the problem, the fix)
    ("wtype is not installed", "sudo apt install wtype"),
    ("ydotool is not installed", "sudo apt install ydotool"),
    ("dotool is not installed", "build and install dotool from https://git.sr.ht/~geb/dotool"),
    ("python-evdev is not installed", "pip install evdev  (or: sudo apt install python3-evdev)"),
    ("ydotoold is not running", "systemctl --user enable --now ydotool"),
    ("/dev/uinput does not exist", "sudo modprobe uinput  (and: " + UDEV_RULE + ")"),
    ("/dev/uinput is not writable", UDEV_RULE),
    ("input` group", "sudo usermod -aG input $USER  (then log out and in)"),
)


def _fix_of(problem: str) -> str:
    return next((fix for words, fix in _FIXES if words in problem), "")


def _tool_check(tool, session: sessions.Session, unsupported: str = "") -> Check:
    problem = tool.problem()
    if unsupported:
        return Check("typing", tool.name, UNSUPPORTED, unsupported)
    if problem:
        return Check("typing", tool.name, _classify(problem), problem, _fix_of(problem))
    return Check("typing", tool.name, WORKS, "types ASCII on a US layout; everything else is pasted")


def _wtype(session: sessions.Session, env: Mapping[str, str]) -> Check:
    if not session.wayland:
        return Check("typing", "wtype", UNSUPPORTED, "not a Wayland session")
    if session.compositor == sessions.GNOME:
        return Check("typing", "wtype", UNSUPPORTED, "GNOME (Mutter) has no virtual-keyboard protocol; use ydotool")
    if not shutil.which("wtype"):
        return Check("typing", "wtype", MISSING, "wtype is not installed", "sudo apt install wtype")
    probe = subprocess.run(["wtype", "-s", "1"], env=dict(env), capture_output=True, text=True, timeout=10,
                           stdin=subprocess.DEVNULL)
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or ["failed"])[-1]
        return Check("typing", "wtype", UNSUPPORTED, f"wtype cannot type here: {why}", "use ydotool (see below)")
    limited = " (KDE: limited, the uinput tools come first)" if session.compositor == sessions.KDE else ""
    return Check("typing", "wtype", WORKS, "exact for any Unicode text" + limited)


def _x11_checks(session: sessions.Session) -> list[Check]:
    if session.kind == sessions.NONE:
        return [Check("typing", "xtest", UNSUPPORTED, "no X display")]
    from . import x11

    name = "xtest (XWayland windows only)" if session.wayland else "xtest"
    try:
        disp = x11.open_display()
    except Exception as exc:  # X11Unavailable
        return [Check("typing", name, UNSUPPORTED, str(exc))]
    try:
        ok = disp.has_extension("XTEST")
    finally:
        disp.close()
    checks = [Check("typing", name, WORKS if ok else UNSUPPORTED, "" if ok else "the X server has no XTEST")]
    tool = next((t for t in ("xclip", "xsel") if shutil.which(t)), "")
    checks.append(Check("clipboard", "xclip/xsel", WORKS if tool else MISSING, tool,
                        "" if tool else "sudo apt install xclip"))
    return checks


def run_checks(env: Mapping[str, str] | None = None) -> tuple[sessions.Session, list[Check]]:
    env = dict(os.environ if env is None else env)
    session = sessions.detect(env)
    checks = [Check("session", session.kind, WORKS if session.kind != sessions.NONE else UNSUPPORTED,
                    f"{session.describe()}: " + "; ".join(session.reasons))]
    layout = (lambda: "us")
    if session.wayland:
        checks.append(_wtype(session, env))
        for tool in (Ydotool(layout), Dotool(layout), Uinput(layout)):
            checks.append(_tool_check(tool, session))
        checks.append(Check("typing", "RemoteDesktop portal (libei)", NOT_IMPLEMENTED,
                            "not used: its consent dialog + restore token need a GNOME 45+/KDE 6 session, which "
                            "could not be run or tested here; ydotool covers GNOME and KDE"))
        wl = bool(shutil.which("wl-copy") and shutil.which("wl-paste"))
        checks.append(Check("clipboard", "wl-clipboard", WORKS if wl else MISSING, "wl-copy / wl-paste",
                            "" if wl else "sudo apt install wl-clipboard"))
    checks += _x11_checks(session) if session.kind == sessions.X11 or session.xwayland else []
    focus = session.focus_api
    checks.append(Check("focus", "focused window", WORKS if focus else UNSUPPORTED,
                        focus or f"{session.focus_note}: no focus safety, text goes to whatever has the focus"))
    checks += _hotkey_checks(session)
    checks += ime_checks(env)
    return session, checks


def _running(name: str) -> bool:
    """A process of this user named ``name`` (reads /proc; nothing is started)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name and entry.stat().st_uid == os.getuid():
                    return True
            except OSError:
                continue
    return False


def ime_checks(env: Mapping[str, str] | None = None) -> list[Check]:
    """The input method: IBus engine registration, the daemon's attached engines, Fcitx5 holding the seat."""
    from . import ime_install

    env = dict(os.environ if env is None else env)
    checks = []
    where = ime_install.installed()
    problem = ime_install.bindings_problem() if shutil.which("ibus") else "IBus is not installed; sudo apt install ibus"
    if problem:
        checks.append(Check("input method", "IBus engine qasr", MISSING, problem,
                            "sudo apt install ibus python3-gi gir1.2-ibus-1.0"))
    elif not (where["user_file"] or where["system_file"]):
        checks.append(Check("input method", "IBus engine qasr", NOT_RUNNING, "not installed",
                            "qasr-daemon ime install"))
    else:
        files = ", ".join(f for f in (where["system_file"], where["user_file"]) if f)
        seen = where["system_file"] or where["component_path_active"]
        detail = files + ("" if seen else "; IBUS_COMPONENT_PATH does not name it in this session yet: log out and in")
        ibus = "ibus-daemon running" if _running("ibus-daemon") else "ibus-daemon is not running"
        checks.append(Check("input method", "IBus engine qasr", WORKS if seen else NOT_RUNNING,
                            f"{detail}; {ibus}", ime_install.gnome_sources(add=True)))
    checks.append(_attached_engines())
    if _running("fcitx5"):
        checks.append(Check("input method", "Fcitx5", UNSUPPORTED,
                            "Fcitx5 holds the input method here and cannot load qasr's Python engine; the other "
                            "sinks (type/paste) deliver", "im-config -n ibus  (then log out and in) to use IBus"))
    checks.append(_input_method_v2(env))
    return checks


def _input_method_v2(env: dict) -> Check:
    name = "Wayland input-method-v2"
    if not env.get("WAYLAND_DISPLAY"):
        return Check("input method", name, UNSUPPORTED, "not a Wayland session")
    from .wayland_ime import offered

    ok, why = offered(env)
    if not ok:
        return Check("input method", name, UNSUPPORTED, f"{why}; use the IBus engine or the type/paste sinks")
    return Check("input method", name, WORKS, "offered by the compositor: the daemon is the seat's input method "
                 "with [ime] wayland = true (unless IBus/Fcitx5 holds the seat)",
                 "set [ime] wayland = true in config.toml, then: qasr-daemon stop && qasr-daemon start")


def _attached_engines() -> Check:
    from qasr.daemon.server.control_socket import request

    try:
        ime = request("status", timeout_s=3).get("ime")
    except Exception as exc:  # not running, or too old to say
        return Check("input method", "daemon link", NOT_RUNNING, str(exc).split(";")[0])
    if not ime:
        return Check("input method", "daemon link", UNSUPPORTED, "[ime] enabled = false in the daemon's config")
    engines = ", ".join(f"{e['name']}{' (focused field)' if e['focused'] else ''}" for e in ime["engines"])
    if not engines:
        return Check("input method", "daemon link", NOT_RUNNING, "the daemon runs; no engine attached (select "
                     "`Dictation (qasr)` as the input source)", "ibus engine qasr")
    return Check("input method", "daemon link", WORKS, f"attached: {engines}")


def _hotkey_checks(session: sessions.Session) -> list[Check]:
    checks = []
    if session.kind == sessions.X11 or session.xwayland:
        note = "" if session.kind == sessions.X11 else "sees keys typed in XWayland windows only"
        checks.append(Check("hotkey", "x11 (pynput)", WORKS if session.kind == sessions.X11 else UNSUPPORTED, note))
    devices, why = readable_keyboards()
    for dev in devices:
        dev.close()
    if devices:
        checks.append(Check("hotkey", "evdev", WORKS, f"{len(devices)} keyboard(s) readable; qasr can read every keystroke"))
    else:
        state = MISSING if "not installed" in why else (UNSUPPORTED if "no /dev/input" in why else PERMISSION)
        checks.append(Check("hotkey", "evdev", state, why, _fix_of(why)))
    portal = {sessions.KDE: "offered by KDE Plasma", sessions.HYPRLAND: "offered by xdg-desktop-portal-hyprland",
              sessions.GNOME: "offered by GNOME 48+"}.get(session.compositor, "not offered by this compositor")
    checks.append(Check("hotkey", "GlobalShortcuts portal", NOT_IMPLEMENTED,
                        f"{portal}; qasr does not use it yet (no session offering it could be tested here)",
                        "bind the CLI commands below in the compositor"))
    checks.append(Check("hotkey", "compositor binding", WORKS,
                        "qasr-daemon start-utterance / stop-utterance / toggle / cancel",
                        binding_hint(session.compositor)))
    return checks


def binding_hint(compositor: str) -> str:
    return {
        sessions.SWAY: "bindsym Pause exec qasr-daemon start-utterance; "
                       "bindsym --release Pause exec qasr-daemon stop-utterance",
        sessions.HYPRLAND: "bind = , Pause, exec, qasr-daemon start-utterance; "
                           "bindr = , Pause, exec, qasr-daemon stop-utterance",
        sessions.GNOME: "Settings → Keyboard → Custom Shortcuts: qasr-daemon toggle",
        sessions.KDE: "System Settings → Shortcuts → Custom: qasr-daemon toggle",
    }.get(compositor, "bind `qasr-daemon toggle` to a key in your desktop's shortcut settings")


def format_checks(checks: list[Check]) -> str:
    lines = []
    width = max(len(c.name) for c in checks) + 2
    area = ""
    for c in checks:
        if c.area != area:
            area = c.area
            lines.append(f"{area}:")
        lines.append(f"  {c.name:<{width}}{c.state}" + (f" - {c.detail}" if c.detail else ""))
        if c.fix and c.state != WORKS:
            lines.append(f"  {'':<{width}}fix: {c.fix}")
        elif c.fix:
            lines.append(f"  {'':<{width}}e.g. {c.fix}")
    return "\n".join(lines)
