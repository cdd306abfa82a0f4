"""The Qwen3-ASR audio tower as two ONNX graphs built straight from the checkpoint's weights (no torch).

Front-end: mel [n_chunks, n_mels, frames ≤ chunk_frames] -> embeds [n_chunks, tokens, d_model]
  (three 3x3 stride-2 convs + exact GELU, flatten [t, c*f], linear projection, positions 0.. added).
  `frontend_model(..., im2col=True)` writes conv2d2/conv2d3 as a Gather of 3x3 patches + MatMul, so
  onnxruntime's dynamic quantization makes them int8 GEMMs (it leaves Conv in fp32).
Back-end: hidden [n_windows, T, d_model] -> audio_embeds [n_windows, T, output_dim]: pre-LN transformer
  layers with full attention inside a batch item (one item = one attention window), ln_post, proj1,
  activation, proj2.
Linear weights are stored transposed ([in, out]) as MatMul initializers, as torch's exporter does.
Names follow the checkpoint's tensor names (conv2d1.weight, layers.0.fc1.bias, ...).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from qasr.engine.convert.checkpoint import AudioConfig, CheckpointError
from qasr.engine.convert.onnx_builder import GraphBuilder, float_input

# nn.LayerNorm's default eps, which the official audio tower uses for every norm.
LAYER_NORM_EPS = 1e-5
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")


def sinusoid_positions(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper-style table (float32 arithmetic, as the official code): sin half, then cos half."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(np.float32(-increment) * np.arange(channels // 2, dtype=np.float32))
    scaled = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


class _Weights:
    """Checkpoint tensors (audio_tower names) with shape checks that name the culprit."""

    def __init__(self, tensors: dict[str, np.ndarray]):
        self.tensors = tensors

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        tensor = self.tensors.get(name)
        if tensor is None:
            raise CheckpointError(f"the audio tower weights lack {name}; the checkpoint is incomplete")
        if tuple(tensor.shape) != tuple(shape):
            raise CheckpointError(
                f"audio tower tensor {name} has shape {tuple(tensor.shape)}, config implies {tuple(shape)}; "
                "config.json and weights disagree"
            )
        return tensor


def check_config(cfg: AudioConfig) -> None:
    if cfg.scale_embedding:
        raise CheckpointError("audio_config.scale_embedding=true is not supported by the converter")
    if cfg.activation_function not in ACTIVATIONS:
        raise CheckpointError(f"audio activation {cfg.activation_function!r} is not supported by the converter")


# ------------------------------------------------------------------ shared pieces

def _gelu(g: GraphBuilder, x: str) -> str:
    """Exact GELU as x * 0.5 * (1 + erf(x / sqrt 2)): the pattern onnxruntime fuses into one Gelu."""
    inner = g.op("Erf", g.op("Div", x, g.const(math.sqrt(2.0), np.float32)))
    return g.op("Mul", x, g.op("Mul", g.const(0.5, np.float32), g.op("Add", inner, g.const(1.0, np.float32))))


def _tanh_gelu(g: GraphBuilder, x: str) -> str:
    cube = g.op("Mul", g.op("Mul", x, x), x)
    inner = g.op("Add", x, g.op("Mul", cube, g.const(0.044715, np.float32)))
    tanh = g.op("Tanh", g.op("Mul", inner, g.const(math.sqrt(2.0 / math.pi), np.float32)))
    return g.op("Mul", g.op("Mul", x, g.const(0.5, np.float32)), g.op("Add", tanh, g.const(1.0, np.float32)))


def activation(name: str) -> Callable[[GraphBuilder, str], str]:
    if name == "gelu":
        return _gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return _tanh_gelu
    if name == "relu":
        return lambda g, x: g.op("Relu", x)
    if name == "silu":
        return lambda g, x: g.op("Mul", x, g.op("Sigmoid", x))
    raise CheckpointError(f"audio activation {name!r} is not supported by the converter")


def _linear(g: GraphBuilder, w: _Weights, x: str, name: str, n_in: int, n_out: int, bias: bool = True) -> str:
    weight = w.get(f"{name}.weight", (n_out, n_in))
    y = g.op("MatMul", x, g.weight(f"{name}.weight", weight.T))
    if bias:
        y = g.op("Add", y, g.weight(f"{name}.bias", w.get(f"{name}.bias", (n_out,))))
    return y


def _layer_norm(g: GraphBuilder, w: _Weights, x: str, name: str, d: int) -> str:
    return g.op("LayerNormalization", x, g.weight(f"{name}.weight", w.get(f"{name}.weight", (d,))),
                g.weight(f"{name}.bias", w.get(f"{name}.bias", (d,))), axis=-1, epsilon=LAYER_NORM_EPS)


# ------------------------------------------------------------------ front-end

def _conv(g: GraphBuilder, w: _Weights, x: str, name: str, c_in: int, c_out: int) -> str:
    weight = g.weight(f"{name}.weight", w.get(f"{name}.weight", (c_out, c_in, 3, 3)))
    bias = g.weight(f"{name}.bias", w.get(f"{name}.bias", (c_out,)))
    return g.op("Conv", x, weight, bias, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])


def _out_len(g: GraphBuilder, size: str) -> str:
    """(n - 1) // 2 + 1 of a 1-element int64 tensor (non-negative, so Div floors)."""
    one = g.const([1])
    return g.op("Add", g.op("Div", g.op("Sub", size, one), g.const([2])), one)


