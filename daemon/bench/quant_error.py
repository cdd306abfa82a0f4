"""Encoder quantization recipes measured as error against fp32, layer by layer, and as speed.

    python -m qasr.daemon.bench.quant_error --checkpoint DIR [--seconds 16] [--repeats 5] [--threads 1]
                                            [--recipes fp32,fp16,int8-naive,int8] [--audio speechlike|espeak]
                                            [--json OUT.json]

From a Hugging Face Qwen3-ASR checkpoint folder (a random one of the 0.6B shapes is fine:
`python -m qasr.daemon.bench.random_checkpoint`), it writes both encoder graphs for every recipe the
way the converter does (`engine.convert.encoder_export`), runs a speech-like clip through each recipe's
front-end and back-end in a chain, and reports:

- the relative L2 error (||x - x_fp32|| / ||x_fp32||) and max |x - x_fp32| of the residual stream
  after the front-end (`embeds`), after every transformer layer, and at the encoder output;
- the speed of the written graphs (front-end and back-end ms for the whole clip, as the runtime's
  `EncoderRunner` runs them), interleaved over the recipes in every repeat (medians), and file sizes.

Recipes: fp32, fp16, the named int8 recipes of `encoder_export.INT8_RECIPES` (`int8` is the
converter's default), and `int8-naive+GROUP[+GROUP...]` for any `encoder_export.FLOAT_GROUPS`
kept in float on top of the all-int8 recipe (the sensitivity of one group at a time).
With random weights a WER means nothing: read the error against fp32, and the ranking between recipes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DEFAULT_RECIPES = ("fp32", "fp16", "int8-per-tensor", "int8-naive", "int8-naive+frontend_convs",
                   "int8-naive+frontend_proj", "int8-naive+first_layer", "int8-naive+last_layer",
                   "int8-naive+head", "int8", "int8-accurate")


class BenchError(Exception):
    """Bad input to the benchmark; printed as one line."""


@dataclass
class Variant:
    name: str
    kind: str  # fp32 | fp16 | int8
    recipe: object = None  # encoder_export.Int8Recipe for int8
    front: Path | None = None
    back: Path | None = None
    back_probe: Path | None = None  # back-end with every layer's output as a graph output
    errors: dict = field(default_factory=dict)
    times: dict = field(default_factory=lambda: {"front": [], "back": []})


def parse_recipe(name: str):
    """(kind, Int8Recipe or None) for a recipe name; BenchError if unknown."""
    from qasr.engine.convert.encoder_export import FLOAT_GROUPS, INT8_RECIPES, Int8Recipe

    if name in ("fp32", "fp16"):
        return name, None
    if name in INT8_RECIPES:
        return "int8", INT8_RECIPES[name]
    base, _, groups = name.partition("+")
    if base in INT8_RECIPES and groups:
        extra = tuple(groups.split("+"))
        unknown = [g for g in extra if g not in FLOAT_GROUPS]
        if unknown:
            raise BenchError(f"unknown float group {unknown[0]!r} in {name!r}; groups: {', '.join(FLOAT_GROUPS)}")
        b = INT8_RECIPES[base]
        return "int8", Int8Recipe(name, keep_float=tuple(dict.fromkeys(b.keep_float + extra)),
                                  per_channel=b.per_channel, reduce_range=b.reduce_range)
    raise BenchError(f"unknown recipe {name!r}; use fp32, fp16, {', '.join(INT8_RECIPES)} or int8-naive+GROUP")


def residual_names(model, n_layers: int) -> list[str]:
    """Tensor names of the residual stream after layers 1..n (inputs of the next layer's first norm and
    of ln_post), found through the norms' checkpoint weight names."""
    wanted = {f"layers.{i}.self_attn_layer_norm.weight": i - 1 for i in range(1, n_layers)}
    wanted["ln_post.weight"] = n_layers - 1
    found: dict[int, str] = {}
    for node in model.graph.node:
        if node.op_type == "LayerNormalization" and node.input[1] in wanted:
            found[wanted[node.input[1]]] = node.input[0]
    if len(found) != n_layers:
        raise BenchError("the back-end graph does not have the expected layer norms; converter changed?")
    return [found[i] for i in range(n_layers)]


