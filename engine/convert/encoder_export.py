"""Export the audio front-end/back-end to ONNX, convert precision, and check them with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qasr.errors import QasrError

OPSET = 18

# Worst relative error (max |ort - torch| / max |torch|) accepted when verifying an exported graph.
# int8 dynamic quantization of random-looking weights loses a few percent; fp16 well under one.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.15}


class ExportError(QasrError):
    """An exported ONNX graph is wrong; this is a converter bug, not a user error."""


@dataclass(frozen=True)
class GraphSpec:
    """Names and dynamic axes of one exported graph."""

    input_name: str
    output_name: str
    dynamic_axes: dict[int, str]  # input axis -> name
    axis_max: tuple[tuple[int, int], ...] = ()  # (input axis, largest size) where it is bounded


# The time axis is dynamic too: a clip shorter than one chunk runs unpadded, as the official code does
# (it pads to the longest chunk of the clip); longer clips send full 100-frame chunks.
FRONTEND = GraphSpec("mel", "embeds", {0: "n_chunks", 2: "frames"}, axis_max=((2, 100),))
BACKEND = GraphSpec("hidden", "audio_embeds", {0: "n_windows", 1: "T"})


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter prints progress lines and torchvision warnings; keep the CLI clean."""
    noisy = [logging.getLogger(name) for name in ("torch.onnx", "torch._export", "torch.export", "onnxscript")]
    levels = [log.level for log in noisy]
    for log in noisy:
        log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(noisy, levels):
            log.setLevel(level)


def export_fp32(module: torch.nn.Module, example: torch.Tensor, spec: GraphSpec, path: Path) -> Path:
    """torch -> ONNX (dynamo exporter), weights inside the one .onnx file."""
    bounded = dict(spec.axis_max)
    dims = {axis: torch.export.Dim(name, min=1, max=bounded.get(axis, 1 << 16)) for axis, name in spec.dynamic_axes.items()}
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            dynamic_shapes={spec.input_name: dims},
            verbose=False,
        )
    return path


def convert_fp16(src: Path, dst: Path) -> Path:
    """Weights and compute in fp16, graph inputs/outputs stay fp32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    # keep_io_types inserts Cast nodes at the boundary; the runtime always feeds float32.
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(half, str(dst))
    return dst


def convert_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantization of MatMul/Gemm weights; Conv nodes and norms stay fp32.

    (The front-end's wide convolutions reach this as im2col MatMuls, see AudioFrontEndIm2col.)
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _without_preprocess_hint():
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=True,
            weight_type=QuantType.QInt8,
        )
    return dst


@contextlib.contextmanager
def _without_preprocess_hint():
    """quantize_dynamic logs an advisory on the root logger on every call; drop just that line."""

    def keep(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    scale = float(np.abs(want).max()) or 1.0
    return float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) / scale


def verify_graph(path: Path, module: torch.nn.Module, sample: torch.Tensor, spec: GraphSpec, precision: str) -> float:
    """Run the graph and the torch module on the same input; raise if they disagree."""
    with torch.no_grad():
        want = module(sample).numpy()
    got = session(path).run([spec.output_name], {spec.input_name: sample.numpy()})[0]
    if got.shape != want.shape or got.dtype != np.float32:
        raise ExportError(f"{path.name}: output {got.dtype}{got.shape}, expected float32{want.shape}")
    err = relative_error(got, want)
    if not np.isfinite(err) or err > TOLERANCE[precision]:
        raise ExportError(
            f"{path.name} differs from the torch module by {err:.3g} (relative, limit {TOLERANCE[precision]}); "
            "converter bug, please report it"
        )
    return err


def export_graph(
    module: torch.nn.Module,
    example: torch.Tensor,
    sample: torch.Tensor,
    spec: GraphSpec,
    out_path: Path,
    precision: str,
    scratch: Path,
    reference: torch.nn.Module | None = None,
) -> float:
    """Write out_path at the requested precision and return its verified relative error on sample.

    The graph is checked against reference (default: module itself), e.g. the plain front-end when the
    exported module is its im2col variant.
    """
    if precision == "fp32":
        export_fp32(module, example, spec, out_path)
    else:
        fp32 = export_fp32(module, example, spec, scratch / f"{out_path.stem}.fp32-tmp.onnx")
        (convert_fp16 if precision == "fp16" else convert_int8)(fp32, out_path)
        fp32.unlink()
    return verify_graph(out_path, module if reference is None else reference, sample, spec, precision)
