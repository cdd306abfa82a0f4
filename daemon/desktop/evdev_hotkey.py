"""The global hotkey on Wayland (and anywhere): read keyboards directly from /dev/input with python-evdev.

Wayland gives no client the keys of other windows; a compositor binding (`qasr-daemon start-utterance`
/ `stop-utterance` / `toggle`, see the README) or reading the kernel's input devices are the ways in.
Reading /dev/input/event* needs the `input` group (or a udev rule), and that lets this process - and
every other program the user runs - read every keystroke; qasr only observes (never grabs) and acts on
its combination and the cancel key. The state machine is hotkey.HotkeyLogic (hold, tap-toggle, Escape),
fed with the same key tokens as ``hotkey.normalize_combo`` writes ("<ctrl>", "<space>", "a", "<f9>").

The GlobalShortcuts portal (press and release signals; KDE, Hyprland, GNOME 48+) is not used yet:
xdg-desktop-portal-wlr (sway) does not implement it and no session here offers it to test against;
on those desktops bind the CLI commands in the compositor's shortcut settings (README "Dictating").
"""

from __future__ import annotations

import glob
import logging
import os
import selectors
import threading
from dataclasses import replace
from typing import Any, Callable

from qasr.errors import QasrError

from .hotkey import HotkeyLogic, HotkeyOptions, normalize_combo, validate_options

log = logging.getLogger("qasr.hotkey")

EV_KEY = 1
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2
INPUT_GROUP_FIX = ("add yourself to the `input` group (`sudo usermod -aG input $USER`, then log out and in); "
                   "note that this lets qasr - and any program you run - read every keystroke. Or bind "
                   "`qasr-daemon start-utterance` / `stop-utterance` in your compositor (README \"Dictating\")")
NO_KEYBOARD = "no keyboard in /dev/input is readable: " + INPUT_GROUP_FIX
RESCAN_S = 3.0  # keyboards plugged in later (or a virtual one) are picked up this often

# evdev key code -> the tokens it stands for (a generic modifier and its side).
_MODIFIER_TOKENS = {
    29: ("<ctrl>", "<ctrl_l>"), 97: ("<ctrl>", "<ctrl_r>"),
    42: ("<shift>", "<shift_l>"), 54: ("<shift>", "<shift_r>"),
    56: ("<alt>", "<alt_l>"), 100: ("<alt>", "<alt_r>", "<alt_gr>"),
    125: ("<cmd>", "<cmd_l>"), 126: ("<cmd>", "<cmd_r>"),
}
GENERIC_MODIFIERS = {"<ctrl>", "<shift>", "<alt>", "<cmd>"}
_NAMED = {1: "<esc>", 14: "<backspace>", 15: "<tab>", 28: "<enter>", 57: "<space>", 58: "<caps_lock>",
          69: "<num_lock>", 70: "<scroll_lock>", 96: "<enter>", 99: "<print_screen>", 102: "<home>",
          103: "<up>", 104: "<page_up>", 105: "<left>", 106: "<right>", 107: "<end>", 108: "<down>",
          109: "<page_down>", 110: "<insert>", 111: "<delete>", 113: "<media_volume_mute>",
          114: "<media_volume_down>", 115: "<media_volume_up>", 119: "<pause>", 127: "<menu>",
          163: "<media_next>", 164: "<media_play_pause>", 165: "<media_previous>"}
_NAMED.update({59 + i: f"<f{i + 1}>" for i in range(10)})           # F1-F10
_NAMED.update({87: "<f11>", 88: "<f12>"})
_NAMED.update({183 + i: f"<f{13 + i}>" for i in range(8)})         # F13-F20
_CHARS = dict(zip(range(16, 26), "qwertyuiop")) | dict(zip(range(30, 39), "asdfghjkl")) \
    | dict(zip(range(44, 51), "zxcvbnm")) | dict(zip(range(2, 12), "1234567890")) \
    | {12: "-", 13: "=", 26: "[", 27: "]", 39: ";", 40: "'", 41: "`", 43: "\\", 51: ",", 52: ".", 53: "/"}


