"""Write the Qwen3-ASR text model as a llama.cpp `qwen3` GGUF (f32 or f16), tokenizer embedded.

Tensors are streamed one at a time from the safetensors files, so memory stays near one tensor.
Naming and tokenizer metadata follow llama.cpp's convert_hf_to_gguf for Qwen2/Qwen3 models.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import numpy as np

from qasr.engine.convert.checkpoint import (
    LM_HEAD,
    TEXT_PREFIX,
    Checkpoint,
    CheckpointError,
    Tokenizer,
    read_tensor,
    tensor_shape,
)

ARCH = "qwen3"

# HF per-layer tensor suffix -> GGUF per-block tensor name.
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_GLOBAL_NAMES = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
_LAYER_RE = re.compile(r"layers\.(\d+)\.(.+)")


def gguf_name(hf_name: str) -> str | None:
    """GGUF name for a text-model tensor (name without the thinker.model. prefix); None to skip."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    match = _LAYER_RE.fullmatch(hf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"blk.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    return None


def _looks_special(text: str) -> bool:
    return text.startswith("<|") and text.endswith("|>")


def token_table(tok: Tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and GGUF token types for ids 0..vocab_size-1, padded with [PAD{i}]."""
    import gguf

    by_id: dict[int, tuple[str, int]] = {tid: (text, gguf.TokenType.NORMAL) for text, tid in tok.vocab.items()}
    for tid, (text, special) in tok.added.items():
        kind = gguf.TokenType.CONTROL if special or _looks_special(text) else gguf.TokenType.USER_DEFINED
        by_id[tid] = (text, kind)
    too_big = [tid for tid in by_id if tid >= vocab_size]
    if too_big:
        raise CheckpointError(f"tokenizer has token id {max(too_big)} beyond vocab_size {vocab_size}; corrupt checkpoint")
    tokens, types = [], []
    for i in range(vocab_size):
        text, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.USER_DEFINED))
        tokens.append(text)
        types.append(int(kind))
    return tokens, types


def _named_id(tok: Tokenizer, key: str, fallback: int) -> int:
    value = tok.config.get(key)
    if isinstance(value, dict):  # AddedToken serialised as a dict
        value = value.get("content")
    tid = tok.id_of(value) if isinstance(value, str) else None
    return fallback if tid is None else tid


def _write_hparams(writer, ckpt: Checkpoint, file_type: int) -> None:
    import gguf

    t = ckpt.text
    writer.add_name(ckpt.name)
    writer.add_context_length(t.max_position_embeddings)
    writer.add_embedding_length(t.hidden_size)
    writer.add_block_count(t.num_hidden_layers)
    writer.add_feed_forward_length(t.intermediate_size)
    writer.add_head_count(t.num_attention_heads)
    writer.add_head_count_kv(t.num_key_value_heads)
    writer.add_key_length(t.head_dim)
    writer.add_value_length(t.head_dim)
    writer.add_rope_dimension_count(t.head_dim)
    writer.add_rope_freq_base(float(t.rope_theta))
    writer.add_layer_norm_rms_eps(float(t.rms_norm_eps))
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_tokenizer(writer, ckpt: Checkpoint) -> None:
    tok = ckpt.tokenizer
    tokens, types = token_table(tok, ckpt.text.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(tok.merges)
    # As convert_hf_to_gguf writes Qwen: bos = <|endoftext|> (never added), eos/pad from tokenizer_config.
    endoftext = ckpt.tokens["endoftext"]
    writer.add_bos_token_id(endoftext)
    writer.add_eos_token_id(_named_id(tok, "eos_token", ckpt.tokens["im_end"]))
    writer.add_pad_token_id(_named_id(tok, "pad_token", endoftext))
    writer.add_add_bos_token(False)


def _write_class_vocabulary(writer, ckpt: Checkpoint) -> None:
    """The forced aligner's decoder: llama.cpp's vocabulary-less model whose "tokens" are the timestamp
    classes, so its output head is the class head (5000 rows, not 152064). It is fed embeddings only."""
    writer.add_tokenizer_model("no_vocab")
    writer.add_vocab_size(ckpt.aligner.classify_num)


def _plan(ckpt: Checkpoint) -> list[tuple[str, str, tuple[int, ...]]]:
    """(hf full name, gguf name, shape) for every tensor to write, in write order."""
    if ckpt.aligner is not None:
        # the class head is stored as the (tied) token table: llama.cpp then uses it as the output head
        plan = [p for p in _plan_text(ckpt) if p[1] not in ("token_embd.weight", "output.weight")]
        return [(LM_HEAD, "token_embd.weight", tensor_shape(ckpt, LM_HEAD))] + plan
    return _plan_text(ckpt)


def _plan_text(ckpt: Checkpoint) -> list[tuple[str, str, tuple[int, ...]]]:
    t = ckpt.text
    if t.attention_bias:
        raise CheckpointError("text_config.attention_bias=true is not supported by llama.cpp's qwen3 architecture")
    wanted: dict[str, str] = {}
    for full in ckpt.tensor_names():
        if full.startswith(TEXT_PREFIX):
            name = gguf_name(full[len(TEXT_PREFIX):])
            if name is not None:
                wanted[full] = name
    if not t.tie_word_embeddings:
        wanted[LM_HEAD] = "output.weight"
    expected = 2 + 11 * t.num_hidden_layers + (0 if t.tie_word_embeddings else 1)
    if len(wanted) != expected:
        have = set(wanted.values())
        missing = [f"blk.{i}.{v}" for i in range(t.num_hidden_layers) for v in _LAYER_NAMES.values()
                   if f"blk.{i}.{v}" not in have]
        raise CheckpointError(
            f"text model has {len(wanted)} of {expected} expected tensors"
            + (f" (missing {missing[0]})" if missing else "") + "; the checkpoint is incomplete"
        )
    plan = [(full, name, tensor_shape(ckpt, full)) for full, name in wanted.items()]
    order = {"token_embd.weight": 0, "output_norm.weight": 2, "output.weight": 1}

    def sort_key(item):
        name = item[1]
        if name in order:
            return (order[name], 0, name)
        return (3, int(name.split(".")[1]), name)

    return sorted(plan, key=sort_key)


def write_tokenizer_gguf(ckpt: Checkpoint, path: Path) -> Path:
    """The text model's hyper-parameters and tokenizer, no tensors: llama.cpp loads it with vocab_only to
    tokenize (the forced aligner's decoder file has the timestamp classes as its vocabulary)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), ARCH)
    _write_hparams(writer, ckpt, int(gguf.LlamaFileType.ALL_F32))
    _write_tokenizer(writer, ckpt)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    return path


def write_decoder_gguf(
    ckpt: Checkpoint,
    path: Path,
    precision: str = "f32",
    progress: Callable[[float], None] | None = None,
) -> Path:
    """Write the text decoder at f32 or f16 (norms always f32, as llama.cpp expects)."""
    import gguf

    if precision not in ("f32", "f16"):
        raise ValueError(f"write_decoder_gguf writes f32 or f16, not {precision}")
    plan = _plan(ckpt)
    embd = next(shape for _, name, shape in plan if name == "token_embd.weight")
    rows = ckpt.aligner.classify_num if ckpt.aligner is not None else ckpt.text.vocab_size
    if embd != (rows, ckpt.text.hidden_size):
        what = "lm_head (the timestamp classes)" if ckpt.aligner is not None else "embed_tokens"
        raise CheckpointError(f"{what} has shape {embd}, config says ({rows}, {ckpt.text.hidden_size})")

    def out_dtype(shape: tuple[int, ...]):
        return np.float16 if precision == "f16" and len(shape) > 1 else np.float32

    writer = gguf.GGUFWriter(str(path), ARCH)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if precision == "f16" else gguf.LlamaFileType.ALL_F32
    _write_hparams(writer, ckpt, int(file_type))
    if ckpt.aligner is not None:
        _write_class_vocabulary(writer, ckpt)
    else:
        _write_tokenizer(writer, ckpt)
    for _, name, shape in plan:
        dtype = np.dtype(out_dtype(shape))
        writer.add_tensor_info(name, shape, dtype, int(np.prod(shape)) * dtype.itemsize)
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for i, (full, name, shape) in enumerate(plan):
        tensor = read_tensor(ckpt.weight_files[full], full)
        writer.write_tensor_data(np.ascontiguousarray(tensor.astype(out_dtype(shape), copy=False)))
        if progress:
            progress((i + 1) / len(plan))
    writer.close()
    return path
