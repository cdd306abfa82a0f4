"""Random Qwen3-ASR checkpoints in the exact Hugging Face layout of ``Qwen/Qwen3-ASR-0.6B``.

A development and test tool: the weights are built by the OFFICIAL model class (qwen-asr,
imported lazily together with torch) from a config, then re-initialised so that the model's
greedy output is long, varied and depends on the audio and the prompt (see
``_reinitialise``). Nothing at run time imports this module's heavy dependencies.

Files written, as upstream: config.json, preprocessor_config.json, tokenizer_config.json,
vocab.json, merges.txt, chat_template.json, generation_config.json, model.safetensors
(weights under ``thinker.audio_tower.*``, ``thinker.model.*`` and the ``thinker.lm_head.*``
copy of the tied embedding).

The tokenizer is a small synthetic byte-level BPE in the Qwen2 format trained on an embedded
multilingual text; the special tokens follow the regular vocabulary in the upstream order
and relative positions (upstream: <|endoftext|> 151643 ... <asr_text> 151704), so their ids
differ from upstream: readers must look ids up by token text. For the "0.6b"/"1.7b" presets
the embedding keeps the upstream 151936 rows although the tokenizer is smaller, exactly as
upstream has more rows than tokens.

Weights dtype: "tiny" is written in float32 (tests compare against an fp32 reference without
rounding); "0.6b"/"1.7b" are written in bfloat16 like upstream. ``dtype=`` overrides it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import types
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from qasr.daemon.bench.random_tokenizer import (
    ADDED_TOKENS, CHAT_TEMPLATE, STOP_TOKENS, SUPPORT_LANGUAGES, _tokenizer_config,
    special_ids, train_tokenizer,
)
from qasr.errors import QasrError

@dataclass(frozen=True)
class AudioShape:
    d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    downsample_hidden_size: int
    output_dim: int
    num_mel_bins: int = 128
    n_window: int = 50
    n_window_infer: int = 800
    max_source_positions: int = 1500
    conv_chunksize: int = 500


@dataclass(frozen=True)
class TextShape:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int | None  # None: tokenizer size rounded up (tiny); else the embedding row count
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 65536


@dataclass(frozen=True)
class Preset:
    name: str
    audio: AudioShape
    text: TextShape
    dtype: str  # "float32" | "bfloat16"
    tokenizer_vocab: int = 1024  # target size of the regular (BPE) vocabulary


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        audio=AudioShape(d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                         downsample_hidden_size=32, output_dim=96),
        text=TextShape(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=32, intermediate_size=256, vocab_size=None),
        dtype="float32",
    ),
    "0.6b": Preset(
        name="0.6b",
        audio=AudioShape(d_model=896, encoder_layers=18, encoder_attention_heads=14, encoder_ffn_dim=3584,
                         downsample_hidden_size=480, output_dim=1024),
        text=TextShape(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, intermediate_size=3072, vocab_size=151936),
        dtype="bfloat16",
    ),
    "1.7b": Preset(
        name="1.7b",
        audio=AudioShape(d_model=1024, encoder_layers=24, encoder_attention_heads=16, encoder_ffn_dim=4096,
                         downsample_hidden_size=480, output_dim=2048),
        text=TextShape(hidden_size=2048, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       head_dim=128, intermediate_size=6144, vocab_size=151936),
        dtype="bfloat16",
    ),
}

# Initialisation knobs (see _reinitialise).
ATTENTION_SHARPNESS = 1.8  # q/k scale: attention logits of a few units, not ~1
STOP_ROW_GAIN = 1.3  # stop-token embedding rows this much longer: some generations end alone
UNUSED_ROW_SCALE = 0.05  # embedding rows without a token: rarely chosen, as in a trained model
OTHER_SPECIAL_ROW_SCALE = 0.5  # special tokens other than the stops/<asr_text>: seldom generated
TEXT_BRANCH_GAIN = 1.0  # text residual branch scale at 2 layers (scaled by sqrt(2 / layers))
FINAL_NORM_MEAN = 0.0  # final RMSNorm weight mean: 0 breaks the "predict the input token" path


class CheckpointError(QasrError):
    """A random checkpoint could not be made."""


# --------------------------------------------------------------------------- official code


def import_official_qwen_asr() -> types.ModuleType:
    """Import the official ``qwen_asr`` package (test/dev reference only).

    Its package ``__init__`` imports the forced aligner and audio helpers, which need
    dependencies (nagisa, librosa, ...) the ASR model itself never uses; those missing modules
    are replaced by stubs that fail only when actually used.
    """
    for _ in range(12):
        try:
            return importlib.import_module("qwen_asr")
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not missing or missing.split(".")[0] in ("qwen_asr", "torch", "transformers"):
                raise CheckpointError(
                    f"cannot import the official qwen-asr package ({exc}); install the dev extras: "
                    "pip install -e '.[dev]' qwen-asr"
                ) from exc
            for name in [m for m in sys.modules if m == "qwen_asr" or m.startswith("qwen_asr.")]:
                del sys.modules[name]
            sys.modules[missing] = _stub_module(missing)
    raise CheckpointError("cannot import the official qwen-asr package: too many missing modules")


def _stub_module(name: str) -> types.ModuleType:
    stub = types.ModuleType(name)
    stub.__path__ = []  # lets "import name.sub" resolve to further stubs via the retry loop

    def _missing(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise ImportError(f"{name} is not installed (stubbed for the qwen-asr reference): {name}.{attr}")

    stub.__getattr__ = _missing  # type: ignore[attr-defined]
    return stub


def official_classes() -> tuple[Any, Any, Any]:
    """(Qwen3ASRConfig, Qwen3ASRForConditionalGeneration, Qwen3ASRProcessor) from qwen-asr."""
    import_official_qwen_asr()
    backend = importlib.import_module("qwen_asr.core.transformers_backend")
    return backend.Qwen3ASRConfig, backend.Qwen3ASRForConditionalGeneration, backend.Qwen3ASRProcessor


# --------------------------------------------------------------------------- tokenizer


def _mrope_section(head_dim: int) -> list[int]:
    """Upstream's [24, 20, 20] (for head_dim 128) scaled to head_dim // 2 rotary frequencies."""
    half = head_dim // 2
    t = round(half * 24 / 64)
    h = (half - t) // 2
    return [t, h, half - t - h]


