"""The one table of language codes: ISO 639 codes → Qwen3-ASR's official language names.

``ISO_639_1`` holds the two-letter codes (and the few languages without one: ``yue``, ``fil``) in the
order the servers list them; ``ISO_639_2`` the three-letter codes some clients send.
"""

from __future__ import annotations

ISO_639_1 = {
    "zh": "Chinese", "en": "English", "yue": "Cantonese", "ar": "Arabic", "de": "German", "fr": "French",
    "es": "Spanish", "pt": "Portuguese", "id": "Indonesian", "it": "Italian", "ko": "Korean", "ru": "Russian",
    "th": "Thai", "vi": "Vietnamese", "ja": "Japanese", "tr": "Turkish", "hi": "Hindi", "ms": "Malay",
    "nl": "Dutch", "sv": "Swedish", "da": "Danish", "fi": "Finnish", "pl": "Polish", "cs": "Czech",
    "fil": "Filipino", "tl": "Filipino", "fa": "Persian", "el": "Greek", "hu": "Hungarian", "mk": "Macedonian",
    "ro": "Romanian",
}
ISO_639_2 = {
    "zho": "Chinese", "chi": "Chinese", "cmn": "Chinese", "eng": "English", "fra": "French", "fre": "French",
    "deu": "German", "ger": "German", "ita": "Italian", "jpn": "Japanese", "kor": "Korean", "por": "Portuguese",
    "rus": "Russian", "spa": "Spanish",
}
LANGUAGE_CODES = {**ISO_639_1, **ISO_639_2}


def language_of_code(code: str) -> str | None:
    """``en``, ``eng``, ``en-US``, ``zh_CN`` (any case) → the official name; None for anything else."""
    key = code.strip().lower()
    return LANGUAGE_CODES.get(key) or LANGUAGE_CODES.get(key.replace("_", "-").split("-")[0])


def code_of_language(name: str) -> str | None:
    """The official name → its two-letter code (``English`` → ``en``); None when it has none."""
    return next((code for code, n in ISO_639_1.items() if n == name), None)
