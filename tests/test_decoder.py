"""The llama.cpp decoder: logits equal the official text model, explicit KV-cache control, UTF-8-safe
detokenization, prompts and languages; quantized bundles load and run (agreement reported)."""

from __future__ import annotations

import numpy as np
import pytest

from qasr.engine.bundle import load_bundle
from qasr.engine.decoder import DecodeInterrupted, Decoder, DecoderError, DecoderOptions
from qasr.engine.prompt import LanguageError, build_prompt, resolve_language
from qasr.engine.transcribe import TranscribeOptions, Transcriber
from tests.audio_samples import make_test_audio


@pytest.fixture(scope="module")
def f32_transcriber(tiny_bundle):
    t = Transcriber(tiny_bundle, TranscribeOptions(threads=1, loop_guard=False))
    yield t
    t.close()


@pytest.fixture(scope="module")
def decoder(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    d = Decoder(bundle.path("decoder"), DecoderOptions(n_ctx=512, n_batch=64, threads=1, kv_f32=True))
    yield d
    d.close()


def test_teacher_forced_logits_equal_official(f32_transcriber, official_ref):
    """Every position of prompt + audio + a generated continuation, against the official model."""
    audio = make_test_audio(9.0, seed=31)  # > 8 s: two encoder windows
    embeds = official_ref.encode(audio)
    ref = official_ref.generate(audio, max_new_tokens=24)
    prompt = f32_transcriber.prompt(embeds.shape[0])
    ids = prompt.token_ids(official_ref.audio_token_id) + ref
    want = official_ref.next_token_logits(ids, embeds)
    dec = f32_transcriber.decoder
    got = [f32_transcriber.prefill(embeds)]
    got += [dec.feed_tokens([t]) for t in ref]
    got = np.stack(got)
    want = want[len(ids) - len(ref) - 1 :]
    scale = float(np.abs(want).max())
    diff = float(np.abs(got - want).max())
    print(f"\nteacher-forced logits: max |qasr - official| {diff:.2e} (logit scale {scale:.1f})")
    assert diff < 1e-3 * max(scale, 1.0)
    assert np.array_equal(got.argmax(1)[:-1], np.asarray(ref))


def test_prefill_in_small_batches_equals_one_batch(decoder, official_ref):
    """n_batch 64 splits the prompt; the logits equal a per-token feed."""
    rng = np.random.default_rng(0)
    embeds = rng.standard_normal((150, decoder.n_embd)).astype(np.float32)
    prompt = build_prompt(decoder.vocab.tokenize, 150)
    decoder.cache.reset()
    decoder.feed_tokens(prompt.before_ids, want_logits=False)
    decoder.feed_embeddings(embeds)
    batched = decoder.feed_tokens(prompt.after_ids)
    decoder.cache.reset()
    for t in prompt.before_ids:
        decoder.feed_tokens([t], want_logits=False)
    for row in embeds:
        decoder.feed_embeddings(row[None])
    for t in prompt.after_ids:
        single = decoder.feed_tokens([t])
    assert decoder.cache.n_past == prompt.n_tokens
    assert np.abs(batched - single).max() < 1e-3


def test_kv_truncate_reuses_a_prompt_prefix(decoder):
    """Keep the text before the audio, swap the audio: equals a fresh prefill (what streaming does)."""
    rng = np.random.default_rng(1)
    first = rng.standard_normal((20, decoder.n_embd)).astype(np.float32)
    second = rng.standard_normal((33, decoder.n_embd)).astype(np.float32)
    prompt = build_prompt(decoder.vocab.tokenize, 20)
    prompt2 = build_prompt(decoder.vocab.tokenize, 33)

    def fresh(embeds, p):
        decoder.cache.reset()
        decoder.feed_tokens(p.before_ids, want_logits=False)
        decoder.feed_embeddings(embeds)
        return decoder.feed_tokens(p.after_ids)

    want = fresh(second, prompt2)
    fresh(first, prompt)
    for _ in range(5):  # generate a little, as a streaming step would
        decoder.feed_tokens([int(np.argmax(decoder.logits()))])
    decoder.cache.truncate(len(prompt.before_ids))
    assert decoder.cache.n_past == len(prompt.before_ids)
    decoder.feed_embeddings(second)
    got = decoder.feed_tokens(prompt2.after_ids)
    assert np.abs(got - want).max() < 1e-4
    # trimming generated tokens and re-feeding them reproduces the same logits
    decoder.feed_tokens([5, 6, 7])
    again_want = decoder.logits()
    decoder.cache.truncate(decoder.cache.n_past - 3)
    assert np.abs(decoder.feed_tokens([5, 6, 7]) - again_want).max() < 1e-4


def test_interrupt_stops_an_interruptible_decode_and_leaves_the_cache_as_it_was(decoder):
    rng = np.random.default_rng(4)
    head = rng.standard_normal((10, decoder.n_embd)).astype(np.float32)
    more = rng.standard_normal((150, decoder.n_embd)).astype(np.float32)  # three ubatches of 64
    decoder.cache.reset()
    decoder.feed_embeddings(head)
    want = decoder.feed_embeddings(more, want_logits=True)
    decoder.cache.truncate(10)
    with decoder.interruptible_decodes():
        decoder.interrupt()  # the flag is set before the decode starts: it stops at its first node
        with pytest.raises(DecodeInterrupted):
            decoder.feed_embeddings(more, want_logits=True)
    assert decoder.cache.n_past == 10
    # nothing of the interrupted call stayed in the cache: the same feed gives the same logits
    got = decoder.feed_embeddings(more, want_logits=True)
    assert np.abs(got - want).max() < 1e-5


def test_an_interrupt_outside_interruptible_decodes_is_ignored(decoder):
    decoder.cache.reset()
    decoder.interrupt()  # not interruptible: no effect
    decoder.feed_tokens([5, 6, 7])
    decoder._abort_flag[0] = 1  # an interrupt that raced with the end of an interruptible section
    decoder.feed_tokens([8])  # runs again instead of failing
    assert decoder.cache.n_past == 4 and decoder._abort_flag.raw[0] == 0


def test_context_overflow_is_a_clear_error(decoder):
    decoder.cache.reset()
    with pytest.raises(DecoderError, match="context holds 512 positions"):
        decoder.feed_embeddings(np.zeros((600, decoder.n_embd), dtype=np.float32))
    with pytest.raises(DecoderError, match="embeddings have shape"):
        decoder.feed_embeddings(np.zeros((3, decoder.n_embd + 1), dtype=np.float32))


def test_tokenize_parses_special_tokens(decoder, tiny_bundle):
    tokens = load_bundle(tiny_bundle).manifest.tokens
    ids = decoder.vocab.tokenize("<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|>language English<asr_text>hi")
    for name in ("im_start", "audio_start", "audio_pad", "audio_end", "asr_text"):
        assert tokens[name] in ids
    assert tokens["im_start"] not in decoder.vocab.tokenize("<|im_start|>", parse_special=False)


def test_detokenize_matches_official_decode(decoder, official_ref):
    text = "language English<asr_text>Zoë says 语音识别 works — 👍 ok"
    ids = decoder.vocab.tokenize(text)
    assert ids == official_ref.tokenizer(text)["input_ids"]
    with_control = ids + decoder.vocab.tokenize("<|im_end|>")
    assert decoder.vocab.detokenize(with_control) == official_ref.decode(with_control) == text
    assert decoder.vocab.detokenize(with_control, render_control=True).endswith("<|im_end|>")


def test_text_stream_never_splits_a_utf8_character(decoder):
    text = "语音识别 Zoë 👍🏽 naïve ☕"
    ids = decoder.vocab.tokenize(text)
    pieces = [decoder.vocab.token_bytes(t) for t in ids]
    assert any(_invalid_utf8(p) for p in pieces), "the sample should have tokens that split a character"
    stream = decoder.vocab.text_stream()
    out = [stream.push(t) for t in ids]
    out.append(stream.flush())
    assert "".join(out) == text
    assert all("\ufffd" not in part for part in out)


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def test_languages_resolve_case_insensitively(tiny_bundle):
    languages = load_bundle(tiny_bundle).manifest.languages
    assert resolve_language("english", languages) == "English"
    assert resolve_language("CHINESE", languages) == "Chinese"
    assert resolve_language(None, languages) is None
    assert resolve_language("  ", languages) is None
    with pytest.raises(LanguageError) as err:
        resolve_language("Klingon", languages)
    message = str(err.value)
    assert "\n" not in message and "Klingon" in message
    assert all(lang in message for lang in languages)


def test_decoder_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DecoderError, match="does not exist"):
        Decoder(tmp_path / "nope.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(DecoderError, match="cannot load decoder model"):
        Decoder(bad)


# --- quantized bundles --------------------------------------------------------------------------

TEACHER_FORCED_STEPS = 40
PRECISIONS = [("fp16", "f16"), ("int8", "q8_0"), ("int8", "q4_k")]


@pytest.mark.parametrize("encoder,decoder_precision", PRECISIONS, ids=[f"{e}-{d}" for e, d in PRECISIONS])
def test_quantized_bundles_load_run_and_report_agreement(
    bundle_factory, f32_transcriber, encoder, decoder_precision, record_property
):
    """Top-1 agreement with f32 over teacher-forced steps is reported, not asserted equal."""
    audio = make_test_audio(7.0, seed=41)
    reference = f32_transcriber.transcribe(audio)
    forced = reference.token_ids[:TEACHER_FORCED_STEPS]
    f32_embeds = f32_transcriber.encode(audio)
    f32_top = [int(np.argmax(f32_transcriber.prefill(f32_embeds)))]
    f32_top += [int(np.argmax(f32_transcriber.decoder.feed_tokens([t]))) for t in forced]

    bundle = bundle_factory(encoder, decoder_precision)
    manifest = load_bundle(bundle).manifest
    assert manifest.files["encoder_frontend"].precision == encoder
    assert manifest.files["decoder"].precision == decoder_precision
    with Transcriber(bundle, TranscribeOptions(threads=1, loop_guard=False)) as quant:
        result = quant.transcribe(audio)  # runs end to end
        assert result.n_tokens > 0 and result.segments[0].stop_reason in ("stop", "max_tokens")
        embeds = quant.encode(audio)
        encoder_err = float(np.abs(embeds - f32_embeds).max() / np.abs(f32_embeds).max())
        top = [int(np.argmax(quant.prefill(embeds)))]
        top += [int(np.argmax(quant.decoder.feed_tokens([t]))) for t in forced]
    agreement = float(np.mean(np.asarray(top) == np.asarray(f32_top)))
    record_property("top1_agreement", agreement)
    record_property("encoder_rel_error", encoder_err)
    print(
        f"\n{encoder}/{decoder_precision}: top-1 agreement with fp32/f32 over {len(top)} teacher-forced steps "
        f"{agreement:.3f}; encoder max rel. error {encoder_err:.2e}; free-running ids equal f32: "
        f"{result.token_ids == reference.token_ids}"
    )
    assert len(top) == len(f32_top) == len(forced) + 1
