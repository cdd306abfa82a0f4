"""`qasr-daemon batch` (issue 26): a generated archive (wav, mp3, flac, a corrupt file, an empty file, a 0.2 s
file, a silent file, nested folders) through the local pool and through Ray actors; every output equals
`qasr-daemon transcribe` of the same file with the same options; broken files are manifest lines, not the
end of the run; a second run does nothing; a run interrupted (SIGINT, SIGKILL) resumes with every file done
exactly once. The batch runs as a subprocess, as a user runs it; `transcribe` runs through the CLI's main().
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qasr.daemon.batch.inputs import collect
from qasr.daemon.batch.sizing import plan
from tests.audio_samples import make_test_audio

CLI = [sys.executable, "-m", "qasr.daemon.cli.main"]
RATE = 16000
OPTIONS = ("--language", "English", "--max-new-tokens", "12", "--threads", "1")
FORMATS = ("txt", "json", "srt", "vtt")
TIMINGS = ("elapsed_s", "encoder_ms", "prefill_ms", "decode_ms", "rtf")  # differ from run to run
GOOD = ["speech.wav", "nested/talk.mp3", "nested/deeper/talk.flac", "short.wav", "silence.flac"]
BAD = {"corrupt.mp3": "", "empty.wav": "empty"}


def _encode_mp3(samples: np.ndarray, path: Path) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libmp3lame", rate=RATE)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=RATE)
        for start in range(0, len(samples), 1152):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1152].astype(np.float32), format="fltp",
                                               layout="mono")
            frame.sample_rate = RATE
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive") / "talks"
    (root / "nested" / "deeper").mkdir(parents=True)
    sf.write(root / "speech.wav", make_test_audio(2.5, seed=41), RATE)
    _encode_mp3(make_test_audio(2.0, seed=42), root / "nested" / "talk.mp3")
    sf.write(root / "nested" / "deeper" / "talk.flac", make_test_audio(1.5, seed=43), RATE)
    sf.write(root / "short.wav", make_test_audio(0.2, seed=44), RATE)
    sf.write(root / "silence.flac", np.zeros(RATE, dtype=np.float32), RATE)
    (root / "corrupt.mp3").write_bytes(b"ID3\x03\x00" + bytes(np.random.default_rng(0).integers(0, 256, 3000,
                                                                                                dtype=np.uint8)))
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.md").write_text("not audio: a folder walk skips it\n")
    return root


@pytest.fixture(scope="module")
def resume_set(tmp_path_factory) -> Path:
    """Enough files that a run with one worker can be interrupted part-way."""
    root = tmp_path_factory.mktemp("resume") / "calls"
    for i in range(30):
        folder = root / f"day{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"call{i:02d}.wav", make_test_audio(1.0 + (i % 4) * 0.5, seed=100 + i), RATE)
    return root


def batch(*args, env: dict | None = None, check: int | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*CLI, "batch", *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})
    if check is not None:
        assert proc.returncode == check, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def manifest_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "batch.jsonl").read_text().splitlines() if line.strip()]


def latest_records(out: Path) -> dict[str, dict]:
    """Each file's newest manifest line, without what differs from run to run."""
    strip = ("seconds", "finished", "worker", "formats")  # formats: the retry above asked for txt only
    return {line["path"]: {k: v for k, v in line.items() if k not in strip} for line in manifest_lines(out)}


def without_timings(record: dict) -> dict:
    record = {k: v for k, v in record.items() if k not in TIMINGS}
    record["segments"] = [{k: v for k, v in seg.items() if k not in TIMINGS} for seg in record["segments"]]
    return record


def transcribe_output(capsys, model: Path, file: Path, fmt: str) -> tuple[int, str, str]:
    from qasr.daemon.cli.main import main

    code = main(["transcribe", str(file), "--model", str(model), "--format", "text" if fmt == "txt" else fmt,
                 *OPTIONS])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_outputs_equal_transcribe(capsys, model: Path, archive: Path, out: Path) -> None:
    for name in GOOD:
        stem = out / Path(name).with_suffix("")
        for fmt in FORMATS:
            code, expected, err = transcribe_output(capsys, model, archive / name, fmt)
            assert code == 0, err
            written = stem.with_suffix(f".{fmt}").read_text(encoding="utf-8")
            if fmt == "json":
                assert without_timings(json.loads(written)) == without_timings(json.loads(expected)), name
            else:
                assert written == expected, (name, fmt)


@pytest.fixture(scope="module")
def local_run(tiny_bundle, archive, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("local-out")
    proc = batch(archive, "--out", out, "--model", tiny_bundle, "--format", "txt,json", "--format", "srt",
                 "--format", "vtt", "--workers", "2", *OPTIONS, check=1)
    return out, proc


def test_outputs_mirror_the_tree_and_equal_transcribe(local_run, tiny_bundle, archive, capsys):
    out, proc = local_run
    assert "batch: 5 done, 2 failed" in proc.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.txt")) == sorted(
        Path(n).with_suffix(".txt").as_posix() for n in GOOD)
    assert_outputs_equal_transcribe(capsys, tiny_bundle, archive, out)
    record = json.loads((out / "speech.json").read_text())
    assert record["file"] == str(archive / "speech.wav") and record["audio_s"] == pytest.approx(2.5)


