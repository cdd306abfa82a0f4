"""Deliver dictated text to the window the user was in: type it, paste it, or leave it on the clipboard.

The desktop itself is a back-end chosen per session (`backend`, default from daemon/desktop/session.py):
`x11_backend.X11Backend` (XTEST, xclip/xsel) or `wayland_backend.WaylandBackend` (wtype / ydotool /
dotool / uinput, wl-clipboard, sway/Hyprland IPC for the focused window).

Sinks
- `type`: X11: XTEST typing with keymap remapping (daemon/desktop/typing_xtest.py). Wayland: the first
  tool of the compositor's chain that can type the text. Exact for any character; does not touch the
  clipboard. A tool that fails falls back to the next one, then to `paste`, then to the clipboard.
- `paste`: put the text on the CLIPBOARD, press the paste shortcut, restore the user's clipboard later.
  The shortcut follows the window's WM_CLASS: Ctrl+V by default, Ctrl+Shift+V for terminals, and
  Shift+Insert for xterm/urxvt, which paste the PRIMARY selection (so PRIMARY is set and restored too).
- `auto`: per-application rules (`auto_rules`, WM_CLASS / app_id globs); on Wayland everything else is
  typed (wtype is exact; GTK3 ignored wtype's Ctrl in tests, so Ctrl+V from it pastes nothing there).
  On X11 terminals are *typed*
  (no terminal-specific paste keys to get wrong, the clipboard is left alone, and a shell never sees
  a multi-line paste) and every other application gets *paste* (exact and instant, also in apps that
  handle remapped keycodes poorly).
- `none`: deliver nothing (captions/clients only).

Newlines and tabs: typed or pasted into a terminal (`terminal_classes`, as for the paste keys; also a window
the desktop cannot name) a newline is Enter and runs the command line and a tab completes it, so there each
becomes a space unless `terminal_newlines` (`text_for_window`). Every sink sends what `text_for_window` gives,
and so does the input method's commit (`text_for`).

Focus safety (where the desktop can tell the focused window: X11, sway, Hyprland; elsewhere the text
goes to whatever has focus and status says so): `begin_utterance()` records the focused window and returns an `UtteranceTarget`; the
final of that utterance is delivered with `deliver(text, target)`, and the focused window must still be
the recorded one. Each utterance keeps its own target, so an utterance that starts before the previous
one's final is out does not change where the previous one goes. If focus moved, nothing is typed: the
text goes on the clipboard and the result says so (`focus_moved`, `message`), which the app turns into
a `warning` event. Without a target argument the methods use the utterance begun last.

Live typing (opt-in, `deliver_committed(delta, target)`): committed text is typed as it is committed,
never erased; `deliver(final, target)` then sends only the part of the final text not typed yet.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from qasr.config.settings import PASTE_KEY_RULES, TERMINAL_CLASSES
from qasr.errors import QasrError

from . import session as sessions
from . import x11
from .clipboard import CLIPBOARD, PRIMARY, ClipboardSnapshot
from .undo import Delivered
from .x11_backend import SinkFailed, X11Backend, parse_key_combo

__all__ = ["DeliveryResult", "OutputOptions", "TextOutput", "UtteranceTarget", "parse_key_combo", "make_backend",
           "text_for_window"]

log = logging.getLogger("qasr.output")

SINKS = ("auto", "type", "paste", "none")
BACKENDS = ("auto", "x11", "wayland")

# The defaults live with the settings (config/settings.py) so config.toml documents them.
DEFAULT_TERMINAL_CLASSES = TERMINAL_CLASSES
# Terminals whose paste key inserts the PRIMARY selection (no default Ctrl+Shift+V binding).
DEFAULT_PASTE_KEY_RULES = PASTE_KEY_RULES



@dataclass
class OutputOptions:
    sink: str = "auto"                       # auto | type | paste | none
    auto_rules: dict[str, str] = field(default_factory=dict)   # WM_CLASS glob -> type | paste | none
    auto_terminal_sink: str = "type"         # what `auto` does in a terminal
    auto_default_sink: str = "paste"         # what `auto` does everywhere else
    terminal_classes: tuple[str, ...] = DEFAULT_TERMINAL_CLASSES
    paste_keys: str = "ctrl+v"
    terminal_paste_keys: str = "ctrl+shift+v"
    paste_key_rules: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PASTE_KEY_RULES))
    terminal_newlines: bool = False          # False: a newline into a terminal arrives as a space, not Enter
    restore_clipboard: bool = True
    restore_delay_s: float = 1.0             # apps read the clipboard asynchronously after the keystroke
    focus_check: bool = True
    char_delay_ms: float = 2.0               # XTEST typing: pause after each character (>= 2 ms)
    keymap_restore_delay_s: float = 1.0      # unmap borrowed keycodes this long after typing ends
    modifier_release_timeout_s: float = 1.5  # wait for the user to let go of the hotkey's Ctrl/Alt
    backend: str = "auto"                    # auto (Wayland when WAYLAND_DISPLAY is set) | x11 | wayland
    wayland_tools: tuple[str, ...] = ("auto",)  # typing tools in order; auto = per compositor
    uinput_layout: str = "auto"              # uinput tools type ASCII as key codes only on "us"
    wtype_start_delay_ms: int = 30           # wtype -s: the first key after its keymap upload is lost without it
    unknown_window_paste_keys: str = "shift+Insert"  # Wayland without a focus query: terminal or not is unknown


@dataclass(frozen=True)
class DeliveryResult:
    sink: str                                # type | paste | none | clipboard (the fallback)

    delivered: bool                          # True when the text reached the target window
    chars: int = 0
    seconds: float = 0.0
    focus_moved: bool = False
    target: x11.WindowInfo | None = None
    focused: x11.WindowInfo | None = None
    message: str = ""                        # non-empty: tell the user (a `warning` event)
    tool: str = ""                           # what delivered it: xtest, wtype, ydotool, dotool, uinput, wl-copy…


class UtteranceTarget:
    """One utterance's delivery state: the window it belongs to and what live typing sent there."""

    def __init__(self, window: x11.WindowInfo | None) -> None:
        self.window = window
        self.typed_text = ""                 # live-typed committed text (the app computes the next delta)
        self.live_failed = ""                # why live typing stopped ("" while fine)
        self.sink = ""                       # a profile's sink for this utterance ("" = the options')

    @property
    def window_id(self) -> int | None:
        return self.window.window_id if self.window is not None else None

    def __repr__(self) -> str:
        where = self.window.describe() if self.window is not None else "no window"
        return f"UtteranceTarget({where}, typed={len(self.typed_text)} chars)"


