"""The forced aligner's word split: the units that each get a start and an end time.

    split_words("We'll meet at 5, ok?", "English")   # ["We'll", "meet", "at", "5", "ok"]
    split_words("我们用Python写code，好吗？", "zh")     # ["我", "们", "用", "Python", "写", "code", "好", "吗"]

The same units as the official `Qwen3ForceAlignProcessor.encode_timestamp(text, language)[0]`:
Japanese is split by nagisa, Korean by soynlp's LTokenizer scored with the official dictionary (shipped
inside the qwen-asr package), every other language on whitespace. Each unit keeps only letters, numbers
and apostrophes; a CJK ideograph is always a unit of its own. Punctuation gets no time.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import unicodedata

from qasr.engine.languages import language_of_code
from qasr.errors import QasrError

# The languages Qwen3-ForcedAligner was trained on.
ALIGNER_LANGUAGES = (
    "Chinese", "English", "Cantonese", "French", "German", "Italian",
    "Japanese", "Korean", "Portuguese", "Russian", "Spanish",
)

# The official ideograph ranges (Unified, Extensions A-E, Compatibility).
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
)

JAPANESE_HINT = "Japanese word timestamps need nagisa: pip install nagisa"
KOREAN_HINT = (
    "Korean word timestamps need soynlp and the official dictionary: "
    "pip install soynlp && pip install --no-deps qwen-asr"
)
KOREAN_DICT = ("inference", "assets", "korean_dict_jieba.dict")  # inside the qwen_asr package


class WordSplitError(QasrError):
    """A package the word split of this language needs is missing; the message says what to install."""


def normalize_language(language: str | None) -> str | None:
    """The official language name ("English", "Japanese") for a name in any case or an ISO 639 code.

    None or an empty string gives None (the whitespace rule). An unknown name is only capitalized, as
    the official `normalize_language_name` does; the split treats it like any space-separated language.
    """
    if language is None:
        return None
    s = str(language).strip()
    if not s:
        return None
    return language_of_code(s) or s[:1].upper() + s[1:].lower()


def is_cjk_ideograph(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _kept(ch: str) -> bool:
    return ch == "'" or unicodedata.category(ch)[0] in "LN"


def clean_unit(token: str) -> str:
    """The token with everything but letters, numbers and apostrophes removed."""
    return "".join(ch for ch in token if _kept(ch))


def _split_ideographs(token: str) -> list[str]:
    units: list[str] = []
    run = ""
    for ch in token:
        if is_cjk_ideograph(ch):
            if run:
                units.append(run)
                run = ""
            units.append(ch)
        else:
            run += ch
    if run:
        units.append(run)
    return units


def _space_separated(text: str) -> list[str]:
    units: list[str] = []
    for token in text.split():
        # Cleaned before the ideographs are split off, as the official code does: "code，好" is one
        # token, "code好" once cleaned, then "code", "好".
        units.extend(_split_ideographs(clean_unit(token)))
    return units


def _cleaned(tokens) -> list[str]:
    return [c for c in (clean_unit(t) for t in tokens) if c]


@functools.lru_cache(maxsize=1)
def _nagisa_tagging():
    try:
        from nagisa import tagging
    except ImportError:
        raise WordSplitError(JAPANESE_HINT) from None
    return tagging


def korean_dictionary_path() -> str | None:
    """The official Korean dictionary inside the installed qwen-asr package (not imported: it needs torch)."""
    try:
        spec = importlib.util.find_spec("qwen_asr")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(root, *KOREAN_DICT)
        if os.path.isfile(path):
            return path
    return None


@functools.lru_cache(maxsize=1)
def _korean_tokenizer():
    try:
        from soynlp.tokenizer import LTokenizer
    except ImportError:
        raise WordSplitError(KOREAN_HINT) from None
    path = korean_dictionary_path()
    if path is None:
        raise WordSplitError(KOREAN_HINT)
    scores: dict[str, float] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields:
                scores[fields[0]] = 1.0
    return LTokenizer(scores=scores)


def split_words(text: str, language: str | None) -> list[str]:
    """The aligner's units of `text`; raises WordSplitError when Japanese/Korean lack their package."""
    name = normalize_language(language)
    if name == "Japanese":
        return _cleaned(_nagisa_tagging()(text).words)
    if name == "Korean":
        return _cleaned(_korean_tokenizer().tokenize(text))
    return _space_separated(text)
