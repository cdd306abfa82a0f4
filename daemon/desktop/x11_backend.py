"""The X11 desktop back-end of ``output.TextOutput``: focused window, modifier state, XTEST typing and
paste keys, X selections. The Wayland twin is ``wayland_backend.WaylandBackend``; both offer
``focused / modifiers_released / type_text / press_keys / clipboard / flush / close / describe``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from qasr.errors import QasrError

from . import x11
from .clipboard import Clipboard
from .typing_xtest import TypingOptions, XTestTyper

_MODIFIER_NAMES = {"ctrl": "Control_L", "control": "Control_L", "shift": "Shift_L", "alt": "Alt_L",
                   "super": "Super_L", "win": "Super_L", "meta": "Meta_L"}


@dataclass
class TypeResult:
    tool: str                    # the tool that typed it: xtest, wtype, ydotool, dotool, uinput
    chars: int
    notes: list[str] = field(default_factory=list)   # tools skipped or failed on the way (warnings)


class SinkFailed(QasrError):
    """No tool could type the text; ``notes`` says why each one could not."""

    def __init__(self, message: str, notes: list[str] | None = None) -> None:
        super().__init__(message)
        self.notes = notes or []


def parse_key_combo(combo: str) -> list[int]:
    """"ctrl+shift+v" -> keysyms [Control_L, Shift_L, v]; QasrError naming the bad key."""
    from Xlib import XK

    keysyms = []
    for part in [p.strip() for p in combo.split("+")]:
        name = _MODIFIER_NAMES.get(part.lower(), part)
        keysym = XK.string_to_keysym(name)
        if not keysym and len(name) > 1:
            keysym = XK.string_to_keysym(name.capitalize())
        if not keysym:
            raise QasrError(f"unknown key {part!r} in paste shortcut {combo!r}; use names like ctrl+shift+v")
        keysyms.append(keysym)
    if not keysyms:
        raise QasrError(f"empty paste shortcut {combo!r}; use e.g. ctrl+v")
    return keysyms


class X11Backend:
    session = "x11"
    auto_sink = ""               # "" = the options' auto_terminal_sink / auto_default_sink decide

    def __init__(self, char_delay_ms: float = 2.0, keymap_restore_delay_s: float = 1.0, disp: Any = None,
                 clipboard: Any = None) -> None:
        self._lock = threading.RLock()   # the X connection and the keymap timer
        self._disp = disp
        self._owns_display = disp is None
        if self._disp is None:
            self._disp = x11.open_display()
        self._clipboard = clipboard
        self._typer: XTestTyper | None = None
        self._char_delay_s = char_delay_ms / 1000
        self._keymap_delay_s = keymap_restore_delay_s
        self._keymap_timer: threading.Timer | None = None

    @property
    def focus_api(self) -> str:
        return "X11 (_NET_ACTIVE_WINDOW / input focus)"

    def focused(self) -> x11.WindowInfo | None:
        with self._lock:
            return x11.active_window(self._disp)

    def modifiers_released(self, timeout_s: float) -> bool:
        with self._lock:
            return x11.wait_modifiers_released(self._disp, timeout_s)

    def _xtest(self) -> XTestTyper:
        if self._typer is None:
            self._typer = XTestTyper(self._disp, TypingOptions(char_delay_s=self._char_delay_s))
        return self._typer

    def type_text(self, text: str) -> TypeResult:
        with self._lock:
            if self._keymap_timer is not None:
                self._keymap_timer.cancel()
            sent = self._xtest().type(text)
            self._keymap_timer = _timer(self._keymap_delay_s, self._restore_keymap)
            return TypeResult("xtest", sent)

    def press_keys(self, combo: str) -> str:
        keysyms = parse_key_combo(combo)
        with self._lock:
            self._xtest().press_keysyms(keysyms)
        return "xtest"

    def clipboard(self) -> Clipboard:
        if self._clipboard is None:
            self._clipboard = Clipboard()
        return self._clipboard

    def _restore_keymap(self) -> None:
        with self._lock:
            self._keymap_timer = None
            if self._typer is not None:
                try:
                    self._typer.restore_keymap()
                except Exception:  # the X connection is gone (display closed, server ended)
                    pass

    def flush(self) -> None:
        with self._lock:
            timer = self._keymap_timer
        if timer is not None:
            timer.cancel()
            self._restore_keymap()

    def close(self) -> None:
        self.flush()
        if self._owns_display and self._disp is not None:
            self._disp.close()
            self._disp = None

    def describe(self) -> dict:
        return {"session": "x11", "typing": ["xtest"], "clipboard": "xclip/xsel",
                "keys": "xtest", "focus": self.focus_api}


def _timer(delay_s: float, func: Any) -> threading.Timer:
    timer = threading.Timer(delay_s, func)
    timer.daemon = True
    timer.start()
    return timer
