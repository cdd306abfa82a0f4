"""Checkpoint -> bundle conversion (torch-free converter), checked against the official Qwen3-ASR model code."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qasr.engine.bundle import DECODER_PRECISIONS, ENCODER_PRECISIONS, SPECIAL_TOKENS, load_bundle
from qasr.errors import QasrError

PAIRS = [(e, d) for e in ENCODER_PRECISIONS for d in DECODER_PRECISIONS]


# ---------------------------------------------------------------- helpers / fixtures

@pytest.fixture(scope="session")
def official(official_ref):
    return official_ref


def _ort(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _official_tower(official, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(input of the first transformer layer, tower output) of the official audio tower for one clip."""
    import torch

    tower = official.audio_tower
    captured = {}

    def keep_input(module, args, kwargs):
        captured["hidden"] = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]

    hook = tower.layers[0].register_forward_pre_hook(keep_input, with_kwargs=True)
    try:
        with torch.no_grad():
            out = tower(torch.from_numpy(mel), feature_lens=torch.tensor([mel.shape[1]])).last_hidden_state
    finally:
        hook.remove()
    return captured["hidden"].numpy(), out.numpy()


def _chunks(mel: np.ndarray, chunk: int = 100) -> tuple[np.ndarray, list[int]]:
    """Split [n_mels, L] into zero-padded [n_chunks, n_mels, chunk] plus the valid frames per chunk."""
    n_mels, length = mel.shape
    n = -(-length // chunk)
    padded = np.zeros((n, n_mels, chunk), dtype=np.float32)
    valid = []
    for i in range(n):
        part = mel[:, i * chunk:(i + 1) * chunk]
        padded[i, :, : part.shape[1]] = part
        valid.append(part.shape[1])
    return padded, valid


def _valid_tokens(frames: int) -> int:
    return (frames + 7) // 8 if frames < 100 else 13


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def clip_mel() -> np.ndarray:
    """2.5 s of log-mel-like features: two full chunks and a padded tail (one 33-token window)."""
    rng = np.random.default_rng(7)
    return (rng.standard_normal((128, 250)) * 0.5).astype(np.float32)


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------- every precision pair

@pytest.mark.parametrize("encoder,decoder", PAIRS)
def test_every_precision_pair_converts_and_verifies(bundle_factory, tiny_checkpoint, encoder, decoder):
    bundle = load_bundle(bundle_factory(encoder, decoder), verify="sha256")
    files = bundle.manifest.files
    assert files["encoder_frontend"].path == f"encoder_frontend.{encoder}.onnx"
    assert files["encoder_backend"].precision == encoder
    assert files["decoder"].path == f"decoder.{decoder}.gguf"
    assert sorted(p.name for p in bundle.root.iterdir()) == sorted(
        [f.path for f in files.values()] + ["manifest.json"]
    )
    # The graphs take and give float32 whatever the precision inside.
    mel = np.zeros((1, 128, 100), dtype=np.float32)
    embeds = _ort(bundle.path("encoder_frontend")).run(None, {"mel": mel})[0]
    assert embeds.dtype == np.float32 and embeds.shape == (1, 13, bundle.manifest.audio.d_model)
    out = _ort(bundle.path("encoder_backend")).run(None, {"hidden": embeds})[0]
    assert out.dtype == np.float32 and out.shape == (1, 13, bundle.manifest.audio.output_dim)


def test_manifest_describes_the_checkpoint(tiny_bundle, tiny_checkpoint):
    cfg = json.loads((tiny_checkpoint / "config.json").read_text())
    thinker = cfg["thinker_config"]
    added = json.loads((tiny_checkpoint / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    by_text = {spec["content"]: int(tid) for tid, spec in added.items()}
    m = load_bundle(tiny_bundle).manifest
    assert m.tokens == {name: by_text[text] for name, text in SPECIAL_TOKENS.items()}
    assert m.tokens["audio_pad"] == thinker["audio_token_id"]
    assert m.tokens["audio_start"] == thinker["audio_start_token_id"]
    assert m.stop_token_ids == [by_text["<|im_end|>"], by_text["<|endoftext|>"]]
    audio = thinker["audio_config"]
    assert (m.audio.d_model, m.audio.output_dim, m.audio.encoder_layers) == (
        audio["d_model"], audio["output_dim"], audio["encoder_layers"])
    assert m.audio.chunk_frames == 2 * audio["n_window"]
    assert m.audio.tokens_per_chunk == 13
    assert m.audio.window_tokens == 13 * (audio["n_window_infer"] // (2 * audio["n_window"]))
    text = thinker["text_config"]
    assert (m.text.hidden_size, m.text.num_layers, m.text.vocab_size) == (
        text["hidden_size"], text["num_hidden_layers"], text["vocab_size"])
    assert m.languages == cfg["support_languages"]
    assert m.model["architecture"] == "Qwen3ASRForConditionalGeneration"


# ---------------------------------------------------------------- encoder parity with the official tower

def test_frontend_matches_official_conv_proj_positions(tiny_bundle, official, clip_mel):
    want, _ = _official_tower(official, clip_mel)
    chunks, valid = _chunks(clip_mel)
    embeds = _ort(tiny_bundle / "encoder_frontend.fp32.onnx").run(None, {"mel": chunks})[0]
    got = np.concatenate([embeds[i, : _valid_tokens(v)] for i, v in enumerate(valid)])
    assert got.shape == want.shape == (33, embeds.shape[-1])
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_backend_matches_official_layers_on_one_window(tiny_bundle, official, clip_mel):
    hidden, want = _official_tower(official, clip_mel)
    got = _ort(tiny_bundle / "encoder_backend.fp32.onnx").run(None, {"hidden": hidden[None]})[0][0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_backend_batches_windows_independently(tiny_bundle, official, clip_mel):
    hidden, want = _official_tower(official, clip_mel)
    other = np.flip(hidden, axis=0).copy()
    got = _ort(tiny_bundle / "encoder_backend.fp32.onnx").run(None, {"hidden": np.stack([hidden, other])})[0]
    assert np.abs(got[0] - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


@pytest.mark.parametrize("encoder,limit", [("fp16", 2e-2), ("int8", 0.15)])
def test_reduced_precision_encoder_stays_close_to_official(bundle_factory, official, clip_mel, encoder, limit):
    bundle = bundle_factory(encoder, "f32")
    hidden, want = _official_tower(official, clip_mel)
    chunks, valid = _chunks(clip_mel)
    embeds = _ort(bundle / f"encoder_frontend.{encoder}.onnx").run(None, {"mel": chunks})[0]
    front = np.concatenate([embeds[i, : _valid_tokens(v)] for i, v in enumerate(valid)])
    assert _rel(front, hidden) < limit
    out = _ort(bundle / f"encoder_backend.{encoder}.onnx").run(None, {"hidden": front[None]})[0][0]
    assert _rel(out, want) < limit
    # and it is really a different graph, not the fp32 one under another name
    assert (bundle / f"encoder_backend.{encoder}.onnx").stat().st_size < (
        bundle_factory("fp32", "f32") / "encoder_backend.fp32.onnx").stat().st_size


def _tiny_frontend(tiny_checkpoint):
    """The torch front-end module of the test oracle (the former torch export path)."""
    from tests.torch_oracle import load_audio_modules

    return load_audio_modules(tiny_checkpoint)[0]


@pytest.mark.parametrize("n_chunks,frames", [(3, 100), (1, 57), (2, 1), (1, 2), (1, 3), (2, 9)])
def test_im2col_frontend_equals_the_conv_frontend(tiny_checkpoint, n_chunks, frames):
    import torch

    from tests.torch_oracle import AudioFrontEndIm2col

    front = _tiny_frontend(tiny_checkpoint)
    mel = torch.randn(n_chunks, 128, frames, generator=torch.Generator().manual_seed(frames)) * 0.5
    with torch.no_grad():
        want = front(mel).numpy()
        got = AudioFrontEndIm2col(front).eval()(mel).numpy()
    assert got.shape == want.shape
    assert _rel(got, want) <= 1e-5


def _conv_weights(path: Path) -> list[str]:
    import onnx

    return [node.input[1] for node in onnx.load(str(path)).graph.node if node.op_type in ("Conv", "ConvInteger")]


def test_int8_frontend_runs_the_wide_convs_as_int8_matmuls(bundle_factory, tiny_checkpoint):
    import onnx
    import torch

    bundle = bundle_factory("int8", "f32")
    path = bundle / "encoder_frontend.int8.onnx"
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    # Only the one-channel first conv stays a (fp32) Conv; conv2d2, conv2d3 are int8 MatMuls, the
    # projection (conv_out) an fp32 MatMul (the int8-mixed recipe, tests/test_quant_recipe.py).
    assert _conv_weights(path) == ["conv2d1.weight"]
    assert "ConvInteger" not in ops
    assert ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul") == 2
    assert ops.count("MatMul") == 1
    # fp32 and fp16 keep real convolutions.
    assert len(_conv_weights(bundle_factory("fp32", "f32") / "encoder_frontend.fp32.onnx")) == 3
    assert len(_conv_weights(bundle_factory("fp16", "f32") / "encoder_frontend.fp16.onnx")) == 3
    # Dynamic chunk count and time axis, close to the plain conv module.
    front = _tiny_frontend(tiny_checkpoint)
    for n_chunks, frames in ((1, 1), (2, 37), (5, 100)):
        mel = torch.randn(n_chunks, 128, frames, generator=torch.Generator().manual_seed(frames)) * 0.5
        with torch.no_grad():
            want = front(mel).numpy()
        got = _ort(path).run(None, {"mel": mel.numpy()})[0]
        assert got.shape == want.shape
        assert _rel(got, want) < 0.15


# ---------------------------------------------------------------- decoder parity with the official text model

def _llama(path: Path, **kwargs):
    from llama_cpp import Llama

    return Llama(model_path=str(path), n_ctx=128, n_threads=1, n_batch=64, logits_all=True, verbose=False, **kwargs)


def _official_logits(official, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = official.model.thinker(input_ids=torch.tensor([ids]), use_cache=False)
    return out.logits[0].numpy()


@pytest.fixture(scope="module")
def text_ids(official) -> list[int]:
    m = official.tokenizer
    ids = m("<|im_start|>system\nThe meeting is about the budget.<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    ids += m("language English<asr_text>Hello everyone, thank you for joining.")["input_ids"]
    assert len(ids) > 12 and len(set(ids)) > 10
    return ids


def test_f32_gguf_logits_match_official_text_model(tiny_bundle, official, text_ids):
    llm = _llama(tiny_bundle / "decoder.f32.gguf")
    llm.eval(text_ids)
    got = np.array(llm.scores[: len(text_ids)], dtype=np.float32)
    want = _official_logits(official, text_ids)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-3 * max(1.0, np.abs(want).max())
    assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize("decoder,limit", [("f16", 2e-2), ("q8_0", 5e-2)])
def test_reduced_precision_decoder_stays_close(bundle_factory, official, text_ids, decoder, limit):
    llm = _llama(bundle_factory("fp32", decoder) / f"decoder.{decoder}.gguf")
    llm.eval(text_ids)
    got = np.array(llm.scores[: len(text_ids)], dtype=np.float32)
    assert _rel(got, _official_logits(official, text_ids)) < limit


def test_gguf_tokenizer_matches_official_tokenizer(tiny_bundle, official):
    llm = _llama(tiny_bundle / "decoder.f32.gguf", vocab_only=True)
    for text in ("Hello everyone, thank you for joining today.", "Bonjour à tous, merci!", "今天天气很好，我们一起去公园。",
                 " numbers 2024 3.14 it's we're"):
        want = official.tokenizer(text)["input_ids"]
        assert llm.tokenize(text.encode(), add_bos=False) == want, text
        assert llm.detokenize(want).decode() == text
    prompt = "<|im_start|>user\n<|audio_start|><|audio_pad|><|audio_end|><|im_end|>"
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == official.tokenizer(prompt)["input_ids"]


def test_gguf_metadata_and_q4_k_keeps_embedding_at_q8_0(bundle_factory, tiny_checkpoint):
    import gguf

    text = json.loads((tiny_checkpoint / "config.json").read_text())["thinker_config"]["text_config"]
    reader = gguf.GGUFReader(bundle_factory("fp32", "q4_k") / "decoder.q4_k.gguf")
    fields = reader.fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "qwen3"
    assert int(fields["qwen3.attention.key_length"].parts[-1][0]) == text["head_dim"]
    assert int(fields["qwen3.block_count"].parts[-1][0]) == text["num_hidden_layers"]
    assert float(fields["qwen3.rope.freq_base"].parts[-1][0]) == text["rope_theta"]
    assert bytes(fields["tokenizer.ggml.pre"].parts[-1]).decode() == "qwen2"
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert "output.weight" not in types  # tied embedding serves as the output head
    assert types["output_norm.weight"] == gguf.GGMLQuantizationType.F32
    # The other matrices really are quantized below 8 bits (k-quants or their small-row fallbacks).
    low = {gguf.GGMLQuantizationType[n] for n in ("Q4_K", "Q5_K", "Q6_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1")}
    assert types["blk.0.ffn_down.weight"] in low and types["blk.1.attn_q.weight"] in low
    n_tokens = len(fields["tokenizer.ggml.tokens"].data)
    assert n_tokens == text["vocab_size"]


# ---------------------------------------------------------------- bad input -> one clear line

@pytest.mark.parametrize("edit,needle", [
    (lambda c: c.update(model_type="whisper", architectures=["WhisperForConditionalGeneration"]), "not Qwen3-ASR"),
    (lambda c: c["thinker_config"].pop("text_config"), "thinker_config"),
    (lambda c: c["thinker_config"].update(audio_token_id=5), "do not belong together"),
    (lambda c: c["thinker_config"]["audio_config"].pop("d_model"), "'d_model'"),
])
def test_bad_config_is_a_clear_error(tiny_checkpoint, tmp_path, edit, needle):
    from qasr.engine.convert import convert_checkpoint

    ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    _edit_json(ckpt / "config.json", edit)
    with pytest.raises(QasrError) as err:
        convert_checkpoint(ckpt, tmp_path / "out")
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("missing", ["config.json", "vocab.json", "merges.txt", "tokenizer_config.json", "model.safetensors"])
def test_missing_file_is_a_clear_error(tiny_checkpoint, tmp_path, missing):
    from qasr.engine.convert import convert_checkpoint

    ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    (ckpt / missing).unlink()
    with pytest.raises(QasrError) as err:
        convert_checkpoint(ckpt, tmp_path / "out")
    assert missing in str(err.value) and "\n" not in str(err.value)


def test_sharded_bf16_checkpoint_converts_like_the_single_file(tiny_checkpoint, tmp_path, tiny_bundle):
    import torch
    from safetensors.torch import load_file, save_file

    from qasr.engine.convert import convert_checkpoint

    ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    tensors = load_file(ckpt / "model.safetensors")
    (ckpt / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2:])):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: tensors[n].to(torch.bfloat16).contiguous() for n in part}, ckpt / shard, metadata={"format": "pt"})
        weight_map.update({n: shard for n in part})
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    out = convert_checkpoint(ckpt, tmp_path / "bundle", "fp32", "f32")
    bundle = load_bundle(out, verify="sha256")
    # bf16 rounding of the weights moves the front-end output by ~1e-2 relative, not more.
    mel = np.random.default_rng(1).standard_normal((2, 128, 100)).astype(np.float32) * 0.5
    got = _ort(bundle.path("encoder_frontend")).run(None, {"mel": mel})[0]
    want = _ort(tiny_bundle / "encoder_frontend.fp32.onnx").run(None, {"mel": mel})[0]
    assert 0 < _rel(got, want) < 3e-2
    # a missing shard is named in the error
    (ckpt / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(QasrError, match="model-00002-of-00002"):
        convert_checkpoint(ckpt, tmp_path / "bundle2")


def test_failed_conversion_leaves_nothing_that_looks_like_a_bundle(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    from qasr.engine.convert import convert_checkpoint

    ckpt = _copy_checkpoint(tiny_checkpoint, tmp_path / "ckpt")
    tensors = load_file(ckpt / "model.safetensors")
    del tensors["thinker.model.layers.0.self_attn.k_norm.weight"]  # noticed only when the decoder is written
    save_file(tensors, ckpt / "model.safetensors", metadata={"format": "pt"})
    out_parent = tmp_path / "models"
    with pytest.raises(QasrError, match="blk.0.attn_k_norm"):
        convert_checkpoint(ckpt, out_parent / "bundle")
    assert list(out_parent.iterdir()) == []


def test_existing_output_needs_overwrite(tiny_checkpoint, tmp_path):
    from qasr.engine.convert import convert_checkpoint

    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(QasrError, match="--force"):
        convert_checkpoint(tiny_checkpoint, out)
    assert (out / "keep.txt").exists()
    stages = []
    convert_checkpoint(tiny_checkpoint, out, "fp32", "f32", progress=lambda s, f: stages.append((s, f)), overwrite=True)
    assert not (out / "keep.txt").exists()
    load_bundle(out, verify="sha256")
    fractions = [f for _, f in stages]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"exporting encoder front-end", "writing decoder", "writing manifest"} <= {s for s, _ in stages}


# ---------------------------------------------------------------- command line

def test_cli_convert_writes_a_bundle_and_exits_0(tiny_checkpoint, tmp_path):
    out = tmp_path / "cli-bundle"
    proc = subprocess.run(
        [sys.executable, "-m", "qasr.daemon.cli.main", "models", "convert", str(tiny_checkpoint), str(out),
         "--encoder", "int8", "--decoder", "q4_k"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    assert "writing decoder" in proc.stderr  # per-stage progress lines when not on a TTY
    m = load_bundle(out, verify="sha256").manifest
    assert m.files["decoder"].precision == "q4_k" and m.files["encoder_backend"].precision == "int8"


def test_cli_reports_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    from qasr.daemon.cli.main import main

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    assert main(["models", "convert", str(tmp_path), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("qasr-daemon: error: ") and "LlamaForCausalLM" in err[-1]


def test_missing_converter_packages_are_named_with_the_install_hint(monkeypatch, tiny_checkpoint, tmp_path):
    from qasr.engine.convert import convert_checkpoint, pipeline

    monkeypatch.setattr(pipeline, "REQUIRED_MODULES", pipeline.REQUIRED_MODULES + ("qasr_no_such_module",))
    with pytest.raises(QasrError) as err:
        convert_checkpoint(tiny_checkpoint, tmp_path / "out")
    assert "qasr_no_such_module" in str(err.value) and "pip install 'qasr[convert]'" in str(err.value)
    assert "torch" not in str(err.value).split("which")[0]  # installed packages are not listed


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_redraws_one_line_on_a_terminal():
    from qasr.daemon.cli.cmd_models import ProgressLine

    term, pipe = _Terminal(), io.StringIO()
    for stream in (term, pipe):
        line = ProgressLine(stream)
        for stage, fraction in [("reading checkpoint", 0.0), ("writing decoder", 0.5), ("writing decoder", 0.6), ("done", 1.0)]:
            line(stage, fraction)
    drawn = term.getvalue()
    assert drawn.count("\r") == 4 and drawn.endswith("\n") and drawn.count("\n") == 1
    assert " 60.0%  writing decoder" in drawn and "100.0%" in drawn
    assert pipe.getvalue() == "reading checkpoint...\nwriting decoder...\n"
