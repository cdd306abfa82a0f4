"""A call transcript's turns → the echo rule → txt, srt, vtt and json files.

A turn is one final of the microphone ("you") or of system audio ("them"), placed on the call's clock
(seconds from the start of the recording), with its words on the same clock when the aligner gave them.

Echo rule: the microphone hears the speakers, so what the other side says often comes back as a
microphone utterance too. A microphone turn is an echo of a system turn, and is dropped, when
  * their audio lies within ``ECHO_WINDOW_S`` of each other (the spans, widened by the window, overlap), and
  * at least ``ECHO_MATCH`` of the microphone turn's words (case and punctuation ignored; every CJK
    character a word) are found, in order, in the system turn (``difflib`` matching blocks).
The system side is kept: it is the clean signal, and what the microphone adds is the room's copy of it.
A microphone turn matched by no system turn is the user's own speech and always stays.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from qasr.engine.subtitles import Cue, format_srt, format_vtt, srt_time, word_cues

SPEAKERS = {"mic": "you", "system": "them"}
ECHO_WINDOW_S = 2.0
ECHO_MATCH = 0.6
FORMATS = ("txt", "srt", "vtt", "json")

_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]|[^\W_]+", re.UNICODE)


@dataclass(frozen=True)
class Turn:
    speaker: str  # "you" (microphone) or "them" (system audio)
    source: str
    start: float  # seconds from the start of the recording (a little below 0 for speech that began before it)
    end: float
    text: str
    language: str | None = None
    words: tuple[tuple[str, float, float], ...] = field(default=())  # (word, start, end) on the same clock
    utterance_id: str = ""


def word_units(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


def is_echo(mic: Turn, system: Turn) -> bool:
    if mic.start > system.end + ECHO_WINDOW_S or mic.end < system.start - ECHO_WINDOW_S:
        return False
    heard, played = word_units(mic.text), word_units(system.text)
    if not heard or not played:
        return False
    matched = sum(block.size for block in difflib.SequenceMatcher(None, heard, played, autojunk=False)
                  .get_matching_blocks())
    return matched >= ECHO_MATCH * len(heard)


def drop_echoes(turns: list[Turn]) -> tuple[list[Turn], int]:
    """The turns without the microphone's echoes of system turns (see the module), and how many went."""
    played = [t for t in turns if t.source == "system"]
    kept = [t for t in turns if t.source != "mic" or not any(is_echo(t, s) for s in played)]
    return kept, len(turns) - len(kept)


def in_order(turns: list[Turn]) -> list[Turn]:
    """By audio time (start, then end); ties keep the order they came in."""
    return sorted(turns, key=lambda t: (t.start, t.end))


def _clock(seconds: float) -> str:
    return srt_time(seconds).replace(",", ".")


def to_txt(turns: list[Turn], started: datetime) -> str:
    lines = [f"# qasr call transcript, recorded {started.astimezone().isoformat(timespec='seconds')}"]
    lines += [f"[{_clock(t.start)}] {t.speaker}: {t.text}" for t in turns]
    return "\n".join(lines) + "\n"


def cues(turns: list[Turn]) -> list[Cue]:
    """One cue per turn, or word-timed cues when the turn has words, in time order (overlapping speech
    interleaves), each with its speaker as the voice."""
    out = []
    for t in turns:
        pieces = word_cues(t.words) if t.words else [Cue(t.start, max(t.end, t.start + 0.001), t.text)]
        out += [Cue(c.start, c.end, c.text, t.speaker) for c in pieces]
    return sorted(out, key=lambda c: (c.start, c.end))


def to_srt(turns: list[Turn]) -> str:
    return format_srt(cues(turns))


def to_vtt(turns: list[Turn]) -> str:
    return format_vtt(cues(turns))


def to_json(turns: list[Turn], started: datetime, ended: datetime, echoes: int) -> str:
    doc = {"format": "qasr-call-transcript", "version": 1,
           "started": started.astimezone(timezone.utc).isoformat(timespec="milliseconds"),
           "ended": ended.astimezone(timezone.utc).isoformat(timespec="milliseconds"),
           "speakers": {"you": "microphone", "them": "system audio"}, "echoes_dropped": echoes,
           "turns": [_turn_json(t) for t in turns]}
    return json.dumps(doc, ensure_ascii=False, indent=1) + "\n"


def _turn_json(t: Turn) -> dict:
    out = asdict(t)
    out["start"], out["end"] = round(t.start, 3), round(t.end, 3)
    out["words"] = [{"word": w, "start": round(s, 3), "end": round(e, 3)} for w, s, e in t.words]
    return out


def write_transcript(folder: Path, turns: list[Turn], started: datetime, ended: datetime) -> tuple[list[Path], int]:
    """Write ``call-<local start time>.{txt,srt,vtt,json}``; returns the paths and the echoes dropped."""
    kept, echoes = drop_echoes(turns)
    kept = in_order(kept)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"call-{started.astimezone().strftime('%Y%m%d-%H%M%S')}"
    n = 1
    while any((folder / f"{stem}.{ext}").exists() for ext in FORMATS):
        n += 1
        stem = f"call-{started.astimezone().strftime('%Y%m%d-%H%M%S')}-{n}"
    texts = {"txt": to_txt(kept, started), "srt": to_srt(kept), "vtt": to_vtt(kept),
             "json": to_json(kept, started, ended, echoes)}
    paths = []
    for ext in FORMATS:
        path = folder / f"{stem}.{ext}"
        tmp = path.with_name(f".{path.name}.partial")
        tmp.write_text(texts[ext], encoding="utf-8")
        tmp.replace(path)
        paths.append(path)
    return paths, echoes
