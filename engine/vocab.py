"""The decoder model's vocabulary through llama.cpp: text → token ids, token ids → bytes and text."""

from __future__ import annotations

import ctypes

from qasr.engine.llama_runtime import is_added_token, tokenize
from qasr.engine.output import complete_utf8_prefix
from qasr.errors import QasrError


class VocabError(QasrError):
    """Text cannot be tokenized."""


class Vocab:
    def __init__(self, llama_cpp, vocab):
        self._ll = llama_cpp
        self._vocab = vocab  # llama_vocab*, owned by the model
        self.n_tokens = int(llama_cpp.llama_vocab_n_tokens(vocab))
        self._piece_cache: dict[tuple[int, bool], bytes] = {}
        self._speech: dict[int, bytes] = {}

    def tokenize(self, text: str, parse_special: bool = True) -> list[int]:
        ids = tokenize(self._vocab, text, parse_special)
        if ids is None:
            raise VocabError("tokenization failed")
        return ids

    def token_bytes(self, token: int, render_control: bool = False) -> bytes:
        """Raw bytes of one token; may be part of a UTF-8 character.

        Control tokens (<|im_start|>, <|audio_pad|> ...) give b"" unless `render_control`, as the
        official decode with skip_special_tokens=True; user-defined ones such as <asr_text> always
        render, which the output parser relies on.
        """
        key = (int(token), bool(render_control))
        cached = self._piece_cache.get(key)
        if cached is not None:
            return cached
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._ll.llama_token_to_piece(self._vocab, int(token), buf, size, 0, render_control)
            if n >= 0:
                piece = buf.raw[:n]
                break
            size = -n
        self._piece_cache[key] = piece
        return piece

    def speech_bytes(self, token: int) -> bytes:
        """A token's bytes as transcript text: b"" for the model's markers (`llama_runtime.is_added_token`)."""
        token = int(token)
        if token not in self._speech:
            self._speech[token] = b"" if is_added_token(self._vocab, token) else self.token_bytes(token)
        return self._speech[token]

    def detokenize(self, ids, render_control: bool = False) -> str:
        return b"".join(self.token_bytes(t, render_control) for t in ids).decode("utf-8", errors="replace")

    def text_stream(self) -> "TokenTextStream":
        return TokenTextStream(self)


class TokenTextStream:
    """Token ids in, text out; holds back bytes of a UTF-8 character split across tokens."""

    def __init__(self, vocab: Vocab):
        self._vocab = vocab
        self._pending = b""

    def push(self, token: int) -> str:
        data = self._pending + self._vocab.token_bytes(token)
        cut = len(complete_utf8_prefix(data))
        self._pending = data[cut:]
        return data[:cut].decode("utf-8", errors="replace")

    def flush(self) -> str:
        data, self._pending = self._pending, b""
        return data.decode("utf-8", errors="replace")
