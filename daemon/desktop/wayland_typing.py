"""Key-injecting tools on Wayland: type text and press shortcuts (the paste keys).

- ``wtype``   zwp_virtual_keyboard_v1 (sway, Hyprland, river, Wayfire, labwc, niri; not GNOME, limited on
              KDE). Uploads a keymap holding exactly the characters of the text: exact for any Unicode.
              Each run is its own virtual keyboard; when it exits the compositor drops its pressed keys
              and modifiers, so nothing can stay stuck.
- ``ydotool`` / ``dotool`` / ``uinput`` (python-evdev): a virtual evdev keyboard through /dev/uinput,
              on every compositor (GNOME and KDE included). They send key *codes*, which the compositor
              turns into characters with the user's layout: only ASCII on a known US layout is typed,
              everything else goes through the clipboard and the paste keys. Modifiers are released in a
              ``finally`` (uinput) or by the tool's own key-up events.
A tool reports ``problem()`` ("" = usable; else one line that says what to do) and raises ``ToolFailed``
when it fails at run time, so the caller falls back to the next tool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from typing import Callable

from qasr.errors import QasrError

UINPUT = "/dev/uinput"
UINPUT_FIX = ("/dev/uinput is not writable: `sudo modprobe uinput` and add a udev rule "
              "KERNEL==\"uinput\", GROUP=\"input\", MODE=\"0660\", then `sudo usermod -aG input $USER` "
              "and log in again")
_MODIFIERS = {"ctrl": "ctrl", "control": "ctrl", "shift": "shift", "alt": "alt", "super": "logo",
              "win": "logo", "meta": "logo", "logo": "logo"}
# evdev key codes (linux/input-event-codes.h) of modifiers and the keys used in paste shortcuts.
_MOD_CODES = {"ctrl": 29, "shift": 42, "alt": 56, "logo": 125}
_NAMED_CODES = {"insert": 110, "return": 28, "enter": 28, "tab": 15, "space": 57, "backspace": 14, "escape": 1}
_LETTER_CODES = dict(zip("qwertyuiop", range(16, 26))) | dict(zip("asdfghjkl", range(30, 39))) \
    | dict(zip("zxcvbnm", range(44, 51)))
_DIGIT_CODES = dict(zip("1234567890", range(2, 12)))
# US layout: ASCII character -> (key code, shift)
US_KEYS: dict[str, tuple[int, bool]] = {}
for _c, _k in (_LETTER_CODES | _DIGIT_CODES).items():
    US_KEYS[_c] = (_k, False)
    if _c.isalpha():
        US_KEYS[_c.upper()] = (_k, True)
for _plain, _shifted, _k in (("-", "_", 12), ("=", "+", 13), ("[", "{", 26), ("]", "}", 27), (";", ":", 39),
                             ("'", '"', 40), ("`", "~", 41), ("\\", "|", 43), (",", "<", 51), (".", ">", 52),
                             ("/", "?", 53)):
    US_KEYS[_plain], US_KEYS[_shifted] = (_k, False), (_k, True)
for _c, _s in zip("1234567890", "!@#$%^&*()"):
    US_KEYS[_s] = (_DIGIT_CODES[_c], True)
US_KEYS.update({" ": (57, False), "\n": (28, False), "\t": (15, False)})


class ToolFailed(QasrError):
    """The tool ran and failed (or could not run): fall back to the next one."""


def parse_combo(combo: str) -> tuple[list[str], str]:
    """"ctrl+shift+v" -> (["ctrl", "shift"], "v"); "shift+Insert" -> (["shift"], "Insert")."""
    parts = [p.strip() for p in combo.split("+") if p.strip()]
    if not parts:
        raise QasrError(f"empty paste shortcut {combo!r}; use e.g. ctrl+v")
    mods = []
    for part in parts[:-1]:
        if part.lower() not in _MODIFIERS:
            raise QasrError(f"unknown modifier {part!r} in {combo!r}; use ctrl, shift, alt or super")
        mods.append(_MODIFIERS[part.lower()])
    return mods, parts[-1]


def key_code(key: str) -> int:
    code = _NAMED_CODES.get(key.lower()) or _LETTER_CODES.get(key.lower()) or _DIGIT_CODES.get(key)
    if code is None:
        raise QasrError(f"no key code for {key!r} in a paste shortcut; use a letter, digit or Insert")
    return code


def is_us_ascii(text: str) -> bool:
    return all(c in US_KEYS for c in text)


class KeyTool:
    name = ""
    exact = False          # types any Unicode itself (else: only US-layout ASCII)

    def problem(self) -> str:
        raise NotImplementedError

    def can_type(self, text: str) -> bool:
        return True

    def type_text(self, text: str) -> None:
        raise NotImplementedError

    def press(self, combo: str) -> None:
        raise NotImplementedError


def _run(name: str, cmd: list[str], data: bytes | None = None, timeout_s: float = 60.0) -> None:
    try:
        proc = subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              timeout=timeout_s, check=False, stdin=None if data is not None else subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise ToolFailed(f"{name} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolFailed(f"{name} did not finish within {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ToolFailed(f"{name} failed (exit {proc.returncode}): {err[-1] if err else 'no message'}")


class Wtype(KeyTool):
    name = "wtype"
    exact = True

    def __init__(self, start_delay_ms: int = 30, char_delay_ms: float = 0.0) -> None:
        # The first key after wtype uploads its keymap is lost by some clients (foot, measured) unless
        # wtype waits a little first (-s): 5 ms was enough on headless sway; 30 ms leaves margin.
        self.start_delay_ms = max(1, int(start_delay_ms))
        self.char_delay_ms = char_delay_ms

    def problem(self) -> str:
        if not shutil.which("wtype"):
            return "wtype is not installed: apt install wtype"
        return ""

    def type_text(self, text: str) -> None:
        cmd = ["wtype", "-s", str(self.start_delay_ms)]
        if self.char_delay_ms:
            cmd += ["-d", str(int(self.char_delay_ms))]
        _run(self.name, cmd + ["-"], text.encode("utf-8"), timeout_s=30 + len(text) * 0.05)

    def press_repeated(self, key: str, count: int) -> None:
        """``key`` ``count`` times in one run (one virtual keyboard: GTK 3 dropped lone single-key runs)."""
        cmd = ["wtype", "-s", str(self.start_delay_ms)]
        if self.char_delay_ms:
            cmd += ["-d", str(int(self.char_delay_ms))]
        _run(self.name, cmd + ["-k", key] * count, timeout_s=30 + count * 0.05)

    def press(self, combo: str) -> None:
        mods, key = parse_combo(combo)
        cmd = ["wtype", "-s", str(self.start_delay_ms)]
        for mod in mods:
            cmd += ["-M", mod]
        cmd += ["-k", key]
        for mod in reversed(mods):
            cmd += ["-m", mod]
        _run(self.name, cmd)


def uinput_problem() -> str:
    if not os.path.exists(UINPUT):
        return "/dev/uinput does not exist: the uinput kernel module is not loaded (sudo modprobe uinput)"
    if not os.access(UINPUT, os.W_OK):
        return UINPUT_FIX
    return ""


class _LayoutBound(KeyTool):
    """Tools that send key codes: ASCII is typed only on a US layout; the rest must be pasted."""

    def __init__(self, layout: Callable[[], str]) -> None:
        self._layout = layout

    def can_type(self, text: str) -> bool:
        return self._layout() == "us" and is_us_ascii(text)


class Ydotool(_LayoutBound):
    name = "ydotool"

    def problem(self) -> str:
        if not shutil.which("ydotool"):
            return "ydotool is not installed: apt install ydotool"
        if self._legacy():
            return uinput_problem()
        socket = os.environ.get("YDOTOOL_SOCKET") or "/tmp/.ydotool_socket"
        if not os.path.exists(socket):
            return f"ydotoold is not running (no {socket}): start it with `systemctl --user enable --now ydotool`"
        return ""

    def _legacy(self) -> bool:
        """ydotool 0.1.x (Debian 12) works without ydotoold and names keys; 1.x needs ydotoold and codes."""
        try:
            out = subprocess.run(["ydotool", "--help"], capture_output=True, timeout=5, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return True
        return b"recorder" in out.stdout + out.stderr

    def type_text(self, text: str) -> None:
        _run(self.name, ["ydotool", "type", "--", text] if not self._legacy() else ["ydotool", "type", text])

    def press(self, combo: str) -> None:
        mods, key = parse_combo(combo)
        if self._legacy():
            _run(self.name, ["ydotool", "key", "+".join([*mods, key.lower()])])
            return
        codes = [_MOD_CODES[m] for m in mods] + [key_code(key)]
        events = [f"{c}:1" for c in codes] + [f"{c}:0" for c in reversed(codes)]
        _run(self.name, ["ydotool", "key", *events])


class Dotool(_LayoutBound):
    name = "dotool"

    def problem(self) -> str:
        if not shutil.which("dotool"):
            return "dotool is not installed: build it from https://git.sr.ht/~geb/dotool (not packaged in Debian 12)"
        return uinput_problem()

    def type_text(self, text: str) -> None:
        lines = "".join(f"type {line}\nkey enter\n" for line in text.split("\n"))
        _run(self.name, ["dotool"], lines.removesuffix("key enter\n").encode())

    def press(self, combo: str) -> None:
        mods, key = parse_combo(combo)
        names = {"logo": "super"}
        _run(self.name, ["dotool"], ("key " + "+".join([names.get(m, m) for m in mods] + [key.lower()]) + "\n").encode())


class Uinput(_LayoutBound):
    """qasr's own virtual keyboard (python-evdev UInput): no extra tool, /dev/uinput writable."""

    name = "uinput"

    def __init__(self, layout: Callable[[], str], char_delay_ms: float = 2.0) -> None:
        super().__init__(layout)
        self.char_delay_s = char_delay_ms / 1000
        self._device = None

    def problem(self) -> str:
        try:
            import evdev  # noqa: F401
        except ImportError:
            return "python-evdev is not installed: pip install evdev (or apt install python3-evdev)"
        return uinput_problem()

    def _dev(self):
        if self._device is None:
            try:
                from evdev import UInput, ecodes
                keys = sorted({c for c, _ in US_KEYS.values()} | set(_MOD_CODES.values()) | set(_NAMED_CODES.values()))
                self._device = UInput({ecodes.EV_KEY: keys}, name="qasr virtual keyboard")
                time.sleep(0.2)  # the compositor must see the new device before its first key
            except Exception as exc:  # OSError / UInputError: permission, no module
                raise ToolFailed(f"uinput: {exc}; {uinput_problem() or UINPUT_FIX}") from exc
        return self._device

    def _tap(self, codes: list[int]) -> None:
        dev = self._dev()
        pressed: list[int] = []
        try:
            for code in codes:
                dev.write(1, code, 1)
                pressed.append(code)
            dev.syn()
        finally:
            for code in reversed(pressed):  # never leave a key (a modifier) down
                dev.write(1, code, 0)
            dev.syn()

    def type_text(self, text: str) -> None:
        for char in text:
            code, shift = US_KEYS[char]
            self._tap([_MOD_CODES["shift"], code] if shift else [code])
            time.sleep(self.char_delay_s)

    def press(self, combo: str) -> None:
        mods, key = parse_combo(combo)
        self._tap([_MOD_CODES[m] for m in mods] + [key_code(key)])

    def close(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None