def _im2col_conv(g: GraphBuilder, w: _Weights, x: str, name: str, c: int, freq: int) -> str:
    """3x3 stride-2 pad-1 conv on channels-last x [n, F, T, C] as one Gather of patches and a MatMul.

    Padded x is flattened to [n, (F+2)*(T+2), C]; patch (of, ot) takes kernel offsets (i over
    frequency, j over time) at flat index (2*of + i)*(T+2) + 2*ot + j. F is fixed, T dynamic, so the
    row part is a constant and the column part is computed from T in the graph. (Channels-last as
    [n, F, T, C] because onnxruntime transposes NCHW -> NHWC fast, and [0, 3, 2, 1] slowly.)
    The weight [C_out, C, kf, kt] is reordered to [(i, j, c), C_out].
    """
    weight = w.get(f"{name}.weight", (c, c, 3, 3))
    f_out = (freq - 1) // 2 + 1
    rows = 2 * np.arange(f_out)[:, None, None, None] + np.arange(3)[None, None, :, None]  # [F', 1, 3, 1]
    t = g.op("Shape", x, start=2, end=3)
    t_out = _out_len(g, t)
    starts = g.op("Mul", g.op("Range", g.const(0), g.op("Squeeze", t_out, g.const([0])), g.const(1)), g.const(2))
    cols = g.op("Add", g.op("Reshape", starts, g.const([1, -1, 1, 1])), g.const(np.arange(3).reshape(1, 1, 1, 3).tolist()))
    width = g.op("Add", t, g.const([2]))
    index = g.op("Add", g.op("Mul", g.const(rows.tolist()), width), cols)  # [F', T', 3, 3]
    padded = g.op("Pad", x, g.const([0, 1, 1, 0, 0, 1, 1, 0]), mode="constant")
    flat = g.op("Reshape", padded, g.const([0, -1, c]))
    patches = g.op("Gather", flat, g.op("Reshape", index, g.const([-1])), axis=1)
    patches = g.op("Reshape", patches, g.const([0, f_out, -1, 9 * c]))
    matrix = g.weight(f"{name}.weight", weight.transpose(2, 3, 1, 0).reshape(9 * c, c))
    bias = g.weight(f"{name}.bias", w.get(f"{name}.bias", (c,)))
    return g.op("Add", g.op("MatMul", patches, matrix), bias)


