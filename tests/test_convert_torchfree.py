"""The torch-free converter against the former torch export path (tests/torch_oracle.py) and torch's
own reading of the checkpoint: same encoder outputs (fp32, 1e-5), identical GGUF tensors, no torch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qasr.errors import QasrError

EXACT = 1e-5  # relative to the output's largest magnitude


def _run(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {name: x})[0]


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape and got.dtype == want.dtype == np.float32
    return float(np.abs(got.astype(np.float64) - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def torch_graphs(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    from tests.torch_oracle import export_torch_encoder

    out = tmp_path_factory.mktemp("torch-export")
    front, back = export_torch_encoder(tiny_checkpoint, out)
    im2col, _ = export_torch_encoder(tiny_checkpoint, out / "im2col", im2col=True)
    return {"front": front, "back": back, "im2col": im2col}


MEL_SHAPES = [(3, 100), (1, 57), (2, 1), (1, 2), (1, 3), (2, 9), (4, 100)]


@pytest.mark.parametrize("n_chunks,frames", MEL_SHAPES)
def test_frontend_equals_the_torch_export(tiny_bundle, torch_graphs, n_chunks, frames):
    mel = (np.random.default_rng(frames).standard_normal((n_chunks, 128, frames)) * 0.5).astype(np.float32)
    want = _run(torch_graphs["front"], "mel", mel)
    assert _rel(_run(tiny_bundle / "encoder_frontend.fp32.onnx", "mel", mel), want) <= EXACT
    assert _rel(_run(torch_graphs["im2col"], "mel", mel), want) <= EXACT  # the oracle's own two forms


@pytest.fixture(scope="module")
def im2col_fp32(tiny_checkpoint, tmp_path_factory) -> Path:
    import onnx

    from qasr.engine.convert.checkpoint import AUDIO_PREFIX, load_tensors, read_checkpoint
    from qasr.engine.convert.encoder_onnx import frontend_model

    ckpt = read_checkpoint(tiny_checkpoint)
    path = tmp_path_factory.mktemp("im2col") / "frontend.im2col.fp32.onnx"
    onnx.save(frontend_model(ckpt.audio, load_tensors(ckpt, AUDIO_PREFIX), im2col=True), str(path))
    return path


@pytest.mark.parametrize("n_chunks,frames", MEL_SHAPES)
def test_im2col_frontend_equals_the_torch_im2col_export(im2col_fp32, torch_graphs, n_chunks, frames):
    mel = (np.random.default_rng(frames + 1).standard_normal((n_chunks, 128, frames)) * 0.5).astype(np.float32)
    want = _run(torch_graphs["front"], "mel", mel)
    assert _rel(_run(im2col_fp32, "mel", mel), want) <= EXACT
    assert _rel(_run(im2col_fp32, "mel", mel), _run(torch_graphs["im2col"], "mel", mel)) <= EXACT


@pytest.mark.parametrize("windows,tokens", [(1, 33), (2, 104), (3, 1), (1, 13)])
def test_backend_equals_the_torch_export(tiny_bundle, torch_graphs, windows, tokens):
    hidden = np.random.default_rng(tokens).standard_normal((windows, tokens, 64)).astype(np.float32)
    want = _run(torch_graphs["back"], "hidden", hidden)
    assert _rel(_run(tiny_bundle / "encoder_backend.fp32.onnx", "hidden", hidden), want) <= EXACT


def test_int8_encoder_is_close_to_the_torch_export(bundle_factory, torch_graphs):
    bundle = bundle_factory("int8", "f32")
    mel = (np.random.default_rng(5).standard_normal((3, 128, 100)) * 0.5).astype(np.float32)
    assert _rel(_run(bundle / "encoder_frontend.int8.onnx", "mel", mel), _run(torch_graphs["front"], "mel", mel)) < 0.15
    hidden = np.random.default_rng(6).standard_normal((2, 40, 64)).astype(np.float32)
    got = _run(bundle / "encoder_backend.int8.onnx", "hidden", hidden)
    assert 0 < _rel(got, _run(torch_graphs["back"], "hidden", hidden)) < 0.15


def _torch_tensors(checkpoint: Path) -> dict[str, np.ndarray]:
    import torch
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(checkpoint.glob("*.safetensors")):
        tensors.update({k: v.to(torch.float32).numpy() for k, v in load_file(f).items()})
    return tensors


@pytest.mark.parametrize("decoder", ["f32", "f16"])
def test_gguf_tensors_are_identical_to_torchs_reading(bundle_factory, tiny_checkpoint, decoder):
    import gguf

    from qasr.engine.convert.decoder_gguf import gguf_name

    reader = gguf.GGUFReader(bundle_factory("fp32", decoder) / f"decoder.{decoder}.gguf")
    got = {t.name: t for t in reader.tensors}
    want = {gguf_name(k[len("thinker.model."):]): v for k, v in _torch_tensors(tiny_checkpoint).items()
            if k.startswith("thinker.model.") and gguf_name(k[len("thinker.model."):])}
    assert set(got) == set(want) and len(got) > 20
    for name, tensor in want.items():
        dtype = np.float16 if decoder == "f16" and tensor.ndim > 1 else np.float32
        data = np.asarray(got[name].data).reshape(tensor.shape)
        assert data.dtype == dtype, name
        assert np.array_equal(data, tensor.astype(dtype)), name


def test_bf16_is_read_exactly_as_torch_widens_it(tmp_path):
    import torch
    from safetensors.torch import save_file

    from qasr.engine.convert.checkpoint import read_tensor

    values = torch.randn(7, 33) * 100
    values[0, :4] = torch.tensor([float("inf"), -0.0, 1e-40, -65504.0])
    save_file({"w": values.to(torch.bfloat16), "h": values.to(torch.float16), "f": values}, tmp_path / "m.safetensors")
    for name, dtype in (("w", torch.bfloat16), ("h", torch.float16), ("f", torch.float32)):
        got = read_tensor(tmp_path / "m.safetensors", name)
        want = values.to(dtype).to(torch.float32).numpy()
        assert got.dtype == np.float32 and np.array_equal(got, want, equal_nan=True), name


@pytest.mark.parametrize("act", ["gelu_pytorch_tanh", "silu", "relu"])
def test_other_activations_equal_the_torch_modules(tiny_checkpoint, tmp_path, act):
    import torch

    from qasr.engine.convert import convert_checkpoint
    from tests.torch_oracle import load_audio_modules

    ckpt = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    config = json.loads((ckpt / "config.json").read_text())
    config["thinker_config"]["audio_config"]["activation_function"] = act
    (ckpt / "config.json").write_text(json.dumps(config))
    bundle = convert_checkpoint(ckpt, tmp_path / "bundle", "fp32", "f32")
    _, back = load_audio_modules(ckpt)
    hidden = np.random.default_rng(2).standard_normal((2, 20, 64)).astype(np.float32)
    with torch.no_grad():
        want = back(torch.from_numpy(hidden)).numpy()
    assert _rel(_run(bundle / "encoder_backend.fp32.onnx", "hidden", hidden), want) <= EXACT


def test_a_wrong_graph_is_caught_by_the_numpy_reference(tiny_checkpoint, tmp_path, monkeypatch):
    from qasr.engine.convert import convert_checkpoint, encoder_onnx

    monkeypatch.setattr(encoder_onnx, "LAYER_NORM_EPS", 1e-1)  # the graph only; the reference keeps 1e-5
    with pytest.raises(QasrError, match="encoder_backend.fp32.onnx differs from the reference .*converter bug"):
        convert_checkpoint(tiny_checkpoint, tmp_path / "bundle", "fp32", "f32")
    assert not (tmp_path / "bundle").exists()


def test_unsupported_activation_is_one_line(tiny_checkpoint, tmp_path):
    from qasr.engine.convert import convert_checkpoint

    ckpt = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    config = json.loads((ckpt / "config.json").read_text())
    config["thinker_config"]["audio_config"]["activation_function"] = "swish_of_the_future"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(QasrError, match="audio activation 'swish_of_the_future' is not supported"):
        convert_checkpoint(ckpt, tmp_path / "bundle")


_NO_TORCH = """
import importlib.abc, sys
BLOCKED = ("torch", "transformers", "onnxscript", "qwen_asr")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: the product path must not import it")
sys.meta_path.insert(0, Block())
from qasr.daemon.cli.main import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
sys.exit(code)
"""


@pytest.mark.parametrize("encoder,decoder", [("int8", "q4_k"), ("fp16", "f16")])
def test_models_convert_imports_no_torch(tiny_checkpoint, tmp_path, encoder, decoder):
    out = tmp_path / "bundle"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _NO_TORCH, "models", "convert", str(tiny_checkpoint), str(out),
                           "--encoder", encoder, "--decoder", decoder], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    from qasr.engine.bundle import load_bundle

    files = load_bundle(out, verify="sha256").manifest.files
    assert files["decoder"].precision == decoder and files["encoder_backend"].precision == encoder