def tokens_for(code: int) -> tuple[str, ...]:
    """The hotkey tokens an evdev key code stands for (key codes, not layout: "z" is where US has it)."""
    if code in _MODIFIER_TOKENS:
        return _MODIFIER_TOKENS[code]
    if code in _NAMED:
        return (_NAMED[code],)
    if code in _CHARS:
        return (_CHARS[code],)
    return (f"<key{code}>",)


class EvdevKeys:
    """evdev events -> HotkeyLogic. Pure: feed it events (``handle``) from devices or from a test."""

    def __init__(self, options: HotkeyOptions, on_start: Callable[[], Any], on_stop: Callable[[], Any],
                 on_cancel: Callable[[], Any], actions: dict[str, Callable[[], Any]] | None = None) -> None:
        combo = set(normalize_combo(options.combo).split("+"))
        # one-shot combos (paste-last, undo): fire when the key completing the combo goes down
        self._actions = [(set(normalize_combo(c).split("+")), fn) for c, fn in (actions or {}).items()]
        cancel = normalize_combo(options.cancel_key) if options.cancel_key else None
        # A side-specific modifier in the combo (<ctrl_l>) must not count its generic twin as "another".
        sided = {t for t in combo if t.rsplit("_", 1)[0] + ">" in GENERIC_MODIFIERS and t not in GENERIC_MODIFIERS}
        generic_used = {t.rsplit("_", 1)[0] + ">" for t in sided}
        others = GENERIC_MODIFIERS - generic_used
        # The kernel reports autorepeat as repeat events (ignored below), never as the release/press pairs X
        # sends: a release is real at once, no debounce (X11's 40 ms) between it and the stop.
        self.logic = HotkeyLogic(replace(options, release_debounce_s=0.0), combo, cancel, others, on_start, on_stop,
                                 on_cancel)
        self._down: dict[int, int] = {}  # key code -> how many devices hold it

    def handle(self, event: Any) -> None:
        """One input event (anything with ``type``, ``code``, ``value``); autorepeat is ignored."""
        if event.type != EV_KEY or event.value == KEY_REPEAT:
            return
        code = event.code
        if event.value == KEY_DOWN:
            self._down[code] = self._down.get(code, 0) + 1
            if self._down[code] == 1:
                for token in tokens_for(code):
                    self.logic.key_down(token)
                self._fire_actions(code)
        elif event.value == KEY_UP and self._down.get(code):
            self._down[code] -= 1
            if not self._down[code]:
                del self._down[code]
                for token in tokens_for(code):
                    self.logic.key_up(token)

    def _fire_actions(self, code: int) -> None:
        if not self._actions:
            return
        held = {token for c in self._down for token in tokens_for(c)}
        pressed = set(tokens_for(code))
        for combo, fn in self._actions:
            allowed = {t for t in combo if t in GENERIC_MODIFIERS} | {t.rsplit("_", 1)[0] + ">" for t in combo}
            extra = (held & GENERIC_MODIFIERS) - allowed  # Ctrl+Shift+Z is not Ctrl+Z
            if combo <= held and pressed & combo and not extra:
                fn()


def is_keyboard(device: Any) -> bool:
    keys = set(device.capabilities().get(EV_KEY, []))
    return {30, 31, 32, 57} <= keys or {119} <= keys and len(keys) > 5 or {1, 28, 57} <= keys


def readable_keyboards(wanted: tuple[str, ...] = ()) -> tuple[list[Any], str]:
    """Open keyboards (python-evdev InputDevice) and, when none, the one line that says why."""
    try:
        import evdev
    except ImportError:
        return [], "python-evdev is not installed: pip install evdev (or apt install python3-evdev)"
    paths = sorted(glob.glob("/dev/input/event*"))
    if not paths:
        return [], "no /dev/input/event* devices here (a container or a remote session?)"
    devices, denied = [], 0
    for path in paths:
        if not os.access(path, os.R_OK):
            denied += 1
            continue
        try:
            dev = evdev.InputDevice(path)
        except OSError:
            denied += 1
            continue
        if (wanted and path not in wanted and dev.name not in wanted) or not is_keyboard(dev):
            dev.close()
            continue
        devices.append(dev)
    if devices:
        return devices, ""
    if denied:
        return [], NO_KEYBOARD
    return [], f"no keyboard among {len(paths)} input devices" + (f" matching {list(wanted)}" if wanted else "")


