"""Forced aligner: qasr's runtime against the official Qwen3ForcedAligner on a random aligner checkpoint.

Exactness (f32 bundle): identical timestamp class indices at every <timestamp> position and identical
repaired times, for English, Chinese and mixed text, short and long (windowed, > 8 s) audio. Quantized
bundles: agreement is printed, not asserted. Plus the converter's aligner bundle and the bad inputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.audio_samples import make_test_audio

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CASES = [
    ("english-3s", 3.0, "Hello world, this is a test of the aligner.", "English"),
    ("chinese-5s", 5.0, "我们今天去公园散步，好吗？", "Chinese"),
    ("mixed-12s", 12.3, "我们用Python写code，然后 deploy 到 server 上。" * 3, "Chinese"),
    ("long-24s", 24.0, " ".join(["word", "another", "don't", "42", "Zürich", "naïve"] * 20), "English"),
]


@pytest.fixture(scope="module")
def aligner(tiny_aligner_bundle):
    from qasr.engine.align.aligner import ForcedAligner

    with ForcedAligner(tiny_aligner_bundle) as a:
        yield a


def _audio(seconds: float, seed: int = 3) -> np.ndarray:
    return make_test_audio(seconds, seed=seed)


@pytest.mark.parametrize("name,seconds,text,language", CASES, ids=[c[0] for c in CASES])
def test_class_indices_and_times_equal_the_official_aligner(aligner, official_aligner, name, seconds, text, language):
    from qasr.engine.align.words import split_words

    audio = _audio(seconds)
    words = split_words(text, language)
    assert words == official_aligner.words(text, language)
    ids, stamps = aligner.input_ids(aligner.encode(audio).shape[0], words)
    assert ids == official_aligner.input_ids(audio, text, language)
    assert len(stamps) == 2 * len(words)

    got = aligner.class_indices(audio, words)
    want = official_aligner.class_indices(audio, text, language)
    assert got.tolist() == want.tolist()

    ours = [(w.word, w.start, w.end) for w in aligner.align_piece(audio, words)]
    assert ours == official_aligner.align(audio, text, language)


def test_align_clamps_to_the_audio_and_keeps_word_order(aligner):
    audio = _audio(4.0)
    words = aligner.align(audio, "one two three four five", "English")
    assert [w.word for w in words] == ["one", "two", "three", "four", "five"]
    for w in words:
        assert 0.0 <= w.start <= w.end <= 4.0
    starts = [w.start for w in words]
    assert starts == sorted(starts)


def test_long_audio_is_cut_and_offset(tiny_aligner_bundle):
    """Audio over max_seconds is aligned piece by piece; every piece's words carry its offset."""
    from qasr.engine.align.aligner import AlignerOptions, ForcedAligner
    from qasr.engine.segmentation import SegmentationOptions, cut_points

    audio = _audio(25.0, seed=5)
    text = " ".join(f"w{i}" for i in range(60))
    with ForcedAligner(tiny_aligner_bundle, AlignerOptions(max_seconds=10.0)) as short:
        words = short.align(audio, text, "English")
        pieces = cut_points(audio, SegmentationOptions(max_piece_s=10.0))
        assert len(pieces) >= 3
        assert [w.word for w in words] == text.split()
        # the first piece's words are exactly what aligning that piece alone gives
        first = [w for w in words if w.end <= pieces[0].end / 16000]
        alone = short.align_piece(audio[pieces[0].start : pieces[0].end], [w.word for w in first])
        assert [(w.word, w.start, w.end) for w in first] == [(w.word, min(w.start, pieces[0].end / 16000),
                                                              min(w.end, pieces[0].end / 16000)) for w in alone]
        later = [w for w in words if w not in first]
        assert later and all(w.start >= pieces[0].end / 16000 for w in later)


@pytest.mark.parametrize("text", ["", "   ", "?!, …", "—"])
def test_text_without_words_gives_no_words(aligner, text):
    assert aligner.align(_audio(2.0), text, "English") == []


