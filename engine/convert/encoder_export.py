"""Write the audio encoder graphs at a precision and check each one in onnxruntime (no torch).

fp32: the graphs of `encoder_onnx` as they are. fp16: onnxruntime's float16 converter (weights and
compute fp16, graph inputs/outputs fp32). int8: onnxruntime's `quantize_dynamic` (symmetric int8 MatMul
weights with one scale per output channel, uint8 activations quantized per tensor at run time) following
an `Int8Recipe`: which weight groups stay float (by checkpoint weight name, so the choice survives node
renumbering) and whether the front-end's wide convolutions become int8 im2col MatMuls.
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


def tolerance(precision: str) -> float:
    return TOLERANCE["int8" if precision.startswith("int8") else precision]


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


# Weight groups an int8 recipe can keep in float, as checkpoint weight-name prefixes (n = encoder layers).
FLOAT_GROUPS: dict[str, Callable[[int], tuple[str, ...]]] = {
    "frontend_convs": lambda n: ("conv2d2.", "conv2d3."),  # the wide 3x3 convs (im2col MatMuls in int8)
    "frontend_proj": lambda n: ("conv_out.",),  # flattened conv output -> d_model
    "first_layer": lambda n: ("layers.0.",),
    "last_layer": lambda n: (f"layers.{n - 1}.",),
    "head": lambda n: ("proj1.", "proj2."),  # after ln_post, into the decoder's embedding space
}


@dataclass(frozen=True)
class Int8Recipe:
    """How `quantize_dynamic` is driven. Weights: symmetric int8, per output channel unless per_channel is
    False; activations: uint8, one dynamic scale per tensor (the only dynamic mode onnxruntime has)."""

    name: str
    keep_float: tuple[str, ...] = ()  # FLOAT_GROUPS kept in float32
    per_channel: bool = True
    reduce_range: bool = False  # 7-bit weights (for CPUs without VNNI, where u8s8 products can saturate)

    @property
    def im2col(self) -> bool:
        """The front-end convs as im2col MatMuls only when they are to be quantized."""
        return "frontend_convs" not in self.keep_float

    def float_prefixes(self, n_layers: int) -> tuple[str, ...]:
        return tuple(p for group in self.keep_float for p in FLOAT_GROUPS[group](n_layers))

    def describe(self, n_layers: int) -> dict:
        """What the manifest records about the recipe."""
        return {
            "name": self.name,
            "weights": f"int8 symmetric, {'per output channel' if self.per_channel else 'per tensor'}"
                       + (", 7-bit range" if self.reduce_range else ""),
            "activations": "uint8 dynamic, per tensor",
            "float_groups": list(self.keep_float),
            "float_weight_prefixes": list(self.float_prefixes(n_layers)),
        }


# The default: every MatMul int8 except the two cheap ones that matter most, measured at 0.6B shapes
# (docs/benchmarks.md, "Encoder quantization error"): the output head (proj1/proj2; int8 there adds half
# of the output error) and the front-end projection (conv_out). Keeping the first/last transformer
# layers float bought almost nothing for +6 % time; the wide front-end convs, a third of the output
# error but half the encoder's compute, stay int8 (int8-accurate keeps them float too).
INT8_RECIPES = {
    "int8": Int8Recipe("int8-mixed", keep_float=("frontend_proj", "head")),
    "int8-accurate": Int8Recipe("int8-accurate", keep_float=("frontend_convs", "frontend_proj", "head")),
    # Every MatMul int8: the converter's recipe before the mixed one (benchmarks compare against it).
    "int8-naive": Int8Recipe("int8-naive"),
    "int8-per-tensor": Int8Recipe("int8-per-tensor", per_channel=False),
}


def recipe_for(precision: str) -> Int8Recipe | None:
    return INT8_RECIPES.get(precision)


def weight_matmuls(model) -> dict[str, str]:
    """{MatMul/Gemm node name: its constant weight's initializer name} of a float graph."""
    inits = {init.name for init in model.graph.initializer}
    return {n.name: n.input[1] for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in inits}


def float_nodes(model, recipe: Int8Recipe, n_layers: int) -> list[str]:
    """Names of the weight MatMuls `recipe` keeps in float."""
    prefixes = recipe.float_prefixes(n_layers)
    if not prefixes:
        return []
    return sorted(node for node, weight in weight_matmuls(model).items() if weight.startswith(prefixes))


def convert_int8(src: Path, dst: Path, recipe: Int8Recipe = INT8_RECIPES["int8-naive"], n_layers: int = 0) -> Path:
    """Dynamic int8 quantization of MatMul/Gemm weights; Conv nodes, norms and the recipe's float
    groups stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = float_nodes(onnx.load(str(src), load_external_data=False), recipe, n_layers) if recipe.keep_float else []
    with _without_preprocess_hint():
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
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
    if not np.isfinite(err) or err > tolerance(precision):
        raise ExportError(
            f"{path.name} differs from the reference computation by {err:.3g} (relative, limit "
            f"{tolerance(precision)}); converter bug, please report it"
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
    n_layers: int = 0,
) -> float:
    """Build the graph (fp32 ModelProto), write it at `precision` (fp32, fp16 or an INT8_RECIPES key),
    return its verified relative error."""
    model = build()
    if precision == "fp32":
        save_fp32(model, out_path)
    elif precision == "fp16":
        convert_fp16(model, out_path)
    else:
        fp32 = save_fp32(model, scratch / f"{out_path.stem}.fp32-tmp.onnx")
        del model
        convert_int8(fp32, out_path, INT8_RECIPES[precision], n_layers)
        fp32.unlink()
    return verify_graph(out_path, want, sample, spec, precision)
