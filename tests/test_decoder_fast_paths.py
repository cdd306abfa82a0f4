"""The decoder's fast paths give what the plain paths give: the prompt head reused across reset(), logits
read without a copy, draft verification through numpy views of the batch."""

from __future__ import annotations

import numpy as np
import pytest

from qasr.engine.bundle import load_bundle
from qasr.engine.decoder import Decoder, DecoderOptions
from qasr.engine.prompt import build_prompt


@pytest.fixture(scope="module")
def decoder(tiny_bundle):
    d = Decoder(load_bundle(tiny_bundle).path("decoder"), DecoderOptions(n_ctx=512, n_batch=64, threads=1, kv_f32=True))
    yield d
    d.close()


def _prefill(dec, prompt, embeds):
    dec.cache.reset()
    dec.feed_tokens(prompt.before_ids, want_logits=False)
    dec.feed_embeddings(embeds)
    return dec.feed_tokens(prompt.after_ids)


def _count_decodes(dec, monkeypatch):
    calls = []
    real = dec._decode

    def counting(batch):
        calls.append(batch.batch.n_tokens)
        return real(batch)

    monkeypatch.setattr(dec, "_decode", counting)
    return calls


def test_prompt_head_is_reused_after_reset_and_gives_the_same_logits(decoder, monkeypatch):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((30, decoder.n_embd)).astype(np.float32)
    b = rng.standard_normal((41, decoder.n_embd)).astype(np.float32)
    prompt = build_prompt(decoder.vocab.tokenize, 30)
    decoder.cache._stale = False
    decoder.cache._token_prefix = []
    decoder._ll.llama_memory_clear(decoder.cache._memory, True)
    want_b = _prefill(decoder, prompt, b)  # cold: the head is decoded
    _prefill(decoder, prompt, a)
    calls = _count_decodes(decoder, monkeypatch)
    got_b = _prefill(decoder, prompt, b)  # warm: the head stays in the cache
    assert calls == [41, len(prompt.after_ids)]
    assert np.array_equal(got_b, want_b)


def test_a_different_head_reuses_only_the_common_start(decoder, monkeypatch):
    rng = np.random.default_rng(8)
    a = rng.standard_normal((12, decoder.n_embd)).astype(np.float32)
    plain = build_prompt(decoder.vocab.tokenize, 12)
    with_context = build_prompt(decoder.vocab.tokenize, 12, context="Zoë and Jürgen")
    _prefill(decoder, plain, a)
    calls = _count_decodes(decoder, monkeypatch)
    got = _prefill(decoder, with_context, a)
    common = next(i for i, (x, y) in enumerate(zip(plain.before_ids, with_context.before_ids)) if x != y)
    assert calls[0] == len(with_context.before_ids) - common
    monkeypatch.undo()
    decoder.cache.reset()
    decoder.feed_embeddings(a[:1])  # anything but tokens first drops the kept head
    assert decoder.cache.n_past == 1 and decoder.cache._token_prefix == []
    want = _prefill(decoder, with_context, a)
    assert np.abs(got - want).max() < 1e-4


def test_a_fully_cached_feed_still_returns_logits(decoder):
    ids = decoder.vocab.tokenize("<|im_start|>user\nhello there")
    decoder.cache.reset()
    want = decoder.feed_tokens(ids)
    decoder.cache.reset()
    got = decoder.feed_tokens(ids)  # the last id is decoded again for its logits
    assert decoder.cache.n_past == len(ids)
    assert np.abs(got - want).max() < 1e-4
    decoder.cache.reset()
    assert decoder.feed_tokens(ids, want_logits=False) is None and decoder.cache.n_past == len(ids)


def test_truncate_and_park_after_reset_see_an_empty_cache(decoder):
    ids = decoder.vocab.tokenize("<|im_start|>system\nabc")
    decoder.cache.reset()
    decoder.feed_tokens(ids, want_logits=False)
    decoder.cache.reset()
    decoder.cache.truncate(3)
    decoder.cache.park(0, 2)
    assert decoder.cache.n_past == 0
    logits = decoder.feed_tokens(ids)
    decoder.cache.reset()
    decoder.cache.settle()
    assert np.abs(decoder.feed_tokens(ids) - logits).max() < 1e-4


