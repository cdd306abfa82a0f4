"""The Qwen3-ASR chat prompt, token for token as the official processor builds it.

    <|im_start|>system\\n{context}<|im_end|>\\n<|im_start|>user\\n<|audio_start|>{N audio embeddings}
    <|audio_end|><|im_end|>\\n<|im_start|>assistant\\n[language {Name}<asr_text>]

The text before and after the audio is tokenized separately; both cuts fall on special tokens, which
the tokenizer splits on anyway, so the ids equal those of tokenizing the whole string at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from qasr.errors import QasrError

ASR_TEXT_TAG = "<asr_text>"


class LanguageError(QasrError):
    exit_code = 2


def prompt_texts(context: str = "", language: str | None = None) -> tuple[str, str]:
    """(text before the audio embeddings, text after them)."""
    before = f"<|im_start|>system\n{context or ''}<|im_end|>\n<|im_start|>user\n<|audio_start|>"
    after = "<|audio_end|><|im_end|>\n<|im_start|>assistant\n"
    if language:
        after += f"language {language}{ASR_TEXT_TAG}"
    return before, after


@dataclass(frozen=True)
class Prompt:
    before_ids: list[int]  # up to and including <|audio_start|>
    n_audio: int  # audio embeddings between the two parts
    after_ids: list[int]  # from <|audio_end|> to the end (incl. a forced language header)

    @property
    def n_tokens(self) -> int:
        return len(self.before_ids) + self.n_audio + len(self.after_ids)

    def token_ids(self, audio_pad_id: int) -> list[int]:
        """The full prompt with <|audio_pad|> ids where the audio goes (what the official processor makes)."""
        return [*self.before_ids, *([audio_pad_id] * self.n_audio), *self.after_ids]


def build_prompt(
    tokenize: Callable[[str], list[int]], n_audio: int, context: str = "", language: str | None = None
) -> Prompt:
    """`tokenize` must parse special tokens (e.g. `Vocab.tokenize`)."""
    before, after = prompt_texts(context, language)
    return Prompt(before_ids=list(tokenize(before)), n_audio=int(n_audio), after_ids=list(tokenize(after)))


def resolve_language(name: str | None, languages: Sequence[str]) -> str | None:
    """Canonical language name from the bundle's list (case-insensitive); None/"" means detect."""
    if name is None or not str(name).strip():
        return None
    wanted = str(name).strip().lower()
    if wanted in ("auto", "none", "detect"):
        return None
    for lang in languages:
        if lang.lower() == wanted:
            return lang
    raise LanguageError(
        f"unknown language {name!r}; use one of: {', '.join(languages)} (or leave it out to detect)"
    )
