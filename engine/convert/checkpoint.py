"""Read and validate a Hugging Face Qwen3-ASR (or Qwen3-ForcedAligner) checkpoint directory.

Only plain files are read (config JSON, tokenizer files, safetensors); transformers is not needed.
Every hyper-parameter and special-token id comes from the checkpoint itself.
"""

from __future__ import annotations

import json
import struct
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from qasr.engine.bundle import SPECIAL_TOKENS
from qasr.engine.audio_constants import SAMPLE_RATE
from qasr.errors import QasrError

ARCHITECTURE = "Qwen3ASRForConditionalGeneration"
MODEL_TYPE = "qwen3_asr"

AUDIO_PREFIX = "thinker.audio_tower."
TEXT_PREFIX = "thinker.model."
LM_HEAD = "thinker.lm_head.weight"

# The 30 languages of the official release, used when config.json has no support_languages.
OFFICIAL_LANGUAGES = (
    "Chinese", "English", "Cantonese", "Arabic", "German", "French", "Spanish", "Portuguese",
    "Indonesian", "Italian", "Korean", "Russian", "Thai", "Vietnamese", "Japanese", "Turkish",
    "Hindi", "Malay", "Dutch", "Swedish", "Danish", "Finnish", "Polish", "Czech", "Filipino",
    "Persian", "Greek", "Romanian", "Hungarian", "Macedonian",
)

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")

# config.json thinker_config keys that must agree with the tokenizer's ids.
CONFIG_TOKEN_KEYS = {
    "audio_pad": "audio_token_id",
    "audio_start": "audio_start_token_id",
    "audio_end": "audio_end_token_id",
}


class CheckpointError(QasrError):
    """The directory is not a usable Qwen3-ASR checkpoint."""


@dataclass(frozen=True)
class AudioConfig:
    num_mel_bins: int
    d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    downsample_hidden_size: int
    output_dim: int
    max_source_positions: int
    n_window: int
    n_window_infer: int
    activation_function: str = "gelu"
    scale_embedding: bool = False

    @property
    def chunk_frames(self) -> int:
        return 2 * self.n_window

    @property
    def tokens_per_chunk(self) -> int:
        return conv_out_len(self.chunk_frames)

    @property
    def window_tokens(self) -> int:
        return self.tokens_per_chunk * (self.n_window_infer // self.chunk_frames)

    @property
    def freq_after_convs(self) -> int:
        return conv_out_len(self.num_mel_bins)


@dataclass(frozen=True)
class TextConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    hidden_act: str = "silu"
    attention_bias: bool = False


@dataclass(frozen=True)
class Tokenizer:
    vocab: dict[str, int]  # regular byte-level BPE tokens
    merges: list[str]  # "a b" pairs, in rank order
    added: dict[int, tuple[str, bool]]  # id -> (content, special)
    config: dict[str, Any]  # tokenizer_config.json

    def id_of(self, text: str) -> int | None:
        for tid, (content, _special) in self.added.items():
            if content == text:
                return tid
        return self.vocab.get(text)


@dataclass(frozen=True)
class AlignerConfig:
    """What makes a checkpoint a Qwen3-ForcedAligner: a class head instead of the vocabulary head."""

    classify_num: int  # timestamp classes (rows of thinker.lm_head)
    timestamp_token_id: int  # <timestamp>, looked up by name and checked against config.json
    timestamp_segment_time_ms: float  # time per class


@dataclass(frozen=True)
class Checkpoint:
    root: Path
    config: dict[str, Any]
    audio: AudioConfig
    text: TextConfig
    tokenizer: Tokenizer
    tokens: dict[str, int]  # manifest name -> id
    languages: list[str]
    sample_rate: int
    n_fft: int
    hop_length: int
    weight_files: dict[str, Path] = field(repr=False)  # tensor name -> file
    aligner: AlignerConfig | None = None  # set for a forced aligner

    @property
    def name(self) -> str:
        return self.root.name

    def tensor_names(self) -> list[str]:
        return list(self.weight_files)


def conv_out_len(n: int) -> int:
    """Length after three kernel-3 stride-2 padding-1 convolutions."""
    for _ in range(3):
        n = (n - 1) // 2 + 1
    return n


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc}); re-download the checkpoint") from exc


