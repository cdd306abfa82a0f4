"""Transcript journal: every final appended as one JSON line to ``journal_file()``, fsync'd, rotated by size.

The app calls ``Journal.append(final_event)`` for each final it wants kept (thread-safe). The file is private
(mode 0600) because it holds everything the user dictated. When a write would push the file past
``max_bytes`` it is renamed to ``journal.jsonl.1`` (older ones shift to ``.2`` ... ``.{backups}``, the oldest
is deleted) and a fresh file is started. ``enabled=False`` makes ``append`` a no-op.
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


@dataclass(frozen=True)
class JournalOptions:
    enabled: bool = True
    path: Path | None = None  # None: qasr.config.paths.journal_file() at construction time
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 3
    fsync: bool = True


class Journal:
    def __init__(self, options: JournalOptions = JournalOptions()):
        self.options = options
        self.path = Path(options.path) if options.path is not None else paths.journal_file()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.options.enabled

    def append(self, event: dict, now: float | None = None) -> dict | None:
        """Write one entry for ``event`` (a ``final`` event dict); returns the entry written, or None if off."""
        if not self.options.enabled:
            return None
        stamp = time.time() if now is None else now
        entry = {
            "time": datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds"),
            "unix": round(stamp, 3),
        }
        entry.update({k: event[k] for k in KEPT_FIELDS if k in event})
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            try:
                self._write(line)
            except OSError as exc:
                raise QasrError(
                    f"cannot write the transcript journal {self.path}: {exc.strerror}; "
                    "free disk space, fix the folder's permissions or set journal.enabled = false"
                ) from exc
        return entry

    def _write(self, line: bytes) -> None:
        paths.ensure_private_dir(self.path.parent)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(line) > self.options.max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            if self.options.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

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


def read_entries(path: Path | None = None, include_backups: bool = False) -> Iterator[dict]:
    """Journal entries, oldest first; skips a torn last line (e.g. after a crash mid-write)."""
    path = Path(path) if path is not None else paths.journal_file()
    files = [path]
    if include_backups:
        backups = sorted(path.parent.glob(f"{path.name}.*"), key=lambda p: int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
        files = list(reversed(backups)) + files
    for file in files:
        if not file.exists():
            continue
        with open(file, encoding="utf-8") as fh:
            for line in fh:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue
