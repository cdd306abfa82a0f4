"""Dictation history from the transcript journal (rotated files included): list, search, pick, format.

Entries are numbered from the newest: ``1`` is the last final, ``2`` the one before, … — the numbers
``qasr-daemon history`` shows and ``history --copy N`` takes. Pure functions over the journal files; the
daemon's ``history`` commands and the CLI (when no daemon runs) share them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from qasr.daemon.results.journal import read_entries
from qasr.engine.safe_text import is_unsafe
from qasr.errors import QasrError

DEFAULT_COUNT = 20
MAX_COUNT = 10000
MAX_SEARCH_CHARS = 1000


def check_query(count: Any = None, search: Any = None) -> tuple[int, str]:
    """Validated ``count`` and ``search`` (one-line QasrError otherwise)."""
    if count is None:
        count = DEFAULT_COUNT
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise QasrError(f"history count must be an integer from 1 to {MAX_COUNT}, got {count!r}")
    if search is None:
        search = ""
    if not isinstance(search, str) or len(search) > MAX_SEARCH_CHARS:
        raise QasrError(f"history search must be text of at most {MAX_SEARCH_CHARS} characters")
    return count, search


def entries(path: Path, count: Any = None, search: Any = None) -> list[dict]:
    """The newest ``count`` entries (matching ``search``, case-insensitive), oldest first, each with its
    ``n`` (1 = newest of all, whatever the search) and ``duration_s``."""
    count, search = check_query(count, search)
    everything = [e for e in read_entries(path, include_backups=True) if isinstance(e.get("text"), str)]
    total = len(everything)
    needle = search.casefold()
    picked: list[dict] = []
    for index in range(total - 1, -1, -1):
        entry = everything[index]
        if needle and needle not in entry["text"].casefold():
            continue
        picked.append(_described(entry, total - index))
        if len(picked) >= count:
            break
    picked.reverse()
    return picked


def entry(path: Path, number: Any) -> dict:
    """Entry ``number`` (1 = newest); QasrError when there is no such entry."""
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise QasrError(f"history entry number must be an integer >= 1 (1 = the last), got {number!r}")
    everything = [e for e in read_entries(path, include_backups=True) if isinstance(e.get("text"), str)]
    if number > len(everything):
        raise QasrError(f"there is no history entry {number}; the history has {len(everything)}")
    return _described(everything[-number], number)


def _described(entry: dict, number: int) -> dict:
    out = {"n": number, **entry}
    start, end = entry.get("audio_start"), entry.get("audio_end")
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        out["duration_s"] = round(max(0.0, end - start), 2)
    return out


def format_entry(entry: dict) -> str:
    """One line per entry: ``  3  2026-12-04 15:50:23  2.4 s  firefox "Inbox"  paste  text``."""
    when = str(entry.get("time", "?")).replace("T", " ")[:19]
    duration = f"{entry['duration_s']:.1f} s" if "duration_s" in entry else "-"
    where = entry.get("app") or ""
    if entry.get("title"):
        where = f"{where} {entry['title']!r}".strip()
    if entry.get("profile"):
        where = f"{where} [{entry['profile']}]".strip()
    sink = entry.get("sink") or "none"
    text = entry.get("text", "").replace("\n", "⏎")
    return printable(f"{entry['n']:>4}  {when}  {duration:>7}  {where or '-'}  {sink}  {text}")


def json_line(entry: dict) -> str:
    """One entry as a JSON line a terminal shows as text: DEL and C1 controls escaped too (json escapes C0)."""
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(entry, ensure_ascii=False))


_C1 = re.compile(r"[\x7f-\x9f]")


def printable(line: str) -> str:
    """`line` with every control character written as its escape (``\\x1b``, ``\\t``): a journal's text
    is shown in the user's terminal, where ESC or a newline would act as keys."""
    return "".join(c.encode("unicode_escape").decode("ascii") if is_unsafe(c) and c != "\ufffd" else c
                   for c in line)
