"""One-shot hotkeys on X11 (pynput): ``hotkey.paste_last_combo`` → paste-last, ``hotkey.undo_combo`` → undo.

With the evdev hotkey (Wayland, ``[hotkey] backend = "evdev"``) the evdev listener serves the same combos
(``evdev_hotkey.EvdevKeys`` ``actions``).

Like the dictation hotkey the listener observes keys without grabbing them (the focused application sees
them too: pick keys it ignores, such as F7/F8). On Wayland without evdev: bind
``qasr-daemon paste-last`` / ``qasr-daemon undo`` in the compositor (README, "Dictating").
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from .hotkey import normalize_combo

log = logging.getLogger("qasr.hotkey")


def in_thread(run: Callable[[str], None], name: str) -> None:
    """Run a command off the key-reading thread (it types or presses BackSpace for a while)."""
    threading.Thread(target=run, args=(name,), name=f"hotkey-{name}", daemon=True).start()


def bindings(paste_last_combo: str, undo_combo: str) -> dict[str, str]:
    """pynput combo → command name, for the combos that are set (QasrError names a bad one)."""
    out: dict[str, str] = {}
    for combo, name in ((paste_last_combo, "paste-last"), (undo_combo, "undo")):
        if combo.strip():
            out[normalize_combo(combo)] = name
    return out


class ActionKeys:
    def __init__(self, keys: dict[str, str], run: Callable[[str], None]) -> None:
        self.keys = keys
        self._run = run
        self._listener: Any = None

    def _fire(self, name: str) -> None:
        in_thread(self._run, name)  # pynput's thread must keep reading keys

    def start(self) -> bool:
        try:
            from pynput import keyboard

            self._listener = keyboard.GlobalHotKeys({combo: (lambda n=name: self._fire(n))
                                                     for combo, name in self.keys.items()})
            self._listener.start()
        except Exception as exc:  # no display, no XRecord
            log.warning("paste-last/undo hotkeys are off: %s", exc)
            self._listener = None
            return False
        log.info("hotkeys: %s", ", ".join(f"{c} → {n}" for c, n in self.keys.items()))
        return True

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
