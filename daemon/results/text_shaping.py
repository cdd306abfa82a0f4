"""User-editable text shaping: replacement rules, hotwords for the model's context, spacing and periods.

Files (plain text, UTF-8, in the config folder unless an absolute path is configured), re-read whenever
their modification time or size changes, so edits apply to the next utterance without a restart:

- replacements.txt: one rule per line, `pattern = replacement`; `pattern` is a Python regular
  expression (add `(?i)` to ignore case), `replacement` a re.sub template (`\\1`, `\\g<name>`, `\\n`).
  The separator is the first `=` with whitespace before it (else the first `=`). Either side may be
  wrapped in double quotes to keep leading/trailing spaces. `#` starts a comment line. Rules apply in
  file order. A bad rule produces one warning naming the file and line, and is skipped.
- hotwords.txt: one word or phrase per line (`#` comments); joined into the context prompt that biases
  the model toward these spellings (names, jargon).
- spoken/<Language>.txt: spoken formatting ("new line", "comma", "句号"; spoken_formatting.py), when on.

What they produce keeps no control character but a newline or tab (`engine.safe_text`, ``keep=ON_PURPOSE``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from qasr.daemon.results.spoken_formatting import Formatted, SpokenFormatter
from qasr.engine.safe_text import safe_text

log = logging.getLogger("qasr.text_shaping")

# The only control characters a final may hold: those replacement rules and spoken formatting put there.
ON_PURPOSE = "\n\t"
_SEPARATOR = re.compile(r"\s=(?:\s|$)")
_GROUP_REF = re.compile(r"\\(\d+)|\\g<([^>]*)>")
_FINAL_PERIOD = re.compile(r"(?<![.。])[.。](\s*)$")
_UNSPACED = "\u2E80-\u9FFF\uF900-\uFAFF\uFF00-\uFFEF\u3000-\u30FF\U00020000-\U0003FFFF"
_IDEOGRAPHIC = "\u3040-\u30FF\u3400-\u9FFF\uF900-\uFAFF\U00020000-\U0003FFFF"   # kana and Han, no punctuation
_WORD = re.compile(f"[{_IDEOGRAPHIC}]|(?:(?![{_IDEOGRAPHIC}])[^\\W_])+")


def _is_unspaced_script(ch: str) -> bool:
    """Scripts written without spaces between words (CJK ideographs, kana, CJK/fullwidth punctuation)."""
    return re.fullmatch(f"[{_UNSPACED}]", ch) is not None


@dataclass
class ShapingOptions:
    replacements_file: str = "replacements.txt"   # relative paths are inside the config folder
    hotwords_file: str = "hotwords.txt"
    trailing_space: bool = True                   # append " " so utterances do not run together (not after CJK)
    strip_final_period_max_words: int = 0         # > 0: drop the final "." / "。" of utterances of <= N words
    max_context_chars: int = 1000                 # cap on the hotword context fed to the model
    config_dir: Path | None = None                # None: qasr.config.paths.config_dir() at load time
    spoken_formatting: bool = False               # "new line", "comma" … (spoken_formatting.py)
    spoken_match: str = "edges"                   # edges | anywhere
    spoken_dir: str = "spoken"                    # per-language tables; relative: in the config folder


@dataclass(frozen=True)
class ShapedFinal:
    replaced: str  # the replacement rules applied
    text: str  # and spoken formatting
    delivered: str  # as it is typed or committed (before the trailing space)
    undo: bool = False  # "scratch that": remove the last dictation instead


@dataclass(frozen=True)
class ReplacementRule:
    pattern: re.Pattern[str]
    replacement: str
    source: str                                    # "path:line" for messages


@dataclass
class _WatchedFile:
    path: Path
    signature: tuple[int, int, int] | None = None  # (mtime_ns, size, inode); None = missing
    loaded: bool = False


def word_count(text: str) -> int:
    """Words for the short-utterance rule: letter/digit runs, each CJK character counting as one word."""
    return len(_WORD.findall(text))


def parse_replacements(text: str, source: str) -> tuple[list[ReplacementRule], list[str]]:
    """Rules and warnings from the text of a replacements file (pure: no file access)."""
    rules: list[ReplacementRule] = []
    warnings: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        match = _SEPARATOR.search(line)
        if match is not None:
            pattern, replacement = line[: match.start()], line[match.end():]
        elif "=" in line:
            pattern, _, replacement = line.partition("=")
        else:
            warnings.append(f"{where}: no ' = ' in {line!r}; write `pattern = replacement`; rule skipped")
            continue
        pattern, replacement = _unquote(pattern.strip()), _unquote(replacement.strip())
        if not pattern:
            warnings.append(f"{where}: empty pattern; rule skipped")
            continue
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            warnings.append(f"{where}: bad regular expression {pattern!r} ({exc}); rule skipped")
            continue
        problem = _template_problem(compiled, replacement)
        if problem:
            warnings.append(f"{where}: bad replacement {replacement!r} ({problem}); rule skipped")
            continue
        rules.append(ReplacementRule(compiled, replacement, where))
    return rules, warnings


def parse_hotwords(text: str) -> list[str]:
    words: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and line not in words:
            words.append(line)
    return words


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _template_problem(pattern: re.Pattern[str], replacement: str) -> str:
    for number, name in _GROUP_REF.findall(replacement):
        if number and int(number) > pattern.groups:
            return f"group \\{number} does not exist; the pattern has {pattern.groups} group(s)"
        if name and not (name.isdigit() and int(name) <= pattern.groups) and name not in pattern.groupindex:
            return f"group <{name}> does not exist in the pattern"
    return ""


class TextShaper:
    """Applies the user's rules to final text; reloads the files when they change. Thread-safe (the routes of
    several sources, the engine host's hot words)."""

    def __init__(self, options: ShapingOptions | None = None,
                 on_warning: Callable[[str], None] | None = None) -> None:
        self.options = options or ShapingOptions()
        self._on_warning = on_warning
        self._lock = threading.RLock()
        self._rules: list[ReplacementRule] = []
        self._hotwords: list[str] = []
        self._replacements = _WatchedFile(self._resolve(self.options.replacements_file))
        self._hotwords_file = _WatchedFile(self._resolve(self.options.hotwords_file))
        self.spoken = SpokenFormatter(self._resolve(self.options.spoken_dir), self.options.spoken_match, on_warning)
        self.refresh()

    @property
    def replacements_path(self) -> Path:
        return self._replacements.path

    @property
    def hotwords_path(self) -> Path:
        return self._hotwords_file.path

    @property
    def rules(self) -> list[ReplacementRule]:
        return list(self._rules)

    def refresh(self) -> bool:
        """Re-read whichever file changed since the last look; True if anything was reloaded."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> bool:
        changed = False
        if self._stale(self._replacements):
            text = self._read(self._replacements)
            self._rules, warnings = parse_replacements(text, str(self._replacements.path)) if text else ([], [])
            for message in warnings:
                self._warn(message)
            changed = True
        if self._stale(self._hotwords_file):
            text = self._read(self._hotwords_file)
            self._hotwords = parse_hotwords(text) if text else []
            changed = True
        return changed

    def hotwords(self) -> list[str]:
        self.refresh()
        return list(self._hotwords)

    def context(self) -> str:
        """Hotwords as free text for the model's system-turn context ("" when there are none)."""
        self.refresh()
        text = ", ".join(self._hotwords)
        limit = self.options.max_context_chars
        if len(text) > limit:
            cut = text.rfind(", ", 0, limit)
            text = text[: cut if cut > 0 else limit]
        return text

    def apply_replacements(self, text: str) -> str:
        with self._lock:
            self._refresh()
            for rule in list(self._rules):
                try:
                    text = rule.pattern.sub(rule.replacement, text)
                except (re.error, IndexError) as exc:  # a template problem the load-time check missed
                    self._warn(f"{rule.source}: replacement failed ({exc}); rule skipped")
                    self._rules.remove(rule)
            return text

    def format_spoken(self, text: str, language: str | None, enabled: bool | None = None) -> Formatted:
        """Spoken formatting of already replaced text (``enabled`` None: the option decides)."""
        on = self.options.spoken_formatting if enabled is None else enabled
        if not (on and text):
            return Formatted(text)
        with self._lock:
            formatted = self.spoken.apply(text, language)
        formatted.text = safe_text(formatted.text, keep=ON_PURPOSE)
        return formatted

    def shape(self, text: str, language: str | None = None, spoken: bool | None = None,
              trailing_space: bool | None = None) -> str:
        """Final text of one utterance as it should be delivered (None: the options decide)."""
        return self.with_trailing_space(self.shape_final(text, language, spoken).delivered, trailing_space)

    def shape_final(self, text: str, language: str | None = None, spoken: bool | None = None) -> ShapedFinal:
        """One pass over a dictated final: its text with the replacement rules, then spoken formatting, the
        text to deliver (also without control characters but newline/tab, and the short final's period dropped)
        and whether it was the spoken undo command."""
        replaced = self.apply_replacements(text)
        formatted = self.format_spoken(replaced, language, spoken)
        delivered = safe_text(formatted.text, keep=ON_PURPOSE)
        limit = self.options.strip_final_period_max_words
        if limit > 0 and word_count(delivered) <= limit:
            delivered = _FINAL_PERIOD.sub(r"\1", delivered)
        return ShapedFinal(replaced, formatted.text, delivered, formatted.undo)

    def shape_live_final(self, text: str) -> str:
        """Final text when live typing already sent the committed prefix unchanged: only the trailing space.

        Replacements and period removal would rewrite text that is already typed (it cannot be erased),
        so in live mode they are not applied to the typed output.
        """
        return self.with_trailing_space(text)

    def with_trailing_space(self, text: str, on: bool | None = None) -> str:
        """``text`` with the space that keeps utterances apart (None: ``trailing_space`` decides)."""
        if (self.options.trailing_space if on is None else on) and text.strip() and not text[-1].isspace() \
                and not _is_unspaced_script(text[-1]):
            return text + " "
        return text

    # -- files ---------------------------------------------------------------------------------
    def _resolve(self, name: str) -> Path:
        path = Path(name).expanduser()
        if path.is_absolute():
            return path
        base = self.options.config_dir
        if base is None:
            from qasr.config.paths import config_dir

            base = config_dir()
        return Path(base) / path

    @staticmethod
    def _stale(watched: _WatchedFile) -> bool:
        try:
            st = os.stat(watched.path)
            signature: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            signature = None
        if watched.loaded and signature == watched.signature:
            return False
        watched.signature, watched.loaded = signature, True
        return True

    def _read(self, watched: _WatchedFile) -> str:
        if watched.signature is None:
            return ""
        try:
            return watched.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            self._warn(f"{watched.path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8")
        except OSError as exc:
            self._warn(f"{watched.path}: cannot read ({exc.strerror}); check its permissions")
        return ""

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        if self._on_warning is not None:
            self._on_warning(message)
