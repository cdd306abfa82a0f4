"""Tokenize with a vocabulary-only GGUF (llama.cpp loads no tensors): the forced aligner's tokenizer."""

from __future__ import annotations

from pathlib import Path

from qasr.engine.llama_runtime import install_log_callback, last_error_line, tokenize
from qasr.errors import QasrError


class VocabularyError(QasrError):
    """The tokenizer file cannot be loaded."""


class Vocabulary:
    def __init__(self, gguf_path: str | Path):
        import llama_cpp

        self._ll = llama_cpp
        install_log_callback()
        path = Path(gguf_path)
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), params)
        if not self._model:
            why = last_error_line()
            raise VocabularyError(f"cannot load the tokenizer {path}{f' ({why})' if why else ''}; re-pull or re-convert the model")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_tokens = int(llama_cpp.llama_vocab_n_tokens(self._vocab))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain text (special-token text is not parsed: a word is only ever text)."""
        ids = tokenize(self._vocab, text, parse_special=False)
        if ids is None:
            raise VocabularyError(f"tokenization of {len(text.encode('utf-8'))} bytes failed")
        return ids

    def close(self) -> None:
        if getattr(self, "_model", None):
            self._ll.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
