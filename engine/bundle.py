"""Model bundle: a directory with ``manifest.json`` naming every file the runtime loads.

The engine loads a model only through its manifest. The manifest carries the audio/text
hyper-parameters and the special-token ids (looked up by token *name* at conversion time),
so nothing in the runtime hard-codes ids or shapes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qasr.engine.audio_constants import CHUNK_FRAMES, HOP_LENGTH, N_FFT, NUM_MEL_BINS, SAMPLE_RATE, WINDOW_TOKENS
from qasr.errors import QasrError

MANIFEST_NAME = "manifest.json"
FORMAT = "qasr-bundle"
FORMAT_VERSION = 1

ENCODER_PRECISIONS = ("fp32", "fp16", "int8")
DECODER_PRECISIONS = ("f32", "f16", "q8_0", "q4_k")

# Roles of the files a bundle must contain.
FILE_ROLES = ("encoder_frontend", "encoder_backend", "decoder")
# A forced-aligner bundle also holds the token embedding table (its decoder is fed embeddings only) and a
# vocabulary-only GGUF to tokenize with (its decoder's vocabulary is the timestamp classes).
ALIGNER_FILE_ROLES = FILE_ROLES + ("embeddings", "tokenizer")
ALIGNER_TOKENS = ("audio_start", "audio_end", "audio_pad", "timestamp")

# Special tokens the runtime needs, by the name used in the manifest -> token text.
SPECIAL_TOKENS = {
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "endoftext": "<|endoftext|>",
    "audio_start": "<|audio_start|>",
    "audio_end": "<|audio_end|>",
    "audio_pad": "<|audio_pad|>",
    "asr_text": "<asr_text>",
}


class BundleError(QasrError):
    """A bundle is missing, incomplete, altered or not a qasr bundle. The message says what to do."""


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative to the bundle directory
    precision: str
    sha256: str
    size: int


@dataclass(frozen=True)
class AudioParams:
    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    hop_length: int = HOP_LENGTH
    num_mel_bins: int = NUM_MEL_BINS
    chunk_frames: int = CHUNK_FRAMES  # mel frames per encoder front-end chunk (1 s)
    tokens_per_chunk: int = 13  # front-end output frames per full chunk
    window_tokens: int = WINDOW_TOKENS  # back-end attention window (8 s)
    d_model: int = 896
    output_dim: int = 1024
    encoder_layers: int = 18


@dataclass(frozen=True)
class TextParams:
    hidden_size: int
    num_layers: int
    vocab_size: int
    rope_theta: float = 1_000_000.0


@dataclass(frozen=True)
class AlignerParams:
    classify_num: int  # timestamp classes; the decoder's output rows
    timestamp_segment_time_ms: float  # time per class
    embedding_rows: int  # rows of the token embedding table


@dataclass(frozen=True)
class Manifest:
    model: dict[str, Any]  # name, architecture, source
    files: dict[str, BundleFile]
    audio: AudioParams
    text: TextParams
    tokens: dict[str, int]
    stop_token_ids: list[int]
    languages: list[str]
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    created_by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    aligner: AlignerParams | None = None  # set in a forced-aligner bundle

    @property
    def is_aligner(self) -> bool:
        return self.aligner is not None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        if data.get("format") != FORMAT:
            raise BundleError(f"not a qasr bundle manifest (format={data.get('format')!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"bundle format version {data.get('format_version')} is not supported by this qasr "
                f"(expects {FORMAT_VERSION}); re-convert the model with `qasr-daemon models convert`"
            )
        try:
            files = {role: BundleFile(**spec) for role, spec in data["files"].items()}
            aligner = AlignerParams(**data["aligner"]) if data.get("aligner") else None
            missing = [r for r in (ALIGNER_FILE_ROLES if aligner else FILE_ROLES) if r not in files]
            if missing:
                raise BundleError(f"manifest names no file for {', '.join(missing)}")
            missing_tokens = [t for t in (ALIGNER_TOKENS if aligner else SPECIAL_TOKENS) if t not in data["tokens"]]
            if missing_tokens:
                raise BundleError(f"manifest lacks special-token ids for {', '.join(missing_tokens)}")
            return cls(
                model=dict(data["model"]),
                files=files,
                audio=AudioParams(**data["audio"]),
                text=TextParams(**data["text"]),
                tokens={k: int(v) for k, v in data["tokens"].items()},
                stop_token_ids=[int(t) for t in data["stop_token_ids"]],
                languages=list(data["languages"]),
                format=data["format"],
                format_version=data["format_version"],
                created_by=data.get("created_by", ""),
                extra=dict(data.get("extra", {})),
                aligner=aligner,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"malformed manifest: {exc}") from exc


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_file(bundle_dir: Path, relpath: str, precision: str) -> BundleFile:
    """Checksum and size of a file already written into the bundle directory."""
    full = Path(bundle_dir) / relpath
    return BundleFile(path=relpath, precision=precision, sha256=sha256_file(full), size=full.stat().st_size)


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: Manifest

    def path(self, role: str) -> Path:
        return self.root / self.manifest.files[role].path


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    target = Path(bundle_dir) / MANIFEST_NAME
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(manifest.to_json(), encoding="utf-8")
    tmp.replace(target)
    return target


def load_bundle(bundle_dir: str | Path, verify: str = "size") -> Bundle:
    """Load a bundle through its manifest.

    verify: "none", "size" (every file present with the recorded size; cheap, default) or
    "sha256" (full checksums; what `qasr-daemon models verify` runs).
    """
    root = Path(bundle_dir).expanduser()
    if not root.is_dir():
        raise BundleError(
            f"model directory {root} does not exist; run `qasr-daemon models pull 0.6b` "
            "or pass --model DIR pointing at a converted bundle"
        )
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(
            f"{root} has no {MANIFEST_NAME}: it is not a qasr bundle; convert a checkpoint with "
            "`qasr-daemon models convert HF_DIR OUT_DIR`"
        )
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is unreadable ({exc}); re-convert or re-pull the model") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{manifest_path} is not a JSON object; re-convert or re-pull the model")
    manifest = Manifest.from_dict(data)
    bundle = Bundle(root=root, manifest=manifest)
    if verify != "none":
        verify_bundle(bundle, checksums=(verify == "sha256"))
    return bundle


def verify_bundle(bundle: Bundle, checksums: bool = True) -> None:
    """Raise BundleError naming the first missing or altered file."""
    for role, spec in bundle.manifest.files.items():
        full = bundle.root / spec.path
        if not full.is_file():
            raise BundleError(
                f"bundle {bundle.root} is missing {spec.path} ({role}); re-pull or re-convert the model"
            )
        size = full.stat().st_size
        if size != spec.size:
            raise BundleError(
                f"{full} has {size} bytes, manifest says {spec.size}: the file is altered or truncated; "
                "re-pull or re-convert the model"
            )
        if checksums and sha256_file(full) != spec.sha256:
            raise BundleError(
                f"{full} does not match its sha256 in the manifest: the file is altered or corrupt; "
                "re-pull or re-convert the model"
            )
