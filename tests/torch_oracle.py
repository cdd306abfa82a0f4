"""Test oracle: qasr's former torch export path of the audio tower (dev-only; the product converter
builds the ONNX graphs from the weights without torch, see engine/convert/encoder_onnx.py).

Front-end: one 1 s mel chunk -> 13 embeddings (convs, projection, positions restarting per chunk).
Back-end: one attention window of embeddings -> audio embeddings for the text model.
Plain tensor ops, batch-first, no masks (one batch item is one window), exported with torch's dynamo
ONNX exporter (opset 18). `export_torch_encoder` writes the fp32 (or im2col) graphs a torch-built
bundle had, for comparison with the torch-free ones.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from qasr.engine.convert.checkpoint import AudioConfig, CheckpointError

# Hugging Face activation names -> torch functions (ACT2FN semantics).
_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}

# nn.LayerNorm default, which the official audio tower uses for every norm.
LAYER_NORM_EPS = 1e-5


def activation(name: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise CheckpointError(f"audio activation {name!r} is not supported by the converter") from None


def sinusoid_positions(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper-style table: sin in the first half of the channels, cos in the second."""
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2).float())
    scaled = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


class AudioFrontEnd(nn.Module):
    """mel [n_chunks, n_mels, chunk_frames] -> embeds [n_chunks, tokens_per_chunk, d_model]."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        hidden = cfg.downsample_hidden_size
        self.conv2d1 = nn.Conv2d(1, hidden, 3, 2, padding=1)
        self.conv2d2 = nn.Conv2d(hidden, hidden, 3, 2, padding=1)
        self.conv2d3 = nn.Conv2d(hidden, hidden, 3, 2, padding=1)
        self.conv_out = nn.Linear(hidden * cfg.freq_after_convs, cfg.d_model, bias=False)
        # Positions restart at 0 in every chunk, so only the first tokens_per_chunk rows are used.
        table = sinusoid_positions(cfg.max_source_positions, cfg.d_model)[: cfg.tokens_per_chunk]
        self.register_buffer("positions", table.clone(), persistent=False)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = mel.unsqueeze(1)
        # The official tower uses exact GELU after the convs whatever activation_function says.
        x = F.gelu(self.conv2d1(x))
        x = F.gelu(self.conv2d2(x))
        x = F.gelu(self.conv2d3(x))
        n, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(n, t, c * f)
        return self.conv_out(x) + self.positions[:t]


class Im2colConv(nn.Module):
    """A 3x3, stride-2, padding-1 convolution on channels-last input as one MatMul over gathered patches.

    x [n, H, W, C] -> [n, (H-1)//2+1, (W-1)//2+1, C_out]. The 3x3 patches of the padded input are gathered
    into [n, H', W', 9*C] (kernel row, kernel column, channel order) and multiplied by the conv weight
    reordered to [9*C, C_out]. The same numbers as the Conv, but as a MatMul, which onnxruntime's dynamic
    quantization turns into an int8 GEMM (it leaves Conv in fp32).
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.stride != (2, 2) or conv.padding != (1, 1) or conv.groups != 1:
            raise ValueError("Im2colConv needs a 3x3, stride-2, padding-1, ungrouped convolution")
        out_ch, in_ch = conv.weight.shape[:2]
        weight = conv.weight.detach().permute(2, 3, 1, 0).reshape(9 * in_ch, out_ch)
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(out_ch)
        self.bias = nn.Parameter(bias.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        h_out = (h - 1) // 2 + 1
        w_out = (w - 1) // 2 + 1
        padded = F.pad(x, (0, 0, 1, 1, 1, 1)).reshape(n, (h + 2) * (w + 2), c)
        # One gather of all patches (kernel row, kernel column, channel order): flat index of padded
        # pixel (2*oh + i, 2*ow + j). Cheaper in onnxruntime than nine strided slices and a concat.
        kernel = torch.arange(3, device=x.device)
        rows = 2 * torch.arange(h_out, device=x.device)[:, None, None, None] + kernel[None, None, :, None]
        cols = 2 * torch.arange(w_out, device=x.device)[None, :, None, None] + kernel[None, None, None, :]
        index = (rows * (w + 2) + cols).reshape(-1)
        patches = torch.index_select(padded, 1, index).reshape(n, h_out, w_out, 9 * c)
        return torch.matmul(patches, self.weight) + self.bias


class AudioFrontEndIm2col(nn.Module):
    """AudioFrontEnd with conv2d2/conv2d3 as im2col MatMuls (channels-last between them); same outputs.

    Exported for the int8 encoder only: dynamic quantization makes those MatMuls int8 GEMMs, where it
    would leave the convolutions (most of the front-end's work) in fp32. conv2d1 has one input channel
    and little work, so it stays a Conv.
    """

    def __init__(self, front: AudioFrontEnd):
        super().__init__()
        self.conv2d1 = front.conv2d1
        self.conv2d2 = Im2colConv(front.conv2d2)
        self.conv2d3 = Im2colConv(front.conv2d3)
        self.conv_out = front.conv_out
        self.register_buffer("positions", front.positions.clone(), persistent=False)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2d1(mel.unsqueeze(1)))  # [n, c, f, t]
        x = x.permute(0, 2, 3, 1)  # [n, f, t, c]
        x = F.gelu(self.conv2d2(x))
        x = F.gelu(self.conv2d3(x))
        n, f, t, c = x.shape
        # The official flatten order is [t, c * f].
        x = x.permute(0, 2, 3, 1).reshape(n, t, c * f)
        return self.conv_out(x) + self.positions[:t]


class AudioAttention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        shape = (b, t, self.heads, self.head_dim)
        q = self.q_proj(x).reshape(shape).transpose(1, 2)
        k = self.k_proj(x).reshape(shape).transpose(1, 2)
        v = self.v_proj(x).reshape(shape).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3)) * (self.head_dim ** -0.5)
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class AudioEncoderLayer(nn.Module):
    def __init__(self, cfg: AudioConfig):
        super().__init__()
        d = cfg.d_model
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.self_attn = AudioAttention(d, cfg.encoder_attention_heads)
        self.final_layer_norm = nn.LayerNorm(d, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_dim, d)
        self.act = activation(cfg.activation_function)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(self.act(self.fc1(self.final_layer_norm(x))))