def _pick(section: dict[str, Any], cls: type, where: str) -> Any:
    """Build a config dataclass from a config.json section, naming the first missing key."""
    kwargs = {}
    for name, spec in cls.__dataclass_fields__.items():
        if name in section:
            kwargs[name] = section[name]
        elif spec.default is MISSING and spec.default_factory is MISSING:
            raise CheckpointError(f"config.json {where} lacks {name!r}; the checkpoint is incomplete or not Qwen3-ASR")
    return cls(**kwargs)


def is_aligner_config(config: dict[str, Any]) -> bool:
    thinker = config.get("thinker_config")
    return isinstance(thinker, dict) and str(thinker.get("model_type", "")).endswith("forced_aligner")


def checkpoint_kind(hf_dir: str | Path) -> str:
    """"aligner" for a Qwen3-ForcedAligner folder, "asr" otherwise (read_checkpoint validates the rest)."""
    path = Path(hf_dir).expanduser() / "config.json"
    if not path.is_file():
        return "asr"
    config = _read_json(path)
    return "aligner" if isinstance(config, dict) and is_aligner_config(config) else "asr"


def _check_model_type(config: dict[str, Any], root: Path, kind: str) -> None:
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if model_type != MODEL_TYPE or (architectures and ARCHITECTURE not in architectures):
        what = ", ".join(architectures) or model_type or "unknown"
        raise CheckpointError(
            f"{root} holds a {what} model, not Qwen3-ASR ({ARCHITECTURE}); "
            "pass the folder of a Qwen/Qwen3-ASR-* checkpoint"
        )
    thinker = config.get("thinker_config")
    if not isinstance(thinker, dict) or "audio_config" not in thinker or "text_config" not in thinker:
        raise CheckpointError(f"{root}/config.json has no thinker_config.audio_config/text_config; not a Qwen3-ASR checkpoint")
    if is_aligner_config(config) and kind == "asr":
        raise CheckpointError(f"{root} is a Qwen3 forced aligner, not a speech recognizer; pass a Qwen3-ASR checkpoint")
    if not is_aligner_config(config) and kind == "aligner":
        raise CheckpointError(f"{root} is a speech recognizer, not a Qwen3-ForcedAligner; pass Qwen/Qwen3-ForcedAligner-0.6B")


def _aligner_config(config: dict[str, Any], tokenizer: Tokenizer, root: Path) -> AlignerConfig:
    thinker = config["thinker_config"]
    tid = tokenizer.id_of("<timestamp>")
    if tid is None:
        raise CheckpointError(f"the tokenizer in {root} has no <timestamp> token; not a Qwen3-ForcedAligner tokenizer")
    if "timestamp_token_id" in config and int(config["timestamp_token_id"]) != tid:
        raise CheckpointError(
            f"config.json says timestamp_token_id={config['timestamp_token_id']} but the tokenizer has <timestamp> "
            f"at {tid}; the checkpoint files do not belong together"
        )
    for key, where in (("classify_num", thinker), ("timestamp_segment_time", config)):
        if key not in where:
            raise CheckpointError(f"config.json lacks {key!r}; the aligner checkpoint is incomplete")
    classes, step = int(thinker["classify_num"]), float(config["timestamp_segment_time"])
    if classes <= 1 or step <= 0:
        raise CheckpointError(f"config.json has classify_num={classes}, timestamp_segment_time={step}; corrupt checkpoint")
    return AlignerConfig(classify_num=classes, timestamp_token_id=tid, timestamp_segment_time_ms=step)


