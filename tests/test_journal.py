"""Transcript journal: JSON lines, private file, rotation by size, disabled mode, thread safety."""

from __future__ import annotations

import json
import os
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


# ---- history (issue 14) -----------------------------------------------------------------------------

def _final(text: str, uid: str, start: float = 0.0, end: float = 1.5) -> dict:
    return {"type": "final", "utterance_id": uid, "text": text, "language": "English", "audio_start": start,
            "audio_end": end, "sink": "paste", "source": "mic"}


def test_history_spans_rotated_files_numbers_from_the_newest_and_searches(tmp_path):
    from qasr.daemon.results import history

    path = tmp_path / "journal.jsonl"
    journal = Journal(JournalOptions(path=path, max_bytes=1000, backups=5, fsync=False))
    for i in range(12):
        journal.append(_final(f"entry {i} Grüße" if i % 3 == 0 else f"entry {i}", str(i)), now=1000.0 + i,
                       extra={"app": "xterm", "title": "shell", "profile": "", "secret": "x"})
    assert len(list(tmp_path.glob("journal.jsonl.*"))) >= 2  # it rotated: the history reads across files
    last3 = history.entries(path, 3)
    assert [e["text"] for e in last3] == ["entry 9 Grüße", "entry 10", "entry 11"]
    assert [e["n"] for e in last3] == [3, 2, 1]
    assert last3[-1]["duration_s"] == 1.5 and last3[-1]["app"] == "xterm" and last3[-1]["title"] == "shell"
    assert "profile" not in last3[-1] and "secret" not in last3[-1]
    found = history.entries(path, 10, "GRÜSSE".lower().replace("ss", "ß"))
    assert [e["n"] for e in found] == [12, 9, 6, 3]
    assert history.entry(path, 12)["text"] == "entry 0 Grüße"
    line = history.format_entry(last3[-1])
    assert "xterm 'shell'" in line and "paste" in line and "1.5 s" in line and line.endswith("entry 11")
    with pytest.raises(QasrError, match="no history entry 13; the history has 12"):
        history.entry(path, 13)
    for bad in (0, "1", True, None):
        with pytest.raises(QasrError, match="entry number"):
            history.entry(path, bad)
    for count, search in ((0, ""), ("5", ""), (5, 7)):
        with pytest.raises(QasrError, match="history"):
            history.entries(path, count, search)
    assert journal.clear() >= 3
    assert list(tmp_path.iterdir()) == [] and history.entries(path) == []


def test_journal_rotates_by_age_and_expires_old_files(tmp_path):
    path = tmp_path / "journal.jsonl"
    day = 86400.0
    journal = Journal(JournalOptions(path=path, max_age_days=1.0, backups=3, fsync=False))
    journal.append(_final("old", "1"), now=10 * day)
    journal.append(_final("same day", "2"), now=10 * day + 3600)
    assert not (tmp_path / "journal.jsonl.1").exists()
    journal.append(_final("two days later", "3"), now=12 * day)  # the file's first entry is > 1 day old
    assert [e["text"] for e in read_entries(tmp_path / "journal.jsonl.1")] == ["old", "same day"]
    assert [e["text"] for e in read_entries(path)] == ["two days later"]
    # a new Journal object reads the file's age from its first entry
    os.utime(tmp_path / "journal.jsonl.1", (12 * day, 12 * day))
    again = Journal(JournalOptions(path=path, max_age_days=1.0, backups=3, fsync=False))
    again.append(_final("much later", "4"), now=20 * day)
    assert [e["text"] for e in read_entries(path)] == ["much later"]
    assert [e["text"] for e in read_entries(tmp_path / "journal.jsonl.1")] == ["two days later"]
    assert not (tmp_path / "journal.jsonl.2").exists()  # last written on day 12: expired on day 20
