"""The official Qwen3-ASR code (qwen-asr 0.0.6, transformers backend) as a test reference.

CPU, float32. Every method follows the path the official ``Qwen3ASRModel.transcribe()`` takes
for one clip, with these deliberate, documented differences:

- Stop ids: the official ``generate()`` hard-codes [151645, 151643]; here the checkpoint's own
  ``<|im_end|>`` and ``<|endoftext|>`` ids are passed (identical for the real checkpoints,
  necessary for random ones whose ids differ).
- Pre-tokenizer: transformers 4.57.6 can swap the Qwen2 split regex for Mistral's when it loads
  a local folder (``fix_mistral_regex``); the reference always restores the Qwen2 rule, which is
  what llama.cpp's ``qwen2`` pre-tokenizer and the upstream hub tokenizer use.
- Windowing: the official CPU (sdpa/eager) audio encoder never applies its window mask, so clips
  over 8 s get full attention. ``windowed=True`` (the default everywhere here) patches the encoder
  to attend within 104-token windows, as the model was trained and as qasr runs;
  ``windowed=False`` is the raw official CPU behaviour. For clips <= 8 s both are identical.

Audio preprocessing, as ``transcribe()``: the clip is normalised like
``qwen_asr.inference.utils.float_range_normalize`` (divided by its peak only if the peak exceeds
1, then clipped to [-1, 1]); a single clip is NOT padded to 0.5 s (that minimum applies only to
the pieces of a long file split by ``split_audio_into_chunks``, which leaves clips under 1200 s
alone). The Whisper feature extractor then computes the log-mel with ``padding=True`` (longest,
i.e. none for one clip) and ``truncation=False``.

Never imported by qasr's runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qasr.daemon.bench.random_checkpoint import import_official_qwen_asr
from qasr.daemon.bench.random_tokenizer import QWEN2_PRETOKENIZE_REGEX

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class StepScore:
    token: int  # the greedy choice
    top1: float  # its raw logit
    second: int  # the runner-up token
    top2: float  # the runner-up's raw logit

    @property
    def gap(self) -> float:
        return self.top1 - self.top2


@dataclass(frozen=True)
class ScoredGeneration:
    ids: list[int]  # generated ids, stop token excluded
    steps: list[StepScore]  # one per generated id (the stop step included when it stopped)
    stopped: bool  # ended with a stop token (not max_new_tokens)

    def min_gap(self) -> float:
        return min((s.gap for s in self.steps), default=float("inf"))


def restore_qwen2_pretokenizer(tokenizer) -> None:
    """See the module doc: the Qwen2 split rule, not the Mistral one transformers may swap in."""
    from tokenizers import Regex, pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])


def patch_window_mask(tower, windowed) -> None:
    """Give every audio attention layer the block-diagonal window mask the CPU path omits, while
    `windowed()` is true."""
    for layer in tower.layers:
        attention = layer.self_attn
        original = attention.forward

        def forward(hidden_states, cu_seqlens=None, attention_mask=None, _original=original, **kwargs):
            if windowed() and attention_mask is None and cu_seqlens is not None and len(cu_seqlens) > 2:
                attention_mask = tower._prepare_attention_mask(hidden_states, cu_seqlens)
            return _original(hidden_states, cu_seqlens=cu_seqlens, attention_mask=attention_mask, **kwargs)

        attention.forward = forward


class OfficialReference:
    """The official qwen-asr transformers model and processor loaded from a HF checkpoint folder."""

    def __init__(self, hf_dir: str | Path, *, attn_implementation: str | None = None) -> None:
        import torch

        qwen_asr = import_official_qwen_asr()
        from qwen_asr.inference import utils as official_utils

        kwargs: dict[str, Any] = {"dtype": torch.float32}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        self.hf_dir = Path(hf_dir)
        self.asr = qwen_asr.Qwen3ASRModel.from_pretrained(str(hf_dir), max_new_tokens=512, **kwargs)
        self.model = self.asr.model.eval()
        self.processor = self.asr.processor
        self.tokenizer = self.processor.tokenizer
        self.utils = official_utils
        self._restore_qwen2_pretokenizer()

        vocab = self.tokenizer.get_vocab()
        self.im_end_id = vocab["<|im_end|>"]
        self.endoftext_id = vocab["<|endoftext|>"]
        self.stop_ids = [self.im_end_id, self.endoftext_id]
        self.audio_token_id = vocab["<|audio_pad|>"]
        self.asr_text_id = vocab["<asr_text>"]
        self.audio_tower = self.model.thinker.audio_tower
        audio_cfg = self.audio_tower.config
        self.window_tokens = 13 * (audio_cfg.n_window_infer // (2 * audio_cfg.n_window))
        self._windowed = True
        self._patch_audio_attention()

    # ------------------------------------------------------------------ setup

    def _restore_qwen2_pretokenizer(self) -> None:
        restore_qwen2_pretokenizer(self.tokenizer)

    def _patch_audio_attention(self) -> None:
        patch_window_mask(self.audio_tower, lambda: self._windowed)

    # ------------------------------------------------------------------ audio

    def normalize_audio(self, audio: np.ndarray) -> np.ndarray:
        """The official transcribe() preprocessing of a 16 kHz mono float clip."""
        wav = np.asarray(audio, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError("audio must be mono (1-D)")
        return self.utils.float_range_normalize(wav)

    def _processor_inputs(self, audio: np.ndarray, language: str | None, context: str) -> Any:
        import torch

        wav = self.normalize_audio(audio)
        text = self.asr._build_text_prompt(context=context, force_language=self._language(language))
        inputs = self.processor(text=[text], audio=[wav], return_tensors="pt", padding=True)
        return inputs.to(torch.device("cpu")).to(torch.float32)

    def features(self, audio: np.ndarray) -> np.ndarray:
        """Log-mel features [num_mel_bins, T] as the official transcribe() path computes them."""
        wav = self.normalize_audio(audio)
        out = self.processor.feature_extractor(
            [wav], sampling_rate=SAMPLE_RATE, padding=True, truncation=False,
            return_attention_mask=True, return_tensors="np",
        )
        n = int(out["attention_mask"][0].sum())
        return np.ascontiguousarray(out["input_features"][0][:, :n], dtype=np.float32)

    def encode_features(self, features: np.ndarray, windowed: bool = True) -> np.ndarray:
        """Audio tower output [N, output_dim] for log-mel features [num_mel_bins, T]."""
        import torch

        feats = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        self._windowed = windowed
        try:
            with torch.no_grad():
                out = self.model.thinker.get_audio_features(
                    feats[None], feature_attention_mask=torch.ones(1, feats.shape[1], dtype=torch.long)
                )
        finally:
            self._windowed = True
        return out.detach().numpy().astype(np.float32)

    def encode(self, audio: np.ndarray, windowed: bool = True) -> np.ndarray:
        """Official audio tower output [N, output_dim] for a clip (see the module doc on windowing)."""
        return self.encode_features(self.features(audio), windowed=windowed)

    def n_audio_tokens(self, n_frames: int) -> int:
        """Audio tokens for n mel frames (the official length formula)."""
        rem = n_frames % 100
        feat = (rem - 1) // 2 + 1
        return int(((feat - 1) // 2 + 1 - 1) // 2 + 1 + (n_frames // 100) * 13)

    # ------------------------------------------------------------------ prompt

    def _language(self, language: str | None) -> str | None:
        if language is None or str(language).strip() == "":
            return None
        name = self.utils.normalize_language_name(str(language))
        self.utils.validate_language(name)
        return name

    def prompt_text(self, language: str | None = None, context: str = "") -> str:
        """The official prompt string, with one <|audio_pad|> standing for the audio."""
        return self.asr._build_text_prompt(context=context, force_language=self._language(language))

    def prompt_ids(self, n_audio_tokens: int, language: str | None = None, context: str = "") -> list[int]:
        """The exact official prompt token ids for n audio tokens."""
        text = self.processor.replace_multimodal_special_tokens(
            [self.prompt_text(language, context)], iter([n_audio_tokens])
        )[0]
        return list(self.tokenizer(text, padding=False)["input_ids"])

    # ------------------------------------------------------------------ generation

    def _generate(self, audio: np.ndarray, language: str | None, context: str, max_new_tokens: int,
                  windowed: bool, scores: bool) -> tuple[list[int], Any]:
        inputs = self._processor_inputs(audio, language, context)
        self._windowed = windowed
        try:
            out = self.model.generate(
                **inputs, max_new_tokens=max_new_tokens, eos_token_id=self.stop_ids,
                pad_token_id=self.endoftext_id, do_sample=False,
                output_logits=scores,
            )
        finally:
            self._windowed = True
        seq = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
        return seq, out

    def generate(self, audio: np.ndarray, language: str | None = None, context: str = "",
                 max_new_tokens: int = 64, windowed: bool = True) -> list[int]:
        """Official greedy generation: every generated id (header included), stop token excluded."""
        seq, _ = self._generate(audio, language, context, max_new_tokens, windowed, scores=False)
        return self._strip_stop(seq)

    def generate_with_scores(self, audio: np.ndarray, language: str | None = None, context: str = "",
                             max_new_tokens: int = 64, windowed: bool = True) -> ScoredGeneration:
        """Like generate(), with each step's top-1/top-2 raw logits (to diagnose near-ties)."""
        import torch

        seq, out = self._generate(audio, language, context, max_new_tokens, windowed, scores=True)
        steps = []
        for token, logits in zip(seq, out.logits):
            values, indices = torch.topk(logits[0].float(), 2)
            steps.append(StepScore(token=int(token), top1=float(values[0]), second=int(indices[1]),
                                   top2=float(values[1])))
        ids = self._strip_stop(seq)
        return ScoredGeneration(ids=ids, steps=steps, stopped=len(ids) < len(seq))

    def _strip_stop(self, seq: list[int]) -> list[int]:
        for i, token in enumerate(seq):
            if token in self.stop_ids:
                return seq[:i]
        return seq

    def next_token_logits(self, prompt_ids: list[int], audio_embeds: np.ndarray) -> np.ndarray:
        """Raw logits [len(prompt_ids), vocab] of the text model for a prompt whose audio
        placeholders are replaced by ``audio_embeds`` (for step-by-step comparisons)."""
        import torch

        ids = torch.tensor([prompt_ids], dtype=torch.long)
        thinker = self.model.thinker
        with torch.no_grad():
            embeds = thinker.get_input_embeddings()(ids)
            mask = (ids == self.audio_token_id)[..., None].expand_as(embeds)
            embeds = embeds.masked_scatter(mask, torch.from_numpy(np.asarray(audio_embeds, dtype=np.float32)))
            out = thinker(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), use_cache=False)
        return out.logits[0].detach().numpy().astype(np.float32)

    # ------------------------------------------------------------------ text

    def decode(self, ids: list[int]) -> str:
        """Decode as the official transcribe() does (special tokens skipped, no clean-up)."""
        return self.processor.batch_decode([ids], skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]

    def parse(self, ids: list[int], language: str | None = None) -> tuple[str, str]:
        """(language, text) by the official parser from generated ids."""
        return self.utils.parse_asr_output(self.decode(ids), user_language=self._language(language))

    def safe_parse(self, ids: list[int], language: str | None = None) -> tuple[str, str]:
        """`parse` made safe to type, as qasr renders a transcript (engine/output.transcript_of_ids): the
        model's markers (every added token but the <asr_text> that ends the header) left out, then no
        control character or U+FFFD (engine/safe_text). Equal to `parse` where that has none of them."""
        from qasr.engine.safe_text import safe_text

        markers = set(self.tokenizer.added_tokens_decoder)
        tag = self.tokenizer.convert_tokens_to_ids("<asr_text>")
        header_end = ids.index(tag) if tag in ids and not language else -1
        kept = [t for i, t in enumerate(ids) if t not in markers or i == header_end]
        lang, text = self.parse(kept, language)
        return safe_text(lang).strip(), safe_text(text).strip()

    def transcribe(self, audio: np.ndarray, language: str | None = None, context: str = "",
                   max_new_tokens: int = 64, windowed: bool = True) -> tuple[str, str]:
        """(language, text) for one clip, as the official transcribe() returns them."""
        return self.parse(self.generate(audio, language, context, max_new_tokens, windowed), language)

    def official_transcribe(self, audio: np.ndarray, language: str | None = None, context: str = "",
                            max_new_tokens: int = 64, windowed: bool = True) -> tuple[str, str]:
        """The unmodified official ``Qwen3ASRModel.transcribe()`` (its hard-coded stop ids
        included, so on a random checkpoint it only stops at ``max_new_tokens``)."""
        previous, self.asr.max_new_tokens = self.asr.max_new_tokens, max_new_tokens
        self._windowed = windowed
        try:
            result = self.asr.transcribe((np.asarray(audio, dtype=np.float32), SAMPLE_RATE),
                                         context=context, language=language)[0]
        finally:
            self.asr.max_new_tokens = previous
            self._windowed = True
        return result.language, result.text
