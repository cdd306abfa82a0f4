"""Spoken formatting: "new line", "comma", "question mark", "换行", "句号" … become what they say.

Per-language tables: ``<spoken_dir>/<Language>.txt`` (the language names the model reports: English.txt,
Chinese.txt, …), one ``phrase = symbol`` per line (``#`` comments), where the symbol is literal text or
``{newline}``, ``{paragraph}`` (two line breaks) or ``{undo}`` (the whole utterance removes the last
dictation instead of being typed). A missing file means the built-in table below; a file replaces it.
Files are re-read when they change (mtime/size/inode), like the replacement rules.

Qwen3-ASR punctuates by itself, so a spoken punctuation word usually arrives with the model's own mark
around it ("Hello world, comma." / "你好世界逗号。"). A phrase replaces the marks next to it instead of
adding to them: a punctuation symbol replaces the mark before and after the phrase; a line break keeps the
mark before it (the sentence ended) and drops the one after. Matches are whole words (CJK phrases need no
spaces around them), any case; ``match = "edges"`` (default) only at the start or end of an utterance,
``"anywhere"`` everywhere.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

log = logging.getLogger("qasr.spoken_formatting")

NEWLINE, PARAGRAPH, UNDO = "{newline}", "{paragraph}", "{undo}"
MATCH_MODES = ("edges", "anywhere")
CJK_PUNCT = "。，！？、；：．"
PUNCT = ".,!?;:…" + CJK_PUNCT
_CJK = re.compile("[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff]")

BUILTIN: dict[str, str] = {
    "English": """
new paragraph = {paragraph}
new line = {newline}
newline = {newline}
comma = ,
period = .
full stop = .
question mark = ?
exclamation mark = !
exclamation point = !
colon = :
semicolon = ;
scratch that = {undo}
""",
    "Chinese": """
另起一段 = {paragraph}
新段落 = {paragraph}
换行 = {newline}
新行 = {newline}
逗号 = ，
句号 = 。
问号 = ？
感叹号 = ！
冒号 = ：
分号 = ；
顿号 = 、
撤销 = {undo}
删掉刚才 = {undo}
""",
}


@dataclass(frozen=True)
class Phrase:
    words: str
    symbol: str
    pattern: re.Pattern[str]

    @property
    def is_break(self) -> bool:
        return self.symbol in ("\n", "\n\n")


@dataclass
class Formatted:
    text: str
    undo: bool = False
    applied: list[str] = field(default_factory=list)  # phrases that were turned into symbols


def parse_table(text: str, source: str) -> tuple[list[Phrase], list[str]]:
    """Phrases (longest first) and one warning per bad line."""
    phrases: list[Phrase] = []
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words, sep, symbol = line.partition(" = ")
        if not sep:
            words, sep, symbol = line.partition("=")
        words, symbol = " ".join(words.split()), symbol.strip()
        if not sep or not words or not symbol:
            warnings.append(f"{source}:{number}: write `phrase = symbol` (symbol: text, {NEWLINE}, {PARAGRAPH} "
                            f"or {UNDO}); line skipped")
            continue
        symbol = {NEWLINE: "\n", PARAGRAPH: "\n\n"}.get(symbol, symbol)
        body = r"\s+".join(re.escape(w) for w in words.split())
        if not _CJK.search(words):
            body = rf"(?<!\w){body}(?!\w)"
        phrases.append(Phrase(words, symbol, re.compile(body, re.IGNORECASE)))
    phrases.sort(key=lambda p: len(p.words), reverse=True)
    return phrases, warnings


def format_text(text: str, phrases: list[Phrase], match: str = "edges") -> Formatted:
    """Apply a table to one utterance's text (pure)."""
    core = text.strip().strip(PUNCT + " ")
    for phrase in phrases:
        if phrase.symbol == UNDO and phrase.pattern.fullmatch(core):
            return Formatted("", undo=True, applied=[phrase.words])
    symbols = [p for p in phrases if p.symbol != UNDO]
    if match == "anywhere":
        return _anywhere(text, symbols)
    return _edges(text, symbols)