def with_outputs(model, names: list[str]):
    from onnx import TensorProto, helper

    model.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    return model


def _write(variant: Variant, build_front, build_back, n_layers: int, out: Path, cache: dict,
           reuse: bool = False) -> None:
    """Write the variant's graphs (front, back, back with layer outputs); identical graphs are shared."""
    from qasr.engine.convert.encoder_export import convert_fp16, convert_int8, save_fp32

    r = variant.recipe
    prefixes = r.float_prefixes(n_layers) if r else ()
    front_key = ("front", variant.kind, r.per_channel if r else None, r.reduce_range if r else None,
                 tuple(p for p in prefixes if not p.startswith(("layers.", "proj"))))
    back_key = ("back", variant.kind, r.per_channel if r else None, r.reduce_range if r else None,
                tuple(p for p in prefixes if p.startswith(("layers.", "proj"))))

    def emit(model, path: Path) -> Path:
        if path.is_file() and reuse:  # --reuse: graphs written by an earlier run into the same --work
            return path
        if variant.kind == "fp32":
            return save_fp32(model, path)
        if variant.kind == "fp16":
            return convert_fp16(model, path)
        tmp = save_fp32(model, path.with_suffix(".tmp.onnx"))
        convert_int8(tmp, path, r, n_layers)
        tmp.unlink()
        return path

    tag = variant.name.replace("+", "_")
    if front_key not in cache:
        cache[front_key] = emit(build_front(r.im2col if r else False), out / f"front.{tag}.onnx")
    variant.front = cache[front_key]
    if back_key not in cache:
        import onnx

        back = emit(build_back(), out / f"back.{tag}.onnx")
        names = residual_names(build_back(), n_layers)
        if variant.kind == "fp16":  # intermediate tensors are fp16 after conversion: convert with the outputs
            probe = emit(with_outputs(build_back(), names), out / f"back-probe.{tag}.onnx")
        else:  # fp32 / int8 keep the residual stream's names and float32 type
            probe = out / f"back-probe.{tag}.onnx"
            if not (probe.is_file() and reuse):
                onnx.save(with_outputs(onnx.load(str(back)), names), str(probe))
        cache[back_key] = (back, probe)
    variant.back, variant.back_probe = cache[back_key]


def _probe_session(path: Path, threads: int):
    from qasr.engine.encoder import _session

    return _session(path, threads)


def chain(front_runner, probe, hidden_windows: list[tuple[int, int]], mel: np.ndarray, audio):
    """[embeds, after layer 1..n (each [N, d]), output [N, out]] for the whole clip."""
    hidden = front_runner.frontend(mel)
    name = probe.get_inputs()[0].name
    per_window = [probe.run(None, {name: hidden[None, a:b]}) for a, b in hidden_windows]
    # outputs: [audio_embeds, residual after layer 0 .. n-1]
    n_out = len(per_window[0])
    stacked = [np.concatenate([w[k][0] for w in per_window], axis=0) for k in range(n_out)]
    return [hidden] + stacked[1:] + [stacked[0]]


def compare(got: list[np.ndarray], want: list[np.ndarray]) -> dict:
    rel, mx = [], []
    for g, w in zip(got, want):
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        rel.append(float(np.linalg.norm(g64 - w64) / (np.linalg.norm(w64) or 1.0)))
        mx.append(float(np.abs(g64 - w64).max()))
    return {"rel_l2": rel, "max_abs": mx, "ref_max_abs": float(np.abs(want[-1]).max())}


