"""Greedy decoding: the one loop offline transcription and streaming share, so their token ids agree.

A decode is one task composed of three parts:
- the inference: what goes into the decoder cache before the text (`Prefill`: the whole prompt, or a
  streaming step's audio and prompt tail) and a draft (the previous streaming hypothesis), fed in ONE
  batch that returns the greedy prediction after the tail and after each draft token;
- the token rules (`TokenRules`: `output.accept_greedy_token`'s stop, cap and loop guards);
- the loop: keep the draft up to the first token greedy decoding disagrees with, then continue one
  token at a time (`Decoder.step`) until the rules end it or `max_beyond_draft` tokens are added.
Offline transcription is the case with no draft and no limit beyond it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from qasr.engine.decoder import Decoder
from qasr.engine.output import accept_greedy_token


@dataclass
class Hypothesis:
    ids: list[int] = field(default_factory=list)  # generated ids (the stop token excluded)
    stop_reason: str = "max_tokens"  # stays so when `max_beyond_draft` ended the decode
    cut: int | None = None  # loop guard cut: ids[:cut] is the text to show
    base: int = 0  # cache position of ids[0]; the cache holds ids up to its n_past
    draft_tokens: int = 0
    accepted_tokens: int = 0  # draft tokens greedy decoding agreed with
    prefill_ms: float = 0.0  # the batch (prompt or audio, tail, draft) and the draft check
    decode_ms: float = 0.0  # greedy tokens one at a time

    @property
    def visible(self) -> list[int]:
        return self.ids if self.cut is None else self.ids[: self.cut]


@dataclass(frozen=True)
class TokenRules:
    """When greedy generation ends: offline's rules, applied alike to verified draft tokens and new ones."""

    cap: int  # output.new_token_cap
    stop_ids: frozenset[int]
    loop_guard: bool = True

    def accept(self, ids: list[int], token: int, hyp: Hypothesis) -> bool:
        """Append `token` to `ids` unless it ends generation; True (and the reason noted in `hyp`) when it does."""
        reason, cut = accept_greedy_token(ids, token, self.cap, self.stop_ids, self.loop_guard)
        if reason is None:
            return False
        hyp.stop_reason, hyp.cut = reason, cut
        return True


@dataclass(frozen=True)
class Prefill:
    """What goes into the cache at n_past before the hypothesis, in the same decode as the draft.

    `head` (the prompt before the audio) makes it a whole prompt: the cache is reset and the prompt goes in
    with `Decoder.feed_prompt` (no draft).
    `parked`: the tail and the first `parked` draft tokens are in the cache already (a streaming step
    that kept its committed text, see `KvCache.park`); they are taken as they are.
    `trusted`: the first draft tokens are taken as they are (no logits are computed for them).
    """

    tail: Sequence[int]
    audio: np.ndarray | None = None
    head: Sequence[int] | None = None
    parked: int = 0
    trusted: int = 0


def decode_greedy(decoder: Decoder, prefill: Prefill, rules: TokenRules, draft: Sequence[int] = (),
                  max_beyond_draft: int | None = None) -> Hypothesis:
    """Feed `prefill` and `draft` in one batch, keep the draft as far as greedy decoding agrees with it
    (the cache is trimmed after the kept part), then continue greedily. Returns the hypothesis; the cache
    holds it after `hyp.base` (all but the last token generated when a rule ended the decode)."""
    t0 = time.perf_counter()
    draft = list(draft[: max(0, rules.cap)])
    predictions, base = _verify(decoder, prefill, draft)
    hyp = Hypothesis(base=base, draft_tokens=len(draft))
    ids = hyp.ids
    done = False
    for i, token in enumerate(predictions):
        if rules.accept(ids, token, hyp):
            done = True
            break
        if i < len(draft) and draft[i] == token:
            hyp.accepted_tokens += 1
            continue
        break  # the draft disagrees (or is used up): continue greedily from `token`
    if draft:
        decoder.cache.truncate(base + hyp.accepted_tokens)
    t1 = time.perf_counter()
    hyp.prefill_ms = (t1 - t0) * 1000.0
    added = 0
    while not done and (max_beyond_draft is None or added < max_beyond_draft):
        added += 1
        if rules.accept(ids, decoder.step(ids[-1]), hyp):
            break
    hyp.decode_ms = (time.perf_counter() - t1) * 1000.0
    return hyp


def _verify(decoder: Decoder, prefill: Prefill, draft: list[int]) -> tuple[list[int], int]:
    """One decode of the prefill and the draft: (the greedy token after the tail and after each draft
    token, the cache position of the first hypothesis token)."""
    tail = list(prefill.tail)
    if prefill.head is not None:
        if draft:
            raise ValueError("a whole prompt is decoded without a draft")
        decoder.cache.reset()
        decoder.feed_prompt(prefill.head, prefill.audio, tail)
        return [decoder.argmax()], decoder.cache.n_past
    if prefill.parked:
        parked = prefill.parked
        base = decoder.cache.n_past - parked
        return draft[: parked + 1] + decoder.feed_tokens_argmax(draft[parked:]), base
    trusted = min(prefill.trusted, len(draft))
    first = len(tail) - 1 + trusted
    if prefill.audio is None:
        base = decoder.cache.n_past + len(tail)
        return draft[:trusted] + decoder.feed_tokens_argmax([*tail, *draft], first=first), base
    base = decoder.cache.n_past + len(prefill.audio) + len(tail)
    return draft[:trusted] + decoder.feed_embeddings_tokens_argmax(prefill.audio, [*tail, *draft], first=first), base