class EvdevHotkeyListener:
    """Reads every keyboard on a thread; ``start()`` is False (``unavailable_reason`` set) without any."""

    backend = "evdev"

    def __init__(self, options: HotkeyOptions, on_start: Callable[[], Any], on_stop: Callable[[], Any],
                 on_cancel: Callable[[], Any], devices: tuple[str, ...] = (),
                 actions: dict[str, Callable[[], Any]] | None = None) -> None:
        validate_options(options)
        self.options = options
        self.keys = EvdevKeys(options, on_start, on_stop, on_cancel, actions)
        self.logic = self.keys.logic
        self.wanted = tuple(devices)
        self.unavailable_reason = ""
        self.device_names: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1

    def start(self) -> bool:
        devices, why = readable_keyboards(self.wanted)
        if not devices:
            self.unavailable_reason = f"evdev hotkey: {why}"
            return False
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, args=(devices,), name="hotkey-evdev", daemon=True)
        self.device_names = [f"{d.name} ({d.path})" for d in devices]
        self._thread.start()
        return True

    def _run(self, devices: list[Any]) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._wake_r, selectors.EVENT_READ, None)
        open_paths = set()
        for dev in devices:
            sel.register(dev, selectors.EVENT_READ, dev)
            open_paths.add(dev.path)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(RESCAN_S):
                    dev = key.data
                    if dev is None:
                        continue
                    try:
                        for event in dev.read():
                            self.keys.handle(event)
                    except OSError:  # unplugged
                        sel.unregister(dev)
                        open_paths.discard(dev.path)
                        dev.close()
                for dev in self._new_keyboards(open_paths):
                    sel.register(dev, selectors.EVENT_READ, dev)
                    open_paths.add(dev.path)
                    log.info("hotkey: reading %s (%s)", dev.name, dev.path)
        finally:
            for key in list(sel.get_map().values()):
                if key.data is not None:
                    key.data.close()
            sel.close()

    def _new_keyboards(self, open_paths: set[str]) -> list[Any]:
        fresh = [p for p in glob.glob("/dev/input/event*") if p not in open_paths]
        if not fresh:
            return []
        devices, _ = readable_keyboards(self.wanted)
        keep = [d for d in devices if d.path in fresh]
        for dev in devices:
            if dev not in keep:
                dev.close()
        return keep

    def notify_started(self) -> None:
        self.logic.notify_started()

    def notify_stopped(self) -> None:
        self.logic.notify_stopped()

    def stop(self) -> None:
        self._stop.set()
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        self.logic.close()


def choose_backend(setting: str, session: Any) -> tuple[str, str]:
    """("x11" | "evdev" | "none", why) for hotkey.backend = ``setting`` in ``session``."""
    if setting != "auto":
        return setting, f"hotkey.backend = {setting}"
    if session.kind == "x11":
        return "x11", "X11 session: pynput listens on the X server"
    if session.kind == "wayland":
        _devices, why = readable_keyboards()
        for dev in _devices:
            dev.close()
        if not why:
            return "evdev", "Wayland: a keyboard in /dev/input is readable"
        return "none", (f"Wayland: no global hotkey ({why}); bind `qasr-daemon start-utterance` / "
                        "`stop-utterance` / `toggle` in your compositor")
    return "none", ("no desktop session (neither WAYLAND_DISPLAY nor DISPLAY is set): the hotkey is off; "
                    "the control commands (`qasr-daemon toggle`) still work")


def make_listener(backend: str, options: HotkeyOptions, callbacks: tuple[Callable[[], Any], ...],
                  devices: tuple[str, ...] = (), actions: dict[str, Callable[[], Any]] | None = None) -> Any:
    """``actions``: one-shot combos (paste-last, undo) the evdev listener serves too (X11: action_keys.py)."""
    if backend == "evdev":
        return EvdevHotkeyListener(options, *callbacks, devices=devices, actions=actions)
    if backend == "x11":
        from .hotkey import HotkeyListener
        return HotkeyListener(options, *callbacks)
    raise QasrError(f"hotkey backend {backend!r} has no listener")

