"""The text decoder: a GGUF model run with llama.cpp's low-level API (llama-cpp-python).

One sequence (id 0), whose positions `cache` (kv_cache.KvCache) controls explicitly: the feeds append at
`cache.n_past`, `cache.truncate` / `park` / `reset` take positions out. Text ↔ token ids is `vocab`
(vocab.Vocab). Greedy decoding is argmax over the logits of the last fed position (the loop: greedy.py).
"""

from __future__ import annotations

import ctypes
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qasr.engine.encoder import default_threads
from qasr.engine.llama_runtime import Batch as _Batch
from qasr.engine.kv_cache import KvCache
from qasr.engine.llama_runtime import flag_reader, install_log_callback, last_error_line
from qasr.engine.token_table import open_token_table
from qasr.engine.vocab import Vocab
from qasr.errors import QasrError

log = logging.getLogger(__name__)


class DecoderError(QasrError):
    """The decoder model cannot be loaded or run; the message says what to do."""


class DecodeInterrupted(DecoderError):
    """`Decoder.interrupt()` stopped an interruptible decode; the cache holds what it held before the call."""


@dataclass(frozen=True)
class DecoderOptions:
    n_ctx: int = 2048  # KV-cache positions (prompt + audio + generated)
    n_batch: int = 512  # most positions per llama_decode call
    threads: int = 0  # generation threads; 0 = encoder.default_threads()
    threads_batch: int = 0  # prompt-processing threads; 0 = same as threads
    kv_f32: bool = False  # f32 KV cache (exact reference runs); f16 otherwise
    # llama.cpp repacks quantized weights at load; with mmap the file pages stay resident too (+200 MB)
    use_mmap: bool = False
    n_gpu_layers: int = 0  # layers offloaded to a GPU backend (engine.device.plan_device); 0 = CPU only
    one_pass_prompt: bool = True  # feed_prompt: text + audio in one decode where the token table allows it


