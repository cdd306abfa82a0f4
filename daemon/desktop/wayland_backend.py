"""The Wayland desktop back-end of ``output.TextOutput`` (the X11 twin: ``x11_backend.X11Backend``).

Typing goes through a chain of key-injecting tools chosen per compositor (``TOOL_ORDER``, or the
``output.wayland_tools`` setting); a tool that is missing, lacks permission, cannot type the text (a uinput
tool with non-ASCII text or a non-US layout) or fails at run time is skipped and the next one is tried;
when none can type, ``SinkFailed`` lets the output paste instead, and the clipboard comes last. Each
skipped tool is reported once per back-end (a warning event), not on every utterance.

Paste: wl-copy/wl-paste (``wl_clipboard``) and the paste keys pressed by the first tool that works.
Focus: sway / Hyprland IPC (``compositor_ipc``); elsewhere there is no query, ``focus_api`` is "" and the
output delivers without the focus check (status and docs say so). Modifier state cannot be read on
Wayland; wtype's virtual keyboard carries its own (empty) modifier state, so held keys do not leak in.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from .compositor_ipc import CompositorIpcError, SwayIpc, focus_source
from .session import GNOME, KDE, Session
from .wayland_typing import Dotool, KeyTool, ToolFailed, Uinput, Wtype, Ydotool
from .wl_clipboard import WlClipboard
from .x11 import WindowInfo
from .x11_backend import SinkFailed, TypeResult

log = logging.getLogger("qasr.output")

TOOLS = ("wtype", "ydotool", "dotool", "uinput")
TOOL_ORDER = {
    GNOME: ("ydotool", "dotool", "uinput"),              # Mutter has no virtual-keyboard protocol
    KDE: ("ydotool", "dotool", "uinput", "wtype"),       # KWin: fake input via uinput first
}
DEFAULT_ORDER = ("wtype", "dotool", "ydotool", "uinput")  # sway, Hyprland, river, Wayfire, labwc, niri…
LAYOUT_CACHE_S = 30.0


def tool_order(session: Session, configured: tuple[str, ...] = ("auto",)) -> tuple[str, ...]:
    if configured and tuple(configured) != ("auto",):
        return tuple(configured)
    return TOOL_ORDER.get(session.compositor, DEFAULT_ORDER)


class WaylandBackend:
    session = "wayland"
    auto_sink = "type"   # wtype is exact everywhere; uinput tools fall back to paste by themselves

    def __init__(self, session: Session, tools: tuple[str, ...] = ("auto",), layout: str = "auto",
                 char_delay_ms: float = 2.0, wtype_start_delay_ms: int = 30, clipboard: Any = None,
                 env: dict[str, str] | None = None) -> None:
        self.info = session
        self._env = dict(os.environ if env is None else env)
        self._layout_setting = layout
        self._layout_cache: tuple[float, str] = (0.0, "")
        self._focus = focus_source(session, self._env)
        self._clipboard = clipboard
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self.tools: list[KeyTool] = [self._make(name, char_delay_ms, wtype_start_delay_ms)
                                     for name in tool_order(session, tools)]

    def _make(self, name: str, char_delay_ms: float, wtype_start_delay_ms: int) -> KeyTool:
        if name == "wtype":
            return Wtype(wtype_start_delay_ms)
        if name == "ydotool":
            return Ydotool(self.layout)
        if name == "dotool":
            return Dotool(self.layout)
        if name == "uinput":
            return Uinput(self.layout, char_delay_ms)
        from qasr.errors import QasrError
        raise QasrError(f"output.wayland_tools: unknown tool {name!r}; use {', '.join(TOOLS)} or \"auto\"")

    # -- focus ---------------------------------------------------------------------------------
    @property
    def focus_api(self) -> str:
        return self.info.focus_api if self._focus is not None else ""

    def focused(self) -> WindowInfo | None:
        if self._focus is None:
            return None
        try:
            return self._focus.focused()
        except CompositorIpcError as exc:
            log.warning("focused window unknown: %s", exc)
            return None

    def modifiers_released(self, timeout_s: float) -> bool:
        return True

    # -- layout (for tools that send key codes) ------------------------------------------------
    def layout(self) -> str:
        """"us" when ASCII may be typed as US key codes; anything else means: paste."""
        if self._layout_setting != "auto":
            return self._layout_setting
        at, value = self._layout_cache
        if value and time.monotonic() - at < LAYOUT_CACHE_S:
            return value
        value = self._detect_layout()
        self._layout_cache = (time.monotonic(), value)
        return value

    def _detect_layout(self) -> str:
        if isinstance(self._focus, SwayIpc):
            try:
                names = self._focus.keyboard_layouts()
            except CompositorIpcError:
                names = []
            if names:
                return "us" if all(n == "English (US)" for n in names) else names[0]
        value = self._env.get("XKB_DEFAULT_LAYOUT", "")
        if not value:
            try:
                for line in open("/etc/default/keyboard", encoding="utf-8"):
                    if line.startswith("XKBLAYOUT="):
                        value = line.split("=", 1)[1].strip().strip('"')
            except OSError:
                pass
        first = value.split(",")[0].strip()
        variant = self._env.get("XKB_DEFAULT_VARIANT", "")
        return "us" if first == "us" and not variant else (first or "unknown")

    # -- typing and keys ------------------------------------------------------------------------
    def type_text(self, text: str) -> TypeResult:
        notes: list[str] = []
        for tool in self.tools:
            problem = tool.problem()
            if problem:
                self._note(notes, tool.name, problem)
                continue
            if not tool.can_type(text):
                log.info("%s types only ASCII on a US layout (layout %s): pasting instead", tool.name, self.layout())
                continue
            try:
                with self._lock:
                    tool.type_text(text)
            except ToolFailed as exc:
                self._note(notes, tool.name, str(exc), always=True)
                continue
            return TypeResult(tool.name, len(text), notes)
        raise SinkFailed("no Wayland typing tool could type the text", notes)

    def press_keys(self, combo: str) -> str:
        notes: list[str] = []
        for tool in self.tools:
            if tool.problem():
                continue
            keys = combo
            if not tool.exact and self.layout() != "us" and combo.lower().endswith("+v"):
                keys = "shift+Insert"  # key codes: "v" is elsewhere on other layouts, Insert is not
            try:
                with self._lock:
                    tool.press(keys)
                return tool.name
            except ToolFailed as exc:
                self._note(notes, tool.name, str(exc), always=True)
        raise SinkFailed("no Wayland tool could press the paste keys", notes)

    def press_repeated(self, key: str, count: int) -> str:
        """One key ``count`` times (undo's BackSpaces): in one run where the tool can, else one by one."""
        for tool in self.tools:
            if tool.problem():
                continue
            with self._lock:
                repeated = getattr(tool, "press_repeated", None)
                if repeated is not None:
                    repeated(key, count)
                else:
                    for _ in range(count):
                        tool.press(key)
            return tool.name
        raise SinkFailed("no Wayland tool could press keys")

    def paste_keys_override(self, combo: str) -> str:
        """The keys the first usable tool will really press (shift+Insert on non-US key-code tools)."""
        for tool in self.tools:
            if not tool.problem():
                if not tool.exact and self.layout() != "us" and combo.lower().endswith("+v"):
                    return "shift+Insert"
                return combo
        return combo

    def _note(self, notes: list[str], name: str, problem: str, always: bool = False) -> None:
        line = f"{name}: {problem}"
        if always or line not in self._warned:
            self._warned.add(line)
            notes.append(line)
        log.debug("skipping %s", line)

    def clipboard(self) -> WlClipboard:
        if self._clipboard is None:
            self._clipboard = WlClipboard()
        return self._clipboard

    def flush(self) -> None:
        pass

    def close(self) -> None:
        for tool in self.tools:
            close = getattr(tool, "close", None)
            if close is not None:
                close()

    def describe(self) -> dict:
        usable = [t.name for t in self.tools if not t.problem()]
        try:
            self.clipboard()
            clip = "wl-clipboard"
        except Exception as exc:  # ClipboardUnavailable
            clip = f"unavailable: {exc}"
        return {"session": "wayland", "compositor": self.info.compositor, "typing": usable,
                "unusable": {t.name: t.problem() for t in self.tools if t.problem()},
                "clipboard": clip, "focus": self.focus_api or f"none: {self.info.focus_note}"}
