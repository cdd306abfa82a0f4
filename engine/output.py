"""What the model writes -> what the user sees, and the guards that stop a run-away generation.

Automatic language: the model writes ``language English<asr_text>the text``; the header never reaches
the user. ``language None<asr_text>`` (silence) gives empty text. With a forced language the prompt
already ends in the header, so everything generated is text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence

from qasr.engine.prompt import ASR_TEXT_TAG
from qasr.engine.safe_text import safe_text

LANGUAGE_PREFIX = "language "
# A substring of 1-20 characters repeated more than 20 times in a row collapses to one copy, as the
# official parser does (it keeps text like "hahaha" but not a 200-character loop).
_REPEAT_RUN = re.compile(r"(.{1,20}?)\1{20,}", re.DOTALL)


def collapse_repeats(text: str) -> str:
    return _REPEAT_RUN.sub(r"\1", text)


def normalize_language_name(value: str) -> str:
    value = value.strip()
    return value[:1].upper() + value[1:].lower()


class ParsedOutput(NamedTuple):
    language: str  # "" when unknown or silent
    text: str


def parse_output(raw: str, forced_language: str | None = None) -> ParsedOutput:
    """Split raw decoded text into (language, text) following the official qwen-asr parser."""
    s = (raw or "").strip()
    if not s:
        return ParsedOutput(forced_language or "", "")
    s = collapse_repeats(s)
    if forced_language:
        return ParsedOutput(forced_language, s)
    if ASR_TEXT_TAG not in s:
        return ParsedOutput("", s)
    meta, text = s.split(ASR_TEXT_TAG, 1)
    text = text.strip()
    if "language none" in meta.lower():
        return ParsedOutput("", text)
    language = ""
    for line in meta.splitlines():
        line = line.strip()
        if line.lower().startswith(LANGUAGE_PREFIX):
            value = line[len(LANGUAGE_PREFIX) :].strip()
            if value:
                language = normalize_language_name(value)
            break
    return ParsedOutput(language, text)


def transcript_of_ids(ids: Sequence[int], speech_bytes: Callable[[int], bytes], asr_text_id: int,
                      forced_language: str | None = None) -> ParsedOutput:
    """(language, text) of generated ids: the official rendering (skip_special_tokens, then `parse_output`)
    made safe to type. `speech_bytes` gives b"" for the model's markers (every added token: <think>,
    <tool_call>, a second <asr_text> ...); the first <asr_text> still ends the language header. The text
    ends on a whole character and holds no control character (`safe_text`)."""
    ids = list(ids)
    if not forced_language and asr_text_id in ids:
        i = ids.index(asr_text_id)
        header = _decode(ids[:i], speech_bytes) + ASR_TEXT_TAG
        ids = ids[i + 1 :]
    else:
        header = ""
    language, text = parse_output(header + _decode(ids, speech_bytes, whole_characters=True), forced_language)
    return ParsedOutput(safe_text(language).strip(), safe_text(text).strip())


def _decode(ids: Sequence[int], speech_bytes: Callable[[int], bytes], whole_characters: bool = False) -> str:
    data = b"".join(speech_bytes(t) for t in ids)
    return (complete_utf8_prefix(data) if whole_characters else data).decode("utf-8", errors="replace")


def visible_text(raw: str, forced_language: str | None = None) -> str:
    """Text safe to show while decoding is still running: hides a header that is not finished yet."""
    if forced_language:
        return raw.strip()
    if ASR_TEXT_TAG in raw:
        return parse_output(raw).text
    stripped = raw.lstrip()
    if LANGUAGE_PREFIX.startswith(stripped[: len(LANGUAGE_PREFIX)].lower()) and "\n" not in stripped:
        return ""  # still inside "language Xxx"
    return raw.strip()


def complete_utf8_prefix(data: bytes) -> bytes:
    """The longest prefix of ``data`` that does not end inside a UTF-8 multi-byte sequence."""
    end = len(data)
    # Walk back over at most 3 continuation bytes to the lead byte of the last sequence.
    i = end - 1
    while i >= 0 and end - i <= 4 and (data[i] & 0xC0) == 0x80:
        i -= 1
    if i < 0:
        return data
    lead = data[i]
    if lead < 0x80:
        need = 1
    elif lead >> 5 == 0b110:
        need = 2
    elif lead >> 4 == 0b1110:
        need = 3
    elif lead >> 3 == 0b11110:
        need = 4
    else:
        return data  # invalid lead byte: leave it to the decoder's error handling
    return data if end - i >= need else data[:i]


# --- guards ------------------------------------------------------------------------------------

AUDIO_TOKENS_PER_SECOND = 13
# Speech rarely exceeds ~5 text tokens a second (fast English ~4, Chinese ~5); 10 a second of audio plus
# room for the language header is twice that and still stops a loop on a 30 s piece within ~300 tokens.
NEW_TOKENS_PER_SECOND = 10
HEADER_ALLOWANCE = 16


def new_token_cap(audio_s: float, user_max: int | None = None) -> int:
    """Largest number of tokens one piece of audio may generate."""
    cap = HEADER_ALLOWANCE + int(math.ceil(NEW_TOKENS_PER_SECOND * max(audio_s, 0.0)))
    if user_max is not None and user_max > 0:
        cap = min(cap, int(user_max))
    return max(cap, 1)


@dataclass(frozen=True)
class LoopGuardOptions:
    window: int = 15  # ... tokens in which
    max_distinct: int = 3  # ... at most this many distinct ids means a loop
    min_run_tokens: int = 40  # an n-gram repeated back to back over at least this many tokens
    min_repeats: int = 3  # ... and at least this many times is a loop
    max_ngram: int = 32


def find_loop(ids: Sequence[int], options: LoopGuardOptions = LoopGuardOptions()) -> int | None:
    """If the tail of `ids` is a repetition loop, the index where its repeated part starts
    (ids[:index] keeps one copy of the pattern); else None. Call after each new token."""
    n = len(ids)
    if n >= options.window and len(set(ids[-options.window :])) <= options.max_distinct:
        tail = ids[-options.window :]
        # keep the first occurrence of the repeating pattern
        for period in range(1, options.max_distinct + 1):
            if all(tail[i] == tail[i - period] for i in range(period, len(tail))):
                return _run_start(ids, period) + period
        return n - options.window + options.max_distinct
    for period in range(1, min(options.max_ngram, n // options.min_repeats) + 1):
        repeats_needed = max(options.min_repeats, -(-options.min_run_tokens // period))
        span = repeats_needed * period
        if span > n:
            continue
        tail = ids[n - span :]
        if all(tail[i] == tail[i - period] for i in range(period, span)):
            return _run_start(ids, period) + period
    return None


def accept_greedy_token(
    ids: list[int], token: int, cap: int, stop_ids: frozenset[int], loop_guard: bool = True
) -> tuple[str | None, int | None]:
    """One step of greedy generation, the rule offline and streaming decoding share (their token ids
    must agree): append `token` to `ids` unless it ends generation. Returns (stop reason or None while
    generation goes on, loop cut: ids[:cut] is the text to show when a loop stopped it)."""
    if len(ids) >= cap:
        return "max_tokens", None
    if token in stop_ids:
        return "stop", None
    ids.append(token)
    cut = find_loop(ids) if loop_guard else None
    if cut is not None:
        return "loop", cut
    if len(ids) >= cap:
        return "max_tokens", None
    return None, None


def _run_start(ids: Sequence[int], period: int) -> int:
    """Start of the longest suffix of ids that is periodic with `period`."""
    i = len(ids) - period
    while i - 1 >= 0 and ids[i - 1] == ids[i - 1 + period]:
        i -= 1
    return i
