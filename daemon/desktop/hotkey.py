"""Global dictation hotkey on X11 (pynput listener): hold-to-talk, tap-to-toggle, Escape cancels.

Modes
- `auto` (default): a press shorter than `tap_threshold_s` toggles (tap to start, tap again to stop);
  a longer press is hold-to-talk: release stops after `release_tail_s` (the daemon gives 0 here: its
  segmenter keeps recording after the release only while the VAD hears voice, see SegmenterOptions).
- `hold`: every press is hold-to-talk.   - `toggle`: every press toggles.
While an utterance is recording, the cancel key (Escape) cancels it.

The listener observes keys (it does not grab them), so the focused application also sees the hotkey
and the Escape press. X autorepeat turns a held key into release/press pairs; a release is only acted on
once no press followed it within `release_debounce_s`.

Without an X display (DISPLAY unset, Wayland without XWayland) the hotkey is off: `start()` returns False
after logging NO_DISPLAY_HOTKEY once; bind `qasr-daemon toggle` to a compositor shortcut instead.
pynput is imported only in `start()`: importing it without a display raises.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from qasr.errors import QasrError

from . import x11

log = logging.getLogger("qasr.hotkey")

MODES = ("auto", "hold", "toggle")
NO_DISPLAY_HOTKEY = "no X display: the hotkey is off; bind `qasr-daemon toggle` to a compositor shortcut"
WAYLAND_NOTE = ("Wayland session: the X11 hotkey only sees keys pressed in X11 (XWayland) windows; "
                "bind `qasr-daemon toggle` to a compositor shortcut")

# pynput Key names accepted inside <...>; bare names (space, f9) and aliases are accepted too.
_KEY_NAMES = {
    "alt", "alt_l", "alt_r", "alt_gr", "backspace", "caps_lock", "cmd", "cmd_l", "cmd_r", "ctrl", "ctrl_l",
    "ctrl_r", "delete", "down", "end", "enter", "esc", "home", "left", "page_down", "page_up", "right",
    "shift", "shift_l", "shift_r", "space", "tab", "up", "insert", "menu", "num_lock", "pause",
    "print_screen", "scroll_lock", "media_play_pause", "media_volume_mute", "media_volume_down",
    "media_volume_up", "media_previous", "media_next",
    *(f"f{i}" for i in range(1, 21)),
}
_ALIASES = {"control": "ctrl", "escape": "esc", "return": "enter", "super": "cmd", "win": "cmd", "meta": "cmd",
            "del": "delete", "ins": "insert", "pgup": "page_up", "pgdown": "page_down", "altgr": "alt_gr"}
_MODIFIERS = {"ctrl", "alt", "shift", "cmd", "alt_gr"}


@dataclass
class HotkeyOptions:
    enabled: bool = True
    combo: str = "<ctrl>+<alt>+space"   # pynput syntax; bare names allowed: "ctrl+alt+space", "<f9>", "f9"
    mode: str = "auto"                  # auto | hold | toggle
    tap_threshold_s: float = 0.3        # auto mode: a shorter press is a tap (toggle)
    release_tail_s: float = 0.2         # hold: keep recording this long after release (the daemon: 0)
    cancel_key: str = "<esc>"           # "" disables cancelling from the keyboard
    release_debounce_s: float = 0.04    # a release followed by a press within this is X autorepeat
    backend: str = "auto"               # auto | x11 | evdev | none (see evdev_hotkey.choose_backend)
    evdev_devices: tuple[str, ...] = ()  # evdev: device paths or names (() = every keyboard)


def normalize_combo(text: str) -> str:
    """"Ctrl+Alt+Space" -> "<ctrl>+<alt>+<space>"; QasrError naming the bad part. Needs no display."""
    raw = text.strip()
    if not raw:
        raise QasrError("the hotkey combination is empty; use e.g. \"<ctrl>+<alt>+space\" or \"<f9>\"")
    parts = raw.split("+") if raw != "+" else ["+"]
    normalized = []
    for part in parts:
        name = part.strip()
        if len(name) > 2 and name.startswith("<") and name.endswith(">"):
            name = name[1:-1]
        if len(name) == 1:
            normalized.append(name.lower())
            continue
        key = _ALIASES.get(name.lower(), name.lower())
        if key not in _KEY_NAMES:
            raise QasrError(f"unknown key {part.strip()!r} in hotkey {text!r}; use names like <ctrl>, <alt>, space, <f9>")
        normalized.append(f"<{key}>")
    if len(set(normalized)) != len(normalized):
        raise QasrError(f"hotkey {text!r} names a key twice; list each key once")
    return "+".join(normalized)


def validate_options(options: HotkeyOptions) -> None:
    if options.mode not in MODES:
        raise QasrError(f"hotkey mode = {options.mode!r} is not one of {', '.join(MODES)}; fix the config")
    normalize_combo(options.combo)
    if options.cancel_key:
        normalize_combo(options.cancel_key)
    for name in ("tap_threshold_s", "release_tail_s", "release_debounce_s"):
        if getattr(options, name) < 0:
            raise QasrError(f"hotkey {name} must be >= 0; fix the config")


class HotkeyLogic:
    """The hold/tap/cancel state machine, fed with canonical keys. Thread-safe; callbacks run unlocked."""

    IDLE, HELD, TAIL, TOGGLED, WAIT_RELEASE = "idle", "held", "tail", "toggled", "wait_release"

    def __init__(self, options: HotkeyOptions, combo: set[Hashable], cancel: Hashable | None,
                 modifiers: set[Hashable], on_start: Callable[[], Any], on_stop: Callable[[], Any],
                 on_cancel: Callable[[], Any]) -> None:
        self.options = options
        self.combo = set(combo)
        self.cancel_key = cancel
        self.other_modifiers = set(modifiers) - self.combo
        self._callbacks = {"start": on_start, "stop": on_stop, "cancel": on_cancel}
        self._lock = threading.Lock()
        self._pressed: set[Hashable] = set()
        self._complete = False
        self.state = self.IDLE
        self._down_at = 0.0
        self._tail_timer: threading.Timer | None = None
        self._release_timer: threading.Timer | None = None
        self._release_generation = 0   # tells a stale release timer from the current one

    # -- input ---------------------------------------------------------------------------------
    def key_down(self, key: Hashable) -> None:
        fire: list[str] = []
        with self._lock:
            self._pressed.add(key)
            if key == self.cancel_key and key not in self.combo:
                if self.state in (self.HELD, self.TAIL, self.TOGGLED):
                    self._cancel_timers()
                    self.state = self.WAIT_RELEASE if self._complete else self.IDLE
                    fire.append("cancel")
            elif not self._complete and self.combo <= self._pressed and not (self._pressed & self.other_modifiers):
                self._complete = True
                fire += self._combo_down()
        self._fire(fire)

    def key_up(self, key: Hashable) -> None:
        with self._lock:
            self._pressed.discard(key)
            if self._complete and key in self.combo:
                self._complete = False
                self._release_generation += 1
                self._release_timer = _timer(self.options.release_debounce_s, self._release_settled,
                                             time.monotonic(), self._release_generation)

    # -- external state changes (CLI toggle, VAD end, app cancel) ------------------------------
    def notify_started(self) -> None:
        """An utterance started by other means: the next press of the hotkey stops it."""
        with self._lock:
            if self.state == self.IDLE:
                self.state = self.TOGGLED

    def notify_stopped(self) -> None:
        """The utterance ended by other means: forget it (a still-held hotkey must be released first)."""
        with self._lock:
            self._cancel_timers()
            self.state = self.WAIT_RELEASE if self._complete else self.IDLE

    def close(self) -> None:
        with self._lock:
            self._cancel_timers()

    # -- transitions (called with the lock held; return callbacks to fire) ----------------------
    def _combo_down(self) -> list[str]:
        if self._release_timer is not None:  # autorepeat: the release we saw was not real
            self._release_timer.cancel()
            self._release_timer = None
            return []
        if self.state == self.IDLE:
            self.state, self._down_at = self.HELD, time.monotonic()
            return ["start"]
        if self.state == self.TAIL:  # pressed again before the tail ended: keep recording
            self._tail_timer.cancel()
            self._tail_timer = None
            self.state = self.HELD
            return []
        if self.state == self.TOGGLED:
            self.state = self.WAIT_RELEASE
            return ["stop"]
        return []

    def _release_settled(self, released_at: float, generation: int) -> None:
        with self._lock:
            if self._release_timer is None or generation != self._release_generation or self._complete:
                return
            self._release_timer = None
            if self.state == self.WAIT_RELEASE:
                self.state = self.IDLE
            elif self.state == self.HELD:
                held = released_at - self._down_at
                tap = self.options.mode == "toggle" or (
                    self.options.mode == "auto" and held < self.options.tap_threshold_s)
                if tap:
                    self.state = self.TOGGLED
                else:
                    self.state = self.TAIL
                    delay = max(0.0, self.options.release_tail_s - (time.monotonic() - released_at))
                    self._tail_timer = _timer(delay, self._tail_over)

    def _tail_over(self) -> None:
        with self._lock:
            if self.state != self.TAIL:
                return
            self._tail_timer = None
            self.state = self.IDLE
        self._fire(["stop"])

    def _cancel_timers(self) -> None:
        for timer in (self._tail_timer, self._release_timer):
            if timer is not None:
                timer.cancel()
        self._tail_timer = self._release_timer = None

    def _fire(self, names: list[str]) -> None:
        for name in names:
            try:
                self._callbacks[name]()
            except Exception:  # a failing callback must not kill the listener thread
                log.exception("hotkey %s callback failed", name)


class HotkeyListener:
    """Listens for the hotkey with pynput; `start()` is False when there is no X display."""

    def __init__(self, options: HotkeyOptions, on_start: Callable[[], Any], on_stop: Callable[[], Any],
                 on_cancel: Callable[[], Any]) -> None:
        validate_options(options)
        self.options = options
        self._callbacks = (on_start, on_stop, on_cancel)
        self._listener: Any = None
        self.logic: HotkeyLogic | None = None
        self.unavailable_reason = ""   # non-empty when start() returned False: show it to the user

    def start(self) -> bool:
        if not self.options.enabled:
            self.unavailable_reason = "the hotkey is disabled in the config"
            return False
        if not x11.display_name() or not x11.display_available():
            return self._unavailable(NO_DISPLAY_HOTKEY)
        if x11.is_wayland_session():
            _report_once(WAYLAND_NOTE, logging.INFO)
        try:
            from pynput import keyboard
        except ImportError as exc:  # pynput missing, or it could not reach the display
            return self._unavailable(f"{NO_DISPLAY_HOTKEY} ({exc.__class__.__name__}: {str(exc).splitlines()[0]})")

        combo = set(keyboard.HotKey.parse(normalize_combo(self.options.combo)))
        cancel = keyboard.HotKey.parse(normalize_combo(self.options.cancel_key))[0] if self.options.cancel_key else None
        modifiers = {keyboard.Key.ctrl, keyboard.Key.alt, keyboard.Key.shift, keyboard.Key.cmd}
        self.logic = HotkeyLogic(self.options, combo, cancel, modifiers, *self._callbacks)
        listener: Any = None

        def canonical(key: Any) -> Any:
            return listener.canonical(key) if key is not None else None

        def on_press(key: Any) -> None:
            if key is not None:
                self.logic.key_down(canonical(key))

        def on_release(key: Any) -> None:
            if key is not None:
                self.logic.key_up(canonical(key))

        listener = keyboard.Listener(on_press=on_press, on_release=on_release)
        listener.daemon = True
        listener.start()
        listener.wait()
        self._listener = listener
        return True

    def notify_started(self) -> None:
        if self.logic is not None:
            self.logic.notify_started()

    def notify_stopped(self) -> None:
        if self.logic is not None:
            self.logic.notify_stopped()

    def stop(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            listener.stop()
            _wake_record_loop(listener)
            listener.join(timeout=5)
        if self.logic is not None:
            self.logic.close()

    def _unavailable(self, reason: str) -> bool:
        self.unavailable_reason = reason
        _report_once(reason, logging.WARNING)
        return False


def _wake_record_loop(listener: Any) -> None:
    """pynput's xorg stop() queues the RECORD disable on the connection that is blocked reading, so the
    thread only ends at the next key event. Disabling the context from pynput's second connection
    ends it now. Private attributes: skipped quietly if a pynput version lacks them."""
    display_stop = getattr(listener, "_display_stop", None)
    context = getattr(listener, "_context", None)
    if display_stop is None or context is None:
        return
    try:
        display_stop.record_disable_context(context)
        display_stop.flush()
    except Exception:  # the listener already shut its connections
        pass


_reported: set[str] = set()


def _report_once(message: str, level: int) -> None:
    if message not in _reported:
        _reported.add(message)
        log.log(level, "%s", message)


def _timer(delay_s: float, func: Callable[..., Any], *args: Any) -> threading.Timer:
    timer = threading.Timer(delay_s, func, args)
    timer.daemon = True
    timer.start()
    return timer
