"""Issue 11: the evdev hotkey (Wayland) on synthetic input events, and end to end through /dev/uinput.

The state machine is the X11 hotkey's (hold, tap-toggle, Escape cancels); what is tested here is the
evdev side: key codes -> tokens, autorepeat, keys held on two keyboards, side-specific modifiers, and
the messages without permission. Where /dev/uinput is writable, a virtual keyboard made with
python-evdev drives a real ``EvdevHotkeyListener``; elsewhere that test is skipped with the reason.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

evdev = pytest.importorskip("evdev")

from qasr.daemon.desktop import evdev_hotkey  # noqa: E402
from qasr.daemon.desktop.evdev_hotkey import EvdevHotkeyListener, EvdevKeys, choose_backend, tokens_for  # noqa: E402
from qasr.daemon.desktop.hotkey import HotkeyOptions  # noqa: E402
from qasr.daemon.desktop.session import detect  # noqa: E402

e = evdev.ecodes
TAIL_S = 0.05


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.cond = threading.Condition()

    def callback(self, name: str):
        def fire() -> None:
            with self.cond:
                self.calls.append(name)
                self.cond.notify_all()
        return fire

    def wait(self, count: int, timeout: float = 2.0) -> list[str]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.calls) >= count, timeout)
            return list(self.calls)


def keys(combo: str = "<ctrl>+<alt>+space", mode: str = "auto", **kw) -> tuple[EvdevKeys, Recorder]:
    rec = Recorder()
    opts = HotkeyOptions(combo=combo, mode=mode, tap_threshold_s=0.3, release_tail_s=TAIL_S,
                         release_debounce_s=0.01, **kw)
    return EvdevKeys(opts, rec.callback("start"), rec.callback("stop"), rec.callback("cancel")), rec


def ev(code: int, value: int):
    return evdev.InputEvent(0, 0, e.EV_KEY, code, value)


def press(k: EvdevKeys, *codes: int) -> None:
    for code in codes:
        k.handle(ev(code, 1))


def release(k: EvdevKeys, *codes: int) -> None:
    for code in codes:
        k.handle(ev(code, 0))


def test_key_codes_become_the_tokens_of_normalize_combo():
    assert tokens_for(e.KEY_LEFTCTRL) == ("<ctrl>", "<ctrl_l>")
    assert tokens_for(e.KEY_RIGHTALT) == ("<alt>", "<alt_r>", "<alt_gr>")
    assert tokens_for(e.KEY_SPACE) == ("<space>",)
    assert tokens_for(e.KEY_F9) == ("<f9>",) and tokens_for(e.KEY_F13) == ("<f13>",)
    assert tokens_for(e.KEY_PAUSE) == ("<pause>",) and tokens_for(e.KEY_ESC) == ("<esc>",)
    assert tokens_for(e.KEY_A) == ("a",) and tokens_for(e.KEY_1) == ("1",)


def test_hold_starts_on_the_full_combo_and_stops_after_release_and_tail():
    k, rec = keys(mode="hold")
    press(k, e.KEY_LEFTCTRL, e.KEY_LEFTALT)
    assert rec.calls == []
    press(k, e.KEY_SPACE)
    assert rec.calls == ["start"]
    for _ in range(20):  # autorepeat of the held key changes nothing
        k.handle(ev(e.KEY_SPACE, 2))
    time.sleep(0.4)
    assert rec.calls == ["start"]
    release(k, e.KEY_SPACE, e.KEY_LEFTALT, e.KEY_LEFTCTRL)
    assert rec.wait(2) == ["start", "stop"]


def test_a_short_tap_toggles_and_the_next_tap_stops():
    k, rec = keys(combo="<f9>", mode="auto")
    press(k, e.KEY_F9)
    release(k, e.KEY_F9)
    time.sleep(0.2)
    assert rec.calls == ["start"]  # a tap: still recording after release
    press(k, e.KEY_F9)
    assert rec.calls == ["start", "stop"]
    release(k, e.KEY_F9)
    time.sleep(0.1)
    assert rec.calls == ["start", "stop"]


def test_a_long_press_in_auto_mode_is_hold_to_talk():
    k, rec = keys(combo="<f9>", mode="auto")
    press(k, e.KEY_F9)
    time.sleep(0.35)
    release(k, e.KEY_F9)
    assert rec.wait(2) == ["start", "stop"]


def test_escape_cancels_while_recording_and_is_ignored_otherwise():
    k, rec = keys(combo="<pause>", mode="toggle")
    press(k, e.KEY_ESC)
    release(k, e.KEY_ESC)
    assert rec.calls == []
    press(k, e.KEY_PAUSE)
    release(k, e.KEY_PAUSE)
    time.sleep(0.05)
    press(k, e.KEY_ESC)
    assert rec.calls == ["start", "cancel"]
    release(k, e.KEY_ESC)
    press(k, e.KEY_PAUSE)  # a new press starts a new utterance
    assert rec.calls == ["start", "cancel", "start"]


def test_combos_need_exactly_their_modifiers_either_side():
    k, rec = keys(combo="<ctrl>+<alt>+space", mode="hold")
    press(k, e.KEY_RIGHTCTRL, e.KEY_LEFTALT, e.KEY_LEFTSHIFT, e.KEY_SPACE)  # an extra Shift: not ours
    assert rec.calls == []
    release(k, e.KEY_SPACE, e.KEY_LEFTSHIFT)
    press(k, e.KEY_SPACE)  # right Ctrl counts as <ctrl>
    assert rec.calls == ["start"]
    k2, rec2 = keys(combo="<ctrl_r>+space", mode="hold")
    press(k2, e.KEY_LEFTCTRL, e.KEY_SPACE)
    assert rec2.calls == []
    release(k2, e.KEY_SPACE, e.KEY_LEFTCTRL)
    press(k2, e.KEY_RIGHTCTRL, e.KEY_SPACE)
    assert rec2.calls == ["start"]


def test_a_key_held_on_two_keyboards_is_released_when_the_last_lets_go():
    k, rec = keys(combo="<f9>", mode="hold")
    press(k, e.KEY_F9, e.KEY_F9)  # two devices
    time.sleep(0.35)
    release(k, e.KEY_F9)
    time.sleep(0.2)
    assert rec.calls == ["start"]
    release(k, e.KEY_F9)
    assert rec.wait(2) == ["start", "stop"]


def test_without_readable_keyboards_the_message_says_what_to_do(monkeypatch):
    monkeypatch.setattr(evdev_hotkey.glob, "glob", lambda pattern: ["/dev/input/event0", "/dev/input/event1"])
    monkeypatch.setattr(evdev_hotkey.os, "access", lambda path, mode: False)
    devices, why = evdev_hotkey.readable_keyboards()
    assert devices == [] and "input` group" in why and "every keystroke" in why
    listener = EvdevHotkeyListener(HotkeyOptions(combo="<f9>"), lambda: None, lambda: None, lambda: None)
    assert listener.start() is False
    assert "usermod -aG input" in listener.unavailable_reason
    backend, reason = choose_backend("auto", detect({"WAYLAND_DISPLAY": "wayland-1", "SWAYSOCK": "/x"}))
    assert backend == "none" and "start-utterance" in reason and "input" in reason
    assert choose_backend("auto", detect({"DISPLAY": ":1"}))[0] == "x11"
    assert choose_backend("evdev", detect({}))[0] == "evdev"


UINPUT_OK = os.path.exists("/dev/uinput") and os.access("/dev/uinput", os.W_OK)


@pytest.mark.skipif(not UINPUT_OK, reason="/dev/uinput is missing or not writable here (no uinput module in "
                    "this container); the listener's device code runs only where a virtual keyboard can exist")
def test_a_virtual_keyboard_drives_the_evdev_listener_end_to_end():
    ui = evdev.UInput({e.EV_KEY: [e.KEY_A, e.KEY_B, e.KEY_C, e.KEY_D, e.KEY_SPACE, e.KEY_ESC, e.KEY_F9,
                                  e.KEY_LEFTCTRL, e.KEY_LEFTALT, e.KEY_ENTER]}, name="qasr test keyboard")
    rec = Recorder()
    listener = EvdevHotkeyListener(HotkeyOptions(combo="<f9>", mode="hold", release_tail_s=TAIL_S),
                                   rec.callback("start"), rec.callback("stop"), rec.callback("cancel"),
                                   devices=("qasr test keyboard",))
    try:
        time.sleep(0.5)  # udev creates the event node
        assert listener.start(), listener.unavailable_reason
        for value in (1, 0):
            ui.write(e.EV_KEY, e.KEY_F9, value)
            ui.syn()
            time.sleep(0.4)
        assert rec.wait(2) == ["start", "stop"]
        ui.write(e.EV_KEY, e.KEY_F9, 1)
        ui.syn()
        time.sleep(0.1)
        for value in (1, 0):
            ui.write(e.EV_KEY, e.KEY_ESC, value)
            ui.syn()
        assert rec.wait(4) == ["start", "stop", "start", "cancel"]
        ui.write(e.EV_KEY, e.KEY_F9, 0)
        ui.syn()
    finally:
        listener.stop()
        ui.close()


def test_paste_last_and_undo_combos_fire_once_per_press_with_exactly_their_modifiers():
    rec = Recorder()
    opts = HotkeyOptions(combo="<pause>", release_debounce_s=0.01)
    k = EvdevKeys(opts, rec.callback("start"), rec.callback("stop"), rec.callback("cancel"),
                  actions={"<f7>": rec.callback("paste-last"), "<ctrl>+<alt>+z": rec.callback("undo")})
    press(k, e.KEY_F7)
    k.handle(ev(e.KEY_F7, 2))  # autorepeat fires nothing more
    release(k, e.KEY_F7)
    press(k, e.KEY_LEFTCTRL, e.KEY_RIGHTALT, e.KEY_Z)
    release(k, e.KEY_Z, e.KEY_RIGHTALT, e.KEY_LEFTCTRL)
    press(k, e.KEY_LEFTCTRL, e.KEY_LEFTSHIFT, e.KEY_LEFTALT, e.KEY_Z)  # another modifier too: not undo
    release(k, e.KEY_Z, e.KEY_LEFTALT, e.KEY_LEFTSHIFT, e.KEY_LEFTCTRL)
    press(k, e.KEY_Z)  # z alone: nothing
    release(k, e.KEY_Z)
    assert rec.calls == ["paste-last", "undo"]


def test_a_release_is_acted_on_without_the_x11_debounce():
    """Kernel autorepeat is a repeat event, never a release/press pair: evdev needs no release debounce."""
    k, rec = keys("<f9>", mode="hold")
    assert k.logic.options.release_debounce_s == 0.0
    press(k, e.KEY_F9)
    k.handle(ev(e.KEY_F9, 2))  # autorepeat while held
    time.sleep(0.4)  # past the tap threshold: hold-to-talk
    release(k, e.KEY_F9)
    assert rec.wait(2) == ["start", "stop"]
