"""Hugging Face Qwen3-ASR checkpoint -> qasr bundle (ONNX encoder halves + GGUF decoder + manifest).

Everything is written into a hidden temporary folder next to OUT_DIR and renamed into place at the
end, so an interrupted conversion never leaves something that looks like a valid bundle.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from qasr import __version__
from qasr.engine.bundle import (
    DECODER_PRECISIONS,
    ENCODER_PRECISIONS,
    AudioParams,
    Manifest,
    TextParams,
    describe_file,
    write_manifest,
)
from qasr.engine.convert.checkpoint import AUDIO_PREFIX, Checkpoint, load_tensors, read_checkpoint
from qasr.errors import QasrError

Progress = Callable[[str, float], None]

# Modules of the `convert` extra (pip install 'qasr[convert]') plus the runtime ones it drives.
REQUIRED_MODULES = ("onnx", "onnxruntime", "safetensors", "gguf", "llama_cpp")

# Share of the total work per stage, for a progress bar that moves evenly.
# The decoder goes first: its f32 source, mapped by llama.cpp's quantizer, and the encoder graphs
# then never occupy memory at the same time (peak RSS of a 0.6B conversion 3.1 GB instead of 5.3).
_STAGES = {
    "reading checkpoint": 0.05,
    "writing decoder": 0.15,
    "quantizing decoder": 0.35,
    "exporting encoder front-end": 0.10,
    "exporting encoder back-end": 0.30,
    "writing manifest": 0.05,
}


class _Tracker:
    """Turns per-stage fractions into one overall fraction for the caller's callback."""

    def __init__(self, callback: Progress | None, stages: list[str]):
        self.callback = callback
        total = sum(_STAGES[s] for s in stages)
        self.start: dict[str, float] = {}
        done = 0.0
        for stage in stages:
            self.start[stage] = done / total
            done += _STAGES[stage]
        self.share = {s: _STAGES[s] / total for s in stages}
        self.last = 0.0

    def __call__(self, stage: str, fraction: float = 0.0) -> None:
        # Never report less than before (float sums of stage shares can round down a hair).
        self.last = max(self.last, min(1.0, self.start[stage] + self.share[stage] * fraction))
        if self.callback is not None:
            self.callback(stage, self.last)

    def done(self) -> None:
        if self.callback is not None:
            self.callback("done", 1.0)


def model_name(ckpt: Checkpoint) -> str:
    """`Qwen3-ASR-0.6B` also for a Hugging Face cache snapshot folder (models--Qwen--X/snapshots/<hash>)."""
    root = ckpt.root
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith("models--"):
        return root.parent.parent.name.split("--")[-1]
    return root.name