def validate_options(options: OutputOptions) -> None:
    for name, value in (("sink", options.sink), ("auto_terminal_sink", options.auto_terminal_sink),
                        ("auto_default_sink", options.auto_default_sink)):
        allowed = SINKS if name == "sink" else SINKS[1:]
        if value not in allowed:
            raise QasrError(f"output {name} = {value!r} is not one of {', '.join(allowed)}; fix the config")
    for pattern, sink in options.auto_rules.items():
        if sink not in SINKS[1:]:
            raise QasrError(f"output auto_rules[{pattern!r}] = {sink!r} is not type, paste or none; fix the config")
    for combo in (options.paste_keys, options.terminal_paste_keys, *options.paste_key_rules.values()):
        parse_key_combo(combo)
    if options.char_delay_ms < 0:
        raise QasrError("output char_delay_ms must be >= 0; fix the config")
    if options.backend not in BACKENDS:
        raise QasrError(f"output backend = {options.backend!r} is not one of {', '.join(BACKENDS)}; fix the config")
    from .wayland_backend import TOOLS
    for tool in options.wayland_tools:
        if tool not in (*TOOLS, "auto"):
            raise QasrError(f"output wayland_tools: unknown tool {tool!r}; use {', '.join(TOOLS)} or auto")
    parse_key_combo(options.unknown_window_paste_keys)



def _matches(window: x11.WindowInfo | None, pattern: str) -> bool:
    if window is None:
        return False
    pattern = pattern.lower()
    return any(fnmatch.fnmatchcase(name.lower(), pattern) for name in (window.wm_class, window.wm_instance) if name)


def is_terminal(window: x11.WindowInfo | None, options: OutputOptions) -> bool:
    return any(_matches(window, p) for p in options.terminal_classes)


def text_for_window(text: str, window: x11.WindowInfo | None, options: OutputOptions, focus_known: bool) -> str:
    """What may be sent to `window`: no newline (Enter) nor tab (completion) into a terminal, or into a window
    that may be one."""
    if options.terminal_newlines or not any(c in text for c in "\n\r\t"):
        return text
    if is_terminal(window, options) or (window is None and not focus_known):
        return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return text


def resolve_sink(window: x11.WindowInfo | None, options: OutputOptions, session_default: str = "") -> str:
    """The concrete sink (type | paste | none) for text going to `window`."""
    if options.sink != "auto":
        return options.sink
    for pattern, sink in options.auto_rules.items():
        if _matches(window, pattern):
            return sink
    if session_default:
        return session_default
    return options.auto_terminal_sink if is_terminal(window, options) else options.auto_default_sink


