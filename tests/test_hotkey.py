"""The dictation hotkey under Xvfb, driven by real key events from xdotool."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from qasr.daemon.desktop import hotkey
from qasr.daemon.desktop.hotkey import HotkeyListener, HotkeyLogic, HotkeyOptions, normalize_combo, validate_options
from qasr.errors import QasrError

NEEDS_X = pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")),
                             reason="Xvfb and xdotool are needed")

TAIL_S = 0.25
TAP_S = 0.25


@pytest.fixture(scope="module")
def display(xvfb_display):
    """The shared Xvfb (tests/fixtures/desktop.py); DISPLAY points at it."""
    return xvfb_display


class Recorder:
    """Collects callback names with their time; lets a test wait for them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []
        self._cond = threading.Condition()

    def callback(self, name: str):
        def record() -> None:
            with self._cond:
                self.events.append((name, time.monotonic()))
                self._cond.notify_all()
        return record

    def names(self) -> list[str]:
        with self._cond:
            return [n for n, _ in self.events]

    def wait_for(self, names: list[str], timeout_s: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: [n for n, _ in self.events] == names, timeout_s)

    def time_of(self, name: str, index: int = 0) -> float:
        return [t for n, t in self.events if n == name][index]


def _xdotool(*args: str) -> None:
    subprocess.run(["xdotool", *args], check=True, timeout=10)


@pytest.fixture
def listen(display):
    started: list[HotkeyListener] = []

    def make(**overrides) -> tuple[HotkeyListener, Recorder]:
        options = HotkeyOptions(**{"tap_threshold_s": TAP_S, "release_tail_s": TAIL_S, **overrides})
        rec = Recorder()
        listener = HotkeyListener(options, rec.callback("start"), rec.callback("stop"), rec.callback("cancel"))
        assert listener.start(), listener.unavailable_reason
        started.append(listener)
        time.sleep(0.1)
        return listener, rec

    yield make
    for listener in started:
        listener.stop()


# -- parsing and validation (no display) -------------------------------------------------------

def test_normalize_combo_accepts_pynput_and_bare_names():
    assert normalize_combo("<ctrl>+<alt>+space") == "<ctrl>+<alt>+<space>"
    assert normalize_combo("Ctrl+Alt+Space") == "<ctrl>+<alt>+<space>"
    assert normalize_combo("f9") == "<f9>"
    assert normalize_combo("<super>+h") == "<cmd>+h"
    assert normalize_combo("Escape") == "<esc>"


@pytest.mark.parametrize("bad", ["", "ctrl+spcae", "ctrl+ctrl", "<hyperdrive>"])
def test_bad_combos_are_one_line_errors(bad):
    with pytest.raises(QasrError) as info:
        normalize_combo(bad)
    assert "\n" not in str(info.value)


def test_bad_mode_is_rejected():
    with pytest.raises(QasrError, match="mode"):
        validate_options(HotkeyOptions(mode="sometimes"))


def test_logic_hold_tap_cancel_and_autorepeat_without_x():
    """The state machine alone, with plain strings as keys and real timers."""
    rec = Recorder()
    logic = HotkeyLogic(HotkeyOptions(tap_threshold_s=0.2, release_tail_s=0.1), {"ctrl", "space"}, "esc",
                        {"ctrl", "alt", "shift"}, rec.callback("start"), rec.callback("stop"), rec.callback("cancel"))
    # hold with X-style autorepeat (release/press pairs) in the middle
    logic.key_down("ctrl"); logic.key_down("space")
    for _ in range(3):
        time.sleep(0.1)
        logic.key_up("space"); logic.key_down("space")
    logic.key_up("space"); logic.key_up("ctrl")
    assert rec.wait_for(["start", "stop"], 2)
    # a tap toggles on, a second tap toggles off
    logic.key_down("ctrl"); logic.key_down("space"); logic.key_up("space"); logic.key_up("ctrl")
    time.sleep(0.3)
    assert rec.names() == ["start", "stop", "start"]
    logic.key_down("ctrl"); logic.key_down("space"); logic.key_up("space"); logic.key_up("ctrl")
    assert rec.wait_for(["start", "stop", "start", "stop"], 2)
    # an extra modifier means a different shortcut: no start
    logic.key_down("shift"); logic.key_down("ctrl"); logic.key_down("space")
    logic.key_up("space"); logic.key_up("ctrl"); logic.key_up("shift")
    # Escape cancels a toggled utterance; Escape when idle does nothing
    logic.key_down("esc"); logic.key_up("esc")
    time.sleep(0.1)
    logic.key_down("ctrl"); logic.key_down("space"); logic.key_up("space"); logic.key_up("ctrl")
    time.sleep(0.1)
    logic.key_down("esc"); logic.key_up("esc")
    assert rec.wait_for(["start", "stop", "start", "stop", "start", "cancel"], 2)
    # started by other means (CLI toggle): the hotkey stops it
    logic.notify_started()
    logic.key_down("ctrl"); logic.key_down("space"); logic.key_up("space"); logic.key_up("ctrl")
    assert rec.wait_for(["start", "stop", "start", "stop", "start", "cancel", "stop"], 2)
    logic.close()


