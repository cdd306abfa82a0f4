"""Random Qwen3-ForcedAligner checkpoints in the exact Hugging Face layout of ``Qwen/Qwen3-ForcedAligner-0.6B``.

The same family as the speech recognizer (see ``random_checkpoint``), with what makes it an aligner:
``thinker_config.model_type = "qwen3_forced_aligner"``, an untied ``thinker.lm_head`` of
``classify_num`` (5000) rows, ``timestamp_token_id`` (the ``<timestamp>`` token, added right after
``<asr_text>`` as upstream) and ``timestamp_segment_time`` (80 ms per class) at the top of config.json,
an embedding of 152064 rows for the real shape. Built by the official model class, like the ASR ones.

    python -m qasr.daemon.bench.random_aligner OUT_DIR [--preset tiny|0.6b] [--seed N]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from qasr.daemon.bench.random_checkpoint import (
    PRESETS, AudioShape, CheckpointError, Preset, _config_json, _reinitialise, build_official_model, write_hf_files,
)
from qasr.daemon.bench.random_tokenizer import ALIGNER_ADDED_TOKENS, _tokenizer_config, special_ids, train_tokenizer
from qasr.errors import QasrError

CLASSIFY_NUM = 5000
TIMESTAMP_SEGMENT_TIME_MS = 80

ALIGNER_PRESETS: dict[str, Preset] = {
    "tiny": replace(PRESETS["tiny"], name="aligner-tiny"),
    # Qwen3-ForcedAligner-0.6B: a 1024-wide 24-layer audio tower, the 0.6B text model, 152064 rows.
    "0.6b": replace(
        PRESETS["0.6b"], name="aligner-0.6b",
        audio=AudioShape(d_model=1024, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096,
                         downsample_hidden_size=480, output_dim=1024),
        text=replace(PRESETS["0.6b"].text, vocab_size=152064),
    ),
}


def make_aligner_checkpoint(out_dir: str | Path, preset: str = "tiny", seed: int = 0,
                            dtype: str | None = None, classify_num: int = CLASSIFY_NUM) -> Path:
    """Write a random forced-aligner checkpoint in the Hugging Face layout to ``out_dir``; return it."""
    if preset not in ALIGNER_PRESETS:
        raise CheckpointError(f"unknown preset {preset!r}; choose one of: {', '.join(ALIGNER_PRESETS)}")
    spec = ALIGNER_PRESETS[preset]
    if dtype is not None:
        spec = replace(spec, dtype=dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    import torch
    from safetensors.torch import save_file

    vocab, merges = train_tokenizer(spec.tokenizer_vocab)
    ids = special_ids(len(vocab), ALIGNER_ADDED_TOKENS)
    n_tokens = len(vocab) + len(ALIGNER_ADDED_TOKENS)
    vocab_size = spec.text.vocab_size or (-(-n_tokens // 64) * 64 + 64)

    config = _config_json(spec, ids, vocab_size)
    thinker = config["thinker_config"]
    thinker["model_type"] = "qwen3_forced_aligner"
    thinker["classify_num"] = classify_num
    thinker["user_token_id"] = vocab.get("user", 0)
    thinker["text_config"]["tie_word_embeddings"] = False
    config["timestamp_token_id"] = ids["<timestamp>"]
    config["timestamp_segment_time"] = TIMESTAMP_SEGMENT_TIME_MS
    config["qasr_random_checkpoint"] = {"preset": spec.name}

    write_hf_files(out, config, ids, vocab, merges, _tokenizer_config(ids, ALIGNER_ADDED_TOKENS))
    model = build_official_model(config, seed)
    if tuple(model.thinker.lm_head.weight.shape) != (classify_num, spec.text.hidden_size):
        raise CheckpointError("the official model class did not build a forced-aligner head; qwen-asr changed")
    _reinitialise(model, spec, ids, n_tokens, seed)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[spec.dtype]
    model.to(torch_dtype)
    tensors = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    del model
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qasr.daemon.bench.random_aligner",
        description="Write a random Qwen3-ForcedAligner checkpoint in the Hugging Face layout (tests, benchmarks).",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--preset", choices=sorted(ALIGNER_PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    args = parser.parse_args(argv)
    try:
        path = make_aligner_checkpoint(args.out_dir, preset=args.preset, seed=args.seed, dtype=args.dtype)
    except QasrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
