"""Commit policy for streaming hypotheses: which tokens are final enough to show as committed text.

Policy (LocalAgreement-n with rollback), applied to the generated token ids of each step:

- a token is committed when the last ``agreement`` hypotheses all contain it at the same position
  (longest common prefix), and it is not among the last ``rollback`` tokens of the newest hypothesis
  (the tail of a hypothesis is where the model changes its mind as more audio arrives);
- commits are append-only: the committed ids never change or shrink within an utterance. A hypothesis
  that contradicts committed tokens commits nothing new until hypotheses extend the committed prefix again;
- committed *text* is the text after the ``language X<asr_text>`` header, decoded from the committed
  token bytes (the model's markers give none), with any incomplete trailing UTF-8 sequence held back
  and control characters removed (`safe_text.safe_text`) — so committed text is always valid text
  that can be typed and never needs a backspace.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from qasr.engine.output import LANGUAGE_PREFIX, complete_utf8_prefix
from qasr.engine.safe_text import safe_text


@dataclass(frozen=True)
class CommitOptions:
    agreement: int = 2  # consecutive hypotheses that must agree
    rollback: int = 3  # newest tokens never committed before the final


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        tok = first[i]
        if any(s[i] != tok for s in seqs[1:]):
            return i
    return n


class TextOfTokens:
    """Turns generated ids into user text the way `output.transcript_of_ids` does, but safe mid-generation:
    the ``language X<asr_text>`` header (finished or not) is never shown. `speech_bytes`: a token's bytes,
    b"" for the model's markers (`Vocab.speech_bytes`)."""

    def __init__(self, speech_bytes: Callable[[int], bytes], asr_text_id: int, forced_language: bool):
        self._token_bytes = speech_bytes
        self.asr_text_id = asr_text_id
        self._forced = forced_language

    def _bytes(self, ids: Sequence[int]) -> bytes:
        return b"".join(self._token_bytes(t) for t in ids)

    def body_ids(self, ids: Sequence[int]) -> Sequence[int]:
        """The ids that are text; empty while a header may still be in progress."""
        ids = list(ids)
        if self._forced:
            return ids
        if self.asr_text_id in ids:
            return ids[ids.index(self.asr_text_id) + 1 :]
        head = self._bytes(ids).decode("utf-8", errors="replace").lstrip()[: len(LANGUAGE_PREFIX)].lower()
        if LANGUAGE_PREFIX.startswith(head) or head.startswith(LANGUAGE_PREFIX):
            return []  # "language Xxx" without its tag yet
        return ids  # no header at all: everything is text (as parse_output treats it)

    def text(self, ids: Sequence[int], complete_only: bool = False) -> str:
        data = self._bytes(self.body_ids(ids))
        if complete_only:
            data = complete_utf8_prefix(data)
        return safe_text(data.decode("utf-8", errors="replace")).lstrip()


class CommitTracker:
    """Holds the committed ids of one utterance and advances them from successive hypotheses."""

    def __init__(self, options: CommitOptions = CommitOptions()):
        self.options = options
        self._history: deque[list[int]] = deque(maxlen=max(1, options.agreement))
        self.committed: list[int] = []

    def update(self, hypothesis: Sequence[int]) -> list[int]:
        """Record a hypothesis; return the ids newly committed by it (possibly none)."""
        hyp = list(hypothesis)
        self._history.append(hyp)
        if len(self._history) < self._history.maxlen:
            return []
        agreed = common_prefix_length(list(self._history))
        limit = min(agreed, len(hyp) - self.options.rollback)
        n = len(self.committed)
        if limit <= n or hyp[:n] != self.committed:
            return []
        new = hyp[n:limit]
        self.committed.extend(new)
        return new