def _config_json(preset: Preset, ids: dict[str, int], vocab_size: int) -> dict[str, Any]:
    a, t = preset.audio, preset.text
    audio_config = {
        "activation_dropout": 0, "activation_function": "gelu", "attention_dropout": 0,
        "conv_chunksize": a.conv_chunksize, "d_model": a.d_model,
        "downsample_hidden_size": a.downsample_hidden_size, "dropout": 0,
        "encoder_attention_heads": a.encoder_attention_heads, "encoder_ffn_dim": a.encoder_ffn_dim,
        "encoder_layers": a.encoder_layers, "initializer_range": 0.02,
        "max_source_positions": a.max_source_positions, "model_type": "qwen3_asr_audio_encoder",
        "n_window": a.n_window, "n_window_infer": a.n_window_infer, "num_hidden_layers": a.encoder_layers,
        "num_mel_bins": a.num_mel_bins, "output_dim": a.output_dim, "scale_embedding": False,
    }
    text_config = {
        "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"], "head_dim": t.head_dim, "hidden_act": "silu",
        "hidden_size": t.hidden_size, "initializer_range": 0.02, "intermediate_size": t.intermediate_size,
        "max_position_embeddings": t.max_position_embeddings, "model_type": "qwen3_asr_text",
        "num_attention_heads": t.num_attention_heads, "num_hidden_layers": t.num_hidden_layers,
        "num_key_value_heads": t.num_key_value_heads, "rms_norm_eps": t.rms_norm_eps,
        "rope_scaling": {"interleaved": True, "mrope_interleaved": True,
                         "mrope_section": _mrope_section(t.head_dim), "rope_type": "default"},
        "rope_theta": t.rope_theta, "tie_word_embeddings": True, "use_cache": True, "vocab_size": vocab_size,
    }
    return {
        "architectures": ["Qwen3ASRForConditionalGeneration"],
        "model_type": "qwen3_asr",
        "support_languages": list(SUPPORT_LANGUAGES),
        "thinker_config": {
            "audio_config": audio_config,
            "audio_end_token_id": ids["<|audio_end|>"],
            "audio_start_token_id": ids["<|audio_start|>"],
            "audio_token_id": ids["<|audio_pad|>"],
            "dtype": preset.dtype,
            "initializer_range": 0.02,
            "model_type": "qwen3_asr_thinker",
            "text_config": text_config,
            "user_token_id": ids.get("user", 0),
        },
        "dtype": preset.dtype,
        "transformers_version": "4.57.6",
        "qasr_random_checkpoint": {"preset": preset.name},
    }


