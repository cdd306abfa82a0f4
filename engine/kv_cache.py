"""Which positions the decoder's KV cache holds: llama.cpp's sequence 0, explicitly controlled.

`n_past` is the next position; the decoder's feeds append there and `advance`. `truncate(n_keep)` drops
every cached position from `n_keep` on (llama_memory_seq_rm), so a streaming caller can keep a prompt
prefix and re-decode only what changed. `park`/`unpark` move cached positions further back (sequence 1
holds them meanwhile). After `reset()` the positions that were fed as tokens from 0 on stay until the
next feed, which keeps those it starts with (`settle`).
"""

from __future__ import annotations

from qasr.errors import QasrError


class KvCacheError(QasrError):
    """The KV cache cannot hold or trim what is asked; the message says what to do."""


class KvCache:
    def __init__(self, llama_cpp, memory, n_ctx: int):
        self._ll = llama_cpp
        self._memory = memory
        self.n_ctx = n_ctx
        self.n_past = 0
        self.owner: object | None = None  # the streaming session whose state the cache holds
        self._parked: tuple[int, int] | None = None  # positions held by park()
        # Token ids of positions [0, len) when all of them were fed as tokens. After reset() they stay
        # in the cache (`_stale`) until the next feed: one that starts with the same ids keeps them
        # instead of decoding them again (the prompt head before the audio, ~9 positions: one weight
        # pass of the whole model, ~30 ms on 2 cores for 0.6B q4_k).
        self._token_prefix: list[int] = []
        self._stale = False

    def reset(self) -> None:
        """Forget every cached position (n_past 0). Positions fed as tokens from 0 on are kept until the
        next feed, which reuses them if it starts with the same ids; anything else drops them."""
        self.drop_parked()
        self.n_past = 0
        self.owner = None
        if self._token_prefix:
            self._stale = True
        else:
            self._ll.llama_memory_clear(self._memory, True)
            self._stale = False

    def settle(self, ids=(), want_logits: bool = False) -> int:
        """Before a feed of `ids` (after reset(): keep the cached positions that match their start and drop
        the rest); returns how many of `ids` are in the cache already. With `want_logits` the last id is
        decoded again even if cached (its logits are not kept)."""
        if not self._stale:
            return 0
        reuse, prefix = 0, self._token_prefix
        limit = min(len(ids) - (1 if want_logits else 0), len(prefix))
        while reuse < limit and int(ids[reuse]) == prefix[reuse]:
            reuse += 1
        self._ll.llama_memory_seq_rm(self._memory, 0, reuse, -1)
        del prefix[reuse:]
        self.n_past = reuse
        self._stale = False
        return reuse

    def advance(self, n: int, token_ids=None) -> None:
        """`n` positions went in at n_past; `token_ids` when they were fed as tokens (reusable after reset())."""
        if token_ids is not None and len(self._token_prefix) == self.n_past:  # note_tokens, inlined: per token
            self._token_prefix.extend(int(t) for t in token_ids)
        self.n_past += n

    def note_tokens(self, start: int, ids) -> None:
        """Positions from `start` on hold what feeding `ids` as tokens puts there (their embedding rows
        give the same entries): they extend the reusable token prefix if it reaches `start`."""
        if len(self._token_prefix) == start:
            self._token_prefix.extend(int(t) for t in ids)

    def discard_unfinished(self) -> None:
        """Drop what a stopped decode wrote after n_past (the ubatches done before the stop)."""
        self._ll.llama_memory_seq_rm(self._memory, 0, self.n_past, -1)

    def truncate(self, n_keep: int) -> None:
        """Keep positions [0, n_keep) in the KV cache, drop the rest."""
        self.settle()
        n_keep = max(0, min(int(n_keep), self.n_past))
        if n_keep == self.n_past:
            return
        if not self._ll.llama_memory_seq_rm(self._memory, 0, n_keep, -1):
            raise KvCacheError("llama.cpp refused to trim the KV cache")
        self.n_past = n_keep
        del self._token_prefix[n_keep:]

    # --- parking --------------------------------------------------------------------------------

    def park(self, start: int, end: int) -> None:
        """Set the cached positions [start, end) aside and drop everything from `start` on.

        llama.cpp only appends at the end of a sequence, so cache entries that should stay but must move
        further back (a streaming hypothesis's committed text, when new audio goes in before it) are
        held in a second sequence meanwhile; `unpark()` puts them back after whatever was fed since.
        """
        self.drop_parked()
        self.settle()
        end = min(end, self.n_past)
        if end <= start:
            return
        self._ll.llama_memory_seq_cp(self._memory, 0, 1, start, end)
        self.truncate(start)
        self._parked = (start, end)

    def unpark(self) -> int:
        """Put the parked positions back right after n_past (their positions shifted to follow, which
        llama.cpp re-rotates); returns how many came back."""
        if self._parked is None:
            return 0
        start, end = self._parked
        shift = self.n_past - start
        if shift:
            self._ll.llama_memory_seq_add(self._memory, 1, start, end, shift)
        self._ll.llama_memory_seq_cp(self._memory, 1, 0, start + shift, end + shift)
        self._ll.llama_memory_seq_rm(self._memory, 1, -1, -1)
        self._parked = None
        self.n_past += end - start
        return end - start

    def drop_parked(self) -> None:
        if self._parked is not None:
            self._ll.llama_memory_seq_rm(self._memory, 1, -1, -1)
            self._parked = None
