"""Fitting a final to the text before the cursor (an input method's surrounding text), sans-I/O.

An input method sees what the field holds before the cursor, so it can join a dictation to it the way
a typist would: a space between words (none at the start of the field or a line, none after a space,
none between CJK characters), a capital letter at the start of a sentence. The same text, bounded, is
the model's context for the utterance (``[ime] context_from_surrounding``).
"""

from __future__ import annotations

import unicodedata

SENTENCE_ENDS = ".!?…。！？"
CLOSERS = "\"'”’)]»"


def _unspaced(ch: str) -> bool:
    """Scripts written without spaces (CJK ideographs, kana, fullwidth forms and CJK punctuation)."""
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK ", "HIRAGANA", "KATAKANA", "FULLWIDTH", "IDEOGRAPHIC", "HANGUL SYLLABLE"))


def sentence_starts(before: str) -> bool:
    """Whether text typed after ``before`` starts a sentence: empty field, a new line, or after . ! ?"""
    stripped = before.rstrip(" \t")
    if not stripped or stripped.endswith("\n"):
        return True
    stripped = stripped.rstrip(CLOSERS)
    return bool(stripped) and stripped[-1] in SENTENCE_ENDS


def fit_to_surrounding(text: str, before: str | None) -> str:
    """``text`` joined to ``before`` (None: the field tells nothing; the text is left as it is)."""
    text = text.strip(" ")
    if before is None or not text:
        return text
    first = text[0]
    if sentence_starts(before):
        text = first.upper() + text[1:]
    elif first.isupper() and text[1:2].islower() and not _proper_word(text):
        text = first.lower() + text[1:]  # the model capitalises every utterance; mid-sentence it is not
    last = before[-1:] if before else ""
    needs_space = bool(last) and not last.isspace() and not (_unspaced(last) or _unspaced(text[0])) \
        and text[0] not in ",.;:!?…)]}" and last not in "([{\"'“‘"
    return (" " if needs_space else "") + text


def _proper_word(text: str) -> bool:
    """"I", "I'm", "I'll": stay capitalised mid-sentence."""
    word = text.split(" ", 1)[0]
    return word == "I" or word.startswith(("I'", "I’"))


def context_tail(before: str | None, chars: int) -> str:
    """The last ``chars`` characters before the cursor, cut at a word where possible, for the model."""
    if not before or chars <= 0:
        return ""
    tail = before[-chars:]
    if len(before) > chars and " " in tail:
        tail = tail.split(" ", 1)[1]
    return tail.strip()


def combined_context(base: str | None, surrounding: str) -> str | None:
    """The configured/profile context and the field's text, in that order (None when both are empty)."""
    parts = [p for p in (base or "", surrounding) if p]
    return "\n".join(parts) if parts else base
