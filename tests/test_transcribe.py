"""Transcriber behaviour: audio files of every common format, long-file pieces, short clips,
silence, guards, output parsing, and the CLI's text/json/srt output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from qasr.engine.audio import AudioFileError, load_audio
from qasr.engine.output import (
    collapse_repeats,
    find_loop,
    new_token_cap,
    parse_output,
    visible_text,
)
from qasr.engine.segmentation import SegmentationOptions, cut_points, is_silent, peak_window_rms
from qasr.engine.transcribe import TranscribeOptions, Transcriber, join_texts, merge_languages
from qasr.errors import QasrError
from tests.audio_samples import make_test_audio


@pytest.fixture(scope="module")
def transcriber(tiny_bundle):
    t = Transcriber(tiny_bundle, TranscribeOptions(threads=1, max_new_tokens=24))
    yield t
    t.close()


# --- audio files ---------------------------------------------------------------------------------

def _encode_with_pyav(samples: np.ndarray, rate: int, path: Path, codec: str) -> None:
    """Encode float [n, channels] audio with PyAV (real encoders: libopus, libmp3lame, ...)."""
    channels = samples.shape[1]
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = layout
        fmt = stream.codec_context.format.name if stream.codec_context.format else "fltp"
        frame_size = 960 if codec == "libopus" else 1152
        for start in range(0, samples.shape[0], frame_size):
            block = np.ascontiguousarray(samples[start : start + frame_size].T, dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=layout)
            frame.sample_rate = rate
            if fmt != "fltp":
                frame = av.AudioResampler(format=fmt, layout=layout, rate=rate).resample(frame)[0]
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@pytest.fixture(scope="module")
def audio_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    mono16 = make_test_audio(3.0, seed=21)
    t48 = np.arange(48000 * 3) / 48000
    stereo48 = np.stack([0.3 * np.sin(2 * np.pi * 440 * t48), 0.3 * np.sin(2 * np.pi * 660 * t48)], 1)
    sf.write(d / "mono16k.wav", mono16, 16000)
    sf.write(d / "mono16k.flac", mono16, 16000)
    sf.write(d / "stereo48k.wav", stereo48, 48000, subtype="PCM_24")
    sf.write(d / "stereo48k.flac", stereo48, 48000)
    sf.write(d / "mono8k.wav", mono16[::2], 8000, subtype="PCM_16")
    _encode_with_pyav(stereo48.astype(np.float32), 48000, d / "stereo48k.ogg", "libopus")
    _encode_with_pyav(stereo48.astype(np.float32), 48000, d / "stereo48k.mp3", "libmp3lame")
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(d / "stereo48k.wav"), "-c:a", "libopus", str(d / "stereo48k.webm")],
        check=True,
    )
    return d, mono16, stereo48.mean(axis=1)


def _aligned_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 2000) -> float:
    """Best normalised correlation over small lags (lossy codecs add a delay)."""
    n = min(len(a), len(b)) - max_lag
    best = 0.0
    for lag in range(0, max_lag, 8):
        x, y = a[lag : lag + n], b[:n]
        best = max(best, float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)))
    return best


def test_lossless_files_decode_exactly(audio_files):
    d, mono16, _ = audio_files
    assert np.abs(load_audio(d / "mono16k.wav") - mono16).max() < 1e-4  # 16-bit wav quantization
    assert np.abs(load_audio(d / "mono16k.flac") - mono16).max() < 1e-4


@pytest.mark.parametrize("name", ["stereo48k.wav", "stereo48k.flac", "stereo48k.ogg", "stereo48k.mp3", "stereo48k.webm"])
def test_any_rate_channels_and_codec_decode_to_16k_mono(audio_files, name):
    d, _, stereo_mix = audio_files
    import soxr

    want = soxr.resample(stereo_mix.astype(np.float32), 48000, 16000, quality="HQ")
    got = load_audio(d / name)
    assert got.dtype == np.float32 and got.ndim == 1
    assert abs(len(got) - len(want)) < 0.1 * 16000  # codecs may pad a frame or two
    assert _aligned_correlation(got, want) > 0.97


def test_8k_file_is_upsampled(audio_files):
    d, mono16, _ = audio_files
    got = load_audio(d / "mono8k.wav")
    assert len(got) == len(mono16)


def test_same_audio_as_array_and_as_flac_gives_the_same_tokens(transcriber, audio_files):
    d, _, _ = audio_files
    from_file = transcriber.transcribe_file(d / "mono16k.flac")
    from_array = transcriber.transcribe(load_audio(d / "mono16k.flac"))
    assert from_file.token_ids == from_array.token_ids and from_file.n_tokens > 0


def test_unsupported_file_raises_one_line(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(AudioFileError) as err:
        load_audio(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


# --- pieces of long audio --------------------------------------------------------------------------

def test_cut_points_tile_the_audio_and_respect_the_limit():
    audio = make_test_audio(71.0, seed=2)
    pieces = cut_points(audio, SegmentationOptions(max_piece_s=30.0))
    assert pieces[0].start == 0 and pieces[-1].end == len(audio)
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:]))
    assert all(p.end - p.start <= 30 * 16000 for p in pieces)
    assert len(pieces) == 3


def test_cut_points_choose_a_quiet_stretch():
    audio = make_test_audio(40.0, seed=3, kind="noise")
    audio[int(27.2 * 16000) : int(27.6 * 16000)] *= 0.001  # the only quiet spot in the search range
    pieces = cut_points(audio, SegmentationOptions(max_piece_s=30.0, search_s=5.0))
    assert 27.2 * 16000 <= pieces[0].end <= 27.6 * 16000
    assert cut_points(audio[:16000], SegmentationOptions(max_piece_s=30.0))[0].end == 16000


def test_long_audio_yields_segments_one_by_one(tiny_bundle):
    audio = make_test_audio(14.0, seed=4)
    audio[int(6.5 * 16000) : int(6.8 * 16000)] = 0.0
    options = TranscribeOptions(threads=1, max_new_tokens=8, max_piece_s=7.0)
    with Transcriber(tiny_bundle, options) as t:
        gen = t.segments(audio)
        first = next(gen)  # a generator: the first piece is done before the rest is touched
        assert first.index == 0 and first.start_s == 0.0 and 6.5 <= first.end_s <= 6.8
        rest = list(gen)
        assert [s.index for s in rest] == [1, 2]
        assert rest[-1].end_s == pytest.approx(14.0)
        assert all(s.audio_s <= 7.0 for s in [first, *rest])
        result = t.transcribe(audio)
    assert result.token_ids == [tok for s in result.segments for tok in s.token_ids]
    assert result.n_tokens == sum(s.n_tokens for s in result.segments)
    assert result.encoder_ms == pytest.approx(sum(s.encoder_ms for s in result.segments))


# --- short clips and silence -----------------------------------------------------------------------

def test_short_clip_is_padded_to_half_a_second(transcriber):
    clip = make_test_audio(0.3, seed=5)
    seg = next(transcriber.segments(clip))
    assert seg.audio_s == pytest.approx(0.3) and seg.stop_reason != "silence"
    n_audio = transcriber.encode(np.pad(clip, (0, 8000 - clip.size))).shape[0]
    assert n_audio == 7  # 0.5 s -> 50 frames -> (50 + 7) // 8


def test_short_clip_unpadded_like_official_transcribe(tiny_bundle, official_ref):
    """min_audio_s=0 keeps a 0.3 s clip at 30 frames -> 4 audio tokens, as the official transcribe()."""
    clip = make_test_audio(0.3, seed=5)
    with Transcriber(tiny_bundle, TranscribeOptions(threads=1, min_audio_s=0.0)) as t:
        assert t.encode(clip).shape[0] == official_ref.encode(clip).shape[0] == 4


def test_silence_and_empty_audio_are_not_decoded(transcriber):
    for audio in (np.zeros(16000, np.float32), np.zeros(0, np.float32), 1e-5 * np.random.default_rng(0).standard_normal(32000)):
        result = transcriber.transcribe(np.asarray(audio, np.float32))
        assert (result.text, result.language, result.token_ids) == ("", "", [])
        assert result.prefill_ms == 0.0


def test_silence_gate_threshold():
    rng = np.random.default_rng(1)
    assert is_silent(np.zeros(1000, np.float32))
    assert is_silent(0.0005 * rng.standard_normal(16000))  # about -66 dBFS
    assert not is_silent(0.003 * rng.standard_normal(16000))  # about -50 dBFS
    quiet_with_a_click = np.zeros(16000, np.float32)
    quiet_with_a_click[8000:8480] = 0.05  # 30 ms at -26 dBFS
    assert not is_silent(quiet_with_a_click)
    assert peak_window_rms(quiet_with_a_click) == pytest.approx(0.05, rel=1e-3)


# --- guards and parsing ----------------------------------------------------------------------------

def test_new_token_cap():
    assert new_token_cap(1.0) == 26
    assert new_token_cap(30.0) == 316
    assert new_token_cap(30.0, user_max=100) == 100
    assert new_token_cap(0.0) == 16


def test_find_loop():
    varied = list(range(100))
    assert find_loop(varied) is None
    assert find_loop([1, 2, 3, 4, 5] + [7] * 15) == 6  # keeps one 7
    two = [9, 8, 1, 2, 3] + [4, 5] * 8
    assert two[: find_loop(two)] == [9, 8, 1, 2, 3, 4, 5]
    phrase = list(range(10, 20))  # a 10-token phrase repeated 4 times (40 tokens)
    ids = [1, 2] + phrase * 4
    assert ids[: find_loop(ids)] == [1, 2] + phrase
    assert find_loop([1, 2] + phrase * 3) is None  # 30 tokens: not yet a loop


def test_parse_output():
    assert parse_output("language English<asr_text>Hello there.") == ("English", "Hello there.")
    assert parse_output("language None<asr_text>") == ("", "")
    assert parse_output("language chinese<asr_text> 你好 ") == ("Chinese", "你好")
    assert parse_output("just text") == ("", "just text")
    assert parse_output("Hello", forced_language="French") == ("French", "Hello")
    assert parse_output("") == ("", "")
    assert collapse_repeats("ha" * 30 + "!") == "ha!"
    assert collapse_repeats("hahaha") == "hahaha"


def test_visible_text_hides_an_unfinished_header():
    assert visible_text("lang") == ""
    assert visible_text("language Engl") == ""
    assert visible_text("language English<asr_text>Hi") == "Hi"
    assert visible_text("Hello", forced_language="English") == "Hello"


def test_join_and_merge():
    assert join_texts(["Hello there.", "Next piece", "", "你好", "世界"]) == "Hello there. Next piece你好世界"
    assert merge_languages(["English", "English", "", "Chinese", "English"]) == "English,Chinese,English"


# --- CLI output formats ----------------------------------------------------------------------------

def test_cli_text_json_and_srt(tiny_bundle, audio_files, capsys):
    from qasr.daemon.cli.main import main

    d, _, _ = audio_files
    files = [str(d / "mono16k.flac"), str(d / "stereo48k.ogg")]
    common = ["--model", str(tiny_bundle), "--threads", "1", "--max-new-tokens", "12"]
    assert main(["transcribe", *files, "--format", "json", *common]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in records] == files
    assert all(r["n_tokens"] <= 12 for r in records)

    assert main(["transcribe", files[0], *common]) == 0
    assert capsys.readouterr().out.rstrip("\n") == records[0]["text"]

    assert main(["transcribe", files[0], "--format", "srt", *common]) == 0
    srt = capsys.readouterr().out
    if records[0]["text"]:
        assert srt.startswith("1\n00:00:00,000 --> 00:00:03,000\n")
        assert records[0]["text"] in srt


def test_warm_up_leaves_no_state(transcriber):
    audio = make_test_audio(2.0, seed=8)
    before = transcriber.transcribe(audio).token_ids
    transcriber.warm_up()
    assert transcriber.decoder.cache.n_past == 0
    assert transcriber.transcribe(audio).token_ids == before


def test_set_prompt_changes_language_and_context_per_call(tiny_bundle):
    audio = make_test_audio(3.0, seed=21)
    with Transcriber(tiny_bundle, TranscribeOptions(threads=1, context_reserve_bytes=200)) as shared:
        shared.set_prompt("english", "Names: Ada, Grace")
        with Transcriber(tiny_bundle, TranscribeOptions(threads=1, language="English", context="Names: Ada, Grace")) as own:
            assert shared.transcribe(audio).token_ids == own.transcribe(audio).token_ids
        shared.set_prompt(None, "")
        with Transcriber(tiny_bundle, TranscribeOptions(threads=1)) as plain:
            assert shared.transcribe(audio).token_ids == plain.transcribe(audio).token_ids
        with pytest.raises(QasrError, match="longer than 200 bytes"):
            shared.set_prompt(None, "x" * 201)
        with pytest.raises(QasrError, match="unknown language"):
            shared.set_prompt("Klingon", "")
