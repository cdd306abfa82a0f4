"""The default int8 encoder recipe (engine.convert.encoder_export.INT8_RECIPES): float groups stay float,
the manifest records the recipe, the bundle transcribes, and its error against fp32 beats all-int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qasr.engine.bundle import load_bundle
from qasr.engine.convert.encoder_export import INT8_RECIPES, Int8Recipe, convert_int8, float_nodes, weight_matmuls


def _initializers(path: Path) -> dict:
    import onnx

    return {i.name: i for i in onnx.load(str(path)).graph.initializer}


def _float_weight_consumers(path: Path) -> dict[str, str]:
    """{float initializer name: op type} for every weight a MatMul/Gemm still reads in float."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    return {n.input[1]: n.op_type for n in model.graph.node
            if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits
            and inits[n.input[1]].data_type == TensorProto.FLOAT}


def _encode(bundle: Path, mel: np.ndarray) -> np.ndarray:
    from qasr.engine.encoder import EncoderOptions, EncoderRunner

    b = load_bundle(bundle)
    return EncoderRunner.from_bundle(b, EncoderOptions(threads=1)).encode(mel)


def _rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want.astype(np.float64)))


@pytest.fixture(scope="module")
def speech_mel():
    from qasr.daemon.bench.synthetic_audio import make_test_audio
    from qasr.engine.features import log_mel_features

    return log_mel_features(make_test_audio(9.5, seed=3, kind="speechlike"))


@pytest.fixture(scope="module")
def naive_bundle(tiny_checkpoint, tmp_path_factory):
    from qasr.engine.convert import convert_checkpoint

    return convert_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp("naive") / "b", "int8-naive", "f32")


def test_manifest_records_the_recipe(bundle_factory):
    m = load_bundle(bundle_factory("int8", "f32")).manifest
    recipe = m.extra["conversion"]["encoder_recipe"]
    n = m.audio.encoder_layers
    assert recipe["name"] == INT8_RECIPES["int8"].name == "int8-mixed"
    assert set(recipe["float_groups"]) == {"frontend_proj", "head"}
    assert set(recipe["float_weight_prefixes"]) == {"conv_out.", "proj1.", "proj2."}
    assert not any(p.startswith("layers.") for p in recipe["float_weight_prefixes"]) and n == 2
    assert "per output channel" in recipe["weights"] and "uint8" in recipe["activations"]
    assert m.files["encoder_backend"].precision == "int8"
    fp32 = load_bundle(bundle_factory("fp32", "f32")).manifest.extra["conversion"]["encoder_recipe"]
    assert fp32["name"] == "fp32" and fp32["float_groups"] == []


def test_float_groups_stay_float_in_the_written_graphs(bundle_factory):
    bundle = bundle_factory("int8", "f32")
    back = _float_weight_consumers(bundle / "encoder_backend.int8.onnx")
    front = _float_weight_consumers(bundle / "encoder_frontend.int8.onnx")
    # exactly the head stays float in the back-end; every transformer layer is int8
    assert back == {"proj1.weight": "MatMul", "proj2.weight": "MatMul"}
    assert "layers.0.fc1.weight_quantized" in _initializers(bundle / "encoder_backend.int8.onnx")
    assert front.get("conv_out.weight") == "MatMul"
    # ... and the wide front-end convs are int8 (im2col MatMuls), the speed the recipe keeps.
    inits = _initializers(bundle / "encoder_frontend.int8.onnx")
    assert "conv2d2.weight" not in front and "conv2d3.weight" not in front
    assert {"conv2d2.weight_quantized", "conv2d3.weight_quantized"} <= set(inits)
    assert not any(name.startswith(("proj1.", "proj2.")) and name.endswith("_quantized")
                   for name in _initializers(bundle / "encoder_backend.int8.onnx"))


def test_middle_layers_are_quantized_and_only_the_chosen_nodes_excluded(tiny_checkpoint, tmp_path):
    """Keeping a layer group float: exactly layer 0's six MatMuls stay float, layer 1's become int8."""
    import onnx

    from qasr.engine.convert.checkpoint import AUDIO_PREFIX, load_tensors, read_checkpoint
    from qasr.engine.convert.encoder_onnx import backend_model

    ckpt = read_checkpoint(tiny_checkpoint)
    model = backend_model(ckpt.audio, load_tensors(ckpt, AUDIO_PREFIX))
    recipe = Int8Recipe("test", keep_float=("first_layer",))
    excluded = float_nodes(model, recipe, ckpt.audio.encoder_layers)
    assert sorted(weight_matmuls(model)[n] for n in excluded) == sorted(
        f"layers.0.{w}.weight" for w in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                         "self_attn.out_proj", "fc1", "fc2"))
    onnx.save(model, str(tmp_path / "f.onnx"))
    convert_int8(tmp_path / "f.onnx", tmp_path / "q.onnx", recipe, ckpt.audio.encoder_layers)
    floats = _float_weight_consumers(tmp_path / "q.onnx")
    assert all(k.startswith("layers.0.") or k.startswith("proj") for k in floats)
    assert "layers.1.fc1.weight_quantized" in _initializers(tmp_path / "q.onnx")


def test_recipe_error_against_fp32_is_below_all_int8(bundle_factory, naive_bundle, speech_mel):
    want = _encode(bundle_factory("fp32", "f32"), speech_mel)
    mixed = _rel_l2(_encode(bundle_factory("int8", "f32"), speech_mel), want)
    naive = _rel_l2(_encode(naive_bundle, speech_mel), want)
    assert 0 < mixed < naive, (mixed, naive)
    assert load_bundle(naive_bundle).manifest.extra["conversion"]["encoder_recipe"]["float_groups"] == []


def test_recipe_bundle_loads_and_transcribes(bundle_factory):
    from qasr.daemon.bench.synthetic_audio import make_test_audio
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    with Transcriber(bundle_factory("int8", "f32"), TranscribeOptions(threads=1, max_new_tokens=16)) as t:
        result = t.transcribe(make_test_audio(3.0, seed=1, kind="speechlike"))
    assert result.token_ids and result.encoder_ms > 0


def test_quant_error_bench_reports_every_layer(tiny_checkpoint, tmp_path, capsys):
    from qasr.daemon.bench import quant_error

    out = tmp_path / "r.json"
    assert quant_error.main(["--checkpoint", str(tiny_checkpoint), "--recipes", "fp16,int8-naive,int8",
                             "--seconds", "9", "--repeats", "1", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| layer 2 |" in text and "| output |" in text and "vs int8-naive" in text
    import json

    r = json.loads(out.read_text())["recipes"]
    assert r["fp32"]["rel_l2"][-1] == 0 and len(r["int8"]["rel_l2"]) == 2 + 2
    assert r["int8"]["rel_l2"][-1] < r["int8-naive"]["rel_l2"][-1]


def test_quant_error_bench_bad_input_is_one_line(tmp_path, capsys):
    from qasr.daemon.bench import quant_error

    assert quant_error.main(["--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("quant_error:") and "\n" not in err
    assert quant_error.main(["--checkpoint", str(tmp_path), "--recipes", "int8-naive+bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
