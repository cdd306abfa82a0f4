"""Text that is safe to type: no C0/C1 control character, no DEL and no U+FFFD leaves the engine.

A model can write any byte: ESC, a newline, a byte token cut in the middle of a character. Typed into a
window, ESC or a newline acts as a key. `safe_text` is applied once where the engine turns tokens into
text (`output.transcript_of_ids`, `commit.TextOfTokens`); the daemon applies it again after its own
shaping with ``keep="\\n\\t"``, the newline and tab a replacement rule or spoken formatting put there.

Whitespace-like controls (tab, newline, FF, VT, the separators 0x1C-0x1F, NEL) become one space (none
at the start or after whitespace, and a space right after one is dropped); every other control
character (CR too: CR LF is one break) and U+FFFD is dropped. The mapping never looks ahead, so text
that grows (committed streaming text) keeps its earlier output as a prefix.
"""

from __future__ import annotations

import re

_WHITESPACE_CONTROLS = "\t\n\v\f\x1c\x1d\x1e\x1f\x85"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ufffd]")


def is_unsafe(ch: str) -> bool:
    """A character no output text holds unless put there on purpose: C0, DEL, C1, U+FFFD."""
    return _CONTROL.fullmatch(ch) is not None


def safe_text(text: str, keep: str = "") -> str:
    """`text` without control characters; those in `keep` (e.g. "\\n\\t") stay as they are."""
    if not _CONTROL.search(text):
        return text
    out: list[str] = []
    spaced = False  # the last character in was a whitespace control: a space right after it is dropped
    for ch in text:
        if ch in keep or not is_unsafe(ch):
            if not (spaced and ch == " "):
                out.append(ch)
            spaced = False
        elif ch in _WHITESPACE_CONTROLS:
            if out and not out[-1].isspace():
                out.append(" ")
            spaced = True
    return "".join(out)