def paste_keys_for(window: x11.WindowInfo | None, options: OutputOptions) -> str:
    for pattern, combo in options.paste_key_rules.items():
        if _matches(window, pattern):
            return combo
    return options.terminal_paste_keys if is_terminal(window, options) else options.paste_keys


def make_backend(options: OutputOptions, disp: Any = None, clipboard: Any = None,
                 session: sessions.Session | None = None) -> Any:
    """The desktop back-end for this session: X11Backend or WaylandBackend (QasrError: neither works)."""
    if disp is not None:
        return X11Backend(options.char_delay_ms, options.keymap_restore_delay_s, disp, clipboard)
    session = session or sessions.detect()
    kind = options.backend if options.backend != "auto" else session.kind
    if kind == sessions.WAYLAND:
        if not session.wayland:
            raise QasrError("output backend = wayland but WAYLAND_DISPLAY is unset; run inside the Wayland session")
        from .wayland_backend import WaylandBackend
        return WaylandBackend(session, tuple(options.wayland_tools), options.uinput_layout, options.char_delay_ms,
                              options.wtype_start_delay_ms, clipboard)
    if kind == sessions.NONE:
        raise x11.X11Unavailable("no desktop session (neither WAYLAND_DISPLAY nor DISPLAY is set); "
                                 "run qasr inside your graphical session")
    return X11Backend(options.char_delay_ms, options.keymap_restore_delay_s, None, clipboard)


