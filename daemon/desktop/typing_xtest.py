"""Exact Unicode typing through XTEST, independent of the user's keyboard layout.

For each character a spare keycode (one with no keysym) is remapped to the character's keysym, the
server is synced, and the key is pressed and released with XTEST. Clients see a real key event and
look the keysym up in the new mapping, so accents, CJK, emoji and Cyrillic come out exactly, in
xterm too (which ignores synthetic SendEvent input).

Races to avoid:
- a client re-reads the keymap only when it handles the MappingNotify, which may be after we remapped the
  same keycode again. So a pool of spare keycodes is used least-recently-pressed first (a keycode is
  remapped only `reuse_guard_s` after its last press), already-mapped characters are reused, and the
  keymap is restored only after a short delay once typing ends;
- Xlib's XKB code loses a map change that arrives while it is fetching the previous one (it clears its
  pending flag when the fetch returns): with one remap per character, Tk under load typed a stale
  keysym for 1 text in 4. So the characters of the next stretch of text are mapped in one burst, the
  server is synced, clients get `settle_s` to read the burst as one refresh, and only then are the keys
  pressed; no remap happens between key presses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from qasr.errors import QasrError

# Keysyms for characters that have a named key rather than a Unicode keysym.
_POOL_PROPERTY = "_QASR_XTEST_KEYCODES"
_SPECIAL_KEYSYMS = {"\n": 0xFF0D, "\r": 0xFF0D, "\t": 0xFF09, "\b": 0xFF08}
# (display, keycode) -> when this process last pressed it: a new typer (after a reload, or the next test)
# keeps the reuse guard of the one before it instead of remapping a keycode a client may still be reading.
_LAST_PRESS: dict[tuple[str, int], float] = {}


@dataclass
class TypingOptions:
    char_delay_s: float = 0.002      # pause after each character; below ~2 ms some clients drop keys
    reuse_guard_s: float = 0.3       # a spare keycode is remapped only this long after its last press
    max_spare_keycodes: int = 64     # size of the least-recently-used pool (all spare keycodes, usually)
    settle_s: float = 0.03           # after a burst of remaps, before the first key press that needs them


def keysym_for_char(ch: str) -> int:
    """The X keysym that produces `ch`: Latin-1 keysyms equal the code point, others are 0x01000000+cp."""
    if ch in _SPECIAL_KEYSYMS:
        return _SPECIAL_KEYSYMS[ch]
    cp = ord(ch)
    if 0x20 <= cp <= 0x7E or 0xA0 <= cp <= 0xFF:
        return cp
    return 0x01000000 + cp


class XTestTyper:
    """Types text into whatever window has keyboard focus. Not thread-safe: one caller at a time.

    Borrowed keycodes stay mapped after `type()` returns (a late client still needs them to read the
    last characters); the owner calls `restore_keymap()` a little later, and on close. No physical key
    produces a spare keycode, so a lingering mapping changes nothing the user types.
    """

    def __init__(self, disp: Any, options: TypingOptions | None = None) -> None:
        from Xlib.ext import xtest  # noqa: F401  (fails early if the extension module is missing)

        self.disp = disp
        self.options = options or TypingOptions()
        if not disp.has_extension("XTEST"):
            raise QasrError("the X server has no XTEST extension: typing is impossible; use the paste sink")
        self._pool_atom = disp.intern_atom(_POOL_PROPERTY)
        spare = self._find_spare_keycodes()
        if not spare:
            raise QasrError("no unused keycode in the X keymap: typing is impossible; use the paste sink")
        self._pool: list[int] = spare[: max(1, self.options.max_spare_keycodes)]
        self._record_pool()
        self._mapped: dict[int, int] = {}      # keycode -> keysym we put there
        self._display_name = str(disp.get_display_name())
        self._last_press: dict[int, float] = {kc: _LAST_PRESS.get((self._display_name, kc), 0.0)
                                              for kc in self._pool}

    def _find_spare_keycodes(self) -> list[int]:
        """Unmapped keycodes, plus ones an earlier qasr (maybe crashed) borrowed and never gave back.

        Borrowed keycodes are listed in a root-window property; one counts as ours only while it still
        holds one keysym and nothing else (our signature), so a user's own xmodmap entry is never taken.
        """
        from Xlib import X

        info = self.disp.display.info
        mapping = self.disp.get_keyboard_mapping(info.min_keycode, info.max_keycode - info.min_keycode + 1)
        self._width = len(mapping[0]) if mapping else 2
        root = self.disp.screen().root
        prop = root.get_full_property(self._pool_atom, X.AnyPropertyType)
        recorded = {int(v) for v in prop.value} if prop is not None else set()
        spare = []
        for offset, syms in enumerate(mapping):
            keycode = info.min_keycode + offset
            if keycode <= 8:  # special under XKB
                continue
            if not any(syms) or (keycode in recorded and len(set(syms) - {0}) == 1):
                spare.append(keycode)
        spare.reverse()  # prefer high keycodes, which no layout uses
        return spare

    def _record_pool(self) -> None:
        from Xlib import X, Xatom

        root = self.disp.screen().root
        root.change_property(self._pool_atom, Xatom.CARDINAL, 32, self._pool, X.PropModeReplace)
        self.disp.sync()

    @property
    def spare_keycodes(self) -> int:
        return len(self._pool)

    def type(self, text: str) -> int:
        """Type `text` into the focused window; returns the number of characters sent."""
        from Xlib import X
        from Xlib.ext import xtest

        self._forget_stale_mappings()
        keysyms = [keysym_for_char(ch) for ch in text]
        sent = 0
        while sent < len(keysyms):
            end = self._stretch_end(keysyms, sent)
            keycodes = self._map_burst(keysyms[sent:end])
            for keysym in keysyms[sent:end]:
                keycode = keycodes[keysym]
                xtest.fake_input(self.disp, X.KeyPress, keycode)
                xtest.fake_input(self.disp, X.KeyRelease, keycode)
                self.disp.sync()
                self._pressed(keycode)
                sent += 1
                if self.options.char_delay_s > 0:
                    time.sleep(self.options.char_delay_s)
        return sent

    def _pressed(self, keycode: int) -> None:
        now = time.monotonic()
        self._last_press[keycode] = _LAST_PRESS[(self._display_name, keycode)] = now

    def _stretch_end(self, keysyms: list[int], start: int) -> int:
        """End of the longest stretch from `start` whose distinct keysyms fit in the pool at once."""
        seen: set[int] = set()
        for end in range(start, len(keysyms)):
            if keysyms[end] not in seen and len(seen) == len(self._pool):
                return end
            seen.add(keysyms[end])
        return len(keysyms)

    def _map_burst(self, keysyms: list[int]) -> dict[int, int]:
        """keysym → keycode for every keysym of a stretch, remapping the missing ones in one burst."""
        by_keysym = {keysym: keycode for keycode, keysym in self._mapped.items()}
        missing = [k for k in dict.fromkeys(keysyms) if k not in by_keysym]
        if not missing:
            return by_keysym
        wanted = set(keysyms)
        free = sorted((kc for kc in self._pool if self._mapped.get(kc) not in wanted),
                      key=lambda kc: self._last_press.get(kc, 0.0))[: len(missing)]
        wait = max(self._last_press.get(kc, 0.0) for kc in free) + self.options.reuse_guard_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        for keycode, keysym in zip(free, missing):
            self.disp.change_keyboard_mapping(keycode, [(keysym,) * self._width])
            self._mapped[keycode] = keysym
            by_keysym[keysym] = keycode
        self.disp.sync()
        time.sleep(self.options.settle_s)
        return by_keysym

    def press_keysyms(self, keysyms: list[int]) -> None:
        """Press the keys in order and release them in reverse (a shortcut such as Ctrl+Shift+V)."""
        from Xlib import X
        from Xlib.ext import xtest

        self._forget_stale_mappings()
        keycodes = [self.disp.keysym_to_keycode(k) or self._map_burst([k])[k] for k in keysyms]
        for keycode in keycodes:
            xtest.fake_input(self.disp, X.KeyPress, keycode)
            self.disp.sync()
            time.sleep(self.options.char_delay_s)
        for keycode in reversed(keycodes):
            xtest.fake_input(self.disp, X.KeyRelease, keycode)
            self.disp.sync()
            self._pressed(keycode)
            time.sleep(self.options.char_delay_s)

    def _forget_stale_mappings(self) -> None:
        """Drop cached keycodes that someone else (another typer, xmodmap) remapped since we used them."""
        if not self._mapped:
            return
        low, high = min(self._mapped), max(self._mapped)
        current = self.disp.get_keyboard_mapping(low, high - low + 1)
        for keycode, keysym in list(self._mapped.items()):
            if current[keycode - low][0] != keysym:
                del self._mapped[keycode]

    def restore_keymap(self) -> None:
        """Give the borrowed keycodes back (NoSymbol), as they were when we found them."""
        if not self._mapped:
            return
        for keycode in list(self._mapped):
            self.disp.change_keyboard_mapping(keycode, [(0,) * self._width])
        self._mapped.clear()
        self.disp.sync()
        time.sleep(self.options.settle_s)  # the next burst (this typer's or another's) must not land in its refresh
