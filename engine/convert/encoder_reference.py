"""The audio tower halves in plain numpy (float64), written independently of the ONNX graphs.

The converter checks every graph it writes against these on a sample, as the torch export path once
checked against its torch modules: a wrong graph is a converter bug and must never reach a bundle.
"""

from __future__ import annotations

import numpy as np

from qasr.engine.convert.checkpoint import AudioConfig
from qasr.engine.convert.encoder_onnx import LAYER_NORM_EPS, sinusoid_positions


def erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7), vectorised."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _activation(name: str, x: np.ndarray) -> np.ndarray:
    if name == "gelu":
        return gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    raise ValueError(name)


def conv3x3s2(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """x [n, c, h, w] -> [n, o, (h-1)//2+1, (w-1)//2+1]; kernel 3, stride 2, zero padding 1."""
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    return np.einsum("nchwij,ocij->nohw", patches, weight, optimize=True) + bias[None, :, None, None]


def frontend(cfg: AudioConfig, w: dict[str, np.ndarray], mel: np.ndarray) -> np.ndarray:
    """mel [n, n_mels, t] -> [n, tokens, d_model]."""
    x = mel.astype(np.float64)[:, None]
    for name in ("conv2d1", "conv2d2", "conv2d3"):
        x = gelu(conv3x3s2(x, w[f"{name}.weight"].astype(np.float64), w[f"{name}.bias"].astype(np.float64)))
    n, c, f, t = x.shape
    x = x.transpose(0, 3, 1, 2).reshape(n, t, c * f)
    positions = sinusoid_positions(cfg.max_source_positions, cfg.d_model)[:t].astype(np.float64)
    return x @ w["conv_out.weight"].astype(np.float64).T + positions


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * weight + bias


def backend(cfg: AudioConfig, w: dict[str, np.ndarray], hidden: np.ndarray) -> np.ndarray:
    """hidden [b, T, d] -> [b, T, output_dim], full attention within each batch item."""
    def linear(x: np.ndarray, name: str) -> np.ndarray:  # float64 one matrix at a time (memory)
        return x @ w[f"{name}.weight"].T.astype(np.float64) + w[f"{name}.bias"]

    h = hidden.astype(np.float64)
    b, t, d = h.shape
    heads = cfg.encoder_attention_heads
    hd = d // heads
    for i in range(cfg.encoder_layers):
        p = f"layers.{i}"
        a = _layer_norm(h, w[f"{p}.self_attn_layer_norm.weight"], w[f"{p}.self_attn_layer_norm.bias"])
        q, k, v = (linear(a, f"{p}.self_attn.{n}_proj").reshape(b, t, heads, hd).transpose(0, 2, 1, 3)
                   for n in ("q", "k", "v"))
        scores = q @ k.transpose(0, 1, 3, 2) * hd ** -0.5
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attn = (scores / scores.sum(-1, keepdims=True)) @ v
        h = h + linear(attn.transpose(0, 2, 1, 3).reshape(b, t, d), f"{p}.self_attn.out_proj")
        a = _layer_norm(h, w[f"{p}.final_layer_norm.weight"], w[f"{p}.final_layer_norm.bias"])
        h = h + linear(_activation(cfg.activation_function, linear(a, f"{p}.fc1")), f"{p}.fc2")
    x = _layer_norm(h, w["ln_post.weight"], w["ln_post.bias"])
    return linear(_activation(cfg.activation_function, linear(x, "proj1")), "proj2")