def frontend_model(cfg: AudioConfig, tensors: dict[str, np.ndarray], im2col: bool = False):
    """The front-end ModelProto; `im2col` writes conv2d2/conv2d3 as MatMuls (for int8)."""
    check_config(cfg)
    w = _Weights(tensors)
    g = GraphBuilder("qasr_audio_frontend")
    c = cfg.downsample_hidden_size
    f1 = (cfg.num_mel_bins - 1) // 2 + 1
    f3 = cfg.freq_after_convs
    x = g.op("Unsqueeze", "mel", g.const([1]))  # [n, 1, n_mels, t]
    x = _gelu(g, _conv(g, w, x, "conv2d1", 1, c))  # [n, c, f1, t1]
    if im2col:
        x = g.op("Transpose", x, perm=[0, 2, 3, 1])  # [n, f, t, c]
        x = _gelu(g, _im2col_conv(g, w, x, "conv2d2", c, f1))
        x = _gelu(g, _im2col_conv(g, w, x, "conv2d3", c, (f1 - 1) // 2 + 1))
        x = g.op("Transpose", x, perm=[0, 2, 3, 1])  # [n, t, c, f]
    else:
        x = _gelu(g, _conv(g, w, x, "conv2d2", c, c))
        x = _gelu(g, _conv(g, w, x, "conv2d3", c, c))
        x = g.op("Transpose", x, perm=[0, 3, 1, 2])  # [n, t, c, f]
    x = g.op("Reshape", x, g.const([0, 0, c * f3]))  # the official flatten order [t, c * f]
    y = _linear(g, w, x, "conv_out", c * f3, cfg.d_model, bias=False)
    # Positions restart at 0 in every chunk: rows 0..t-1 of the table.
    table = g.weight("positions", sinusoid_positions(cfg.max_source_positions, cfg.d_model)[: cfg.tokens_per_chunk])
    t = g.op("Shape", y, start=1, end=2)
    g.op("Add", y, g.op("Slice", table, g.const([0]), t, g.const([0])), name="embeds")
    return g.model([float_input("mel", ["n_chunks", cfg.num_mel_bins, "frames"])],
                   [float_input("embeds", ["n_chunks", "tokens", cfg.d_model])],
                   doc="qasr audio front-end: one 1 s mel chunk per batch item")


# ------------------------------------------------------------------ back-end

def _attention(g: GraphBuilder, w: _Weights, x: str, prefix: str, d: int, heads: int) -> str:
    head_dim = d // heads
    split = g.const([0, 0, heads, head_dim])

    def project(name: str, perm: list[int]) -> str:
        y = g.op("Reshape", _linear(g, w, x, f"{prefix}.{name}", d, d), split)
        return g.op("Transpose", y, perm=perm)

    q = project("q_proj", [0, 2, 1, 3])
    k = project("k_proj", [0, 2, 3, 1])
    v = project("v_proj", [0, 2, 1, 3])
    scores = g.op("Mul", g.op("MatMul", q, k), g.const(head_dim ** -0.5, np.float32))
    out = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
    out = g.op("Reshape", g.op("Transpose", out, perm=[0, 2, 1, 3]), g.const([0, 0, d]))
    return _linear(g, w, out, f"{prefix}.out_proj", d, d)


def backend_model(cfg: AudioConfig, tensors: dict[str, np.ndarray]):
    check_config(cfg)
    w = _Weights(tensors)
    g = GraphBuilder("qasr_audio_backend")
    d, act = cfg.d_model, activation(cfg.activation_function)
    h = "hidden"
    for i in range(cfg.encoder_layers):
        p = f"layers.{i}"
        a = _layer_norm(g, w, h, f"{p}.self_attn_layer_norm", d)
        h = g.op("Add", h, _attention(g, w, a, f"{p}.self_attn", d, cfg.encoder_attention_heads))
        a = _layer_norm(g, w, h, f"{p}.final_layer_norm", d)
        f = act(g, _linear(g, w, a, f"{p}.fc1", d, cfg.encoder_ffn_dim))
        h = g.op("Add", h, _linear(g, w, f, f"{p}.fc2", cfg.encoder_ffn_dim, d))
    x = _layer_norm(g, w, h, "ln_post", d)
    x = act(g, _linear(g, w, x, "proj1", d, d))
    y = _linear(g, w, x, "proj2", d, cfg.output_dim)
    g.op("Identity", y, name="audio_embeds")
    return g.model([float_input("hidden", ["n_windows", "T", d])],
                   [float_input("audio_embeds", ["n_windows", "T", cfg.output_dim])],
                   doc="qasr audio back-end: one attention window per batch item")