class Decoder:
    def __init__(self, gguf_path: str | Path, options: DecoderOptions = DecoderOptions()):
        import llama_cpp

        self._ll = llama_cpp
        self.options = options
        install_log_callback()
        path = Path(gguf_path)
        if not path.is_file():
            raise DecoderError(f"decoder model {path} does not exist; re-pull or re-convert the model")
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = options.n_gpu_layers
        if hasattr(mparams, "load_mode"):  # llama-cpp-python >= 0.3.2x: an enum replaced use_mmap/use_mlock
            mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if options.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        else:
            mparams.use_mmap = options.use_mmap
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), mparams)
        if not self._model and options.n_gpu_layers:
            log.warning("decoder on the CPU: loading it onto the GPU failed (%s)", last_error_line() or "no reason given")
            mparams.n_gpu_layers = 0
            self._model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), mparams)
        if not self._model:
            why = last_error_line()
            raise DecoderError(
                f"cannot load decoder model {path}{f' ({why})' if why else ''}; re-pull or re-convert the model"
            )
        self.vocab = Vocab(llama_cpp, llama_cpp.llama_model_get_vocab(self._model))
        self._path = path
        self._ctx = None
        self._create_context(options.n_ctx)
        self.n_embd = int(llama_cpp.llama_model_n_embd(self._model))
        self.n_vocab = self.vocab.n_tokens
        self.n_batch = options.n_batch
        self._token_batch = _Batch(self.n_batch, 0)
        self._embd_batch = _Batch(self.n_batch, self.n_embd)
        self._logits_row_type = ctypes.POINTER(ctypes.c_float * self.n_vocab)
        self._token_table = ... if options.one_pass_prompt else None  # token_table.TokenTable, read at first use
        # interrupt(): another thread sets the flag byte; llama_decode then returns 2 at the next node
        self.interruptible = False  # only decodes run while this is True may be interrupted
        self._abort_flag = ctypes.create_string_buffer(2)
        self._abort_callback = flag_reader()  # kept referenced for the context's lifetime
        self._arm_abort()

    def _create_context(self, n_ctx: int) -> None:
        ll, options = self._ll, self.options
        threads = options.threads or default_threads()
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = options.n_batch
        cparams.n_ubatch = options.n_batch
        # sequence 0 is the live one; sequence 1 only holds positions set aside by park()
        cparams.n_seq_max = 2
        cparams.kv_unified = True
        cparams.n_threads = threads
        cparams.n_threads_batch = options.threads_batch or threads
        cparams.no_perf = True
        if hasattr(cparams, "flash_attn_type"):  # newer llama.cpp: auto (on, on the CPU) by default; off as before
            cparams.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if options.kv_f32:
            cparams.type_k = ll.GGML_TYPE_F32
            cparams.type_v = ll.GGML_TYPE_F32
        self._ctx = ll.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            why = last_error_line()
            ll.llama_model_free(self._model)
            self._model = None
            raise DecoderError(f"cannot create a llama.cpp context for {self._path}{f' ({why})' if why else ''}")
        self.n_ctx = int(ll.llama_n_ctx(self._ctx))
        self.cache = KvCache(ll, ll.llama_get_memory(self._ctx), self.n_ctx)

    def _arm_abort(self) -> None:
        self._ll.llama_set_abort_callback(self._ctx, self._abort_callback, ctypes.cast(self._abort_flag, ctypes.c_void_p))

    def ensure_context(self, n_positions: int) -> None:
        """Grow the context to hold `n_positions` (a new, empty `cache`; rounded up to 512)."""
        if n_positions <= self.n_ctx:
            return
        self._ll.llama_free(self._ctx)
        self._ctx = None
        self._create_context(-(-n_positions // 512) * 512)
        self._arm_abort()

    # --- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        ll = getattr(self, "_ll", None)
        if ll is None:
            return
        for b in (getattr(self, "_token_batch", None), getattr(self, "_embd_batch", None)):
            if b is not None:
                b.close()
        if getattr(self, "_ctx", None):
            ll.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            ll.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "Decoder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- interrupts -----------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Stop the decode in flight if it is interruptible (callable from any thread)."""
        if self.interruptible:
            self._abort_flag[0] = 1

    @contextmanager
    def interruptible_decodes(self):
        """Decodes inside may raise DecodeInterrupted when `interrupt()` is called."""
        self._abort_flag[0] = 0
        self.interruptible = True
        try:
            yield
        finally:
            self.interruptible = False

    # --- feeding --------------------------------------------------------------------------------

    def _ensure_room(self, n: int) -> None:
        if self.cache.n_past + n > self.n_ctx:
            raise DecoderError(
                f"the decoder context holds {self.n_ctx} positions but {self.cache.n_past + n} are needed; "
                "shorten the audio piece or the context text"
            )

    def _decode(self, batch: _Batch) -> None:
        """Decode a batch starting at cache.n_past. An interrupted decode leaves the cache as it was; one that
        was not meant to be interruptible (an interrupt raced with its start) is run again."""
        while True:
            rc = self._ll.llama_decode(self._ctx, batch.batch)
            if rc != 2:
                break
            self.cache.discard_unfinished()
            self._abort_flag[0] = 0
            if self.interruptible:
                raise DecodeInterrupted("decode interrupted")
        if rc != 0:
            raise DecoderError(f"llama_decode failed (code {rc}); the decoder model may be corrupt")

    def feed_tokens(self, ids, want_logits: bool = True) -> np.ndarray | None:
        """Append token ids at cache.n_past; returns the logits of the last one if `want_logits`."""
        cache = self.cache
        ids = list(ids)
        ids = ids[cache.settle(ids, want_logits) :]
        if not ids:
            return self.logits() if want_logits else None
        self._ensure_room(len(ids))
        for start in range(0, len(ids), self.n_batch):
            part = ids[start : start + self.n_batch]
            last = start + len(part) == len(ids)
            self._token_batch.fill(cache.n_past, len(part), want_logits and last, token_ids=part)
            self._decode(self._token_batch)
            cache.advance(len(part), part)
        return self.logits() if want_logits else None

    def _table(self):
        if self._token_table is ...:
            self._token_table = open_token_table(self._path)
        return self._token_table

    def feed_prompt(self, before_ids, embeds: np.ndarray, after_ids, want_logits: bool = True) -> np.ndarray | None:
        """Append text ids, audio embeddings, text ids; returns the logits of the last position. One decode
        when the token table is readable (the text as its embedding rows: a small decode costs a whole pass
        over the weights, ~1 generated token); a head cached since reset() is kept as with feed_tokens."""
        table = self._table()
        if table is None:
            self.feed_tokens(before_ids, want_logits=False)
            self.feed_embeddings(embeds)
            return self.feed_tokens(after_ids, want_logits)
        head = list(before_ids)
        head = head[self.cache.settle(head) :]
        start = self.cache.n_past
        rows = [table.rows(head)] if head else []
        rows += [np.asarray(embeds, dtype=np.float32), table.rows(list(after_ids))]
        logits = self.feed_embeddings(np.concatenate(rows), want_logits)
        self.cache.note_tokens(start, head)  # reusable after reset() as if fed as tokens
        return logits

    def feed_embeddings(self, embeds: np.ndarray, want_logits: bool = False) -> np.ndarray | None:
        """Append float embeddings [n, n_embd] (audio) at cache.n_past."""
        embeds = np.asarray(embeds, dtype=np.float32)
        if embeds.ndim != 2 or embeds.shape[1] != self.n_embd:
            raise DecoderError(
                f"audio embeddings have shape {embeds.shape}, the decoder needs [n, {self.n_embd}]; "
                "the encoder and decoder files do not belong together — re-convert the model"
            )
        n = embeds.shape[0]
        if n == 0:
            return self.logits() if want_logits else None
        cache = self.cache
        cache.settle()
        self._ensure_room(n)
        for start in range(0, n, self.n_batch):
            part = embeds[start : start + self.n_batch]
            last = start + part.shape[0] == n
            self._embd_batch.fill(cache.n_past, part.shape[0], want_logits and last, embeds=part)
            self._decode(self._embd_batch)
            cache.advance(part.shape[0])
        return self.logits() if want_logits else None

    def feed_embeddings_rows(self, embeds: np.ndarray, rows) -> np.ndarray:
        """Append embeddings [n, n_embd] at cache.n_past in one pass and return the logits at `rows` (ascending
        indices into `embeds`) as float32 [len(rows), n_vocab]: the forced aligner's single forward."""
        embeds = np.asarray(embeds, dtype=np.float32)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.n_vocab), dtype=np.float32)
        cache = self.cache
        cache.settle()
        self._ensure_room(embeds.shape[0])
        done = 0
        for start in range(0, embeds.shape[0], self.n_batch):
            part = embeds[start : start + self.n_batch]
            mine = rows[(rows >= start) & (rows < start + part.shape[0])] - start
            self._embd_batch.fill(cache.n_past, part.shape[0], False, embeds=part)
            self._embd_batch.want_logits(mine)
            self._decode(self._embd_batch)
            cache.advance(part.shape[0])
            for i in mine:
                out[done] = self.logits_view(int(i))
                done += 1
        return out

    def feed_tokens_argmax(self, ids, first: int = 0) -> list[int]:
        """Append token ids in one pass and return the greedy next token after each of ids[first:].

        Used to verify a draft (the previous streaming hypothesis) in one batched decode: the i-th
        result is what greedy decoding would generate after ids[:first + i + 1].
        """
        ids = list(ids)
        if not ids:
            return []
        cache = self.cache
        cache.settle()
        self._ensure_room(len(ids))
        best: list[int] = []
        for start in range(0, len(ids), self.n_batch):
            part = ids[start : start + self.n_batch]
            self._token_batch.fill(cache.n_past, len(part), False, token_ids=part)
            wanted = range(max(0, first - start), len(part))
            self._token_batch.want_logits(slice(wanted.start, wanted.stop))
            self._decode(self._token_batch)
            cache.advance(len(part), part)
            best.extend(self.argmax(i) for i in wanted)
        return best

    def feed_embeddings_tokens_argmax(self, embeds: np.ndarray, ids, first: int = 0) -> list[int]:
        """feed_embeddings(embeds) then feed_tokens_argmax(ids, first), in one decode where the token table
        allows it (the ids as their embedding rows): a streaming final's new audio, prompt tail and draft."""
        embeds = np.asarray(embeds, dtype=np.float32).reshape(-1, self.n_embd)
        ids = list(ids)
        table = self._table()
        if table is None or not ids or len(embeds) + len(ids) > self.n_batch:
            self.feed_embeddings(embeds)
            return self.feed_tokens_argmax(ids, first)
        n = len(embeds)
        cache = self.cache
        cache.settle()
        self._ensure_room(n + len(ids))
        self._embd_batch.fill(cache.n_past, n + len(ids), False, embeds=np.concatenate([embeds, table.rows(ids)]))
        self._embd_batch.want_logits(slice(n + first, n + len(ids)))
        self._decode(self._embd_batch)
        cache.advance(n + len(ids))
        return [self.argmax(i) for i in range(n + first, n + len(ids))]

    def step(self, token: int) -> int:
        """Feed one token, return the greedy next one (the logits are read in place, never copied)."""
        cache = self.cache
        cache.settle()
        self._ensure_room(1)
        self._token_batch.fill(cache.n_past, 1, True, token_ids=(token,))
        self._decode(self._token_batch)
        cache.advance(1, (token,))
        return self.argmax(0)

    def logits_view(self, i: int = -1) -> np.ndarray:
        """Logits of output row `i` of the last decode (-1: the last one), float32 [n_vocab], a view of
        llama.cpp's buffer: valid until the next decode."""
        ptr = self._ll.llama_get_logits_ith(self._ctx, i)
        if not ptr:
            raise DecoderError("no logits available: feed at least one position with logits first")
        return np.ctypeslib.as_array(ctypes.cast(ptr, self._logits_row_type).contents)

    def logits(self) -> np.ndarray:
        """Logits of the last position decoded with logits requested, float32 [n_vocab] (a copy)."""
        return self.logits_view().copy()

    def argmax(self, i: int = -1) -> int:
        """The greedy next token after output row `i` of the last decode (no copy of the logits)."""
        return int(self.logits_view(i).argmax())
