"""Deliver dictated text to the window the user was in: type it, paste it, or leave it on the clipboard.

Sinks
- `type`: XTEST typing with keymap remapping (daemon/desktop/typing_xtest.py). Exact for any character; does not
  touch the clipboard; ~100 characters/s for text with many distinct characters.
- `paste`: put the text on the CLIPBOARD, press the paste shortcut, restore the user's clipboard later.
  The shortcut follows the window's WM_CLASS: Ctrl+V by default, Ctrl+Shift+V for terminals, and
  Shift+Insert for xterm/urxvt, which paste the PRIMARY selection (so PRIMARY is set and restored too).
- `auto`: per-application rules (`auto_rules`, WM_CLASS globs); otherwise terminals are *typed*
  (no terminal-specific paste keys to get wrong, the clipboard is left alone, and a shell never sees
  a multi-line paste) and every other application gets *paste* (exact and instant, also in apps that
  handle remapped keycodes poorly).
- `none`: deliver nothing (captions/clients only).

Focus safety: `begin_utterance()` records the focused window and returns an `UtteranceTarget`; the
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
from dataclasses import dataclass, field
from typing import Any

from qasr.config.settings import PASTE_KEY_RULES, TERMINAL_CLASSES
from qasr.errors import QasrError

from . import x11
from .clipboard import CLIPBOARD, PRIMARY, Clipboard, ClipboardSnapshot
from .typing_xtest import TypingOptions, XTestTyper

log = logging.getLogger("qasr.output")

SINKS = ("auto", "type", "paste", "none")

# The defaults live with the settings (config/settings.py) so config.toml documents them.
DEFAULT_TERMINAL_CLASSES = TERMINAL_CLASSES
# Terminals whose paste key inserts the PRIMARY selection (no default Ctrl+Shift+V binding).
DEFAULT_PASTE_KEY_RULES = PASTE_KEY_RULES

_MODIFIER_NAMES = {"ctrl": "Control_L", "control": "Control_L", "shift": "Shift_L", "alt": "Alt_L",
                   "super": "Super_L", "win": "Super_L", "meta": "Meta_L"}


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
    restore_clipboard: bool = True
    restore_delay_s: float = 1.0             # apps read the clipboard asynchronously after the keystroke
    focus_check: bool = True
    char_delay_ms: float = 2.0               # XTEST typing: pause after each character (>= 2 ms)
    keymap_restore_delay_s: float = 1.0      # unmap borrowed keycodes this long after typing ends
    modifier_release_timeout_s: float = 1.5  # wait for the user to let go of the hotkey's Ctrl/Alt


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


class UtteranceTarget:
    """One utterance's delivery state: the window it belongs to and what live typing sent there."""

    def __init__(self, window: x11.WindowInfo | None) -> None:
        self.window = window
        self.typed_text = ""                 # live-typed committed text (the app computes the next delta)
        self.live_failed = ""                # why live typing stopped ("" while fine)

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


def _matches(window: x11.WindowInfo | None, pattern: str) -> bool:
    if window is None:
        return False
    pattern = pattern.lower()
    return any(fnmatch.fnmatchcase(name.lower(), pattern) for name in (window.wm_class, window.wm_instance) if name)


def is_terminal(window: x11.WindowInfo | None, options: OutputOptions) -> bool:
    return any(_matches(window, p) for p in options.terminal_classes)


def resolve_sink(window: x11.WindowInfo | None, options: OutputOptions) -> str:
    """The concrete sink (type | paste | none) for text going to `window`."""
    if options.sink != "auto":
        return options.sink
    for pattern, sink in options.auto_rules.items():
        if _matches(window, pattern):
            return sink
    return options.auto_terminal_sink if is_terminal(window, options) else options.auto_default_sink


def paste_keys_for(window: x11.WindowInfo | None, options: OutputOptions) -> str:
    for pattern, combo in options.paste_key_rules.items():
        if _matches(window, pattern):
            return combo
    return options.terminal_paste_keys if is_terminal(window, options) else options.paste_keys