def check_dependencies() -> None:
    """Raise QasrError naming the missing packages before any work starts."""
    missing = [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise QasrError(
            f"the converter needs {', '.join(missing)}, which are not installed: pip install 'qasr[convert]'"
        )


def _check_options(encoder: str, decoder: str) -> None:
    from qasr.engine.convert.encoder_export import INT8_RECIPES

    # The named int8 recipes beyond `int8` (e.g. int8-naive) are for benchmarks and tests, not the CLI.
    if encoder not in ENCODER_PRECISIONS and encoder not in INT8_RECIPES:
        raise QasrError(f"unknown encoder precision {encoder!r}; choose one of {', '.join(ENCODER_PRECISIONS)}")
    if decoder not in DECODER_PRECISIONS:
        raise QasrError(f"unknown decoder precision {decoder!r}; choose one of {', '.join(DECODER_PRECISIONS)}")


def _prepare_out(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise QasrError(f"{out_dir} exists and is not a directory; choose another output folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise QasrError(f"{out_dir} already exists and is not empty; remove it, pick another folder, or pass --force")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def _export_encoder(ckpt: Checkpoint, work: Path, precision: str, track: _Tracker) -> dict[str, float]:
    from qasr.engine.convert import encoder_reference as ref
    from qasr.engine.convert.encoder_export import BACKEND, FRONTEND, recipe_for, write_graph
    from qasr.engine.convert.encoder_onnx import backend_model, check_config, frontend_model

    a = ckpt.audio
    check_config(a)
    tensors = load_tensors(ckpt, AUDIO_PREFIX)
    # Log-mel after qasr's normalisation lies roughly in [-1, 1.5]; two windows of 23 tokens for the back-end.
    rng = np.random.default_rng(0)
    mel = (rng.standard_normal((4, a.num_mel_bins, a.chunk_frames)) * 0.5).astype(np.float32)
    errors = {}
    track("exporting encoder front-end", 0.0)
    # int8: the two wide convs as im2col MatMuls, which dynamic quantization makes int8 GEMMs
    # (it leaves Conv in fp32), unless the recipe keeps them float; checked against the same reference.
    recipe = recipe_for(precision)
    im2col = recipe is not None and recipe.im2col
    front_want = ref.frontend(a, tensors, mel)
    errors["encoder_frontend"] = write_graph(
        lambda: frontend_model(a, tensors, im2col=im2col), work / f"encoder_frontend.{precision}.onnx",
        precision, work, mel, front_want, FRONTEND, a.encoder_layers,
    )
    track("exporting encoder back-end", 0.0)
    hidden = front_want.astype(np.float32).reshape(2, 2 * a.tokens_per_chunk, a.d_model)[:, :-3]
    errors["encoder_backend"] = write_graph(
        lambda: backend_model(a, tensors), work / f"encoder_backend.{precision}.onnx",
        precision, work, hidden, ref.backend(a, tensors, hidden), BACKEND, a.encoder_layers,
    )
    return errors


def _write_decoder(ckpt: Checkpoint, work: Path, precision: str, track: _Tracker) -> Path:
    from qasr.engine.convert.decoder_gguf import write_decoder_gguf

    final = work / f"decoder.{precision}.gguf"
    if precision in ("f32", "f16"):
        return write_decoder_gguf(ckpt, final, precision, lambda f: track("writing decoder", f))
    from qasr.engine.convert.quantize import quantize_gguf

    source = write_decoder_gguf(ckpt, work / "decoder.f32-tmp.gguf", "f32", lambda f: track("writing decoder", f))
    track("quantizing decoder", 0.0)
    quantize_gguf(source, final, precision)
    source.unlink()
    return final


def _manifest(ckpt: Checkpoint, work: Path, encoder: str, decoder: str, errors: dict[str, float],
              extra_files: dict | None = None) -> Manifest:
    from qasr.engine.convert.aligner_bundle import aligner_params

    a, t = ckpt.audio, ckpt.text
    files = {
        "encoder_frontend": describe_file(work, f"encoder_frontend.{encoder}.onnx", encoder),
        "encoder_backend": describe_file(work, f"encoder_backend.{encoder}.onnx", encoder),
        "decoder": describe_file(work, f"decoder.{decoder}.gguf", decoder),
        **(extra_files or {}),
    }
    return Manifest(
        model={
            "name": model_name(ckpt),
            "architecture": ckpt.config.get("architectures", ["Qwen3ASRForConditionalGeneration"])[0],
            "source": str(ckpt.root),
        },
        files=files,
        audio=AudioParams(
            sample_rate=ckpt.sample_rate,
            n_fft=ckpt.n_fft,
            hop_length=ckpt.hop_length,
            num_mel_bins=a.num_mel_bins,
            chunk_frames=a.chunk_frames,
            tokens_per_chunk=a.tokens_per_chunk,
            window_tokens=a.window_tokens,
            d_model=a.d_model,
            output_dim=a.output_dim,
            encoder_layers=a.encoder_layers,
        ),
        text=TextParams(
            hidden_size=t.hidden_size,
            num_layers=t.num_hidden_layers,
            vocab_size=t.vocab_size,
            rope_theta=float(t.rope_theta),
        ),
        tokens=dict(ckpt.tokens),
        stop_token_ids=[ckpt.tokens["im_end"], ckpt.tokens["endoftext"]],
        languages=list(ckpt.languages),
        created_by=f"qasr {__version__}",
        extra={"conversion": {
            "encoder_recipe": encoder_recipe(encoder, a.encoder_layers),
            "encoder_relative_error": {k: float(f"{v:.3g}") for k, v in errors.items()},
        }},
        aligner=aligner_params(ckpt) if ckpt.aligner is not None else None,
    )


def encoder_recipe(precision: str, n_layers: int) -> dict:
    """The manifest's record of how the encoder graphs were written."""
    from qasr.engine.convert.encoder_export import recipe_for

    recipe = recipe_for(precision)
    if recipe is None:
        return {"name": precision, "weights": precision, "activations": precision, "float_groups": [],
                "float_weight_prefixes": []}
    return recipe.describe(n_layers)


def _move_into_place(work: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{work.name}")
        out_dir.rename(old)
    work.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def convert_checkpoint(
    hf_dir: str | Path,
    out_dir: str | Path,
    encoder: str = "fp32",
    decoder: str = "f32",
    progress: Progress | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a Hugging Face Qwen3-ASR (or Qwen3-ForcedAligner) checkpoint folder into a qasr bundle.

    progress(stage, fraction) is called with a stage name and the overall fraction done (0..1).
    Returns the bundle directory. Raises QasrError with a one-line message on user errors.
    """
    _check_options(encoder, decoder)
    check_dependencies()
    out_dir = Path(out_dir).expanduser().resolve()
    stages = [s for s in _STAGES if decoder in ("q8_0", "q4_k") or s != "quantizing decoder"]
    track = _Tracker(progress, stages)
    track("reading checkpoint", 0.0)
    ckpt = read_checkpoint(hf_dir, kind="any")
    _prepare_out(out_dir, overwrite)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        _write_decoder(ckpt, work, decoder, track)
        extra_files = None
        if ckpt.aligner is not None:
            from qasr.engine.convert.aligner_bundle import write_aligner_files

            extra_files = write_aligner_files(ckpt, work, decoder)
        errors = _export_encoder(ckpt, work, encoder, track)
        track("writing manifest", 0.0)
        write_manifest(work, _manifest(ckpt, work, encoder, decoder, errors, extra_files))
        work.chmod(0o755)
        _move_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    track.done()
    return out_dir