def test_broken_files_are_manifest_lines_with_transcribes_reason(local_run, tiny_bundle, archive, capsys):
    out, _ = local_run
    lines = manifest_lines(out)
    by_file = {Path(line["file"]).relative_to(archive).as_posix(): line for line in lines}
    assert len(lines) == len(by_file) == len(GOOD) + len(BAD)
    for name in GOOD:
        line = by_file[name]
        assert line["status"] == "done" and line["error"] is None and len(line["sha256"]) == 64
        assert line["size"] == (archive / name).stat().st_size and line["seconds"] > 0
    assert by_file["silence.flac"]["audio_s"] == pytest.approx(1.0)
    for name, needle in BAD.items():
        line = by_file[name]
        assert line["status"] == "failed" and line["outputs"] == []
        code, _, err = transcribe_output(capsys, tiny_bundle, archive / name, "txt")
        assert code == 1 and line["error"] in err and needle in line["error"]


def test_second_run_does_nothing_and_retry_failed_retries(local_run, tiny_bundle, archive):
    out, _ = local_run
    before = (out / "batch.jsonl").read_bytes()
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.txt")}
    proc = batch(archive, "--out", out, "--model", tiny_bundle, "--format", "txt,json,srt,vtt", *OPTIONS, check=0)
    assert "nothing to do: 5 files done, 2 failed earlier" in proc.stderr
    assert (out / "batch.jsonl").read_bytes() == before
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.txt")} == mtimes

    proc = batch(archive, "--out", out, "--model", tiny_bundle, "--format", "txt", "--retry-failed", *OPTIONS, check=1)
    assert "batch: 0 done, 2 failed, 5 skipped" in proc.stderr
    retried = manifest_lines(out)[len(before.splitlines()):]
    assert sorted(Path(line["file"]).name for line in retried) == sorted(BAD)


def test_word_timestamps_equal_transcribes(tiny_bundle, tiny_aligner_bundle, archive, tmp_path, capsys):
    from qasr.daemon.cli.main import main

    files = [archive / "speech.wav", archive / "nested" / "talk.mp3"]  # named one by one: the tree below both
    words = ("--timestamps", "word", "--aligner", str(tiny_aligner_bundle))
    batch(*files, "--out", tmp_path, "--model", tiny_bundle, "--format", "json,srt,vtt", *words, "--workers", "1",
          *OPTIONS, check=0)
    for file, stem in zip(files, ["speech", "nested/talk"]):
        for fmt in ("json", "srt", "vtt"):
            assert main(["transcribe", str(file), "--model", str(tiny_bundle), "--format", fmt, *words, *OPTIONS]) == 0
            expected, written = capsys.readouterr().out, (tmp_path / f"{stem}.{fmt}").read_text()
            if fmt == "json":
                assert "words" in json.loads(written)
                assert without_timings(json.loads(written)) == without_timings(json.loads(expected))
            else:
                assert written == expected


def _interrupt_when(proc: subprocess.Popen, out: Path, lines: int, sig: int) -> None:
    deadline = time.monotonic() + 240
    path = out / "batch.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= lines:
            proc.send_signal(sig)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)


