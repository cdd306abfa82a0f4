"""`qasr-daemon transcribe` on bad input: one clear line per problem, non-zero exit, no traceback.

The CLI runs as a subprocess, as a user runs it. Audio fixtures are made here (numpy -> soundfile,
ffmpeg for mp3).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.audio_samples import make_test_audio

CLI = [sys.executable, "-m", "qasr.daemon.cli.main"]


def run_cli(*args, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=180, env=env)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("qasr-daemon: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad-audio")
    speech = make_test_audio(2.5, seed=12)
    sf.write(d / "good.wav", speech, 16000)
    full = (d / "good.wav").read_bytes()
    (d / "truncated_header.wav").write_bytes(full[:30])
    rng = np.random.default_rng(0)
    (d / "corrupt.wav").write_bytes(b"RIFF" + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.txt").write_text("this is not audio\n")
    sf.write(d / "short_0.3s.wav", make_test_audio(0.3, seed=13), 16000)
    sf.write(d / "silence_1s.wav", np.zeros(16000, dtype=np.float32), 16000)
    # a stereo 44.1 kHz mp3 cut in the middle of the stream: decodes what is there
    sf.write(d / "stereo44k.wav", np.stack([speech, speech[::-1]], 1).repeat(3, axis=0)[: 44100 * 2], 44100)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(d / "stereo44k.wav"), str(d / "full.mp3")], check=True
    )
    mp3 = (d / "full.mp3").read_bytes()
    (d / "truncated_middle.mp3").write_bytes(mp3[: len(mp3) // 2])
    return d


@pytest.fixture(scope="module")
def batch_run(audio_dir, tiny_bundle):
    names = [
        "good.wav", "truncated_header.wav", "corrupt.wav", "empty.wav", "notes.txt",
        "short_0.3s.wav", "silence_1s.wav", "truncated_middle.mp3", "missing.wav",
    ]
    proc = run_cli("transcribe", *[audio_dir / n for n in names], "--model", tiny_bundle, "--format", "json",
                   "--threads", "1")
    records = {Path(json.loads(line)["file"]).name: json.loads(line) for line in proc.stdout.splitlines()}
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc, records, errors


def test_bad_files_fail_one_line_each_and_the_rest_run(batch_run):
    proc, records, errors = batch_run
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    bad = {"truncated_header.wav", "corrupt.wav", "empty.wav", "notes.txt", "missing.wav"}
    assert set(records) == {"good.wav", "short_0.3s.wav", "silence_1s.wav", "truncated_middle.mp3"}
    for name in bad:
        lines = [e for e in errors if name in e]
        assert len(lines) == 1 and lines[0].startswith("qasr-daemon: error: "), (name, errors)
    assert any("empty (0 bytes)" in e for e in errors)
    assert any("no such file" in e for e in errors)
    assert errors[-1] == f"qasr-daemon: {len(bad)} of 9 files failed"
    assert len(errors) == len(bad) + 1


def test_good_file_has_every_json_field(batch_run):
    _, records, _ = batch_run
    rec = records["good.wav"]
    for key in ("file", "language", "text", "token_ids", "audio_s", "elapsed_s", "rtf",
                "encoder_ms", "prefill_ms", "decode_ms", "n_tokens", "segments"):
        assert key in rec
    assert rec["audio_s"] == pytest.approx(2.5)
    assert rec["n_tokens"] == len(rec["token_ids"]) > 0
    assert rec["rtf"] == pytest.approx(rec["elapsed_s"] / rec["audio_s"])


def test_digital_silence_gives_an_empty_result_without_decoding(batch_run):
    _, records, _ = batch_run
    rec = records["silence_1s.wav"]
    assert (rec["language"], rec["text"], rec["token_ids"], rec["n_tokens"]) == ("", "", [], 0)
    assert rec["segments"][0]["stop_reason"] == "silence"
    assert rec["prefill_ms"] == 0 and rec["decode_ms"] == 0


def test_short_clip_is_padded_and_decoded(batch_run):
    _, records, _ = batch_run
    rec = records["short_0.3s.wav"]
    assert rec["audio_s"] == pytest.approx(0.3)
    assert rec["segments"][0]["stop_reason"] in ("stop", "max_tokens", "loop")
    assert rec["encoder_ms"] > 0


def test_mp3_truncated_in_the_middle_decodes_what_is_there(batch_run):
    _, records, _ = batch_run
    rec = records["truncated_middle.mp3"]
    assert 0.3 < rec["audio_s"] < 1.9  # about half of the 2 s file


def test_missing_model_directory(audio_dir, tmp_path):
    proc = run_cli("transcribe", audio_dir / "good.wav", "--model", tmp_path / "nope")
    assert_one_line_error(proc, "does not exist", "models pull 0.6b", "--model")


def test_default_model_directory_missing_says_how_to_get_one(audio_dir, tmp_path):
    proc = run_cli("transcribe", audio_dir / "good.wav", env_extra={"XDG_DATA_HOME": str(tmp_path)})
    assert_one_line_error(proc, str(tmp_path / "qasr" / "models" / "qwen3-asr-0.6b"), "models pull 0.6b")


def test_checkpoint_dir_is_not_a_bundle(audio_dir, tiny_checkpoint):
    proc = run_cli("transcribe", audio_dir / "good.wav", "--model", tiny_checkpoint)
    assert_one_line_error(proc, "not a qasr bundle", "models convert")


def test_bundle_with_a_missing_file(audio_dir, tiny_bundle, tmp_path):
    broken = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / manifest["files"]["encoder_backend"]["path"]).unlink()
    proc = run_cli("transcribe", audio_dir / "good.wav", "--model", broken)
    assert_one_line_error(proc, "missing", manifest["files"]["encoder_backend"]["path"], "re-pull or re-convert")


def test_bundle_with_an_altered_file(audio_dir, tiny_bundle, tmp_path):
    broken = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    decoder = broken / manifest["files"]["decoder"]["path"]
    decoder.write_bytes(decoder.read_bytes()[:-1000])
    proc = run_cli("transcribe", audio_dir / "good.wav", "--model", broken)
    assert_one_line_error(proc, "altered or truncated", decoder.name)


def test_bundle_with_a_corrupt_file_of_the_right_size(audio_dir, tiny_bundle, tmp_path):
    """Same size, garbage content (what a size check cannot see): still one line, no crash."""
    broken = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    frontend = broken / manifest["files"]["encoder_frontend"]["path"]
    frontend.write_bytes(bytes(frontend.stat().st_size))
    proc = run_cli("transcribe", audio_dir / "good.wav", "--model", broken)
    assert_one_line_error(proc, "cannot load encoder model", "re-pull or re-convert")


def test_unknown_language_lists_the_valid_ones(audio_dir, tiny_bundle):
    proc = run_cli("transcribe", audio_dir / "good.wav", "--model", tiny_bundle, "--language", "Klingon")
    line = assert_one_line_error(proc, "unknown language 'Klingon'", "English", "Chinese", "Macedonian")
    assert proc.returncode == 2 and line


def test_bad_max_new_tokens_is_a_usage_error(audio_dir, tiny_bundle):
    proc = run_cli("transcribe", audio_dir / "good.wav", "--model", tiny_bundle, "--max-new-tokens", "0")
    assert_one_line_error(proc, "--max-new-tokens")
    assert proc.returncode == 2
