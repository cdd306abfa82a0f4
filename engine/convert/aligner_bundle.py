"""The files only a forced-aligner bundle has: the token embedding table and the vocabulary-only GGUF.

The aligner's decoder GGUF (decoder_gguf with `ckpt.aligner` set) has the timestamp classes as its
vocabulary, so text tokens cannot be fed to it as ids: the runtime looks their embedding rows up in
`embeddings.<dtype>.npy` (memory-mapped: only the rows used are read) and tokenizes with `tokenizer.gguf`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qasr.engine.bundle import AlignerParams, BundleFile, describe_file
from qasr.engine.convert.checkpoint import TEXT_PREFIX, Checkpoint, load_tensor


def embeddings_dtype(decoder_precision: str) -> str:
    """f32 beside an f32 decoder (the exact reference), f16 otherwise (half the size; bf16 weights fit)."""
    return "f32" if decoder_precision == "f32" else "f16"


def write_aligner_files(ckpt: Checkpoint, work: Path, decoder_precision: str) -> dict[str, BundleFile]:
    from qasr.engine.convert.decoder_gguf import write_tokenizer_gguf

    dtype = embeddings_dtype(decoder_precision)
    name = f"embeddings.{dtype}.npy"
    table = load_tensor(ckpt, f"{TEXT_PREFIX}embed_tokens.weight")
    np.save(work / name, table.astype(np.float32 if dtype == "f32" else np.float16, copy=False))
    del table
    write_tokenizer_gguf(ckpt, work / "tokenizer.gguf")
    return {
        "embeddings": describe_file(work, name, dtype),
        "tokenizer": describe_file(work, "tokenizer.gguf", "vocab"),
    }


def aligner_params(ckpt: Checkpoint) -> AlignerParams:
    return AlignerParams(
        classify_num=ckpt.aligner.classify_num,
        timestamp_segment_time_ms=ckpt.aligner.timestamp_segment_time_ms,
        embedding_rows=ckpt.text.vocab_size,
    )
