"""Undo ("scratch that"): what the last delivery put into which window, and whether removing it is safe.

``TextOutput`` keeps one ``Delivered`` record: the window a final was typed or pasted into, the exact text
that reached it (live-typed part included) and the output's ``serial`` at that moment (every key event qasr
sends — typing, pasting, live typing, backspaces — advances it). Undo presses BackSpace once per grapheme
(user-perceived character: a base with its combining marks, an emoji ZWJ sequence, a flag) of that text,
and only when
- the desktop tells the focused window (X11, sway, Hyprland) and it is still the same window,
- qasr sent nothing to the desktop since (``serial`` unchanged),
- the text holds no line break going to a terminal (a shell has run that line already).
Otherwise nothing is deleted and the reason comes back as one line (a ``warning``).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

ZWJ = "\u200d"
_REGIONAL = range(0x1F1E6, 0x1F200)
_SKIN_TONES = range(0x1F3FB, 0x1F400)
_TAGS = range(0xE0020, 0xE0080)


@dataclass(frozen=True)
class Delivered:
    window: Any                 # x11.WindowInfo (also used for Wayland windows) or None
    text: str                   # what reached the window, exactly
    serial: int                 # TextOutput.serial right after it was sent
    sink: str                   # type | paste
    terminal: bool = False      # the window is a terminal (a typed line break ran a command)


def _extends(ch: str, previous: str) -> bool:
    """Whether ``ch`` belongs to the grapheme that ``previous`` ends (extended grapheme rules, simplified)."""
    cp = ord(ch)
    if previous == "\r" and ch == "\n":
        return True
    if previous in "\r\n" or ch in "\r\n":
        return False
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Mc"):
        return True
    if ch == ZWJ or previous == ZWJ:
        return True
    if 0xFE00 <= cp <= 0xFE0F or cp in _SKIN_TONES or cp in _TAGS:
        return True
    return False


def graphemes(text: str) -> list[str]:
    """``text`` cut into user-perceived characters (what one BackSpace removes in most applications)."""
    out: list[str] = []
    regional_run = 0
    for ch in text:
        cp = ord(ch)
        if out and _extends(ch, out[-1][-1]):
            out[-1] += ch
            continue
        if cp in _REGIONAL:
            regional_run += 1
            if regional_run % 2 == 0 and out:  # the second half of a flag
                out[-1] += ch
                continue
        else:
            regional_run = 0
        out.append(ch)
    return out


def grapheme_count(text: str) -> int:
    return len(graphemes(text))


def undo_problem(last: Delivered | None, serial: int, focus_known: bool, focused: Any) -> str:
    """Why the last delivery cannot be removed now ("" when it can)."""
    if last is None:
        return "nothing to undo: no dictated text was typed or pasted since the daemon started (or since the last undo)"
    if last.serial != serial:
        return "nothing deleted: qasr typed or pasted something after the last dictation"
    if not focus_known:
        return "nothing deleted: this desktop does not tell which window has focus, so undo cannot be made safe"
    if last.window is None or focused is None or focused.window_id != last.window.window_id:
        where = focused.describe() if focused is not None else "no window"
        was = last.window.describe() if last.window is not None else "no window"
        return f"nothing deleted: the focus is on {where}, the last dictation went to {was}"
    if last.terminal and ("\n" in last.text or "\r" in last.text):
        return "nothing deleted: the last dictation sent a line break to a terminal (the line has run)"
    return ""


@dataclass(frozen=True)
class UndoResult:
    removed: bool
    chars: int = 0              # BackSpace presses sent
    text: str = ""              # the text removed
    window: Any = None
    message: str = ""           # why nothing was removed ("" when it was)


def remove_last(output: Any) -> UndoResult:
    """BackSpace the last delivered final out of its window, if safe (see the module docstring).

    ``output`` is a ``TextOutput``; its caller holds the output lock."""
    last = output.last
    focused = output.focused() if output.backend is not None else None
    problem = undo_problem(last, output.serial, output.focus_known, focused)
    if problem:
        return UndoResult(False, window=focused, message=problem)
    if not output.backend.modifiers_released(output.options.modifier_release_timeout_s):
        return UndoResult(False, window=focused, message="nothing deleted: modifier keys were still held")
    count = grapheme_count(last.text)
    sent = 0
    repeated = getattr(output.backend, "press_repeated", None)
    try:
        if repeated is not None:
            repeated("BackSpace", count)
            sent = count
        for _ in range(count - sent):
            output.backend.press_keys("BackSpace")
            sent += 1
    except Exception as exc:  # SinkFailed / QasrError: no key tool worked
        output.serial += 1
        output.last = None
        return UndoResult(False, sent, window=focused,
                          message=f"undo stopped after {sent} of {count} characters: {exc}")
    output.serial += 1
    output.last = None
    return UndoResult(True, sent, last.text, focused)
