"""Word timestamps on the command line (issue 12): `qasr-daemon align`, `transcribe --timestamps word`, and the
engine's `align_segments`, against the session's tiny random aligner and ASR bundles.

The CLI runs as a subprocess, as a user runs it; each expected output is computed here with the engine
(`ForcedAligner`, `Transcriber`, `qasr.engine.subtitles`), so the outputs are compared exactly. Random
weights give meaningless but deterministic times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qasr.engine.subtitles import Cue, format_srt, format_vtt, word_cues
from tests.audio_samples import make_test_audio

CLI = [sys.executable, "-m", "qasr.daemon.cli.main"]
TEXT = "The quick brown fox, jumps over the lazy dog. 你好世界"
RATE = 16000


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> dict[str, str]:
    """An empty data/config home: no installed bundle, so nothing is found unless passed."""
    root = tmp_path_factory.mktemp("align-home")
    return {"XDG_DATA_HOME": str(root / "data"), "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_STATE_HOME": str(root / "state"), "XDG_CACHE_HOME": str(root / "cache")}


def run_cli(*args, env: dict[str, str]) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=300, env=full)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("qasr-daemon: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("align-audio")
    sf.write(d / "speech.wav", make_test_audio(3.0, seed=31), RATE)
    sf.write(d / "short.wav", make_test_audio(0.3, seed=32), RATE)
    (d / "text.txt").write_text(TEXT + "\n", encoding="utf-8")
    (d / "empty.txt").write_text(" \n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def aligner(tiny_aligner_bundle):
    from qasr.engine.align.aligner import ForcedAligner

    with ForcedAligner(tiny_aligner_bundle) as a:
        yield a


# The CLI runs with the same options as `transcriber` (a short cap keeps the random model's output short).
ASR_OPTIONS = ("--language", "English", "--max-new-tokens", "12")


@pytest.fixture(scope="module")
def transcriber(tiny_bundle):
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    with Transcriber(tiny_bundle, TranscribeOptions(language="English", max_new_tokens=12)) as t:
        yield t


def load(path: Path) -> np.ndarray:
    from qasr.engine.audio import load_audio

    return load_audio(path, RATE)


def as_tuples(words) -> list[tuple[str, float, float]]:
    return [(w.word, w.start, w.end) for w in words]


# ---------------------------------------------------------------- qasr-daemon align

def test_align_json_srt_vtt(tiny_aligner_bundle, aligner, audio_dir, home):
    speech = audio_dir / "speech.wav"
    words = aligner.align(load(speech), TEXT, "English")
    assert len(words) == 13 and [w.word for w in words[-4:]] == ["你", "好", "世", "界"]

    done = run_cli("align", speech, "--text", TEXT, "--language", "english", "--model", tiny_aligner_bundle, env=home)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"file": str(speech), "language": "English",
                                       "words": [w.to_dict() for w in words]}

    done = run_cli("align", speech, "--text-file", audio_dir / "text.txt", "--language", "English", "--format", "srt",
                   "--max-chars", "12", "--model", tiny_aligner_bundle, env=home)
    assert done.returncode == 0, done.stderr
    cues = word_cues(as_tuples(words), max_chars=12, max_seconds=5.0)
    assert len(cues) > 1 and done.stdout == format_srt(cues)

    done = run_cli("align", speech, "--text", TEXT, "--language", "English", "--format", "vtt", "--max-seconds", "0.5",
                   "--model", tiny_aligner_bundle, env=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout == format_vtt(word_cues(as_tuples(words), max_chars=42, max_seconds=0.5))


def configured(tmp_path: Path, aligner: str) -> dict[str, str]:
    """A home whose config file names the aligner ([model] aligner, as the daemon reads it)."""
    (tmp_path / "config" / "qasr").mkdir(parents=True)
    (tmp_path / "config" / "qasr" / "config.toml").write_text(f'[model]\naligner = "{aligner}"\n', encoding="utf-8")
    return {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")}


def test_align_odd_but_valid_input(tiny_aligner_bundle, aligner, audio_dir, home, tmp_path):
    # Only punctuation: no words, a correct empty result (the aligner named by the config file).
    done = run_cli("align", audio_dir / "speech.wav", "--text", " ,.!? … ", env=configured(tmp_path, str(tiny_aligner_bundle)))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["words"] == [] and done.stderr == ""
    # 0.3 s of audio (padded) and text far longer than the audio: times stay within the audio.
    long_text = " ".join(["word"] * 200)
    short = audio_dir / "short.wav"
    done = run_cli("align", short, "--text", long_text, "--model", tiny_aligner_bundle, env=home)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["language"] is None
    assert got["words"] == [w.to_dict() for w in aligner.align(load(short), long_text)]
    assert len(got["words"]) == 200 and all(0.0 <= w["start"] <= w["end"] <= 0.3 for w in got["words"])


def test_align_bad_input_is_one_line(tiny_aligner_bundle, tiny_bundle, audio_dir, home, tmp_path):
    speech = audio_dir / "speech.wav"
    model = ("--model", tiny_aligner_bundle)
    one_line_error(run_cli("align", speech, *model, env=home), "either --text TEXT or --text-file F")
    one_line_error(run_cli("align", speech, "--text", "a", "--text-file", audio_dir / "text.txt", *model, env=home),
                   "either --text TEXT or --text-file F")
    one_line_error(run_cli("align", speech, "--text", "  ", *model, env=home), "--text is empty")
    one_line_error(run_cli("align", speech, "--text-file", audio_dir / "empty.txt", *model, env=home), "is empty")
    one_line_error(run_cli("align", speech, "--text-file", tmp_path / "nope.txt", *model, env=home),
                   "cannot read --text-file")
    one_line_error(run_cli("align", tmp_path / "missing.wav", "--text", TEXT, *model, env=home), "missing.wav")
    # No aligner installed, a folder that does not exist, a speech-recognition bundle: what to run.
    one_line_error(run_cli("align", speech, "--text", TEXT, env=home), "qasr-daemon models pull aligner")
    one_line_error(run_cli("align", speech, "--text", TEXT, "--model", tmp_path / "none", env=home),
                   "no aligner bundle at", "qasr-daemon models pull aligner")
    one_line_error(run_cli("align", speech, "--text", TEXT, "--model", tiny_bundle, env=home),
                   "not a forced aligner", "qasr-daemon models pull aligner")
    one_line_error(run_cli("align", speech, "--text", TEXT, env=configured(tmp_path, "gone")),
                   f"no aligner bundle at {tmp_path / 'data' / 'qasr' / 'models' / 'gone'}")


def test_japanese_without_its_extra_is_the_word_splitters_message(tiny_aligner_bundle, audio_dir, home):
    from qasr.engine.align.words import WordSplitError, split_words

    try:
        split_words("日本語の文章です", "Japanese")
    except WordSplitError as exc:
        line = one_line_error(run_cli("align", audio_dir / "speech.wav", "--text", "日本語の文章です", "--language",
                                      "Japanese", "--model", tiny_aligner_bundle, env=home))
        assert line == f"qasr-daemon: error: {exc}"
    else:
        pytest.skip("the Japanese word splitter is installed here")


# ---------------------------------------------------------------- transcribe --timestamps word

def test_transcribe_word_timestamps(tiny_bundle, tiny_aligner_bundle, transcriber, aligner, audio_dir, home):
    from qasr.engine.align.segments import align_segments, result_words

    speech = audio_dir / "speech.wav"
    audio = load(speech)
    expected = align_segments(transcriber.transcribe(audio), audio, aligner)
    words = result_words(expected)
    assert words and all(s.words is not None for s in expected.segments)
    models = ("--model", tiny_bundle, "--aligner", tiny_aligner_bundle, "--timestamps", "word", *ASR_OPTIONS)

    done = run_cli("transcribe", speech, *models, "--format", "json", env=home)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["text"] == expected.text
    assert record["words"] == [w.to_dict() for w in words]
    assert [s["words"] for s in record["segments"]] == [[w.to_dict() for w in s.words] for s in expected.segments]

    done = run_cli("transcribe", speech, *models, "--format", "srt", "--max-chars", "10", env=home)
    assert done.returncode == 0, done.stderr
    assert done.stdout == format_srt(word_cues(as_tuples(words), max_chars=10, max_seconds=5.0)) + "\n"


def test_transcribe_without_word_timestamps_never_needs_the_aligner(tiny_bundle, transcriber, audio_dir, home):
    speech = audio_dir / "speech.wav"
    result = transcriber.transcribe(load(speech))
    # No aligner installed (empty XDG_DATA_HOME) and none loaded, not even imported.
    code = ("import sys; from qasr.daemon.cli.main import main; rc = main(sys.argv[1:]); "
            "assert 'qasr.engine.align.aligner' not in sys.modules; raise SystemExit(rc)")
    done = subprocess.run([sys.executable, "-c", code, "transcribe", str(speech), "--model", str(tiny_bundle),
                           "--format", "vtt", *ASR_OPTIONS], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **home})
    assert done.returncode == 0, done.stderr
    cues = [Cue(s.start_s, s.end_s, s.text) for s in result.segments if s.text]
    assert done.stdout == format_vtt(cues) + "\n"
    assert "words" not in result.to_dict()["segments"][0]

    # --timestamps word with no aligner: one line saying what to run, before any model loads.
    line = one_line_error(run_cli("transcribe", speech, "--model", tiny_bundle, "--timestamps", "word",
                                  "--format", "json", env=home), "qasr-daemon models pull aligner")
    assert "aligner" in line
    one_line_error(run_cli("transcribe", speech, "--model", tiny_bundle, "--timestamps", "word", env=home),
                   "--timestamps word needs --format json, srt or vtt")


# ---------------------------------------------------------------- engine: align_segments

def test_align_segments_slices_and_offsets():
    """With a stand-in aligner whose times mean something (the random one puts every word at the audio's
    end): each segment's clip, text and language reach the aligner, its times come back offset by the
    segment's start, a segment without text gets [], the input result is left as it was."""
    from types import SimpleNamespace

    from qasr.engine.align.aligner import AlignedWord
    from qasr.engine.align.segments import align_segments, result_words
    from qasr.engine.transcribe import Segment, TranscriptionResult

    calls = []

    class StandIn:
        audio_params = SimpleNamespace(sample_rate=RATE)

        def align(self, clip, text, language):
            calls.append((clip.copy(), text, language))
            return [AlignedWord(w, round(i * 0.25, 3), round(i * 0.25 + 0.2, 3)) for i, w in enumerate(text.split())]

    def segment(index, start, end, language, text):
        return Segment(index, start, end, language, text, [], "stop", end - start, 0.0)

    audio = np.linspace(-0.5, 0.5, 4 * RATE, dtype=np.float32)
    segs = [segment(0, 0.0, 1.5, "English", "one two"), segment(1, 1.5, 2.0, "", ""),
            segment(2, 2.0, 4.0, "Chinese", "三 四 五")]
    result = TranscriptionResult("English,Chinese", "one two 三 四 五", [], 4.0, 0.0, 0, 0, 0, 0, segs)
    aligned = align_segments(result, audio, StandIn())
    assert [(len(c), t, lang) for c, t, lang in calls] == [(24000, "one two", "English"), (32000, "三 四 五", "Chinese")]
    assert np.array_equal(calls[1][0], audio[32000:])
    assert [s.words for s in aligned.segments][1] == [] and all(s.words is None for s in result.segments)
    data = aligned.to_dict()
    assert [s["words"] for s in data["segments"]][1:] == [[], [{"word": "三", "start": 2.0, "end": 2.2},
                                                               {"word": "四", "start": 2.25, "end": 2.45},
                                                               {"word": "五", "start": 2.5, "end": 2.7}]]
    assert as_tuples(result_words(aligned)) == [("one", 0.0, 0.2), ("two", 0.25, 0.45), ("三", 2.0, 2.2),
                                                ("四", 2.25, 2.45), ("五", 2.5, 2.7)]
    assert word_cues(as_tuples(result_words(aligned)), max_chars=7) == [Cue(0.0, 0.45, "one two"), Cue(2.0, 2.7, "三四五")]