def load_audio(kind: str, seconds: float) -> np.ndarray:
    if kind == "speechlike":
        from qasr.daemon.bench.synthetic_audio import make_test_audio

        return make_test_audio(seconds, seed=7, kind="speechlike")
    if kind == "espeak":
        import shutil
        import subprocess
        import wave

        if shutil.which("espeak-ng") is None:
            raise BenchError("--audio espeak needs espeak-ng on PATH (or use --audio speechlike)")
        words = ("the quick brown fox jumps over the lazy dog while seven bright stars rise above quiet "
                 "harbour lights and distant bells ring for the evening train").split()
        text = " ".join(words[i % len(words)] for i in range(max(3, int(seconds * 2.6))))
        with tempfile.TemporaryDirectory() as tmp:
            wav = Path(tmp) / "speech.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), text], check=True, capture_output=True)
            with wave.open(str(wav)) as fh:
                rate, pcm = fh.getframerate(), np.frombuffer(fh.readframes(fh.getnframes()), dtype=np.int16)
        pcm = pcm.astype(np.float32) / 32768.0
        if rate != 16000:  # espeak-ng writes 22050 Hz: linear resampling is enough for a test signal
            t = np.arange(int(len(pcm) * 16000 / rate)) * rate / 16000
            pcm = np.interp(t, np.arange(len(pcm)), pcm).astype(np.float32)
        pcm = pcm[: int(seconds * 16000)]
        return (0.5 * pcm / max(1e-6, float(np.abs(pcm).max()))).astype(np.float32)
    raise BenchError(f"unknown audio kind {kind!r}; use speechlike or espeak")


def run(args) -> dict:
    from qasr.engine.bundle import AudioParams
    from qasr.engine.convert.checkpoint import AUDIO_PREFIX, CheckpointError, load_tensors, read_checkpoint
    from qasr.engine.features import log_mel_features

    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    if "fp32" not in names:
        names.insert(0, "fp32")
    variants = [Variant(n, *parse_recipe(n)) for n in dict.fromkeys(names)]
    if args.seconds <= 0 or args.repeats < 1 or args.threads < 1:
        raise BenchError("--seconds, --repeats and --threads must be positive")
    try:
        ckpt = read_checkpoint(args.checkpoint)
        tensors = load_tensors(ckpt, AUDIO_PREFIX)
    except CheckpointError as exc:
        raise BenchError(str(exc)) from None
    a = ckpt.audio
    audio_params = AudioParams(num_mel_bins=a.num_mel_bins, chunk_frames=a.chunk_frames,
                               tokens_per_chunk=a.tokens_per_chunk, window_tokens=a.window_tokens,
                               d_model=a.d_model, output_dim=a.output_dim, encoder_layers=a.encoder_layers)
    mel = log_mel_features(load_audio(args.audio, args.seconds))
    n_tokens = 0
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        return _measure(args, variants, a, tensors, audio_params, mel, work, ckpt)
    with tempfile.TemporaryDirectory(prefix="qasr-quant-error-") as tmp:
        return _measure(args, variants, a, tensors, audio_params, mel, Path(tmp), ckpt)