def _edges(text: str, phrases: list[Phrase]) -> Formatted:
    out = Formatted(text)
    body, suffix = text.strip(), ""
    while True:  # the end: "… comma." / "… new line" (several: "period new line")
        core = body.rstrip(PUNCT + " ")
        hit = _last_match(core, phrases)
        if hit is None:
            break
        phrase, start = hit
        body = core[:start].rstrip()
        if not phrase.is_break:
            body = body.rstrip(PUNCT + " ")
        suffix = phrase.symbol + suffix
        out.applied.insert(0, phrase.words)
    prefix = ""
    while True:  # the start: "New line. Dear Anna"
        core = body.lstrip(PUNCT + " ")
        hit = _first_match(core, phrases)
        if hit is None:
            break
        phrase, end = hit
        body = core[end:].lstrip(PUNCT + " ")
        prefix += phrase.symbol
        out.applied.append(phrase.words)
    if out.applied:
        out.text = prefix + body + suffix
    return out


def _last_match(core: str, phrases: list[Phrase]) -> tuple[Phrase, int] | None:
    for phrase in phrases:
        for m in phrase.pattern.finditer(core):
            if m.end() == len(core):
                return phrase, m.start()
    return None


def _first_match(core: str, phrases: list[Phrase]) -> tuple[Phrase, int] | None:
    for phrase in phrases:
        m = phrase.pattern.match(core)
        if m is not None and m.end() > 0:
            return phrase, m.end()
    return None


def _anywhere(text: str, phrases: list[Phrase]) -> Formatted:
    out = Formatted(text)
    result = text
    for phrase in phrases:
        marks = f"[{re.escape(PUNCT)}]"
        pattern = re.compile(rf"([ \t]*{marks})?[ \t]*(?:{phrase.pattern.pattern}){marks}?[ \t]*", re.IGNORECASE)

        def sub(m: re.Match[str], phrase: Phrase = phrase) -> str:
            out.applied.append(phrase.words)
            before = (m.group(1) or "").strip() if phrase.is_break else ""
            after = m.string[m.end():]
            space = " " if after and not phrase.is_break and phrase.symbol[-1] not in CJK_PUNCT \
                and not _CJK.match(after) else ""
            return before + phrase.symbol + space

        result = pattern.sub(sub, result)
    out.text = result.strip(" ").replace(" \n", "\n").replace("\n ", "\n") if out.applied else text
    return out


@dataclass
class _Table:
    path: Path
    signature: tuple[int, int, int] | None = None
    loaded: bool = False
    phrases: list[Phrase] = field(default_factory=list)


class SpokenFormatter:
    """Tables per language from ``folder`` (built-ins when a file is missing), re-read on change."""

    def __init__(self, folder: Path, match: str = "edges", on_warning: Callable[[str], None] | None = None) -> None:
        self.folder = Path(folder)
        self.match = match if match in MATCH_MODES else "edges"
        self._on_warning = on_warning
        self._tables: dict[str, _Table] = {}

    def phrases(self, language: str | None) -> list[Phrase]:
        name = (language or "English").strip() or "English"
        if not re.fullmatch(r"[\w -]{1,64}", name):
            return []
        table = self._tables.setdefault(name, _Table(self.folder / f"{name}.txt"))
        try:
            st = os.stat(table.path)
            signature: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            signature = None
        if not table.loaded or signature != table.signature:
            table.signature, table.loaded = signature, True
            text, source = BUILTIN.get(name, ""), f"built-in {name} table"
            if signature is not None:
                try:
                    text, source = table.path.read_text(encoding="utf-8"), str(table.path)
                except (OSError, UnicodeDecodeError) as exc:
                    self._warn(f"{table.path}: cannot read it as UTF-8 text ({exc}); using the built-in table")
            table.phrases, warnings = parse_table(text, source)
            for message in warnings:
                self._warn(message)
        return table.phrases

    def apply(self, text: str, language: str | None) -> Formatted:
        return format_text(text, self.phrases(language), self.match)

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        if self._on_warning is not None:
            self._on_warning(message)