def test_short_audio_is_padded_not_refused(aligner):
    words = aligner.align(_audio(0.3), "yes", "English")
    assert [w.word for w in words] == ["yes"]
    assert 0.0 <= words[0].start <= words[0].end <= 0.3


def test_text_far_longer_than_the_audio_still_aligns(aligner):
    text = " ".join(["many"] * 300)
    words = aligner.align(_audio(1.0), text, "English")
    assert len(words) == 300 and all(0.0 <= w.start <= w.end <= 1.0 for w in words)


def test_empty_audio_is_one_clear_error(aligner):
    from qasr.engine.align.aligner import AlignError

    with pytest.raises(AlignError, match="at least"):
        aligner.align(np.zeros(0, dtype=np.float32), "hello", "English")


def test_an_asr_bundle_is_not_an_aligner_and_vice_versa(tiny_bundle, tiny_aligner_bundle):
    from qasr.engine.align.aligner import ForcedAligner
    from qasr.engine.bundle import BundleError
    from qasr.engine.transcribe import Transcriber

    with pytest.raises(BundleError, match="models pull aligner"):
        ForcedAligner(tiny_bundle)
    with pytest.raises(BundleError, match="forced aligner"):
        Transcriber(tiny_aligner_bundle)


def test_aligner_bundle_manifest_has_its_own_parameters(tiny_aligner_bundle, tiny_aligner_checkpoint):
    manifest = json.loads((tiny_aligner_bundle / "manifest.json").read_text())
    config = json.loads((tiny_aligner_checkpoint / "config.json").read_text())
    vocab = json.loads((tiny_aligner_checkpoint / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    timestamp_id = next(int(i) for i, spec in vocab.items() if spec["content"] == "<timestamp>")
    assert manifest["tokens"]["timestamp"] == timestamp_id == config["timestamp_token_id"]
    assert manifest["aligner"] == {
        "classify_num": config["thinker_config"]["classify_num"],
        "timestamp_segment_time_ms": float(config["timestamp_segment_time"]),
        "embedding_rows": config["thinker_config"]["text_config"]["vocab_size"],
    }
    assert set(manifest["files"]) == {"encoder_frontend", "encoder_backend", "decoder", "embeddings", "tokenizer"}


def test_converter_refuses_a_mismatched_timestamp_id(tiny_aligner_checkpoint, tmp_path):
    import shutil

    from qasr.engine.convert.checkpoint import CheckpointError, read_checkpoint

    copy = tmp_path / "ckpt"
    shutil.copytree(tiny_aligner_checkpoint, copy)
    config = json.loads((copy / "config.json").read_text())
    config["timestamp_token_id"] += 1
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="timestamp_token_id"):
        read_checkpoint(copy, kind="aligner")
    with pytest.raises(CheckpointError, match="forced aligner"):
        read_checkpoint(tiny_aligner_checkpoint)  # the ASR default refuses an aligner


def test_quantized_aligners_agreement_is_reported(aligner_bundle_factory, official_aligner, capsys):
    """Agreement of the int8/q8_0 and int8/q4_k bundles' class indices with the official f32 ones
    (reported: quantization may flip near-tie classes)."""
    from qasr.engine.align.aligner import ForcedAligner
    from qasr.engine.align.words import split_words

    _, seconds, text, language = CASES[3]
    audio = _audio(seconds)
    want = official_aligner.class_indices(audio, text, language)
    for encoder, decoder in (("int8", "q8_0"), ("int8", "q4_k")):
        with ForcedAligner(aligner_bundle_factory(encoder, decoder)) as quantized:
            got = quantized.class_indices(audio, split_words(text, language))
        agreement = float(np.mean(got == want))
        with capsys.disabled():
            print(f"\naligner {encoder}/{decoder}: {agreement:.3f} of {len(want)} timestamp classes equal the official f32")
        assert got.shape == want.shape
