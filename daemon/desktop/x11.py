"""X11 helpers shared by typing, pasting and the hotkey: the display connection and the focused window.

python-xlib is imported lazily so that importing this module never needs an X server.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from qasr.errors import QasrError

# Focus values XGetInputFocus may return instead of a window.
_FOCUS_NONE = 0
_FOCUS_POINTER_ROOT = 1

NO_DISPLAY_MESSAGE = "no X display: DISPLAY is unset; run qasr inside an X11 (or XWayland) session"


class X11Unavailable(QasrError):
    """No X server can be reached (DISPLAY unset, pure Wayland, or the server refused us)."""


def display_name() -> str:
    return os.environ.get("DISPLAY", "")


def is_wayland_session() -> bool:
    return bool(os.environ.get("WAYLAND_DISPLAY")) or os.environ.get("XDG_SESSION_TYPE") == "wayland"


def open_display(name: str | None = None) -> Any:
    """A python-xlib Display, or X11Unavailable with a one-line reason."""
    name = display_name() if name is None else name
    if not name:
        raise X11Unavailable(NO_DISPLAY_MESSAGE)
    try:
        from Xlib import display as xdisplay
        from Xlib import error as xerror
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise X11Unavailable(
            "python-xlib is not installed: install qasr[desktop] for typing, pasting and the hotkey"
        ) from exc
    try:
        return _display_with_own_event_table(xdisplay, name)
    except (xerror.DisplayError, xerror.ConnectionClosedError, OSError) as exc:
        raise X11Unavailable(f"cannot open X display {name!r} ({exc}); check DISPLAY and xhost") from exc


def _display_with_own_event_table(xdisplay: Any, name: str) -> Any:
    """python-xlib keeps the table of event classes on its Display class, and each connection's
    extensions write their event codes into it: a second X server whose extensions number their events
    differently (Xvfb and XWayland in one process) then fails to connect. Each connection gets its own."""
    from Xlib.protocol import display as protocol_display
    from Xlib.protocol import event as protocol_event

    cls = protocol_display.Display
    cls.event_classes = protocol_event.event_class.copy()
    try:
        disp = xdisplay.Display(name)
        disp.display.event_classes = cls.event_classes
    finally:
        cls.event_classes = protocol_event.event_class.copy()
    return disp


def display_available(name: str | None = None) -> bool:
    try:
        open_display(name).close()
    except X11Unavailable:
        return False
    return True


@dataclass(frozen=True)
class WindowInfo:
    """A top-level window as the user sees it: the one keyboard input goes to."""

    window_id: int
    wm_instance: str = ""
    wm_class: str = ""
    name: str = ""

    def describe(self) -> str:
        label = self.wm_class or self.wm_instance or "window"
        return f"{label} {self.name!r} (0x{self.window_id:x})" if self.name else f"{label} (0x{self.window_id:x})"


def _atom(disp: Any, name: str) -> int:
    return disp.intern_atom(name)


def _has_property(disp: Any, window: Any, name: str) -> bool:
    from Xlib import X

    try:
        return window.get_full_property(_atom(disp, name), X.AnyPropertyType) is not None
    except Exception:  # window vanished (BadWindow) between query and read
        return False


def _net_active_window(disp: Any) -> int | None:
    """The window the window manager says is active, when an EWMH window manager runs."""
    from Xlib import X

    root = disp.screen().root
    try:
        prop = root.get_full_property(_atom(disp, "_NET_ACTIVE_WINDOW"), X.AnyPropertyType)
    except Exception:
        return None
    if prop is None or not len(prop.value):
        return None
    wid = int(prop.value[0])
    return wid or None


def _focus_window(disp: Any) -> int | None:
    """XGetInputFocus, with PointerRoot resolved to the top-level window under the pointer."""
    focus = disp.get_input_focus().focus
    fid = focus if isinstance(focus, int) else focus.id
    if fid == _FOCUS_NONE:
        return None
    if fid == _FOCUS_POINTER_ROOT:
        child = disp.screen().root.query_pointer().child
        cid = child if isinstance(child, int) else child.id
        return cid or None
    return fid


def _toplevel(disp: Any, wid: int) -> int:
    """Walk up from `wid` to the client window: the first ancestor with WM_STATE, else the child of root.

    Toolkits put keyboard focus on inner windows (Tk: a wrapper child), and reparenting window
    managers put the client inside a frame; both must compare equal to the same top-level.
    """
    root_id = disp.screen().root.id
    window = disp.create_resource_object("window", wid)
    below_root = window
    while True:
        if _has_property(disp, window, "WM_STATE"):
            return window.id
        try:
            parent = window.query_tree().parent
        except Exception:
            return wid
        pid = parent if isinstance(parent, int) else parent.id
        if pid in (0, root_id):
            below_root = window
            break
        window = disp.create_resource_object("window", pid)
    # A frame window of a reparenting WM: its client (with WM_STATE) lives below it.
    client = _find_client_below(disp, below_root, depth=3)
    return client if client is not None else below_root.id


def _find_client_below(disp: Any, window: Any, depth: int) -> int | None:
    if depth < 0:
        return None
    if _has_property(disp, window, "WM_STATE"):
        return window.id
    try:
        children = window.query_tree().children
    except Exception:
        return None
    for child in children:
        found = _find_client_below(disp, child, depth - 1)
        if found is not None:
            return found
    return None


def _text_property(disp: Any, window: Any, names: tuple[str, ...]) -> str:
    from Xlib import X

    for name in names:
        try:
            prop = window.get_full_property(_atom(disp, name), X.AnyPropertyType)
        except Exception:
            return ""
        if prop is not None and prop.value:
            value = prop.value
            if isinstance(value, bytes):
                return value.decode("utf-8", "replace")
            return str(value)
    return ""


def window_info(disp: Any, wid: int) -> WindowInfo:
    window = disp.create_resource_object("window", wid)
    instance = klass = ""
    try:
        wm_class = window.get_wm_class()
    except Exception:
        wm_class = None
    if wm_class:
        instance, klass = wm_class[0] or "", wm_class[1] or ""
    name = _text_property(disp, window, ("_NET_WM_NAME", "WM_NAME"))
    return WindowInfo(window_id=wid, wm_instance=instance, wm_class=klass, name=name)


def active_window(disp: Any) -> WindowInfo | None:
    """The top-level window keyboard input goes to now, or None when nothing has focus."""
    wid = _net_active_window(disp)
    if wid is None:
        wid = _focus_window(disp)
    if wid is None:
        return None
    return window_info(disp, _toplevel(disp, wid))


MODIFIER_KEYSYM_NAMES = (
    "Shift_L", "Shift_R", "Control_L", "Control_R", "Alt_L", "Alt_R",
    "Meta_L", "Meta_R", "Super_L", "Super_R", "ISO_Level3_Shift",
)


def held_modifier_keycodes(disp: Any) -> list[int]:
    """Keycodes of modifier keys (Ctrl, Alt, Shift, Super) that are physically held right now."""
    from Xlib import XK

    keymap = disp.query_keymap()  # 32 bytes, one bit per keycode
    held: list[int] = []
    for name in MODIFIER_KEYSYM_NAMES:
        keysym = XK.string_to_keysym(name)
        for keycode, _index in disp.keysym_to_keycodes(keysym):
            if keymap[keycode // 8] & (1 << (keycode % 8)) and keycode not in held:
                held.append(keycode)
    return held


def wait_modifiers_released(disp: Any, timeout_s: float) -> bool:
    """Wait until the user lets go of Ctrl/Alt/Shift/Super (a hotkey); True if released in time.

    Typing while Ctrl is still held would turn characters into shortcuts.
    """
    deadline = time.monotonic() + timeout_s
    while held_modifier_keycodes(disp):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
