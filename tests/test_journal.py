"""Transcript journal: JSON lines, private file, rotation by size, disabled mode, thread safety."""

from __future__ import annotations

import json
import stat
import threading

import pytest

from qasr.config import paths
from qasr import protocol
from qasr.daemon.results.journal import Journal, JournalOptions, read_entries
from qasr.errors import QasrError


def final(i: int, text: str = "hello") -> dict:
    return protocol.final(f"u{i}", 1, f"{text} {i}", "English", [1, 2], i, i + 1.5, {"latency_ms": 5}, "xtest", source="mic")


def test_default_path_private_mode_and_entry_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    journal = Journal()
    assert journal.path == paths.journal_file()
    entry = journal.append(final(1, "привет"), now=1_700_000_000.25)
    assert entry["text"] == "привет 1" and entry["unix"] == 1_700_000_000.25
    assert entry["time"].startswith("2023-11-1")
    lines = journal.path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [entry]
    assert set(entry) == {"time", "unix", "utterance_id", "text", "language", "audio_start", "audio_end", "sink", "source"}
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal.path.parent.stat().st_mode) == 0o700


def test_rotation_keeps_the_configured_number_of_backups(tmp_path):
    path = tmp_path / "j" / "journal.jsonl"
    journal = Journal(JournalOptions(path=path, max_bytes=400, backups=2, fsync=False))
    for i in range(40):
        journal.append(final(i))
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["journal.jsonl", "journal.jsonl.1", "journal.jsonl.2"]
    assert all(p.stat().st_size <= 400 for p in path.parent.iterdir())
    texts = [e["text"] for e in read_entries(path, include_backups=True)]
    # Oldest entries were rotated away; what is kept is the newest, in order, with no gaps.
    numbers = [int(t.split()[1]) for t in texts]
    assert numbers == list(range(numbers[0], 40)) and numbers[0] > 0
    assert [e["text"] for e in read_entries(path)][-1] == "hello 39"


def test_zero_backups_truncates(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(JournalOptions(path=path, max_bytes=300, backups=0, fsync=False))
    for i in range(10):
        journal.append(final(i))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.jsonl"]
    assert path.stat().st_size <= 300


def test_disabled_journal_writes_nothing(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(JournalOptions(enabled=False, path=path))
    assert journal.append(final(1)) is None
    assert not path.exists()


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(JournalOptions(path=path))
    journal.append(final(1))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"text": "half')
    assert [e["text"] for e in read_entries(path)] == ["hello 1"]


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = Journal(JournalOptions(path=path, fsync=False))
    long_text = "x" * 5000

    def writer(k: int) -> None:
        for i in range(50):
            journal.append(final(k * 1000 + i, long_text))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(entries) == 200 and len({e["utterance_id"] for e in entries}) == 200


def test_unwritable_journal_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    journal = Journal(JournalOptions(path=blocker / "journal.jsonl"))
    with pytest.raises(QasrError, match="journal"):
        journal.append(final(1))