def _measure(args, variants, a, tensors, audio_params, mel, work: Path, ckpt) -> dict:
    from qasr.engine.convert.encoder_onnx import backend_model, frontend_model
    from qasr.engine.encoder import EncoderOptions, EncoderRunner

    n_tokens = 0
    cache: dict = {}
    t0 = time.perf_counter()
    for v in variants:
        _write(v, lambda im2col: frontend_model(a, tensors, im2col=im2col), lambda: backend_model(a, tensors),
               a.encoder_layers, work, cache, args.reuse)
        print(f"  wrote {v.name} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    del tensors
    options = EncoderOptions(threads=args.threads)
    # Errors: every recipe's chain against the fp32 chain, one probe session at a time.
    ref = None
    for v in variants:
        runner = EncoderRunner(v.front, v.back, audio_params, options)
        hidden_len = runner.frontend(mel).shape[0]
        windows = [(s, min(s + a.window_tokens, hidden_len)) for s in range(0, hidden_len, a.window_tokens)]
        n_tokens = hidden_len
        outs = chain(runner, _probe_session(v.back_probe, args.threads), windows, mel, audio_params)
        if ref is None:
            ref = outs
        v.errors = compare(outs, ref)
        del runner
    # Speed: the written graphs as the runtime runs them, recipes interleaved in every repeat.
    runners = {v.name: EncoderRunner(v.front, v.back, audio_params, options) for v in variants}
    for r in runners.values():  # warm-up
        r.encode(mel)
    for _ in range(args.repeats):
        for v in variants:
            r = runners[v.name]
            t = time.perf_counter()
            hidden = r.frontend(mel)
            t1 = time.perf_counter()
            r.backend(hidden)
            t2 = time.perf_counter()
            v.times["front"].append((t1 - t) * 1e3)
            v.times["back"].append((t2 - t1) * 1e3)
    del runners
    return {
        "checkpoint": str(ckpt.root),
        "audio": args.audio, "seconds": args.seconds, "tokens": n_tokens, "threads": args.threads,
        "repeats": args.repeats, "layers": a.encoder_layers,
        "load_before": os.getloadavg()[0],
        "recipes": {
            v.name: {
                "kind": v.kind,
                "recipe": v.recipe.describe(a.encoder_layers) if v.recipe else {"name": v.kind},
                "rel_l2": v.errors["rel_l2"], "max_abs": v.errors["max_abs"],
                "front_ms": statistics.median(v.times["front"]), "back_ms": statistics.median(v.times["back"]),
                "front_ms_all": v.times["front"], "back_ms_all": v.times["back"],
                "mb": round(((v.front.stat().st_size + v.back.stat().st_size) / 1e6), 1),
            }
            for v in variants
        },
        "output_ref_max_abs": variants[0].errors["ref_max_abs"],
    }


def report(result: dict) -> str:
    recipes = result["recipes"]
    names = list(recipes)
    n = result["layers"]
    rows = ["embeds"] + [f"layer {i + 1}" for i in range(n)] + ["output"]
    lines = [f"relative L2 error against fp32 ({result['seconds']:g} s {result['audio']} audio, "
             f"{result['tokens']} tokens):", ""]
    lines.append("| after | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for k, row in enumerate(rows):
        lines.append(f"| {row} | " + " | ".join(f"{recipes[m]['rel_l2'][k]:.2e}" for m in names) + " |")
    base = recipes.get("int8-naive") or recipes[names[0]]
    base_ms = base["front_ms"] + base["back_ms"]
    lines += ["", f"output max |error| (output max |value| {result['output_ref_max_abs']:.3g}) and speed "
              f"(median of {result['repeats']} interleaved repeats, {result['threads']} thread(s)):", "",
              "| recipe | output rel L2 | output max abs | front ms | back ms | total ms | vs int8-naive | MB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m in names:
        r = recipes[m]
        total = r["front_ms"] + r["back_ms"]
        lines.append(f"| {m} | {r['rel_l2'][-1]:.2e} | {r['max_abs'][-1]:.3g} | {r['front_ms']:.0f} | "
                     f"{r['back_ms']:.0f} | {total:.0f} | {total / base_ms:.2f}x | {r['mb']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qasr.daemon.bench.quant_error",
                                description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="Hugging Face Qwen3-ASR checkpoint folder")
    p.add_argument("--recipes", default=",".join(DEFAULT_RECIPES), help="comma-separated recipe names")
    p.add_argument("--seconds", type=float, default=16.0, help="clip length (default 16: two attention windows)")
    p.add_argument("--audio", default="speechlike", help="speechlike (synthetic, default) or espeak")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per recipe, interleaved (default 5)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--work", default="", help="folder for the written graphs (default: a new temporary one)")
    p.add_argument("--json", default="", help="also write the full result here")
    p.add_argument("--reuse", action="store_true",
                   help="use graphs already in --work under the same recipe names (after a recipe is unchanged)")
    args = p.parse_args(argv)
    try:
        result = run(args)
    except BenchError as exc:
        print(f"quant_error: {exc}", file=sys.stderr)
        return 2
    print(report(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
