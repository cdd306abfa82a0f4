"""llama.cpp plumbing shared by every model run with it: its log routed through Python's logging (the last
lines kept to explain load failures), an abort callback that reads a flag byte, and a reusable batch."""

from __future__ import annotations

import ctypes
import logging
from collections import deque

import numpy as np

log = logging.getLogger("qasr.engine.decoder")


def flag_reader():
    """A C function usable as llama.cpp's abort callback that reads a flag byte without Python.

    The callback runs on llama.cpp's compute thread between graph nodes (~1000 times per decode); a
    Python callback would take the GIL each time and stall behind any other Python thread. libc's
    strlen(flag) is 1 when the first byte of the 2-byte flag buffer is set and 0 otherwise, which is
    exactly the bool the callback returns.
    """
    import llama_cpp

    libc = ctypes.CDLL(None)
    return llama_cpp.ggml_abort_callback(ctypes.cast(libc.strlen, ctypes.c_void_p).value)


# --- llama.cpp logging ---------------------------------------------------------------------------
# llama.cpp prints model-loading chatter to stderr. We route it through one kept ctypes callback (a
# collected callback would crash the process) and keep the last lines to explain load failures.
_RECENT_LOG: deque[str] = deque(maxlen=20)
_LOG_CALLBACK = None


def install_log_callback() -> None:
    """(Re)install our callback: other code (the quantizer) may have set its own in between."""
    global _LOG_CALLBACK
    import llama_cpp

    if _LOG_CALLBACK is not None:
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        return

    @llama_cpp.llama_log_callback
    def _callback(level, text, user_data):  # noqa: ARG001 - C signature
        try:
            line = text.decode("utf-8", errors="replace").rstrip()
        except Exception:  # never raise into C
            return
        if line:
            _RECENT_LOG.append(line)
            if level in (2, 3):  # WARN, ERROR
                log.debug("llama.cpp: %s", line)

    _LOG_CALLBACK = _callback
    llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()


def last_error_line() -> str:
    for line in reversed(_RECENT_LOG):
        if "error" in line.lower() or "failed" in line.lower() or "invalid" in line.lower():
            return line.strip()[:200]
    return ""


class Batch:
    """A reusable llama_batch for token ids or embeddings (sequence 0, set once), filled through numpy
    views of its C arrays (a Python loop over ctypes pointers cost ~4 ms for 130 audio positions)."""

    def __init__(self, capacity: int, n_embd: int):
        import llama_cpp

        self.capacity = capacity
        self.n_embd = n_embd
        self.batch = llama_cpp.llama_batch_init(capacity, n_embd, 1)
        self._free = llama_cpp.llama_batch_free
        b = self.batch
        self._pos = np.ctypeslib.as_array(b.pos, shape=(capacity,))
        self._logits = np.ctypeslib.as_array(b.logits, shape=(capacity,))
        np.ctypeslib.as_array(b.n_seq_id, shape=(capacity,))[:] = 1
        for i in range(capacity):
            b.seq_id[i][0] = 0
        if n_embd:
            self._embd = np.ctypeslib.as_array(b.embd, shape=(capacity, n_embd))
        else:
            self._token = np.ctypeslib.as_array(b.token, shape=(capacity,))

    def fill(self, start_pos: int, n: int, want_last_logits: bool, token_ids=None, embeds=None) -> None:
        b = self.batch
        b.n_tokens = n
        if n == 1 and token_ids is not None:  # a greedy step: plain ctypes stores beat numpy's slicing
            b.token[0] = int(token_ids[0])
            b.pos[0] = start_pos
            b.logits[0] = 1 if want_last_logits else 0
            return
        if token_ids is not None:
            self._token[:n] = token_ids
        else:
            self._embd[:n] = embeds
        self._pos[:n] = np.arange(start_pos, start_pos + n, dtype=np.int32)
        self._logits[:n] = 0
        if want_last_logits:
            self._logits[n - 1] = 1

    def want_logits(self, rows) -> None:
        self._logits[rows] = 1

    def close(self) -> None:
        if self.batch is not None:
            self._free(self.batch)
            self.batch = None


def tokenize(vocab, text: str, parse_special: bool) -> list[int] | None:
    """Token ids of `text` with a llama.cpp vocabulary (no BOS added); None if llama.cpp fails."""
    import llama_cpp

    data = text.encode("utf-8")
    cap = len(data) + 8
    buf = (llama_cpp.llama_token * cap)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, False, parse_special)
    if n < 0:  # buffer too small: -n is the size needed
        cap = -n
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, False, parse_special)
    return list(buf[:n]) if n >= 0 else None


def is_added_token(vocab, token: int) -> bool:
    """An added token (control or user-defined: <|im_end|>, <think>, <tool_call>, <asr_text>, [PAD…]): the
    model's own markup, never speech. Normal and byte tokens are text."""
    import llama_cpp

    text = llama_cpp.LLAMA_TOKEN_ATTR_NORMAL | llama_cpp.LLAMA_TOKEN_ATTR_BYTE
    return not int(llama_cpp.llama_vocab_get_attr(vocab, int(token))) & text
