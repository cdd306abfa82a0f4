"""Subtitles: SRT and WebVTT text from cues, and word-timed cues from aligned words.

    cues = word_cues([("Hello", 0.0, 0.4), ("world", 0.5, 0.9)])   # [Cue(0.0, 0.9, "Hello world")]
    print(format_srt(cues), end="")

Segment-level subtitles pass their segments as cues: `[Cue(s.start_s, s.end_s, s.text) for s in segs]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from qasr.engine.align.words import is_cjk_ideograph


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str
    voice: str = ""  # who speaks: a WebVTT voice span (<v voice>), "voice: " in SRT


def _clock(seconds: float, separator: str) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def srt_time(seconds: float) -> str:
    """"HH:MM:SS,mmm" (negative times are 0)."""
    return _clock(seconds, ",")


def vtt_time(seconds: float) -> str:
    """"HH:MM:SS.mmm" (negative times are 0)."""
    return _clock(seconds, ".")


def _is_tight(ch: str) -> bool:
    """Scripts written without spaces between words: CJK ideographs and Japanese kana."""
    code = ord(ch)
    return (
        is_cjk_ideograph(ch)
        or 0x3040 <= code <= 0x30FF  # hiragana, katakana
        or 0x31F0 <= code <= 0x31FF  # katakana phonetic extensions
        or 0xFF66 <= code <= 0xFF9F  # halfwidth katakana
    )


def join_words(left: str, right: str) -> str:
    """`left` and `right` with a space between them, none between two CJK units."""
    if not left:
        return right
    if right and _is_tight(left[-1]) and _is_tight(right[0]):
        return left + right
    return f"{left} {right}"


def word_cues(
    words: Iterable[tuple[str, float, float]],
    max_chars: int = 42,
    max_seconds: float = 5.0,
    max_gap: float | None = 1.0,
) -> list[Cue]:
    """Group (word, start_s, end_s) in time order into cues.

    A word opens a new cue when adding it would make the cue longer than `max_chars` characters or
    `max_seconds` seconds, or when it starts more than `max_gap` seconds after the previous word ends
    (None: never). A single word over either limit is a cue of its own.
    """
    cues: list[Cue] = []
    text, start, end = "", 0.0, 0.0
    for word, w_start, w_end in words:
        if not word:
            continue
        if text:
            joined = join_words(text, word)
            if (
                len(joined) > max_chars
                or w_end - start > max_seconds
                or (max_gap is not None and w_start - end > max_gap)
            ):
                cues.append(Cue(start, end, text))
                text = ""
        if text:
            text, end = joined, max(end, w_end)
        else:
            text, start, end = word, w_start, w_end
    if text:
        cues.append(Cue(start, end, text))
    return cues


def _cue_text(text: str) -> str:
    """A cue's lines: a blank line would end the cue early in both formats, so blank lines are dropped,
    and "-->" (a timing line's arrow, not allowed in a cue) becomes "->"."""
    return "\n".join(line.replace("-->", "->") for line in text.strip().splitlines() if line.strip())


def format_srt(cues: Iterable[Cue]) -> str:
    """SubRip text: numbered blocks separated by a blank line; cues without text are left out
    (no cue at all: the empty string)."""
    blocks = []
    for cue in cues:
        text = _cue_text(cue.text)
        if text:
            text = f"{cue.voice}: {text}" if cue.voice else text
            blocks.append(f"{len(blocks) + 1}\n{srt_time(cue.start)} --> {srt_time(cue.end)}\n{text}\n")
    return "\n".join(blocks)


def _vtt_escape(text: str) -> str:
    # WebVTT cue text is markup: "<b>" would be bold and "&amp;" an entity.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_vtt(cues: Iterable[Cue]) -> str:
    """WebVTT text: the WEBVTT header and a blank line, then the cues, text escaped; cues without text are
    left out (no cue at all: "WEBVTT\\n\\n", a valid empty file)."""
    blocks = []
    for cue in cues:
        text = _cue_text(cue.text)
        if text:
            voice = f"<v {_vtt_escape(cue.voice)}>" if cue.voice else ""
            blocks.append(f"{vtt_time(cue.start)} --> {vtt_time(cue.end)}\n{voice}{_vtt_escape(text)}\n")
    return "WEBVTT\n\n" + "\n".join(blocks)