def test_argmax_and_logits_view_agree_with_the_copy(decoder):
    decoder.cache.reset()
    logits = decoder.feed_tokens(decoder.vocab.tokenize("<|im_start|>assistant\n"))
    assert decoder.argmax() == int(np.argmax(logits))
    assert np.array_equal(decoder.logits_view(), logits)


def test_verification_equals_token_by_token_greedy(decoder):
    ids = decoder.vocab.tokenize("<|im_start|>user\nthe quick brown fox jumps over")
    decoder.cache.reset()
    batched = decoder.feed_tokens_argmax(ids, first=2)
    decoder.cache.reset()
    decoder.cache.settle()
    single = []
    for i, t in enumerate(ids):
        logits = decoder.feed_tokens([t])
        if i >= 2:
            single.append(int(np.argmax(logits)))
    assert batched == single


@pytest.mark.parametrize("precision", ["f32", "q8_0"])
def test_token_table_rows_give_the_logits_token_ids_give(bundle_factory, precision):
    """llama.cpp's input layer and the numpy token table agree bit for bit (f32 and q8_0 tables)."""
    path = load_bundle(bundle_factory("fp32", precision)).path("decoder")
    with Decoder(path, DecoderOptions(n_ctx=256, n_batch=64, threads=1)) as dec:
        assert dec._table() is not None
        ids = dec.vocab.tokenize("<|im_start|>system\nZoë and the quick brown fox<|im_end|>")
        dec.cache.reset()
        dec.cache.settle()
        want = dec.feed_tokens(ids)
        dec.cache.reset()
        dec.cache.settle()
        got = dec.feed_embeddings(dec._table().rows(ids), want_logits=True)
        assert np.array_equal(got, want)


def test_the_prompt_goes_in_one_decode_and_keeps_its_head(decoder, monkeypatch):
    rng = np.random.default_rng(9)
    embeds = rng.standard_normal((37, decoder.n_embd)).astype(np.float32)
    prompt = build_prompt(decoder.vocab.tokenize, 37)
    want = _prefill(decoder, prompt, embeds)  # head, audio, tail: three decodes
    decoder.cache.reset()
    decoder.cache.settle()
    calls = _count_decodes(decoder, monkeypatch)
    got = decoder.feed_prompt(prompt.before_ids, embeds, prompt.after_ids)
    assert calls == [prompt.n_tokens]
    assert decoder.cache._token_prefix == list(prompt.before_ids)  # reusable after reset()
    assert np.abs(got - want).max() < 1e-4
    assert decoder.argmax() == int(np.argmax(want))
    decoder.cache.reset()
    calls.clear()
    again = decoder.feed_prompt(prompt.before_ids, embeds, prompt.after_ids)
    assert calls == [embeds.shape[0] + len(prompt.after_ids)]  # the head stayed in the cache
    assert np.abs(again - want).max() < 1e-4


def test_step_is_greedy_feed_tokens(decoder):
    ids = decoder.vocab.tokenize("<|im_start|>user\nhello")
    decoder.cache.reset()
    decoder.cache.settle()
    decoder.feed_tokens(ids[:-1], want_logits=False)
    token = decoder.step(ids[-1])
    decoder.cache.truncate(len(ids) - 1)
    assert token == int(np.argmax(decoder.feed_tokens(ids[-1:])))


def test_audio_tail_and_draft_in_one_decode_equal_two_decodes(decoder, monkeypatch):
    rng = np.random.default_rng(10)
    head = decoder.vocab.tokenize("<|im_start|>user\n")
    audio = rng.standard_normal((23, decoder.n_embd)).astype(np.float32)
    ids = decoder.vocab.tokenize("<|im_end|>\n<|im_start|>assistant\nthe quick brown fox")
    decoder.cache.reset()
    decoder.feed_tokens(head, want_logits=False)
    decoder.feed_embeddings(audio)
    want = decoder.feed_tokens_argmax(ids, first=3)
    decoder.cache.truncate(len(head))
    calls = _count_decodes(decoder, monkeypatch)
    got = decoder.feed_embeddings_tokens_argmax(audio, ids, first=3)
    assert calls == [len(audio) + len(ids)] and got == want
    assert decoder.cache.n_past == len(head) + len(audio) + len(ids)


def test_a_file_the_table_reader_does_not_follow_gives_no_table(tmp_path):
    from qasr.engine.token_table import open_token_table

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    assert open_token_table(bad) is None
    bad.write_bytes(b"not a gguf")
    assert open_token_table(bad) is None
