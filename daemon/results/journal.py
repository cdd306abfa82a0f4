"""Transcript journal: every final appended as one JSON line to ``journal_file()``, fsync'd, rotated by size/age.

The app calls ``Journal.append(final_event)`` for each final it wants kept (thread-safe). The file is private
(mode 0600) because it holds everything the user dictated. When a write would push the file past
``max_bytes`` it is renamed to ``journal.jsonl.1`` (older ones shift to ``.2`` ... ``.{backups}``, the oldest
is deleted) and a fresh file is started. ``max_age_days`` > 0 also rotates the file once its first entry is
that old and deletes rotated files last written before then. ``enabled=False`` makes ``append`` a no-op.
Besides ``KEPT_FIELDS`` an entry may carry ``extra`` facts of the delivery (``app``, ``title``, ``profile``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from qasr.config import paths
from qasr.errors import QasrError

# Fields of a final event worth keeping; timings and token ids are left out to keep the journal readable.
KEPT_FIELDS = ("utterance_id", "text", "language", "audio_start", "audio_end", "sink", "source")
EXTRA_FIELDS = ("app", "title", "profile")  # where a mic final went, when the desktop tells
DAY_S = 86400.0


@dataclass(frozen=True)
class JournalOptions:
    enabled: bool = True
    path: Path | None = None  # None: qasr.config.paths.journal_file() at construction time
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 3
    fsync: bool = True
    max_age_days: float = 0.0  # 0: no age limit


class Journal:
    def __init__(self, options: JournalOptions = JournalOptions()):
        self.options = options
        self.path = Path(options.path) if options.path is not None else paths.journal_file()
        self._lock = threading.Lock()
        self._first_unix: float | None = None  # time of the current file's first entry (age rotation)

    @property
    def enabled(self) -> bool:
        return self.options.enabled

    def append(self, event: dict, now: float | None = None, extra: dict | None = None) -> dict | None:
        """Write one entry for ``event`` (a ``final`` event dict); returns the entry written, or None if off."""
        if not self.options.enabled:
            return None
        stamp = time.time() if now is None else now
        entry = {
            "time": datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds"),
            "unix": round(stamp, 3),
        }
        entry.update({k: event[k] for k in KEPT_FIELDS if k in event})
        entry.update({k: v for k, v in (extra or {}).items() if k in EXTRA_FIELDS and v})
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            try:
                self._write(line, stamp)
            except OSError as exc:
                raise QasrError(
                    f"cannot write the transcript journal {self.path}: {exc.strerror}; "
                    "free disk space, fix the folder's permissions or set journal.enabled = false"
                ) from exc
        return entry

    def _write(self, line: bytes, now: float) -> None:
        paths.ensure_private_dir(self.path.parent)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and (size + len(line) > self.options.max_bytes or self._too_old(now)):
            self._rotate()
            self._expire(now)
            size = 0
        if not size:
            self._first_unix = now
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            if self.options.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _too_old(self, now: float) -> bool:
        max_age = self.options.max_age_days * DAY_S
        if max_age <= 0:
            return False
        if self._first_unix is None:
            self._first_unix = _first_unix(self.path, now)
        return now - self._first_unix > max_age

    def _expire(self, now: float) -> None:
        """Delete rotated files last written more than ``max_age_days`` ago."""
        max_age = self.options.max_age_days * DAY_S
        if max_age <= 0:
            return
        for backup in journal_files(self.path)[:-1]:
            try:
                if now - backup.stat().st_mtime > max_age:
                    backup.unlink()
            except OSError:
                continue

    def clear(self) -> int:
        """Delete the journal and its rotated files; the number of files deleted."""
        with self._lock:
            removed = clear_files(self.path)
            self._first_unix = None
        return removed

    def _rotate(self) -> None:
        if self.options.backups <= 0:
            self.path.unlink(missing_ok=True)
            return
        oldest = self._backup(self.options.backups)
        oldest.unlink(missing_ok=True)
        for n in range(self.options.backups - 1, 0, -1):
            src = self._backup(n)
            if src.exists():
                src.rename(self._backup(n + 1))
        self.path.rename(self._backup(1))

    def _backup(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")


def journal_files(path: Path) -> list[Path]:
    """The journal's files, oldest first: ``journal.jsonl.N`` … ``.1``, then the file itself."""
    backups = [p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()]
    backups.sort(key=lambda p: int(p.suffix[1:]), reverse=True)
    return backups + [path]


def clear_files(path: Path) -> int:
    removed = 0
    for file in journal_files(Path(path)):
        try:
            file.unlink()
            removed += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise QasrError(f"cannot delete {file}: {exc.strerror}; check the folder's permissions") from exc
    return removed


def _first_unix(path: Path, default: float) -> float:
    try:
        with open(path, encoding="utf-8") as fh:
            return float(json.loads(fh.readline()).get("unix", default))
    except (OSError, ValueError, AttributeError, TypeError):
        return default


def read_entries(path: Path | None = None, include_backups: bool = False) -> Iterator[dict]:
    """Journal entries, oldest first; skips a torn last line (e.g. after a crash mid-write)."""
    path = Path(path) if path is not None else paths.journal_file()
    files = journal_files(path) if include_backups else [path]
    for file in files:
        if not file.exists():
            continue
        with open(file, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    yield entry