class AudioBackEnd(nn.Module):
    """hidden [n_windows, T, d_model] -> audio_embeds [n_windows, T, output_dim]."""

    def __init__(self, cfg: AudioConfig):
        super().__init__()
        self.layers = nn.ModuleList([AudioEncoderLayer(cfg) for _ in range(cfg.encoder_layers)])
        self.ln_post = nn.LayerNorm(cfg.d_model, eps=LAYER_NORM_EPS)
        self.proj1 = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj2 = nn.Linear(cfg.d_model, cfg.output_dim)
        self.act = activation(cfg.activation_function)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden = layer(hidden)
        return self.proj2(self.act(self.proj1(self.ln_post(hidden))))


def _load(module: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> nn.Module:
    own = {k: v for k, v in tensors.items() if k in module.state_dict()}
    missing = sorted(set(module.state_dict()) - set(own))
    if missing:
        raise CheckpointError(f"the audio tower weights lack {missing[0]} ({what}); the checkpoint is incomplete")
    for name, tensor in own.items():
        expected = module.state_dict()[name].shape
        if tensor.shape != expected:
            raise CheckpointError(
                f"audio tower tensor {name} has shape {tuple(tensor.shape)}, config implies {tuple(expected)}; "
                "config.json and weights disagree"
            )
    module.load_state_dict(own, strict=True)
    return module.eval()


def build_audio_modules(cfg: AudioConfig, tensors: dict[str, torch.Tensor]) -> tuple[AudioFrontEnd, AudioBackEnd]:
    """Front-end and back-end with the checkpoint's audio_tower weights (names without the prefix)."""
    if cfg.scale_embedding:
        raise CheckpointError("audio_config.scale_embedding=true is not supported by the converter")
    front = _load(AudioFrontEnd(cfg), tensors, "front-end")
    back = _load(AudioBackEnd(cfg), tensors, "back-end")
    return front, back


def load_audio_modules(checkpoint_dir: str | Path) -> tuple[AudioFrontEnd, AudioBackEnd]:
    from qasr.engine.convert.checkpoint import AUDIO_PREFIX, load_tensors, read_checkpoint

    ckpt = read_checkpoint(checkpoint_dir)
    tensors = {k: torch.from_numpy(v) for k, v in load_tensors(ckpt, AUDIO_PREFIX).items()}
    return build_audio_modules(ckpt.audio, tensors)


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter prints progress lines and warnings; keep test output clean."""
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


def export_onnx(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str,
                dynamic: dict[int, tuple[str, int]], path: Path) -> Path:
    """torch -> ONNX (dynamo exporter, opset 18), weights inside the one .onnx file."""
    dims = {axis: torch.export.Dim(name, min=1, max=top) for axis, (name, top) in dynamic.items()}
    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=[output_name],
                          opset_version=18, dynamo=True, external_data=False,
                          dynamic_shapes={input_name: dims}, verbose=False)
    return path


def export_torch_encoder(checkpoint_dir: str | Path, out_dir: Path, im2col: bool = False) -> tuple[Path, Path]:
    """The fp32 front-end (conv or im2col form) and back-end graphs as the torch export path wrote them."""
    from qasr.engine.convert.checkpoint import read_checkpoint

    cfg = read_checkpoint(checkpoint_dir).audio
    front, back = load_audio_modules(checkpoint_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mel = torch.randn(2, cfg.num_mel_bins, cfg.chunk_frames, generator=torch.Generator().manual_seed(0)) * 0.5
    exported = AudioFrontEndIm2col(front).eval() if im2col else front
    f_path = export_onnx(exported, mel, "mel", "embeds", {0: ("n_chunks", 1 << 16), 2: ("frames", cfg.chunk_frames)},
                         out_dir / f"encoder_frontend.{'im2col' if im2col else 'fp32'}.onnx")
    with torch.no_grad():
        hidden = front(mel).reshape(1, -1, front.conv_out.out_features)
    b_path = export_onnx(back, hidden, "hidden", "audio_embeds", {0: ("n_windows", 1 << 16), 1: ("T", 1 << 16)},
                         out_dir / "encoder_backend.fp32.onnx")
    return f_path, b_path