def _preprocessor_config() -> dict[str, Any]:
    return {
        "chunk_length": 30, "dither": 0.0, "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": 128, "hop_length": 160, "n_fft": 400, "n_samples": 480000, "nb_max_frames": 3000,
        "padding_side": "right", "padding_value": 0.0, "processor_class": "Qwen3ASRProcessor",
        "return_attention_mask": True, "sampling_rate": 16000,
    }


def _generation_config(ids: dict[str, int]) -> dict[str, Any]:
    return {
        "bos_token_id": ids["<|endoftext|>"], "do_sample": False,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"], "transformers_version": "4.57.6",
    }


# --------------------------------------------------------------------------- weights


def _reinitialise(model: Any, preset: Preset, ids: dict[str, int], n_tokens: int, seed: int) -> None:
    """Replace the default init by one that keeps a random model informative.

    Default inits make a random Qwen3-ASR collapse (stop first, or one repeated token). Here:
    every linear map is 1/sqrt(fan_in)-scaled so activations stay at unit scale, audio residual
    branches are scaled by 1/sqrt(2 * layers) so the stream does not grow, text branches so the
    stream ends at a fixed multiple of the embedding whatever the depth (a tied head otherwise
    just repeats the input token), the final norm weight has zero mean, biases and norm
    weights get non-trivial values, q/k are scaled up (ATTENTION_SHARPNESS) so attention is
    selective (the output then follows the audio), embeddings are unit-variance rows, stop
    rows are longer (STOP_ROW_GAIN) and rows without a token tiny (UNUSED_ROW_SCALE).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    a_res = 1.0 / math.sqrt(2 * preset.audio.encoder_layers)
    # Residual stream ends at sqrt(1 + 2 * layers * t_res**2) = sqrt(5) embedding norms at any depth.
    t_res = TEXT_BRANCH_GAIN * math.sqrt(2.0 / preset.text.num_hidden_layers)

    def normal(shape: torch.Size, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std + mean

    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            shape = param.shape
            leaf = name.rsplit(".", 2)
            kind = leaf[-1]
            module = leaf[-2] if len(leaf) > 1 else ""
            value: torch.Tensor
            if name.endswith("embed_tokens.weight"):
                value = normal(shape, 1.0)
                value[n_tokens:] *= UNUSED_ROW_SCALE
                for text, _ in ADDED_TOKENS:
                    if text not in STOP_TOKENS and text != "<asr_text>":
                        value[ids[text]] *= OTHER_SPECIAL_ROW_SCALE
                for text in STOP_TOKENS:
                    row = value[ids[text]]
                    value[ids[text]] = row / row.norm() * math.sqrt(shape[1]) * STOP_ROW_GAIN
            elif name.endswith("lm_head.weight"):
                if shape[0] != model.thinker.model.embed_tokens.weight.shape[0]:  # the aligner's class head
                    param.copy_(normal(shape, 1.0 / math.sqrt(shape[1])).to(param.dtype))
                continue  # tied: copied from the embedding below
            elif kind == "bias":
                value = normal(shape, 0.1)
            elif "norm" in module or module.endswith("layer_norm") or module == "ln_post":
                if module in ("q_norm", "k_norm"):
                    value = normal(shape, 0.1, mean=ATTENTION_SHARPNESS)
                elif name == "thinker.model.norm.weight":
                    value = normal(shape, 1.0, mean=FINAL_NORM_MEAN)
                else:
                    value = normal(shape, 0.1, mean=1.0)
            elif module.startswith("conv2d"):
                fan_in = shape[1] * shape[2] * shape[3]
                value = normal(shape, math.sqrt(2.0 / fan_in))
            else:  # linear weight [out, in]
                fan_in = shape[1]
                std = 1.0 / math.sqrt(fan_in)
                in_audio = "audio_tower" in name
                if module in ("q_proj", "k_proj") and in_audio:
                    std *= math.sqrt(ATTENTION_SHARPNESS)
                elif module in ("out_proj", "fc2"):
                    std *= a_res
                elif module in ("o_proj", "down_proj"):
                    std *= t_res
                elif module == "proj2":
                    std *= 1.6  # after GELU: back to unit-scale audio embeddings
                value = normal(shape, std)
            param.copy_(value.to(param.dtype))
        thinker = model.thinker
        head, embed = thinker.lm_head.weight, thinker.model.embed_tokens.weight
        if head.shape == embed.shape and head.data_ptr() != embed.data_ptr():
            thinker.lm_head.weight.copy_(thinker.model.embed_tokens.weight)


def _state_dict_for_file(model: Any, dtype: str) -> dict[str, Any]:
    import torch

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    model.to(torch_dtype)  # in place: the float32 storage is released before saving
    tensors = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    # Upstream stores the tied head as its own tensor.
    tensors["thinker.lm_head.weight"] = tensors["thinker.model.embed_tokens.weight"].clone()
    return tensors


# --------------------------------------------------------------------------- entry points


def make_checkpoint(out_dir: str | Path, preset: str = "tiny", seed: int = 0, dtype: str | None = None) -> Path:
    """Write a random Qwen3-ASR checkpoint in the Hugging Face layout to ``out_dir``; return it."""
    if preset not in PRESETS:
        raise CheckpointError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    spec = PRESETS[preset]
    if dtype is not None:
        if dtype not in ("float32", "bfloat16", "float16"):
            raise CheckpointError(f"unknown dtype {dtype!r}; choose float32, bfloat16 or float16")
        spec = replace(spec, dtype=dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save_file

    vocab, merges = train_tokenizer(spec.tokenizer_vocab)
    ids = special_ids(len(vocab))
    n_tokens = len(vocab) + len(ADDED_TOKENS)
    vocab_size = spec.text.vocab_size or (-(-n_tokens // 64) * 64 + 64)
    if vocab_size < n_tokens:
        raise CheckpointError(f"preset {preset} has {vocab_size} embedding rows for {n_tokens} tokens")

    config = _config_json(spec, ids, vocab_size)
    config["thinker_config"]["user_token_id"] = vocab.get("user", 0)

    write_hf_files(out, config, ids, vocab, merges, _tokenizer_config(ids))
    model = build_official_model(config, seed)
    _reinitialise(model, spec, ids, n_tokens, seed)
    tensors = _state_dict_for_file(model, spec.dtype)
    del model
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def write_hf_files(out: Path, config: dict[str, Any], ids: dict[str, int], vocab: dict[str, int],
                   merges: list, tokenizer_config: dict[str, Any]) -> None:
    """Every file of the Hugging Face layout but the weights."""
    _write_json(out / "config.json", config)
    _write_json(out / "preprocessor_config.json", _preprocessor_config())
    _write_json(out / "tokenizer_config.json", tokenizer_config)
    _write_json(out / "vocab.json", vocab)
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges), encoding="utf-8"
    )
    _write_json(out / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
    _write_json(out / "generation_config.json", _generation_config(ids))


def build_official_model(config: dict[str, Any], seed: int) -> Any:
    """The official model class built in float32 from a config.json dict (default init, seeded)."""
    import torch

    config_cls, model_cls, _ = official_classes()
    hf_config = config_cls(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")})
    previous = torch.get_default_dtype()
    torch.manual_seed(seed)
    try:
        torch.set_default_dtype(torch.float32)
        return model_cls(hf_config).eval()
    finally:
        torch.set_default_dtype(previous)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def preset_summary(preset: str) -> dict[str, Any]:
    spec = PRESETS[preset]
    return {"audio": asdict(spec.audio), "text": asdict(spec.text), "dtype": spec.dtype}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qasr.daemon.bench.random_checkpoint",
        description="Write a random Qwen3-ASR checkpoint in the Hugging Face layout (for tests and development).",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="weights dtype (default: float32 for tiny, bfloat16 like upstream otherwise)")
    args = parser.parse_args(argv)
    try:
        path = make_checkpoint(args.out_dir, preset=args.preset, seed=args.seed, dtype=args.dtype)
    except QasrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