def read_tokenizer(root: Path) -> Tokenizer:
    missing = [name for name in TOKENIZER_FILES if not (root / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{root} lacks tokenizer file(s) {', '.join(missing)}; download the complete checkpoint"
        )
    vocab = _read_json(root / "vocab.json")
    config = _read_json(root / "tokenizer_config.json")
    merges = []
    for line in (root / "merges.txt").read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#version"):
            continue
        parts = line.split(" ")
        if len(parts) == 2:
            merges.append(line)
    added = {
        int(tid): (str(spec["content"]), bool(spec.get("special", False)))
        for tid, spec in (config.get("added_tokens_decoder") or {}).items()
    }
    return Tokenizer(vocab=dict(vocab), merges=merges, added=added, config=config)


def _special_token_ids(tokenizer: Tokenizer, thinker: dict[str, Any], root: Path) -> dict[str, int]:
    tokens = {}
    for name, text in SPECIAL_TOKENS.items():
        tid = tokenizer.id_of(text)
        if tid is None:
            raise CheckpointError(f"the tokenizer in {root} has no {text} token; not a Qwen3-ASR tokenizer")
        tokens[name] = tid
    for name, key in CONFIG_TOKEN_KEYS.items():
        if key in thinker and int(thinker[key]) != tokens[name]:
            raise CheckpointError(
                f"config.json says {key}={thinker[key]} but the tokenizer has {SPECIAL_TOKENS[name]} "
                f"at {tokens[name]}; the checkpoint files do not belong together"
            )
    return tokens


def _weight_files(root: Path) -> dict[str, Path]:
    from safetensors import safe_open

    index = root / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map") or {}
        missing = sorted({f for f in weight_map.values() if not (root / f).is_file()})
        if missing:
            raise CheckpointError(f"{root} lacks weight shard(s) {', '.join(missing)}; finish the download")
        return {name: root / f for name, f in weight_map.items()}
    single = root / "model.safetensors"
    if not single.is_file():
        raise CheckpointError(f"{root} has no model.safetensors (or index); download the model weights")
    try:
        with safe_open(single, framework="numpy") as fh:
            return {name: single for name in fh.keys()}
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{single} is not a readable safetensors file ({exc}); re-download it") from exc


def _check_weights(weight_files: dict[str, Path], audio: AudioConfig, text: TextConfig, root: Path) -> None:
    required = [
        f"{AUDIO_PREFIX}conv2d1.weight",
        f"{AUDIO_PREFIX}conv_out.weight",
        f"{AUDIO_PREFIX}layers.{audio.encoder_layers - 1}.fc2.weight",
        f"{AUDIO_PREFIX}proj2.weight",
        f"{TEXT_PREFIX}embed_tokens.weight",
        f"{TEXT_PREFIX}norm.weight",
        f"{TEXT_PREFIX}layers.{text.num_hidden_layers - 1}.mlp.down_proj.weight",
    ]
    if not text.tie_word_embeddings:
        required.append(LM_HEAD)
    missing = [name for name in required if name not in weight_files]
    if missing:
        raise CheckpointError(
            f"{root} weights lack {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + "; the checkpoint is incomplete or not Qwen3-ASR"
        )


def read_checkpoint(hf_dir: str | Path, kind: str = "asr") -> Checkpoint:
    """Validate a checkpoint directory and read everything but the tensor data.

    kind: "asr" (a forced aligner is refused), "aligner" (only a forced aligner) or "any".
    """
    root = Path(hf_dir).expanduser().resolve()
    if not root.is_dir():
        raise CheckpointError(f"checkpoint directory {root} does not exist; pass the folder of a downloaded Qwen3-ASR model")
    if not (root / "config.json").is_file():
        raise CheckpointError(f"{root} has no config.json; pass the folder of a Hugging Face Qwen3-ASR checkpoint")
    config = _read_json(root / "config.json")
    if not isinstance(config, dict):
        raise CheckpointError(f"{root}/config.json is not a JSON object; re-download the checkpoint")
    _check_model_type(config, root, kind)
    thinker = config["thinker_config"]
    audio = _pick(thinker["audio_config"], AudioConfig, "thinker_config.audio_config")
    text_section = dict(thinker["text_config"])
    text_section.setdefault("tie_word_embeddings", config.get("tie_word_embeddings", thinker.get("tie_word_embeddings", False)))
    text = _pick(text_section, TextConfig, "thinker_config.text_config")
    if audio.d_model % audio.encoder_attention_heads:
        raise CheckpointError(f"audio d_model {audio.d_model} is not divisible by {audio.encoder_attention_heads} heads; corrupt config.json")
    tokenizer = read_tokenizer(root)
    tokens = _special_token_ids(tokenizer, thinker, root)
    aligner = _aligner_config(config, tokenizer, root) if is_aligner_config(config) else None
    if aligner is not None:
        tokens["timestamp"] = aligner.timestamp_token_id
    weight_files = _weight_files(root)
    _check_weights(weight_files, audio, text, root)
    pre = root / "preprocessor_config.json"
    pre_cfg = _read_json(pre) if pre.is_file() else {}
    if int(pre_cfg.get("feature_size", audio.num_mel_bins)) != audio.num_mel_bins:
        raise CheckpointError(f"preprocessor_config.json feature_size disagrees with num_mel_bins {audio.num_mel_bins}; corrupt checkpoint")
    languages = list(config.get("support_languages") or OFFICIAL_LANGUAGES)
    return Checkpoint(
        root=root,
        config=config,
        audio=audio,
        text=text,
        tokenizer=tokenizer,
        tokens=tokens,
        languages=languages,
        sample_rate=int(pre_cfg.get("sampling_rate", SAMPLE_RATE)),
        n_fft=int(pre_cfg.get("n_fft", 400)),
        hop_length=int(pre_cfg.get("hop_length", 160)),
        weight_files=weight_files,
        aligner=aligner,
    )


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32: the same 16 bits on top, zeros below (exact)."""
    wide = raw.astype(np.uint32)
    np.left_shift(wide, 16, out=wide)  # in place: one temporary the size of the result, not two
    return wide.view(np.float32)


def _read_bf16(path: Path, name: str) -> np.ndarray:
    """numpy has no bfloat16: read the tensor's bytes from the safetensors layout (u64 header size,
    JSON header with data_offsets relative to the end of the header) and widen them."""
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        entry = json.loads(fh.read(header_len))[name]
        begin, end = entry["data_offsets"]
        fh.seek(8 + header_len + begin)
        raw = np.frombuffer(fh.read(end - begin), dtype="<u2")
    return _bf16_to_f32(raw).reshape(entry["shape"])


def read_tensor(path: Path, name: str, fh: Any = None) -> np.ndarray:
    """One tensor as float32 numpy (bf16/f16/f32 on disk), via safetensors' numpy API."""
    from safetensors import safe_open

    if fh is None:
        with safe_open(path, framework="numpy") as opened:
            return read_tensor(path, name, opened)
    dtype = fh.get_slice(name).get_dtype()
    if dtype == "BF16":
        return _read_bf16(path, name)
    if dtype not in ("F32", "F16", "F64"):
        raise CheckpointError(f"tensor {name} in {path.name} is {dtype}, not a float type; not a Qwen3-ASR checkpoint")
    return np.ascontiguousarray(fh.get_tensor(name), dtype=np.float32)


def iter_tensors(ckpt: Checkpoint, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name without prefix, float32 numpy array) for every tensor under prefix."""
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for name, path in ckpt.weight_files.items():
        if name.startswith(prefix):
            by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        with safe_open(path, framework="numpy") as fh:
            for name in names:
                yield name[len(prefix):], read_tensor(path, name, fh)


def load_tensors(ckpt: Checkpoint, prefix: str) -> dict[str, np.ndarray]:
    return dict(iter_tensors(ckpt, prefix))


def load_tensor(ckpt: Checkpoint, name: str) -> np.ndarray:
    return read_tensor(ckpt.weight_files[name], name)


def tensor_shape(ckpt: Checkpoint, name: str) -> tuple[int, ...]:
    from safetensors import safe_open

    with safe_open(ckpt.weight_files[name], framework="numpy") as fh:
        return tuple(fh.get_slice(name).get_shape())
