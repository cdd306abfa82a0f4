"""Offline transcription: audio -> pieces of <= 30 s -> features -> encoder -> decoder -> text.

    transcriber = Transcriber(bundle_dir, TranscribeOptions(language="English"))
    for segment in transcriber.segments(audio):      # a generator, one piece at a time
        print(segment.start_s, segment.text)
    result = transcriber.transcribe_file("talk.flac")  # everything at once

Behaviour worth knowing:
- Clips shorter than `min_audio_s` (0.5 s) are zero-padded to it before the features, as the official
  code pads the short pieces of a split file and as transformers' own feature extractor does. The
  official `transcribe()` does not pad a lone short clip (a 0.3 s clip gives 4 audio tokens); set
  `min_audio_s=0` to reproduce that.
- A piece whose loudest 30 ms is below -60 dBFS is not decoded (see `segmentation.is_silent`).
- Generation stops at a stop token, at `new_token_cap` (10 tokens per second of audio + 16, or the
  user's --max-new-tokens if smaller), or at a repetition loop (`output.find_loop`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from qasr.engine import output as out
from qasr.engine.audio import load_audio
from qasr.engine.bundle import Bundle, load_bundle
from qasr.engine.decoder import Decoder, DecoderOptions
from qasr.engine.device import resolve_device
from qasr.engine.encoder import EncoderOptions, EncoderRunner, chunk_tokens
from qasr.engine.features import log_mel_features
from qasr.engine.greedy import Hypothesis, Prefill, TokenRules, decode_greedy
from qasr.engine.prompt import Prompt, build_prompt, resolve_language
from qasr.engine.segmentation import SegmentationOptions, cut_points, is_silent
from qasr.errors import QasrError

# Prompt tokens around the audio besides the context: system/user/assistant scaffolding (~16) and a
# forced language header (~8); rounded up generously.
PROMPT_OVERHEAD_TOKENS = 48


@dataclass(frozen=True)
class TranscribeOptions:
    language: str | None = None  # None: the model detects it
    context: str = ""  # hotwords, names, topic: goes into the system turn
    max_new_tokens: int | None = None  # per piece; the audio-length cap applies too
    threads: int = 0  # CPU threads for encoder and decoder; 0 = physical cores (encoder.default_threads)
    device: str = "cpu"  # "auto", "cpu", "cuda" or "vulkan" (engine.device); a missing GPU falls back to the CPU
    max_piece_s: float = 30.0  # long audio is cut at quiet points into pieces at most this long
    min_audio_s: float = 0.5  # shorter pieces are zero-padded to this length
    silence_gate: bool = True  # skip pieces quieter than -60 dBFS
    loop_guard: bool = True  # stop repetition loops
    verify: str = "size"  # bundle verification: "none", "size" or "sha256"
    context_reserve_bytes: int = 0  # size the decoder for contexts up to this long, set later by set_prompt


@dataclass
class Segment:
    index: int
    start_s: float
    end_s: float
    language: str
    text: str
    token_ids: list[int]  # every generated id incl. the language header, excluding the stop token
    stop_reason: str  # "stop", "max_tokens", "loop", "silence" or "empty"
    audio_s: float
    elapsed_s: float
    encoder_ms: float = 0.0  # features + encoder
    prefill_ms: float = 0.0  # prompt and audio embeddings through the decoder
    decode_ms: float = 0.0  # token-by-token generation
    n_tokens: int = 0
    words: list | None = None  # AlignedWord(word, start, end) in the file's seconds, once aligned (align.segments)

    @property
    def rtf(self) -> float:
        return self.elapsed_s / self.audio_s if self.audio_s > 0 else 0.0


@dataclass
class TranscriptionResult:
    language: str  # comma-joined when pieces differ ("Chinese,English"); "" if silent
    text: str
    token_ids: list[int]
    audio_s: float
    elapsed_s: float
    encoder_ms: float
    prefill_ms: float
    decode_ms: float
    n_tokens: int
    segments: list[Segment] = field(default_factory=list)

    @property
    def rtf(self) -> float:
        return self.elapsed_s / self.audio_s if self.audio_s > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rtf"] = self.rtf
        for seg, seg_data in zip(self.segments, data["segments"]):
            seg_data["rtf"] = seg.rtf
            if seg.words is None:  # not aligned: no "words" key at all
                del seg_data["words"]
        return data


def normalize_waveform(audio: np.ndarray) -> np.ndarray:
    """Mono float32; scaled down only if it exceeds full scale (as the official loader does)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak > 1.0:
        audio = audio / peak
    return audio


