"""The run manifest `DIR/batch.jsonl`: one JSON line per file finished (done or failed), appended and fsync'd
as each file finishes, so an interrupted run (Ctrl+C, a kill, a power cut) leaves every finished file
recorded and nothing else. The newest line of a file wins.

A line: file (as named), path (absolute: the key), size, mtime, sha256, status ("done"/"failed"), seconds
(worker time), audio_s, error (the one-line reason, or null), formats, outputs (under DIR), options (what
changes the outputs: model, language, context, timestamps ...), finished (UTC).

A file counts as done when its newest line is "done", the file has the same size and mtime (else the same
sha256), the options are the same, the formats asked for are among those written and the outputs exist.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from qasr.errors import QasrError

MANIFEST_NAME = "batch.jsonl"


@dataclass(frozen=True)
class FileStat:
    size: int | None  # None: the file cannot be stat'ed (missing, no permission)
    mtime: float | None

    @staticmethod
    def of(path: str) -> "FileStat":
        try:
            st = os.stat(path)
        except OSError:
            return FileStat(None, None)
        return FileStat(st.st_size, st.st_mtime)


class Manifest:
    """The manifest of one output folder, locked against a second run writing into the same folder."""

    def __init__(self, out_dir: Path):
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / MANIFEST_NAME
        self.latest: dict[str, dict] = {}
        self.unreadable_lines = 0
        self._file = open(self.path, "a+b")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise QasrError(f"another batch run is writing into {out_dir}; wait for it or pick another --out") from None
        self._load()

    def _load(self) -> None:
        self._file.seek(0)
        data = self._file.read()
        for line in data.splitlines():
            try:
                record = json.loads(line)
                self.latest[record["path"]] = record
            except (ValueError, KeyError, TypeError):
                self.unreadable_lines += 1  # a line cut short by a kill: its file is simply done again
        if data and not data.endswith(b"\n"):
            self._file.write(b"\n")

    def append(self, record: dict) -> None:
        record = {**record, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._file.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.latest[record["path"]] = record

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def status(self, key: str, stat: FileStat, options: dict, formats: list[str], out_dir: Path) -> str | None:
        """"done", "failed" or None (never tried, or changed since: to do) for the file at `key`."""
        record = self.latest.get(key)
        if record is None or record.get("options") != options:
            return None
        if record.get("status") == "failed":
            return "failed" if (record.get("size"), record.get("mtime")) == (stat.size, stat.mtime) else None
        if record.get("status") != "done" or not set(formats) <= set(record.get("formats", ())):
            return None
        if not all((out_dir / name).is_file() for name in record.get("outputs", ())):
            return None
        if (record.get("size"), record.get("mtime")) == (stat.size, stat.mtime):
            return "done"
        if record.get("size") == stat.size and record.get("sha256") == file_sha256(key):
            return "done"  # touched or copied, same content
        return None


def file_sha256(path: str) -> str | None:
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()
