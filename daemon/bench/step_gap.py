"""Where a generated token's time goes: llama-bench's tg against a minimal llama.cpp loop and `Decoder.step`.

    python -m qasr.daemon.bench.step_gap GGUF [--threads 2] [--rounds 5] [--llama-bench PATH]

One model, one process; each round runs every variant once, in a rotated order (same load for all), and,
with `--llama-bench`, llama.cpp's own `llama-bench -p 0 -n GEN -d DEPTH` in a subprocess. A variant is a
fresh context that decodes DEPTH token ids in one batch and then GEN single tokens, one `llama_decode`
each (+ `llama_synchronize`, as llama-bench). Per variant: ms per token in all (`step`), inside
`llama_decode` alone (`decode`) and the process's CPU time (`cpu`: with 1 thread the least load-sensitive
figure on a shared host; with more it includes the barrier spinning). The variants add one of qasr's settings at a time to the minimal loop
(llama-bench's context: n_ctx = DEPTH + GEN, one sequence, `llama_batch_get_one`, no logits read):

- `ctx512` … `ctx4096`: that n_ctx (qasr's default is 2048); `seq2`: n_seq_max 2 + kv_unified (qasr's park sequence);
- `abort`: qasr's abort callback (libc strlen on a flag byte); `batch`: qasr's reusable `llama_batch`;
- `argmax`: numpy argmax over the last row of logits (as `Decoder.argmax`);
- `tp`: a ggml threadpool attached (llama-bench does this; poll 50, its default);
- `all`: everything qasr sets; `decoder`: `Decoder.step` itself (its own context, kept across rounds;
  `decoder_fresh`: the context made anew each round, `decoder_clear`: emptied with llama_memory_clear).

Medians over rounds and per-round ratios to `min` and to llama-bench. Never called from the test suite.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    "min": {},
    "ctx512": {"n_ctx": 512},
    "ctx1024": {"n_ctx": 1024},
    "ctx2048": {"n_ctx": 2048},
    "ctx4096": {"n_ctx": 4096},
    "seq2": {"seq2": True},
    "abort": {"abort": True},
    "batch": {"batch": True},
    "argmax": {"argmax": True},
    "tp": {"tp": True},
    "all": {"n_ctx": 2048, "seq2": True, "abort": True, "batch": True, "argmax": True},
}


class _TPParams(ctypes.Structure):  # struct ggml_threadpool_params (ggml.h, GGML_MAX_N_THREADS 512)
    _fields_ = [("cpumask", ctypes.c_bool * 512), ("n_threads", ctypes.c_int), ("prio", ctypes.c_int),
                ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool), ("paused", ctypes.c_bool)]


def _threadpool_api():
    import llama_cpp

    libdir = Path(llama_cpp.__file__).parent / "lib"
    base = ctypes.CDLL(str(libdir / "libggml-base.so"))
    cpu = ctypes.CDLL(str(libdir / "libggml-cpu.so"))
    lib = llama_cpp.llama_cpp._lib
    base.ggml_threadpool_params_init.argtypes = [ctypes.POINTER(_TPParams), ctypes.c_int]
    base.ggml_threadpool_params_init.restype = None
    cpu.ggml_threadpool_new.argtypes = [ctypes.POINTER(_TPParams)]
    cpu.ggml_threadpool_new.restype = ctypes.c_void_p
    cpu.ggml_threadpool_free.argtypes = [ctypes.c_void_p]
    cpu.ggml_threadpool_free.restype = None
    lib.llama_attach_threadpool.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.llama_attach_threadpool.restype = None
    return base, cpu, lib


def _context(ll, model, threads: int, n_ctx: int, seq2: bool):
    cparams = ll.llama_context_default_params()
    cparams.n_ctx = n_ctx
    cparams.n_batch = cparams.n_ubatch = 512
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.no_perf = True
    if hasattr(cparams, "flash_attn_type"):  # newer llama.cpp: auto by default; off as in 0.3.16
        cparams.flash_attn_type = ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
    if seq2:
        cparams.n_seq_max = 2
        cparams.kv_unified = True
    ctx = ll.llama_init_from_model(model, cparams)
    if not ctx:
        raise RuntimeError("llama_init_from_model failed")
    return ctx


def run_variant(model, n_vocab: int, cfg: dict, threads: int, depth: int, gen: int, rng) -> tuple[float, float, float]:
    """(ms per token in all, inside llama_decode + llama_synchronize, process CPU time per token)."""
    import llama_cpp as ll

    from qasr.engine.llama_runtime import Batch, flag_reader

    ctx = _context(ll, model, threads, cfg.get("n_ctx", depth + gen), cfg.get("seq2", False))
    keep = []
    tp = None
    if cfg.get("abort"):
        flag = ctypes.create_string_buffer(2)
        cb = flag_reader()
        keep += [flag, cb]
        ll.llama_set_abort_callback(ctx, cb, ctypes.cast(flag, ctypes.c_void_p))
    if cfg.get("tp"):
        base, ggml_cpu, lib = _threadpool_api()
        params = _TPParams()
        base.ggml_threadpool_params_init(ctypes.byref(params), threads)
        params.poll = 50
        tp = ggml_cpu.ggml_threadpool_new(ctypes.byref(params))
        lib.llama_attach_threadpool(ctx, tp, None)
    ours = Batch(512, 0) if cfg.get("batch") else None
    row_type = ctypes.POINTER(ctypes.c_float * n_vocab)
    tok = (ll.llama_token * 1)()
    try:
        # llama-bench's order: a 1-token warm-up, clear, DEPTH in one batch, then the steps
        tok[0] = int(rng.integers(1000, 100000))
        ll.llama_decode(ctx, ll.llama_batch_get_one(tok, 1))
        ll.llama_synchronize(ctx)
        ll.llama_memory_clear(ll.llama_get_memory(ctx), False)
        ids = (ll.llama_token * depth)(*rng.integers(1000, 100000, depth).tolist())
        if ll.llama_decode(ctx, ll.llama_batch_get_one(ids, depth)) != 0:
            raise RuntimeError("prefill failed")
        ll.llama_synchronize(ctx)
        tokens = rng.integers(1000, 100000, gen).tolist()
        in_decode = 0.0
        c0 = time.process_time()
        t0 = time.perf_counter()
        for i, t in enumerate(tokens):
            if ours is not None:
                ours.fill(depth + i, 1, True, token_ids=(t,))
                batch = ours.batch
            else:
                tok[0] = t
                batch = ll.llama_batch_get_one(tok, 1)
            d0 = time.perf_counter()
            rc = ll.llama_decode(ctx, batch)
            ll.llama_synchronize(ctx)
            in_decode += time.perf_counter() - d0
            if rc != 0:
                raise RuntimeError(f"llama_decode {rc}")
            if cfg.get("argmax"):
                ptr = ll.llama_get_logits_ith(ctx, -1)
                int(np.ctypeslib.as_array(ctypes.cast(ptr, row_type).contents).argmax())
        total = time.perf_counter() - t0
        cpu = time.process_time() - c0
    finally:
        ll.llama_free(ctx)
        if tp is not None:
            ggml_cpu.ggml_threadpool_free(tp)
        if ours is not None:
            ours.close()
    return total * 1e3 / gen, in_decode * 1e3 / gen, cpu * 1e3 / gen


def run_decoder(decoder, depth: int, gen: int, rng, how: str = "") -> tuple[float, float, float]:
    """`Decoder.step` after DEPTH token ids; llama_decode timed by wrapping the decoder's binding.
    how: "fresh" recreates the decoder's context first, "clear" empties it with llama_memory_clear."""
    ll = decoder._ll
    if how == "fresh":
        ll.llama_free(decoder._ctx)
        decoder._create_context(decoder.n_ctx)
        decoder._arm_abort()
        decoder._token_prefix = []
        decoder._stale = False
        decoder.n_past = 0
    elif how == "clear":
        ll.llama_memory_clear(decoder._memory, True)
        decoder._token_prefix = []
        decoder._stale = False
        decoder.n_past = 0
    spent = [0.0]
    real = ll.llama_decode

    class _Timed:  # the module attribute the decoder calls, wrapped for this run only
        def __getattr__(self, name):
            return getattr(ll, name)

        @staticmethod
        def llama_decode(ctx, batch):
            d0 = time.perf_counter()
            rc = real(ctx, batch)
            spent[0] += time.perf_counter() - d0
            return rc

    decoder.reset()
    decoder._settle()
    decoder.feed_tokens(rng.integers(1000, 100000, depth).tolist(), want_logits=False)
    tokens = rng.integers(1000, 100000, gen).tolist()
    decoder._ll = _Timed()
    try:
        c0 = time.process_time()
        t0 = time.perf_counter()
        for t in tokens:
            decoder.step(t)
        total = time.perf_counter() - t0
        cpu = time.process_time() - c0
    finally:
        decoder._ll = ll
    return total * 1e3 / gen, spent[0] * 1e3 / gen, cpu * 1e3 / gen


