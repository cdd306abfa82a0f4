"""Word timestamps from a Qwen3-ForcedAligner bundle: audio + known text in, (word, start, end) out.

    aligner = ForcedAligner(bundle_dir)
    words = aligner.align(audio, "the text that was said", language="English")
    for w in words:
        print(w.start, w.end, w.word)

One non-autoregressive pass, as the official `Qwen3ForcedAligner.align()`: the audio goes through the
aligner's own encoder (the same windowed ONNX design as the speech recognizer's); the decoder sees
`<|audio_start|>` + the audio + `<|audio_end|>` + every word followed by two `<timestamp>` tokens, and at
each `<timestamp>` the argmax over all timestamp classes times the class length is a time. The decoder's
GGUF has the classes as its vocabulary (5000 output rows instead of 152064), so every position is fed as
an embedding row (looked up in the bundle's embedding table) and llama.cpp computes logits only at the
`<timestamp>` positions. The official repair makes the times monotonic (`repair.repair_timestamps`).

Audio longer than `max_seconds` (the official 180 s) is cut at quiet points; the words are shared out
over the pieces in proportion to their duration (by characters) and each piece's times are offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qasr.engine.align.repair import repair_timestamps
from qasr.engine.align.vocabulary import Vocabulary
from qasr.engine.align.words import split_words
from qasr.engine.bundle import Bundle, BundleError, load_bundle
from qasr.engine.decoder import Decoder, DecoderOptions
from qasr.engine.device import resolve_device
from qasr.engine.encoder import EncoderOptions, EncoderRunner
from qasr.engine.features import log_mel_features
from qasr.engine.segmentation import SegmentationOptions, cut_points
from qasr.engine.transcribe import normalize_waveform
from qasr.errors import QasrError

MIN_AUDIO_S = 0.5  # shorter audio is zero-padded to this, as the official transcribe() pads its pieces


class AlignError(QasrError):
    """The aligner cannot align this input; the message says why."""


@dataclass(frozen=True)
class AlignerOptions:
    threads: int = 0  # 0 = physical cores
    device: str = "cpu"  # "auto", "cpu", "cuda", "vulkan" (engine.device)
    max_seconds: float = 180.0  # longer audio is cut at quiet points (official MAX_FORCE_ALIGN_INPUT_SECONDS)
    verify: str = "size"


@dataclass(frozen=True)
class AlignedWord:
    word: str
    start: float  # seconds
    end: float

    def to_dict(self) -> dict:
        return {"word": self.word, "start": self.start, "end": self.end}


def aligner_bundle(bundle_dir: str | Path | Bundle, verify: str = "size") -> Bundle:
    bundle = bundle_dir if isinstance(bundle_dir, Bundle) else load_bundle(bundle_dir, verify=verify)
    if not bundle.manifest.is_aligner:
        raise BundleError(
            f"{bundle.root} is a speech-recognition model, not a forced aligner; "
            "get the aligner with `qasr-daemon models pull aligner`"
        )
    return bundle


class ForcedAligner:
    def __init__(self, bundle_dir: str | Path | Bundle, options: AlignerOptions = AlignerOptions()):
        self.bundle = aligner_bundle(bundle_dir, options.verify)
        self.options = options
        manifest = self.bundle.manifest
        self.params = manifest.aligner
        self.audio_params = manifest.audio
        self.tokens = manifest.tokens
        device = resolve_device(options.device)
        self.encoder = EncoderRunner.from_bundle(
            self.bundle, EncoderOptions(threads=options.threads, providers=device.encoder_providers)
        )
        self.vocabulary = Vocabulary(self.bundle.path("tokenizer"))
        # mmap: a 152064-row table is 311 MB in f16; only the rows of the words' tokens are read
        self.embeddings = np.load(self.bundle.path("embeddings"), mmap_mode="r")
        self.decoder = Decoder(
            self.bundle.path("decoder"),
            DecoderOptions(
                n_ctx=1024,  # grown per input (ensure_context)
                threads=options.threads,
                kv_f32=manifest.files["decoder"].precision == "f32",
                n_gpu_layers=device.decoder_gpu_layers,
            ),
        )
        if self.decoder.n_vocab != self.params.classify_num or self.decoder.n_embd != self.embeddings.shape[1]:
            raise BundleError(f"{self.bundle.root}: the aligner's files do not belong together; re-convert the model")

    def close(self) -> None:
        self.decoder.close()
        self.vocabulary.close()

    def __enter__(self) -> "ForcedAligner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- building blocks (also used by the exactness tests) --------------------------------------

    def input_ids(self, n_audio: int, words: list[str]) -> tuple[list[int], list[int]]:
        """(ids, positions of the <timestamp> tokens): the official aligner input for n audio tokens."""
        t = self.tokens
        ids = [t["audio_start"]] + [t["audio_pad"]] * n_audio + [t["audio_end"]]
        stamps: list[int] = []
        for word in words:
            ids.extend(self.vocabulary.tokenize(word))
            stamps.extend((len(ids), len(ids) + 1))
            ids.extend((t["timestamp"], t["timestamp"]))
        return ids, stamps

    def encode(self, audio: np.ndarray) -> np.ndarray:
        return self.encoder.encode(log_mel_features(audio, self.audio_params))

    def class_indices(self, audio: np.ndarray, words: list[str]) -> np.ndarray:
        """The argmax timestamp class at every <timestamp> position (two per word), before repair."""
        if not words:
            return np.zeros(0, dtype=np.int64)
        audio_embeds = self.encode(audio)
        ids, stamps = self.input_ids(audio_embeds.shape[0], words)
        rows = np.asarray(ids, dtype=np.int64)
        if int(rows.max()) >= self.embeddings.shape[0]:
            raise BundleError(f"{self.bundle.root}: a token id lies outside the embedding table; re-convert the model")
        embeds = np.asarray(self.embeddings[rows], dtype=np.float32)
        embeds[1 : 1 + audio_embeds.shape[0]] = audio_embeds
        dec = self.decoder
        dec.ensure_context(len(ids))
        dec.cache.reset()
        logits = dec.feed_embeddings_rows(embeds, stamps)
        dec.cache.reset()
        return logits.argmax(axis=1)

    def align_piece(self, audio: np.ndarray, words: list[str]) -> list[AlignedWord]:
        """Times exactly as the official align(): repaired class times in seconds, three decimals."""
        classes = self.class_indices(audio, words)
        fixed = repair_timestamps(classes * self.params.timestamp_segment_time_ms)
        return [
            AlignedWord(word, round(fixed[2 * i] / 1000.0, 3), round(fixed[2 * i + 1] / 1000.0, 3))
            for i, word in enumerate(words)
        ]

    # --- alignment ------------------------------------------------------------------------------

    def align(self, audio: np.ndarray, text: str, language: str | None = None) -> list[AlignedWord]:
        """Word times for `text` spoken in `audio` (16 kHz mono float). Times never pass the audio's end."""
        words = split_words(text, language)
        audio = _normalize(audio)
        rate = self.audio_params.sample_rate
        duration = audio.shape[0] / rate
        if not words:
            return []
        if audio.shape[0] < rate // 100:
            raise AlignError(f"the audio is {duration:.3f} s long; the aligner needs at least 0.01 s")
        result: list[AlignedWord] = []
        pieces = cut_points(audio, SegmentationOptions(max_piece_s=self.options.max_seconds, sample_rate=rate))
        for piece, share in zip(pieces, _share_words(words, [p.end - p.start for p in pieces])):
            if not share:
                continue
            clip = audio[piece.start : piece.end]
            if clip.shape[0] < MIN_AUDIO_S * rate:
                clip = np.pad(clip, (0, int(MIN_AUDIO_S * rate) - clip.shape[0]))
            offset = piece.start / rate
            end = piece.end / rate
            for w in self.align_piece(clip, share):
                result.append(AlignedWord(w.word, round(min(w.start + offset, end), 3), round(min(w.end + offset, end), 3)))
        return result


def _normalize(audio: np.ndarray) -> np.ndarray:
    """As the official loader: `normalize_waveform` (divided by its peak only if that exceeds 1), clipped."""
    return np.clip(normalize_waveform(audio), -1.0, 1.0)


def _share_words(words: list[str], lengths: list[int]) -> list[list[str]]:
    """Words for each audio piece, in proportion to the pieces' lengths, measured in characters."""
    if len(lengths) == 1:
        return [words]
    sizes = np.cumsum([len(w) for w in words], dtype=np.float64)
    bounds = np.cumsum(lengths, dtype=np.float64) / float(sum(lengths)) * sizes[-1]
    shares: list[list[str]] = [[] for _ in lengths]
    piece = 0
    for word, reach in zip(words, sizes):
        while piece < len(lengths) - 1 and reach - len(word) / 2.0 > bounds[piece]:
            piece += 1
        shares[piece].append(word)
    return shares