class TextOutput:
    """Delivers utterances to the focused window. Callers serialize their calls (the daemon holds its
    output lock); clipboard and keymap restores run on timers."""

    def __init__(self, options: OutputOptions | None = None, disp: Any = None,
                 clipboard: Clipboard | None = None) -> None:
        self.options = options or OutputOptions()
        validate_options(self.options)
        self._lock = threading.RLock()       # guards the X connection and the pending restores
        self._disp = disp
        self._owns_display = False
        if self.options.sink != "none" and self._disp is None:
            self._disp = x11.open_display()
            self._owns_display = True
        self._clipboard = clipboard
        self._typer: XTestTyper | None = None
        self._current: UtteranceTarget | None = None  # the utterance begun last (calls without a target)
        self._restore_timer: threading.Timer | None = None
        self._restore_snapshots: list[ClipboardSnapshot] = []
        self._restore_text = ""
        self._keymap_timer: threading.Timer | None = None

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
        if utt.live_failed or resolve_sink(utt.window, self.options) == "none":
            return None
        focused = self._focused()
        if self.options.focus_check and not _same_window(utt, focused):
            utt.live_failed = "focus moved"
            return DeliveryResult("none", False, focus_moved=True, target=utt.window, focused=focused,
                                  message=_focus_message(utt, focused, "live typing stopped"))
        started = time.monotonic()
        if not self._modifiers_released():
            utt.live_failed = "modifier keys held"
            return None
        sent = self._type(delta)
        utt.typed_text += delta
        return DeliveryResult("type", True, sent, time.monotonic() - started, target=utt.window, focused=focused)

    def deliver(self, text: str, target: UtteranceTarget | None = None) -> DeliveryResult:
        """Deliver the final text of an utterance (minus what live typing already sent); the utterance ends."""
        utt = self._resolve(target)
        try:
            return self._deliver(text, utt)
        finally:
            self.cancel_utterance(utt)

    def _resolve(self, target: UtteranceTarget | None) -> UtteranceTarget:
        if target is not None:
            return target
        if self._current is None:  # no begin_utterance: deliver where the user is now
            self.begin_utterance()
        return self._current

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
        rest = text[len(typed):]
        sink = resolve_sink(utt.window, self.options)
        if sink == "none" or not rest:
            return DeliveryResult(sink, False, 0, target=utt.window, focused=focused)
        if self.options.focus_check and not _same_window(utt, focused):
            return self._to_clipboard(text, utt, focused, True, _focus_message(utt, focused, "nothing typed"))
        if not self._modifiers_released():
            return self._to_clipboard(text, utt, focused, False,
                                      "modifier keys were still held, so nothing was typed; the text is on the clipboard")
        started = time.monotonic()
        if sink == "type":
            sent = self._type(rest)
            return DeliveryResult("type", True, sent, time.monotonic() - started, target=utt.window, focused=focused)
        self._paste(rest, paste_keys_for(utt.window, self.options))
        return DeliveryResult("paste", True, len(rest), time.monotonic() - started,
                              target=utt.window, focused=focused)

    # -- sinks ---------------------------------------------------------------------------------
    def _type(self, text: str) -> int:
        with self._lock:
            if self._keymap_timer is not None:
                self._keymap_timer.cancel()
            if self._typer is None:
                self._typer = XTestTyper(self._disp, TypingOptions(char_delay_s=self.options.char_delay_ms / 1000))
            sent = self._typer.type(text)
            self._keymap_timer = _timer(self.options.keymap_restore_delay_s, self._restore_keymap)
            return sent

    def _paste(self, text: str, combo: str) -> None:
        keysyms = parse_key_combo(combo)
        selections = [CLIPBOARD, PRIMARY] if any(k == 0xFF63 for k in keysyms) else [CLIPBOARD]  # Insert
        clipboard = self._get_clipboard()
        with self._lock:
            pending = self._restore_timer is not None
            if pending:
                # A restore is still due: keep the user's original content, not our previous text.
                self._restore_timer.cancel()
                self._restore_timer = None
            saved = {s.selection: s for s in self._restore_snapshots} if pending else {}
            for selection in selections:
                if selection not in saved and self.options.restore_clipboard:
                    saved[selection] = clipboard.save(selection)
                clipboard.set_text(text, selection)
            if self._typer is None:
                self._typer = XTestTyper(self._disp, TypingOptions(char_delay_s=self.options.char_delay_ms / 1000))
            self._typer.press_keysyms(keysyms)
            if self.options.restore_clipboard:
                self._restore_snapshots = list(saved.values())
                self._restore_text = text
                self._restore_timer = _timer(self.options.restore_delay_s, self._restore_clipboard)

    def _to_clipboard(self, text: str, utt: UtteranceTarget, focused: x11.WindowInfo | None,
                      focus_moved: bool, message: str) -> DeliveryResult:
        try:
            with self._lock:
                if self._restore_timer is not None:  # the user's content must not come back over this
                    self._restore_timer.cancel()
                    self._restore_timer = None
                self._get_clipboard().set_text(text)
        except QasrError as exc:
            message = f"{message.split(';')[0]}; the clipboard failed too ({exc}), text lost: {text!r}"
        log.warning("%s", message)
        return DeliveryResult("clipboard", False, len(text), focus_moved=focus_moved,
                              target=utt.window, focused=focused, message=message)

    # -- restores ------------------------------------------------------------------------------
    def _restore_clipboard(self) -> None:
        with self._lock:
            snapshots, ours = self._restore_snapshots, self._restore_text
            self._restore_snapshots, self._restore_text, self._restore_timer = [], "", None
        clipboard = self._get_clipboard()
        for snapshot in snapshots:
            try:
                if clipboard.get_text(snapshot.selection) == ours:  # else the user copied something since
                    clipboard.restore(snapshot)
            except QasrError as exc:
                log.warning("could not restore the %s selection: %s", snapshot.selection, exc)

    def _restore_keymap(self) -> None:
        with self._lock:
            self._keymap_timer = None
            if self._typer is not None:
                try:
                    self._typer.restore_keymap()
                except Exception as exc:  # the X connection is gone (display closed, server ended)
                    log.debug("could not restore the keymap: %s", exc)

    def flush(self) -> None:
        """Run pending clipboard and keymap restores now (tests, shutdown)."""
        with self._lock:
            restore = self._restore_timer
            keymap = self._keymap_timer
        if restore is not None:
            restore.cancel()
            self._restore_clipboard()
        if keymap is not None:
            keymap.cancel()
            self._restore_keymap()

    def close(self) -> None:
        self.flush()
        if self._owns_display and self._disp is not None:
            self._disp.close()
            self._disp = None

    # -- focus ---------------------------------------------------------------------------------
    def _focused(self) -> x11.WindowInfo | None:
        if self._disp is None:
            return None
        with self._lock:
            return x11.active_window(self._disp)

    def _modifiers_released(self) -> bool:
        with self._lock:
            return x11.wait_modifiers_released(self._disp, self.options.modifier_release_timeout_s)

    def _get_clipboard(self) -> Clipboard:
        if self._clipboard is None:
            self._clipboard = Clipboard()
        return self._clipboard


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