def test_no_display_reports_once_and_runs_without_hotkey(monkeypatch, caplog):
    monkeypatch.delenv("DISPLAY", raising=False)
    hotkey._reported.discard(hotkey.NO_DISPLAY_HOTKEY)  # noqa: SLF001  (earlier tests may have reported)
    caplog.set_level(logging.WARNING, logger="qasr.hotkey")
    for _ in range(2):
        listener = HotkeyListener(HotkeyOptions(), lambda: None, lambda: None, lambda: None)
        assert listener.start() is False
        assert listener.unavailable_reason == hotkey.NO_DISPLAY_HOTKEY
        listener.stop()
    assert [r.getMessage() for r in caplog.records] == [hotkey.NO_DISPLAY_HOTKEY]


def test_module_imports_without_display():
    """pynput raises at import without DISPLAY: qasr.daemon.desktop.hotkey must import it lazily."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    code = ("from qasr.daemon.desktop.hotkey import HotkeyListener, HotkeyOptions; import sys; "
            "ok = HotkeyListener(HotkeyOptions(), print, print, print).start(); "
            "print(ok, 'pynput' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False False"
    assert "no X display: the hotkey is off" in proc.stderr


# -- real key events under Xvfb -----------------------------------------------------------------

@NEEDS_X
def test_hold_to_talk_starts_on_press_and_stops_after_tail(listen):
    _, rec = listen()
    _xdotool("keydown", "ctrl+alt+space")
    assert rec.wait_for(["start"])
    time.sleep(TAP_S + 0.4)  # a long press: hold-to-talk
    assert rec.names() == ["start"]
    released = time.monotonic()
    _xdotool("keyup", "ctrl+alt+space")
    assert rec.wait_for(["start", "stop"])
    assert rec.time_of("stop") - released >= TAIL_S * 0.9


@NEEDS_X
def test_short_tap_toggles(listen):
    _, rec = listen()
    _xdotool("key", "ctrl+alt+space")
    assert rec.wait_for(["start"])
    time.sleep(TAIL_S + 0.3)
    assert rec.names() == ["start"]  # still recording after a tap
    _xdotool("key", "ctrl+alt+space")
    assert rec.wait_for(["start", "stop"])
    time.sleep(0.3)
    assert rec.names() == ["start", "stop"]  # the releasing of the second tap starts nothing


@NEEDS_X
def test_escape_cancels_while_active(listen):
    _, rec = listen()
    _xdotool("keydown", "ctrl+alt+space")
    assert rec.wait_for(["start"])
    time.sleep(TAP_S + 0.1)
    _xdotool("key", "Escape")
    assert rec.wait_for(["start", "cancel"])
    _xdotool("keyup", "ctrl+alt+space")
    time.sleep(TAIL_S + 0.3)
    assert rec.names() == ["start", "cancel"]  # releasing after a cancel does not stop anything
    _xdotool("key", "Escape")  # idle: Escape belongs to the application
    time.sleep(0.2)
    assert rec.names() == ["start", "cancel"]


@NEEDS_X
def test_single_function_key_in_hold_mode(listen):
    _, rec = listen(combo="<f9>", mode="hold")
    _xdotool("key", "F9")  # even a tap is hold-to-talk in hold mode
    assert rec.wait_for(["start", "stop"])
    _xdotool("key", "ctrl+F9")  # another modifier held: a different shortcut
    time.sleep(0.3)
    assert rec.names() == ["start", "stop"]


@NEEDS_X
def test_latency_from_key_to_callback(listen):
    _, rec = listen(mode="toggle")
    pressed = time.monotonic()
    _xdotool("key", "ctrl+alt+space")
    assert rec.wait_for(["start"])
    latency = rec.time_of("start") - pressed
    print(f"\nhotkey press -> on_start: {latency * 1000:.0f} ms (includes starting xdotool)")
    assert latency < 2.0
    _xdotool("key", "ctrl+alt+space")
    assert rec.wait_for(["start", "stop"])


@NEEDS_X
def test_our_own_typing_neither_triggers_nor_breaks_the_listener(listen, display):
    """The output types through remapped keycodes while the listener runs: no callbacks, still alive."""
    from qasr.daemon.desktop import x11
    from qasr.daemon.desktop.typing_xtest import XTestTyper

    listener, rec = listen()
    disp = x11.open_display()
    try:
        typer = XTestTyper(disp)
        typer.type("Grüße 你好 🎤 Привет space bar")
        typer.restore_keymap()
    finally:
        disp.close()
    time.sleep(0.3)
    assert rec.names() == []
    _xdotool("key", "ctrl+alt+space")
    assert rec.wait_for(["start"])
    _xdotool("key", "Escape")
    assert rec.wait_for(["start", "cancel"])