def merge_languages(languages: list[str]) -> str:
    merged: list[str] = []
    for lang in languages:
        if lang and (not merged or merged[-1] != lang):
            merged.append(lang)
    return ",".join(merged)


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return 0x3000 <= code <= 0x9FFF or 0xAC00 <= code <= 0xD7AF or 0xF900 <= code <= 0xFAFF or 0xFF00 <= code <= 0xFFEF


def join_texts(texts: list[str]) -> str:
    """Join piece texts; a space between two pieces unless either side is CJK or already spaced."""
    joined = ""
    for text in texts:
        if not text:
            continue
        if joined and not joined[-1].isspace() and not text[0].isspace():
            if not (_is_cjk(joined[-1]) or _is_cjk(text[0])):
                joined += " "
        joined += text
    return joined


class Transcriber:
    def __init__(self, bundle_dir: str | Path | Bundle, options: TranscribeOptions = TranscribeOptions()):
        self.bundle = bundle_dir if isinstance(bundle_dir, Bundle) else load_bundle(bundle_dir, verify=options.verify)
        manifest = self.bundle.manifest
        if manifest.is_aligner:
            from qasr.engine.bundle import BundleError

            raise BundleError(
                f"{self.bundle.root} is a forced aligner (word timestamps), not a speech recognizer; "
                "pass a Qwen3-ASR model (`qasr-daemon models pull 0.6b`)"
            )
        self.options = options
        self.language = resolve_language(options.language, manifest.languages)
        self.feature_params = manifest.audio
        self.stop_ids = frozenset(manifest.stop_token_ids)
        self.device = resolve_device(options.device)
        self.encoder = EncoderRunner.from_bundle(
            self.bundle, EncoderOptions(threads=options.threads, providers=self.device.encoder_providers)
        )
        self.decoder = Decoder(
            self.bundle.path("decoder"),
            DecoderOptions(
                n_ctx=self._context_size(),
                threads=options.threads,
                kv_f32=manifest.files["decoder"].precision == "f32",
                n_gpu_layers=self.device.decoder_gpu_layers,
            ),
        )
        if self.decoder.n_embd != manifest.audio.output_dim:
            raise out_of_sync_error(self.bundle, self.decoder.n_embd, manifest.audio.output_dim)

    def _context_size(self) -> int:
        a = self.bundle.manifest.audio
        piece_frames = int(np.ceil(max(self.options.max_piece_s, self.options.min_audio_s) * a.sample_rate)) // a.hop_length
        audio_tokens = chunk_tokens(piece_frames, a.chunk_frames, a.tokens_per_chunk)
        # a BPE token covers >= 1 byte
        context_tokens = max(len(self.options.context.encode("utf-8")), self.options.context_reserve_bytes)
        new_tokens = out.new_token_cap(self.options.max_piece_s, self.options.max_new_tokens)
        need = audio_tokens + context_tokens + new_tokens + PROMPT_OVERHEAD_TOKENS
        return int(-(-need // 256) * 256)

    def warm_up(self) -> None:
        """Run encoder and decoder once on one second of zeros, so the first real request does not
        pay for lazy set-up (onnxruntime arenas, llama.cpp buffers). Leaves the KV cache empty."""
        a = self.bundle.manifest.audio
        embeds = self.encoder.encode(np.zeros((a.num_mel_bins, a.chunk_frames), dtype=np.float32))
        self.prefill(embeds)
        self.decoder.cache.reset()

    def set_prompt(self, language: str | None, context: str, max_new_tokens: int | None = None) -> None:
        """Language and context for the next transcriptions (e.g. per utterance in the daemon)."""
        limit = max(len(self.options.context.encode("utf-8")), self.options.context_reserve_bytes)
        if len(context.encode("utf-8")) > limit:
            raise QasrError(f"the context is longer than {limit} bytes; shorten it")
        self.language = resolve_language(language, self.bundle.manifest.languages)
        self.options = replace(self.options, language=language, context=context, max_new_tokens=max_new_tokens,
                               context_reserve_bytes=limit)

    def close(self) -> None:
        self.decoder.close()

    def __enter__(self) -> "Transcriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- building blocks (also used by tests and benchmarks) -----------------------------------

    def features(self, audio: np.ndarray) -> np.ndarray:
        return log_mel_features(audio, self.feature_params)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        """16 kHz mono audio (already padded to the minimum) -> audio embeddings [N, output_dim]."""
        return self.encoder.encode(self.features(audio))

    def prompt(self, n_audio: int) -> Prompt:
        return build_prompt(self.decoder.vocab.tokenize, n_audio, self.options.context, self.language)

    def prefill(self, embeds: np.ndarray) -> np.ndarray:
        """Reset the decoder and feed the whole prompt (one decode: Decoder.feed_prompt); returns the logits
        for the first new token (a copy)."""
        prompt = self.prompt(embeds.shape[0])
        self.decoder.cache.reset()
        return self.decoder.feed_prompt(prompt.before_ids, embeds, prompt.after_ids)

    def generate(self, embeds: np.ndarray, max_new_tokens: int) -> Hypothesis:
        """Greedy decoding after the whole prompt (greedy.decode_greedy without a draft)."""
        t0 = time.perf_counter()
        prompt = self.prompt(embeds.shape[0])
        rules = TokenRules(max_new_tokens, self.stop_ids, self.options.loop_guard)
        prefill = Prefill(head=prompt.before_ids, audio=embeds, tail=prompt.after_ids)
        t1 = time.perf_counter()
        hyp = decode_greedy(self.decoder, prefill, rules)
        hyp.prefill_ms += (t1 - t0) * 1000.0
        return hyp

    # --- transcription --------------------------------------------------------------------------

    def transcribe_piece(self, audio: np.ndarray, index: int = 0, start_s: float = 0.0) -> Segment:
        started = time.perf_counter()
        rate = self.feature_params.sample_rate
        audio = np.asarray(audio, dtype=np.float32)
        audio_s = audio.shape[0] / rate
        segment = Segment(
            index=index, start_s=start_s, end_s=start_s + audio_s, language="", text="", token_ids=[],
            stop_reason="empty", audio_s=audio_s, elapsed_s=0.0,
        )
        if audio.size == 0 or (self.options.silence_gate and is_silent(audio, rate)):
            segment.stop_reason = "empty" if audio.size == 0 else "silence"
            segment.language = self.language or ""
            segment.elapsed_s = time.perf_counter() - started
            return segment
        min_len = int(round(self.options.min_audio_s * rate))
        if audio.shape[0] < min_len:
            audio = np.pad(audio, (0, min_len - audio.shape[0]))
        t0 = time.perf_counter()
        embeds = self.encode(audio)
        segment.encoder_ms = (time.perf_counter() - t0) * 1000.0
        cap = out.new_token_cap(audio.shape[0] / rate, self.options.max_new_tokens)
        hyp = self.generate(embeds, cap)
        parsed = out.transcript_of_ids(hyp.visible, self.decoder.vocab.speech_bytes, self.bundle.manifest.tokens["asr_text"],
                                       self.language)
        segment.language, segment.text = parsed.language, parsed.text
        segment.prefill_ms, segment.decode_ms = hyp.prefill_ms, hyp.decode_ms
        segment.token_ids = hyp.ids
        segment.stop_reason = hyp.stop_reason
        segment.n_tokens = len(hyp.ids)
        segment.elapsed_s = time.perf_counter() - started
        return segment

    def segments(self, audio: np.ndarray) -> Iterator[Segment]:
        """Cut `audio` (16 kHz mono) at quiet points and transcribe the pieces one by one."""
        audio = normalize_waveform(audio)
        rate = self.feature_params.sample_rate
        seg_opts = SegmentationOptions(max_piece_s=self.options.max_piece_s, sample_rate=rate)
        for index, piece in enumerate(cut_points(audio, seg_opts)):
            yield self.transcribe_piece(audio[piece.start : piece.end], index, piece.start / rate)

    def transcribe(self, audio: np.ndarray) -> TranscriptionResult:
        started = time.perf_counter()
        audio = normalize_waveform(audio)
        segments = list(self.segments(audio))
        return TranscriptionResult(
            language=merge_languages([s.language for s in segments]),
            text=join_texts([s.text for s in segments]),
            token_ids=[t for s in segments for t in s.token_ids],
            audio_s=audio.shape[0] / self.feature_params.sample_rate,
            elapsed_s=time.perf_counter() - started,
            encoder_ms=sum(s.encoder_ms for s in segments),
            prefill_ms=sum(s.prefill_ms for s in segments),
            decode_ms=sum(s.decode_ms for s in segments),
            n_tokens=sum(s.n_tokens for s in segments),
            segments=segments,
        )

    def transcribe_file(self, path: str | Path) -> TranscriptionResult:
        return self.transcribe(load_audio(path, self.feature_params.sample_rate))


def out_of_sync_error(bundle: Bundle, n_embd: int, output_dim: int):
    from qasr.engine.bundle import BundleError

    return BundleError(
        f"{bundle.root}: the decoder's embedding size ({n_embd}) differs from the encoder output size "
        f"({output_dim}) in the manifest; the files do not belong together — re-convert the model"
    )