class TextOutput:
    """Delivers utterances to the focused window. Callers serialize their calls (the daemon holds its
    output lock); clipboard restores run on a timer."""

    def __init__(self, options: OutputOptions | None = None, disp: Any = None,
                 clipboard: Any = None, session: sessions.Session | None = None) -> None:
        self.options = options or OutputOptions()
        validate_options(self.options)
        self._lock = threading.RLock()       # guards the pending clipboard restore
        self.backend: Any = None
        if self.options.sink != "none":
            self.backend = make_backend(self.options, disp, clipboard, session)
        self._current: UtteranceTarget | None = None  # the utterance begun last (calls without a target)
        self._restore_timer: threading.Timer | None = None
        self._restore_snapshots: list[ClipboardSnapshot] = []
        self._restore_text = ""
        self.serial = 0                      # advances with every key event sent (undo: "nothing typed since")
        self.last: Delivered | None = None   # the last final that reached a window (undo, see undo.py)

    @property
    def focus_known(self) -> bool:
        """Whether the desktop tells the focused window (no: Wayland without sway/Hyprland IPC)."""
        return self.backend is not None and bool(self.backend.focus_api)

    def describe(self) -> dict:
        """What status shows: the session's back-ends and why."""
        if self.backend is None:
            return {"sink": "none"}
        return {"sink": self.options.sink, **self.backend.describe()}

    # -- utterance lifecycle -----------------------------------------------------------------
    def begin_utterance(self) -> UtteranceTarget:
        """Remember where the user is now: the text of this utterance goes there or nowhere."""
        self._current = UtteranceTarget(self._focused())
        return self._current

    def cancel_utterance(self, target: UtteranceTarget | None = None) -> None:
        """Forget an utterance (the one begun last by default); nothing more is delivered for it."""
        if target is None or target is self._current:
            self._current = None

    @property
    def target(self) -> x11.WindowInfo | None:
        """The window of the utterance begun last."""
        return self._current.window if self._current is not None else None

    @property
    def typed_text(self) -> str:
        """What live typing has sent in the utterance begun last."""
        return self._current.typed_text if self._current is not None else ""

    def deliver_committed(self, delta: str, target: UtteranceTarget | None = None) -> DeliveryResult | None:
        """Live typing: type newly committed text now (never erased later). None when nothing to do."""
        if not delta or self.options.sink == "none":
            return None
        utt = self._resolve(target)
        if utt.live_failed or self._utt_sink(utt) == "none":
            return None
        focused = self._focused()
        if self._focus_moved(utt, focused):
            utt.live_failed = "focus moved"
            return DeliveryResult("none", False, focus_moved=True, target=utt.window, focused=focused,
                                  message=_focus_message(utt, focused, "live typing stopped"))
        started = time.monotonic()
        if not self._modifiers_released():
            utt.live_failed = "modifier keys held"
            return None
        try:
            typed = self.backend.type_text(self._text_for(delta, utt))
        except SinkFailed as exc:
            utt.live_failed = "no typing tool worked"
            return DeliveryResult("none", False, target=utt.window, focused=focused,
                                  message="live typing stopped: " + "; ".join(exc.notes or [str(exc)]))
        utt.typed_text += delta
        self.serial += 1
        return DeliveryResult("type", True, typed.chars, time.monotonic() - started, target=utt.window,
                              focused=focused, tool=typed.tool, message=_notes_message(typed.notes, typed.tool))

    def deliver(self, text: str, target: UtteranceTarget | None = None) -> DeliveryResult:
        """Deliver the final text of an utterance (minus what live typing already sent); the utterance ends."""
        utt = self._resolve(target)
        try:
            result = self._deliver(text, utt)
        finally:
            self.cancel_utterance(utt)
        if result.delivered:
            self.serial += 1
            self.last = Delivered(utt.window, text, self.serial, result.sink, is_terminal(utt.window, self.options))
        elif utt.typed_text and text == utt.typed_text and not result.message:
            # live typing sent all of it: the whole text is in the window, as one undoable piece
            self.last = Delivered(utt.window, text, self.serial, "type", is_terminal(utt.window, self.options))
        elif utt.typed_text:
            self.last = None  # live typing sent part of it: not one undoable piece
        if result.delivered:
            log.info("delivered %d characters by %s (%s) in %.3f s", result.chars, result.sink, result.tool,
                     result.seconds)
        return result

    def _resolve(self, target: UtteranceTarget | None) -> UtteranceTarget:
        if target is not None:
            return target
        if self._current is None:  # no begin_utterance: deliver where the user is now
            self.begin_utterance()
        return self._current

    def _sink_for(self, window: x11.WindowInfo | None) -> str:
        return resolve_sink(window, self.options, self.backend.auto_sink if self.backend is not None else "")

    def _utt_sink(self, utt: UtteranceTarget) -> str:
        if not utt.sink or self.backend is None:
            return self._sink_for(utt.window)
        if utt.sink != "auto":
            return utt.sink
        return resolve_sink(utt.window, replace(self.options, sink="auto"), self.backend.auto_sink)

    def text_for(self, text: str, target: UtteranceTarget | None) -> str:
        """``text`` as it may go to the window of ``target`` (an utterance's; None: the focused one, unknown)."""
        return text_for_window(text, target.window if target is not None else None, self.options, self.focus_known)

    def _text_for(self, text: str, utt: UtteranceTarget) -> str:
        return self.text_for(text, utt)

    def _focus_moved(self, utt: UtteranceTarget, focused: x11.WindowInfo | None) -> bool:
        return self.options.focus_check and self.focus_known and not _same_window(utt, focused)

    def _deliver(self, text: str, utt: UtteranceTarget) -> DeliveryResult:
        if self.options.sink == "none":
            return DeliveryResult("none", False, 0)
        focused = self._focused()
        typed = utt.typed_text
        if typed and not text.startswith(typed):
            return self._to_clipboard(text, utt, focused, False,
                                      "the final text differs from what was typed live; it is on the clipboard")
        if utt.live_failed:
            return self._to_clipboard(text, utt, focused, utt.live_failed == "focus moved",
                                      f"live typing stopped ({utt.live_failed}); the whole text is on the clipboard")
        rest = self._text_for(text[len(typed):], utt)
        sink = self._utt_sink(utt)
        if sink == "none" or not rest:
            return DeliveryResult(sink, False, 0, target=utt.window, focused=focused)
        if self._focus_moved(utt, focused):
            return self._to_clipboard(text, utt, focused, True, _focus_message(utt, focused, "nothing typed"))
        if not self._modifiers_released():
            return self._to_clipboard(text, utt, focused, False,
                                      "modifier keys were still held, so nothing was typed; the text is on the clipboard")
        started = time.monotonic()
        notes: list[str] = []
        if sink == "type":
            try:
                typed_result = self.backend.type_text(rest)
            except SinkFailed as exc:
                notes = exc.notes  # no tool could type it: paste instead
            else:
                return DeliveryResult("type", True, typed_result.chars, time.monotonic() - started,
                                      target=utt.window, focused=focused, tool=typed_result.tool,
                                      message=_notes_message(typed_result.notes, typed_result.tool))
        try:
            tool = self._paste(rest, self._paste_keys(utt.window))
        except QasrError as exc:  # SinkFailed (no key tool), ClipboardUnavailable
            why = "; ".join([*notes, *getattr(exc, "notes", [])] or [str(exc)])
            return self._to_clipboard(text, utt, focused, False, f"could not type or paste ({why}); "
                                      "the text is on the clipboard")
        message = _notes_message(notes, f"pasted with {tool}") if notes else ""
        return DeliveryResult("paste", True, len(rest), time.monotonic() - started,
                              target=utt.window, focused=focused, tool=tool, message=message)

    # -- paste ---------------------------------------------------------------------------------
    def _paste_keys(self, window: x11.WindowInfo | None) -> str:
        if window is None and not self.focus_known:
            return self.options.unknown_window_paste_keys  # terminal or not: unknown
        return paste_keys_for(window, self.options)

    def _paste(self, text: str, combo: str) -> str:
        override = getattr(self.backend, "paste_keys_override", None)
        combo = override(combo) if override is not None else combo
        selections = [CLIPBOARD, PRIMARY] if "insert" in combo.lower() else [CLIPBOARD]
        clipboard = self.backend.clipboard()
        with self._lock:
            pending = self._restore_timer is not None
            if pending:
                # A restore is still due: keep the user's original content, not our previous text.
                self._restore_timer.cancel()
                self._restore_timer = None
            saved = {s.selection: s for s in self._restore_snapshots} if pending else {}
            try:
                for selection in selections:
                    if selection not in saved and self.options.restore_clipboard:
                        saved[selection] = clipboard.save(selection)
                    clipboard.set_text(text, selection)  # returns once the selection holds it: never stale
                tool = self.backend.press_keys(combo)
            finally:
                if self.options.restore_clipboard and saved:
                    self._restore_snapshots = list(saved.values())
                    self._restore_text = text
                    self._restore_timer = _timer(self.options.restore_delay_s, self._restore_clipboard)
            return tool

    def _to_clipboard(self, text: str, utt: UtteranceTarget, focused: x11.WindowInfo | None,
                      focus_moved: bool, message: str) -> DeliveryResult:
        tool = ""
        try:
            with self._lock:
                if self._restore_timer is not None:  # the user's content must not come back over this
                    self._restore_timer.cancel()
                    self._restore_timer = None
                    self._restore_snapshots, self._restore_text = [], ""
                clipboard = self.backend.clipboard()
                clipboard.set_text(text)
                tool = getattr(clipboard, "tool", "")
        except QasrError as exc:
            message = f"{message.split(';')[0]}; the clipboard failed too ({exc}), text lost: {text!r}"
        log.warning("%s", message)
        return DeliveryResult("clipboard", False, len(text), focus_moved=focus_moved,
                              target=utt.window, focused=focused, message=message, tool=tool)

    # -- restores ------------------------------------------------------------------------------
    def _restore_clipboard(self) -> None:
        with self._lock:
            snapshots, ours = self._restore_snapshots, self._restore_text
            self._restore_snapshots, self._restore_text, self._restore_timer = [], "", None
        if not snapshots:
            return
        clipboard = self.backend.clipboard()
        for snapshot in snapshots:
            try:
                if clipboard.get_text(snapshot.selection) == ours:  # else the user copied something since
                    clipboard.restore(snapshot)
            except QasrError as exc:
                log.warning("could not restore the %s selection: %s", snapshot.selection, exc)

    def flush(self) -> None:
        """Run pending clipboard and keymap restores now (tests, shutdown)."""
        with self._lock:
            restore = self._restore_timer
        if restore is not None:
            restore.cancel()
            self._restore_clipboard()
        if self.backend is not None:
            self.backend.flush()

    def close(self) -> None:
        self.flush()
        if self.backend is not None:
            self.backend.close()

    # -- focus ---------------------------------------------------------------------------------
    def focused(self) -> x11.WindowInfo | None:
        """The window that has keyboard focus now (None: none, or the desktop cannot tell)."""
        return self._focused()

    def _focused(self) -> x11.WindowInfo | None:
        return self.backend.focused() if self.backend is not None else None

    def _modifiers_released(self) -> bool:
        return self.backend.modifiers_released(self.options.modifier_release_timeout_s)


def _notes_message(notes: list[str], what: str) -> str:
    """A warning when tools were skipped on the way ("" when the first choice worked)."""
    if not notes:
        return ""
    done = what if " " in what else f"typed with {what}"
    return f"{'; '.join(notes)}; {done} instead"


def _same_window(utt: UtteranceTarget, focused: x11.WindowInfo | None) -> bool:
    return utt.window is not None and focused is not None and focused.window_id == utt.window.window_id


def _focus_message(utt: UtteranceTarget, focused: x11.WindowInfo | None, what: str) -> str:
    if utt.window is None:
        return f"no window had keyboard focus when dictation started: {what}; the text is on the clipboard"
    where = focused.describe() if focused else "no window"
    return f"focus moved from {utt.window.describe()} to {where}: {what}; the text is on the clipboard"


def _timer(delay_s: float, func: Any) -> threading.Timer:
    timer = threading.Timer(delay_s, func)
    timer.daemon = True
    timer.start()
    return timer
