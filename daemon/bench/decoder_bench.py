"""qasr's decoder against llama.cpp's own `llama-bench` on the same GGUF and threads, interleaved.

    python -m qasr.daemon.bench.decoder_bench GGUF [--threads 2] [--rounds 5]

Per round, in turn: llama-bench (`-p 148 -n 0`: prompt processing of 148 positions in one batch, and
`-p 0 -n 40 -d 148`: 40 single-token steps after 148 cached positions) and qasr's `Decoder` on the same work:
- `pp`: 148 token ids in one feed (what llama-bench's pp148 does);
- `prompt`: the ASR prompt (9 head tokens, 133 audio embeddings, 6 tail tokens = 148 positions) as
  qasr feeds it (`Decoder.feed_prompt`: one decode, the text as token embedding rows), cold
  (`prompt_cold`) and with the head kept from the previous utterance (`prompt_warm`, what `reset()` +
  the same head does); `prompt_3dec_cold`: the same in three decodes (head, audio, tail), as before;
- `tg`: 40 greedy steps (`Decoder.step`: feed one token, argmax on llama.cpp's buffer) after the prompt.
Medians over rounds; ratios qasr / llama-bench (1.00 = same speed; > 1 = qasr slower). llama-bench is
the one built from the llama-cpp-python sdist qasr runs (`peer_tools`), so both run the same kernels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

HEAD, TAIL = 9, 6  # the ASR prompt around the audio (no context, language detected)


def llama_bench(binary: Path, gguf: Path, threads: int, prompt: int, gen: int, reps: int = 1,
                extra: tuple[str, ...] = ()) -> dict:
    """llama-bench's pp (depth 0) and tg (after `prompt` cached positions), ms."""
    # flash attention off, as qasr runs (llama-bench of newer llama.cpp defaults to auto: on for the CPU)
    common = ["-m", str(gguf), "-t", str(threads), "-r", str(reps), "-mmp", "0", "-fa", "0", "-o", "jsonl", *extra]
    out = "".join(subprocess.run([str(binary), *common, *args], capture_output=True, text=True, check=True).stdout
                  for args in (["-p", str(prompt), "-n", "0"], ["-p", "0", "-n", str(gen), "-d", str(prompt)]))
    result = {}
    for line in out.splitlines():
        row = json.loads(line)
        ms = statistics.median(row["samples_ns"]) / 1e6
        if row["n_prompt"] and not row["n_depth"]:
            result["pp_ms"] = ms
        elif row["n_gen"] and row["n_depth"]:
            result["tg_ms_per_token"] = ms / row["n_gen"]
    return result


def qasr_round(decoder, prompt: int, gen: int, rng: np.random.Generator) -> dict:
    ids = rng.integers(1000, 100000, prompt).tolist()
    head, tail = ids[:HEAD], ids[-TAIL:]
    audio = rng.standard_normal((prompt - HEAD - TAIL, decoder.n_embd)).astype(np.float32)
    decoder.cache.reset()
    decoder.cache.settle()  # nothing kept: a cold start
    t0 = time.perf_counter()
    decoder.feed_tokens(ids)
    t1 = time.perf_counter()
    decoder.cache.reset()
    decoder.cache.settle()
    t2 = time.perf_counter()
    decoder.feed_prompt(head, audio, tail, want_logits=False)
    t3 = time.perf_counter()
    decoder.cache.reset()
    decoder.cache.settle()
    t3b = time.perf_counter()
    decoder.feed_tokens(head, want_logits=False)
    decoder.feed_embeddings(audio)
    decoder.feed_tokens(tail)
    t3c = time.perf_counter()
    decoder.cache.reset()  # the head stays cached, as between two utterances
    t4 = time.perf_counter()
    decoder.feed_prompt(head, audio, tail)
    t5 = time.perf_counter()
    token = decoder.argmax()
    for _ in range(gen):
        token = decoder.step(token)
    t6 = time.perf_counter()
    return {"pp_ms": (t1 - t0) * 1e3, "prompt_cold_ms": (t3 - t2) * 1e3, "prompt_3dec_cold_ms": (t3c - t3b) * 1e3,
            "prompt_warm_ms": (t5 - t4) * 1e3, "tg_ms_per_token": (t6 - t5) * 1e3 / gen}


def run(gguf: Path, threads: int, rounds: int, prompt: int = 148, gen: int = 40, binary: Path | None = None,
        n_batch: int = 512) -> dict:
    from qasr.engine.decoder import Decoder, DecoderOptions

    # llama-bench's context holds exactly its positions (n_ctx = prompt + gen); the KV cache's size costs
    # per token (non-flash attention reads V transposed, one row per KV-size stride), so the same here
    decoder = Decoder(gguf, DecoderOptions(n_ctx=prompt + gen, n_batch=n_batch, threads=threads))
    rng = np.random.default_rng(0)
    qasr_round(decoder, prompt, gen, rng)  # warm-up
    ours: list[dict] = []
    theirs: list[dict] = []
    for _ in range(rounds):
        if binary is not None:
            theirs.append(llama_bench(binary, gguf, threads, prompt, gen))
        ours.append(qasr_round(decoder, prompt, gen, rng))
    decoder.close()
    summary: dict = {"gguf": str(gguf), "threads": threads, "rounds": rounds}
    for key in ours[0]:
        values = [r[key] for r in ours]
        summary[f"qasr_{key}"] = round(statistics.median(values), 2)
        summary[f"qasr_{key}_range"] = [round(min(values), 2), round(max(values), 2)]
    for key in ("pp_ms", "tg_ms_per_token"):
        if theirs:
            values = [r[key] for r in theirs]
            summary[f"llama_bench_{key}"] = round(statistics.median(values), 2)
            summary[f"llama_bench_{key}_range"] = [round(min(values), 2), round(max(values), 2)]
            # per-round ratios (same round = same machine load), then their median
            ratios = [o[key] / t[key] for o, t in zip(ours, theirs)]
            summary[f"ratio_{key}"] = round(statistics.median(ratios), 3)
    if theirs:
        summary["ratio_prompt_warm_vs_pp"] = round(statistics.median(
            o["prompt_warm_ms"] / t["pp_ms"] for o, t in zip(ours, theirs)), 3)
    return summary


def main(argv: list[str] | None = None) -> int:
    from qasr.daemon.bench import peer_tools

    p = argparse.ArgumentParser(prog="decoder_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("gguf", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n-batch", type=int, default=512)
    p.add_argument("--no-llama-bench", action="store_true", help="qasr alone (no peer build needed)")
    args = p.parse_args(argv)
    binary = None if args.no_llama_bench else peer_tools.build(peer_tools.RUNTIME_VERSION)["llama-bench"]
    print(json.dumps(run(args.gguf, args.threads, args.rounds, binary=binary, n_batch=args.n_batch)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