def llama_bench_tg(binary: Path, gguf: Path, threads: int, depth: int, gen: int, extra: tuple[str, ...] = ()) -> float:
    out = subprocess.run([str(binary), "-m", str(gguf), "-t", str(threads), "-r", "1", "-mmp", "0", "-fa", "0", "-o", "jsonl",
                          "-p", "0", "-n", str(gen), "-d", str(depth), *extra],
                         capture_output=True, text=True, check=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    return statistics.median(row["samples_ns"]) / 1e6 / gen


def run(gguf: Path, threads: int, rounds: int, depth: int = 148, gen: int = 40, binary: Path | None = None,
        variants: list[str] | None = None) -> dict:
    from qasr.engine.decoder import Decoder, DecoderOptions

    names = list(variants or VARIANTS)
    names += [] if any(n.startswith("decoder") for n in names) else ["decoder"]
    names += ["llama-bench"] if binary else []
    decoder = Decoder(gguf, DecoderOptions(threads=threads))
    rng = np.random.default_rng(0)
    samples: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}

    def one(name):
        if name.startswith("decoder"):
            return run_decoder(decoder, depth, gen, rng, name.partition("_")[2])
        if name == "llama-bench":
            ms = llama_bench_tg(binary, gguf, threads, depth, gen)
            return ms, ms, float("nan")
        return run_variant(decoder._model, decoder.n_vocab, VARIANTS[name], threads, depth, gen, rng)

    for name in names:  # warm-up
        if name != "llama-bench":
            one(name)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(one(name))
    decoder.close()
    out: dict = {"gguf": str(gguf), "threads": threads, "rounds": rounds, "depth": depth, "gen": gen,
                 "llama_cpp": __import__("llama_cpp").__version__, "variants": {}}
    for name in names:
        step = [s[0] for s in samples[name]]
        dec = [s[1] for s in samples[name]]
        row = {"step_ms": round(statistics.median(step), 2), "step_ms_min": round(min(step), 2), "step_ms_range": [round(min(step), 1), round(max(step), 1)],
               "decode_ms": round(statistics.median(dec), 2)}
        if name != "llama-bench":
            row["cpu_ms"] = round(statistics.median(s[2] for s in samples[name]), 2)
        for ref in ("min", "llama-bench"):
            if ref in samples and ref != name:
                row[f"vs_{ref}"] = round(statistics.median(a[0] / b[0] for a, b in zip(samples[name], samples[ref])), 3)
                if ref == "min" and name != "llama-bench":
                    row["cpu_vs_min"] = round(statistics.median(
                        a[2] / b[2] for a, b in zip(samples[name], samples[ref])), 3)
        out["variants"][name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="step_gap", description=__doc__.split("\n\n")[0])
    p.add_argument("gguf", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--depth", type=int, default=148)
    p.add_argument("--gen", type=int, default=40)
    p.add_argument("--llama-bench", type=Path, default=None)
    p.add_argument("--variants", default="", help="comma-separated subset of " + ",".join(VARIANTS))
    args = p.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v] or None
    print(json.dumps(run(args.gguf, args.threads, args.rounds, args.depth, args.gen, args.llama_bench, variants)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
