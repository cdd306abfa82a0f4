"""The shared greedy loop (engine/greedy.py) on a scripted decoder: whatever the draft, trusted or parked
tokens, the result is what plain greedy decoding gives, and the cache is trimmed after the kept draft."""

from __future__ import annotations

import numpy as np
import pytest

from qasr.engine.greedy import Prefill, TokenRules, decode_greedy

STOP = 0
TARGET = [11, 12, 13, 14, 15, 16, 17, 18]  # what greedy decoding generates, then STOP
HEAD, AUDIO, TAIL = [1, 2, 3], np.zeros((5, 4), dtype=np.float32), [4, 5]
START = len(HEAD) + len(AUDIO) + len(TAIL)  # cache position of the first generated token


class ScriptedCache:
    def __init__(self):
        self.n_past = 0

    def reset(self):
        self.n_past = 0

    def truncate(self, n_keep):
        self.n_past = min(self.n_past, n_keep)


class ScriptedDecoder:
    """After cache position i the greedy token is TARGET[i - START + 1] (the tail's last position: TARGET[0])."""

    def __init__(self):
        self.cache = ScriptedCache()
        self.steps = 0
        self._last = None

    def _next(self, position: int) -> int:
        k = position - START + 1
        return TARGET[k] if 0 <= k < len(TARGET) else STOP

    def feed_prompt(self, head, audio, tail):
        self.cache.n_past += len(head) + len(audio) + len(tail)
        self._last = self._next(self.cache.n_past - 1)

    def argmax(self):
        return self._last

    def feed_tokens_argmax(self, ids, first=0):
        at = self.cache.n_past
        self.cache.n_past += len(ids)
        return [self._next(at + i) for i in range(first, len(ids))]

    def feed_embeddings_tokens_argmax(self, embeds, ids, first=0):
        self.cache.n_past += len(embeds)
        return self.feed_tokens_argmax(ids, first)

    def step(self, token):
        self.steps += 1
        self.cache.n_past += 1
        return self._next(self.cache.n_past - 1)


def _rules(cap=100):
    return TokenRules(cap, frozenset({STOP}), loop_guard=False)


def _after_head(dec):
    dec.cache.n_past = len(HEAD)
    return dec


def test_no_draft_is_plain_greedy_decoding():
    dec = ScriptedDecoder()
    hyp = decode_greedy(dec, Prefill(head=HEAD, audio=AUDIO, tail=TAIL), _rules())
    assert hyp.ids == TARGET and hyp.stop_reason == "stop" and hyp.base == START
    assert dec.steps == len(TARGET) and (hyp.draft_tokens, hyp.accepted_tokens) == (0, 0)


@pytest.mark.parametrize("draft, accepted", [(TARGET, 8), (TARGET[:5] + [99, 98], 5), ([99], 0), (TARGET[:3], 3)])
def test_a_draft_is_kept_as_far_as_greedy_agrees_and_the_cache_trimmed_after_it(draft, accepted):
    dec = _after_head(ScriptedDecoder())
    hyp = decode_greedy(dec, Prefill(tail=TAIL, audio=AUDIO), _rules(), draft, max_beyond_draft=0)
    assert hyp.accepted_tokens == accepted and hyp.draft_tokens == len(draft)
    assert hyp.ids == TARGET[: min(accepted + 1, len(TARGET))]  # the first disagreeing prediction is kept
    assert dec.cache.n_past == START + accepted and dec.steps == 0
    rest = decode_greedy(_after_head(ScriptedDecoder()), Prefill(tail=TAIL, audio=AUDIO), _rules(), draft)
    assert rest.ids == TARGET and rest.stop_reason == "stop"


def test_max_beyond_draft_and_the_cap_end_a_decode():
    hyp = decode_greedy(_after_head(ScriptedDecoder()), Prefill(tail=TAIL, audio=AUDIO), _rules(), TARGET[:2],
                        max_beyond_draft=2)
    assert hyp.ids == TARGET[:5] and hyp.stop_reason == "max_tokens"
    hyp = decode_greedy(_after_head(ScriptedDecoder()), Prefill(tail=TAIL, audio=AUDIO), _rules(cap=4), TARGET)
    assert hyp.ids == TARGET[:4] and hyp.stop_reason == "max_tokens" and hyp.draft_tokens == 4


def test_trusted_and_parked_draft_tokens_are_taken_without_logits():
    dec = ScriptedDecoder()
    dec.cache.n_past = len(HEAD) + len(AUDIO)
    hyp = decode_greedy(dec, Prefill(tail=TAIL, trusted=3), _rules(), TARGET[:6])
    assert hyp.ids == TARGET and hyp.accepted_tokens == 6 and hyp.base == START
    dec = ScriptedDecoder()
    dec.cache.n_past = START + 3  # the tail and 3 committed tokens were put back (KvCache.unpark)
    hyp = decode_greedy(dec, Prefill(tail=TAIL, parked=3), _rules(), TARGET[:6])
    assert hyp.ids == TARGET and hyp.accepted_tokens == 6 and hyp.base == START


def test_a_whole_prompt_takes_no_draft():
    with pytest.raises(ValueError):
        decode_greedy(ScriptedDecoder(), Prefill(head=HEAD, audio=AUDIO, tail=TAIL), _rules(), [11])
