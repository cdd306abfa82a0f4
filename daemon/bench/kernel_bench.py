"""Decoder weight types against llama.cpp's CPU kernels: the streaming final's verify batch and a greedy step.

    python -m qasr.daemon.bench.kernel_bench CHECKPOINT_DIR_OR_F32_GGUF [--types q4_0,iq4_nl,q4_k,q8_0]
        [--rounds 5] [--threads 2]

From the checkpoint's f16 decoder GGUF (written once into `<cache>/bench/kernels/`) it makes, with
llama.cpp's quantizer, one GGUF per type, every one with the tied token embedding / output head at q8_0
(qasr's head) so that only the body's matrices differ: `q4_k` is qasr's own (llama.cpp's Q4_K_M mix),
`q4_0` and `iq4_nl` llama.cpp's ftypes of those names, `q8_0` everything q8_0. Each is loaded as qasr loads
it (`Decoder`, no mmap) and its load log says whether llama.cpp repacked weights for this CPU (the
`CPU_REPACK` buffer: interleaved rows for the gemm kernels of q4_0 / iq4_nl / q4_K on AVX2).

Per round, every type in a rotated order: AUDIO random audio embeddings in one decode (`prefill`), then a
VERIFY-token draft verified in one batch (`verify`: `feed_tokens_argmax`, a logits row per token: the
streaming final's shape), then the cache cut back to the audio and GEN greedy steps (`step`, ms per token).
Medians and per-round ratios to q4_k. Random weights: speed is the real model's, tokens are not.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import json
import statistics
import time
from pathlib import Path

import numpy as np

TYPES = ("q4_0", "iq4_nl", "q4_k", "q8_0")


def _ftype(name: str) -> int:
    import llama_cpp

    return {"q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0, "iq4_nl": llama_cpp.LLAMA_FTYPE_MOSTLY_IQ4_NL,
            "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0}[name]


def make_gguf(src: Path, name: str, out_dir: Path) -> Path:
    from qasr.engine.convert.quantize import GGML_TYPE_Q8_0, quantize_gguf

    dst = out_dir / f"decoder.{name}.gguf"
    if dst.is_file():
        return dst
    partial = dst.with_name(dst.name + ".partial")
    if name == "q4_k":
        quantize_gguf(src, partial, "q4_k", head="q8_0")
    else:
        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = _ftype(name)
        params.token_embedding_type = GGML_TYPE_Q8_0
        params.output_tensor_type = GGML_TYPE_Q8_0
        if llama_cpp.llama_model_quantize(str(src).encode(), str(partial).encode(), ctypes.byref(params)) != 0:
            raise RuntimeError(f"quantizing to {name} failed")
    partial.replace(dst)
    return dst


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each ggml type the file holds."""
    from gguf import GGUFReader

    return dict(collections.Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors))


def source_gguf(arg: Path, out_dir: Path) -> Path:
    if arg.suffix == ".gguf":
        return arg
    dst = out_dir / "decoder.f16.gguf"
    if not dst.is_file():
        from qasr.engine.convert.checkpoint import read_checkpoint
        from qasr.engine.convert.decoder_gguf import write_decoder_gguf

        out_dir.mkdir(parents=True, exist_ok=True)
        write_decoder_gguf(read_checkpoint(arg, kind="any"), dst.with_name(dst.name + ".partial"), "f16")
        dst.with_name(dst.name + ".partial").replace(dst)
    return dst


def load(path: Path, threads: int):
    """(Decoder, the load log's buffer lines)."""
    from qasr.engine import llama_runtime
    from qasr.engine.decoder import Decoder, DecoderOptions

    kept = llama_runtime._RECENT_LOG
    llama_runtime._RECENT_LOG = collections.deque(maxlen=100000)  # the whole load log, this once
    try:
        decoder = Decoder(path, DecoderOptions(threads=threads))
        lines = list(llama_runtime._RECENT_LOG)
    finally:
        llama_runtime._RECENT_LOG = kept
    repacked = collections.Counter(line.rsplit(" with ", 1)[-1].strip() for line in lines
                                   if line.startswith("repack: repack tensor"))
    buffers = [" ".join(line.split(":", 1)[-1].split()) for line in lines if "model buffer size" in line]
    return decoder, {"repacked_tensors": dict(repacked), "model_buffers": buffers}


def timed_round(decoder, audio: np.ndarray, draft: list[int], gen: int) -> dict:
    decoder.reset()
    decoder._settle()
    t0 = time.perf_counter()
    decoder.feed_embeddings(audio)
    t1 = time.perf_counter()
    decoder.feed_tokens_argmax(draft)
    t2 = time.perf_counter()
    decoder.truncate(len(audio))
    token = draft[0]
    t3 = time.perf_counter()
    for _ in range(gen):
        token = decoder.step(token)
    t4 = time.perf_counter()
    return {"prefill_ms": (t1 - t0) * 1e3, "verify_ms": (t2 - t1) * 1e3, "step_ms": (t4 - t3) * 1e3 / gen}


def run(source: Path, types: list[str], threads: int, rounds: int, audio_n: int = 150, verify: int = 40,
        gen: int = 40) -> dict:
    import llama_cpp

    from qasr.config import paths

    out_dir = paths.cache_dir() / "bench" / "kernels"
    out_dir.mkdir(parents=True, exist_ok=True)
    src = source_gguf(source, out_dir)
    files = {name: make_gguf(src, name, out_dir) for name in types}
    result: dict = {"llama_cpp": llama_cpp.__version__, "threads": threads, "rounds": rounds,
                    "shape": {"audio": audio_n, "verify": verify, "gen": gen}, "types": {}}
    decoders = {}
    for name, path in files.items():
        decoders[name], repack = load(path, threads)
        result["types"][name] = {"tensors": tensor_types(path), "file_mb": round(path.stat().st_size / 2**20, 1),
                                 **repack}
    rng = np.random.default_rng(0)
    n_embd = next(iter(decoders.values())).n_embd
    audio = rng.standard_normal((audio_n, n_embd)).astype(np.float32)
    draft = rng.integers(1000, 100000, verify).tolist()
    for dec in decoders.values():  # warm-up
        timed_round(dec, audio, draft, 4)
    names = list(decoders)
    samples: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(timed_round(decoders[name], audio, draft, gen))
    ref = "q4_k" if "q4_k" in names else names[0]
    for name in names:
        row = result["types"][name]
        for key in ("prefill_ms", "verify_ms", "step_ms"):
            values = [s[key] for s in samples[name]]
            row[key] = round(statistics.median(values), 2)
            row[f"{key}_min"] = round(min(values), 2)
            row[f"{key}_range"] = [round(min(values), 1), round(max(values), 1)]
            if name != ref:
                row[f"{key}_vs_{ref}"] = round(statistics.median(
                    a[key] / b[key] for a, b in zip(samples[name], samples[ref])), 3)
        decoders[name].close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kernel_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="a checkpoint directory or an f16 (f32) decoder GGUF")
    p.add_argument("--types", default=",".join(TYPES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    print(json.dumps(run(args.source, [t for t in args.types.split(",") if t], args.threads, args.rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
