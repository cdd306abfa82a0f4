"""Write the audio encoder graphs at a precision and check each one in onnxruntime (no torch).

fp32: the graphs of `encoder_onnx` as they are. fp16: onnxruntime's float16 converter (weights and
compute fp16, graph inputs/outputs fp32). int8: onnxruntime's `quantize_dynamic` (per-channel int8
MatMul/Gemm weights; the front-end is built in im2col form first so its wide convolutions are MatMuls).
Every written graph is run on a sample and compared with the numpy reference (`encoder_reference`).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from qasr.errors import QasrError

# Worst relative error (max |ort - reference| / max |reference|) accepted when verifying a graph.
# int8 dynamic quantization of random-looking weights loses a few percent; fp16 well under one.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "int8": 0.15}


class ExportError(QasrError):
    """A written ONNX graph is wrong; this is a converter bug, not a user error."""


@dataclass(frozen=True)
class GraphSpec:
    input_name: str
    output_name: str


FRONTEND = GraphSpec("mel", "embeds")
BACKEND = GraphSpec("hidden", "audio_embeds")


def save_fp32(model, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def convert_fp16(model, dst: Path) -> Path:
    """Weights and compute in fp16, graph inputs/outputs stay fp32 (Cast nodes at the boundary)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(half, str(dst))
    return dst


def convert_int8(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantization of MatMul/Gemm weights; Conv nodes and norms stay fp32."""
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


def verify_graph(path: Path, want: np.ndarray, sample: np.ndarray, spec: GraphSpec, precision: str) -> float:
    """Run the graph on sample; raise ExportError if it disagrees with the reference output `want`."""
    got = session(path).run([spec.output_name], {spec.input_name: sample.astype(np.float32)})[0]
    if got.shape != want.shape or got.dtype != np.float32:
        raise ExportError(f"{path.name}: output {got.dtype}{got.shape}, expected float32{want.shape}; "
                          "converter bug, please report it")
    err = relative_error(got, want)
    if not np.isfinite(err) or err > TOLERANCE[precision]:
        raise ExportError(
            f"{path.name} differs from the reference computation by {err:.3g} (relative, limit "
            f"{TOLERANCE[precision]}); converter bug, please report it"
        )
    return err


def write_graph(
    build: Callable[[], object],
    out_path: Path,
    precision: str,
    scratch: Path,
    sample: np.ndarray,
    want: np.ndarray,
    spec: GraphSpec,
) -> float:
    """Build the graph (fp32 ModelProto), write it at `precision`, return its verified relative error."""
    model = build()
    if precision == "fp32":
        save_fp32(model, out_path)
    elif precision == "fp16":
        convert_fp16(model, out_path)
    else:
        fp32 = save_fp32(model, scratch / f"{out_path.stem}.fp32-tmp.onnx")
        del model
        convert_int8(fp32, out_path)
        fp32.unlink()
    return verify_graph(out_path, want, sample, spec, precision)