def _interrupted_runs_resume(model: Path, files: Path, out: Path, *extra: str) -> None:
    args = [*CLI, "batch", str(files), "--out", str(out), "--model", str(model), "--format", "txt,json", *OPTIONS,
            *extra]
    total = len(list(files.rglob("*.wav")))
    first = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    _interrupt_when(first, out, 3, signal.SIGINT)
    err = first.stderr.read()
    assert first.returncode == 130 and "interrupted with" in err and "Traceback" not in err, err
    after_first = len(manifest_lines(out))
    assert 3 <= after_first < total, "the interrupt came too late to test a resume"

    second = subprocess.Popen(args, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    _interrupt_when(second, out, after_first + 2, signal.SIGKILL)
    assert second.returncode == -signal.SIGKILL
    assert after_first < len(manifest_lines(out)) < total, "the kill came too late to test a resume"

    proc = batch(*args[4:], check=0)
    lines = manifest_lines(out)
    assert "batch: 0 done" not in proc.stderr
    assert len(lines) == total and {line["status"] for line in lines} == {"done"}
    assert len({line["path"] for line in lines}) == total  # none twice, none lost
    for line in lines:
        for name in line["outputs"]:
            assert (out / name).is_file()
    assert not list(out.rglob(".*.part"))


def test_interrupted_local_run_resumes_without_doing_a_file_twice(tiny_bundle, resume_set, tmp_path):
    _interrupted_runs_resume(tiny_bundle, resume_set, tmp_path / "out", "--workers", "1")


# ---------------------------------------------------------------- Ray

@pytest.fixture(scope="module")
def ray_address():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_ray_actors_write_what_the_local_pool_writes_and_resume(ray_address, local_run, tiny_bundle, archive,
                                                                  resume_set, tmp_path):
    local_out, _ = local_run
    out = tmp_path / "ray-out"
    proc = batch(archive, "--out", out, "--model", tiny_bundle, "--format", "txt,json,srt,vtt", "--ray", ray_address,
                 "--workers", "2", *OPTIONS, check=1)
    assert "2 workers × 1 thread " in proc.stderr and "batch: 5 done, 2 failed" in proc.stderr
    for name in GOOD:
        for fmt in FORMATS:
            rel = Path(name).with_suffix(f".{fmt}")
            ours, theirs = (out / rel).read_text(), (local_out / rel).read_text()
            if fmt == "json":
                assert without_timings(json.loads(ours)) == without_timings(json.loads(theirs))
            else:
                assert ours == theirs, rel
    assert latest_records(out) == latest_records(local_out)
    _interrupted_runs_resume(tiny_bundle, resume_set, tmp_path / "resume-out", "--ray", ray_address, "--workers", "2")


# ---------------------------------------------------------------- inputs and sizing (no model)

def test_inputs_from_folders_globs_and_lists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ["a/x.mp3", "a/x.wav", "a/sub/y.flac", "a/.hidden.wav", "a/readme.txt", "b/z.ogg", "out/old.wav"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.txt").write_text("# a list\nb/z.ogg\n\na/sub\nmissing.wav\n")
    found = collect(["a", "@list.txt", "b/*"], tmp_path / "out")
    assert [(f.path, f.out.as_posix()) for f in found.files] == [
        ("a/x.mp3", "a/x.mp3"), ("a/x.wav", "a/x.wav"), ("a/sub/y.flac", "a/sub/y"), ("b/z.ogg", "b/z"),
        ("missing.wav", "missing")]
    assert found.files[2].key == str(tmp_path / "a/sub/y.flac")
    found = collect(["a/**/*.flac", "nothing*.wav"], tmp_path / "out")
    assert [(f.path, f.out.as_posix()) for f in found.files] == [("a/sub/y.flac", "sub/y")]
    assert found.notes == ["nothing*.wav: matches no file"]
    assert [f.out.as_posix() for f in collect(["."], tmp_path / "out").files] == [
        "a/x.mp3", "a/x.wav", "a/sub/y", "b/z"]  # the --out folder is not an input


def test_worker_plan_from_cores_and_memory():
    gib = 1024**3

    def workers_threads(*args, **kwargs) -> tuple[int, int]:
        chosen = plan(*args, **kwargs)
        return chosen.workers, chosen.threads

    assert workers_threads(8, 64 * gib, 2 * gib, 1000) == (8, 1)  # a worker per core
    assert workers_threads(8, 5 * gib, 2 * gib, 1000) == (2, 4)  # memory for 2 models: the cores split
    assert workers_threads(2, 64 * gib, 2 * gib, 3) == (2, 1)
    assert workers_threads(8, 64 * gib, 2 * gib, 3) == (3, 2)  # no more workers than files
    assert workers_threads(8, 64 * gib, 2 * gib, 1000, workers=3) == (3, 2)
    assert workers_threads(8, 64 * gib, 2 * gib, 1000, threads=2) == (4, 2)


def test_progress_bar_on_a_terminal_and_lines_otherwise():
    import io

    from qasr.daemon.batch.progress import Progress, Tally

    for tty in (True, False):
        stream = io.StringIO()
        progress = Progress(Tally(files=2, audio_s=7200.0), stream, tty=tty)
        progress.file_finished("a.mp3", True, 3600.0, 60.0, None)
        progress.file_finished("b.mp3", False, 0.0, 0.1, "b.mp3: the file is empty (0 bytes)")
        progress.summary("out/batch.jsonl", 3, 0, 0, interrupted=False)
        text = stream.getvalue()
        assert "failed [2/2] b.mp3: b.mp3: the file is empty (0 bytes)\n" in text
        assert "batch: 1 done, 1 failed, 3 skipped (done or failed in an earlier run); 1.00 h of audio in" in text
        assert "the reasons of the failures are in out/batch.jsonl" in text
        if tty:
            assert "\r[" in text and "#." in text and " 1/2 files  1.00 h of 2.00 h audio  " in text
            assert "done [" not in text
        else:
            assert "\r" not in text and "done [1/2] a.mp3 (3600.0 s audio in 60.0 s)\n" in text


def test_ray_is_imported_only_for_a_ray_run():
    code = ("import sys, qasr.daemon.app, qasr.daemon.cli.main, qasr.daemon.batch.runner, qasr.daemon.batch.local_pool, "
            "qasr.daemon.batch.ray_pool; assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
