"""Decoder quantization choices measured as speed against top-1 agreement with the unquantized decoder.

    python -m qasr.daemon.bench.quant_bench BUNDLE_WITH_F16_DECODER [--rounds 5] [--threads 2]

From the bundle's f16 (or f32) decoder GGUF it makes, with llama.cpp's quantizer (cached beside it):
q4_k with the tied embedding / output head at q8_0 (qasr's choice), q6_k (llama.cpp's Q4_K_M default)
and q4_k, and plain q8_0. For each: prefill of the ASR prompt (head, audio, tail = 148 positions for
10 s) and ms per greedy token, interleaved over rounds (medians), and top-1 agreement with the f16
decoder over teacher-forced steps: the f16 decoder's own greedy continuation (40 tokens) after the
prompt, for several utterances, audio embeddings from the bundle's encoder on synthetic speech.
With random weights the logits are full of near-ties, so agreement here is a lower bound of what real
weights give; the ranking between the choices is what to read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

VARIANTS = {"q4_k+q8_0-head": ("q4_k", "q8_0"), "q4_k+q6_k-head": ("q4_k", "q6_k"),
            "q4_k+q4_k-head": ("q4_k", "q4_k"), "q8_0": ("q8_0", "q8_0")}


def make_variants(src: Path, out_dir: Path) -> dict[str, Path]:
    from qasr.engine.convert.quantize import quantize_gguf

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (precision, head) in VARIANTS.items():
        dst = out_dir / f"decoder.{name}.gguf"
        if not dst.is_file():  # written beside and renamed: an interrupted run leaves no half file
            partial = dst.with_name(dst.name + ".partial")
            quantize_gguf(src, partial, precision, head=head)
            partial.replace(dst)
        paths[name] = dst
    return paths


def _prompt(decoder):
    from qasr.engine.prompt import build_prompt

    p = build_prompt(decoder.vocab.tokenize, 0)
    return p.before_ids, p.after_ids


def prefill(decoder, embeds: np.ndarray) -> None:
    head, tail = _prompt(decoder)
    decoder.cache.reset()
    decoder.feed_tokens(head, want_logits=False)
    decoder.feed_embeddings(embeds)
    decoder.feed_tokens(tail)


def greedy(decoder, embeds: np.ndarray, n: int) -> tuple[list[int], list[int]]:
    """(the greedy continuation, the argmax at each of its n + 1 positions)."""
    prefill(decoder, embeds)
    tops = [decoder.argmax()]
    for _ in range(n):
        decoder.feed_tokens([tops[-1]])
        tops.append(decoder.argmax())
    return tops[:-1], tops


def teacher_forced_top1(decoder, embeds: np.ndarray, forced: list[int]) -> list[int]:
    prefill(decoder, embeds)
    tops = [decoder.argmax()]
    for token in forced:
        decoder.feed_tokens([token])
        tops.append(decoder.argmax())
    return tops


def timed(decoder, embeds: np.ndarray, n: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    prefill(decoder, embeds)
    t1 = time.perf_counter()
    token = decoder.argmax()
    for _ in range(n):
        decoder.feed_tokens([token])
        token = decoder.argmax()
    return (t1 - t0) * 1e3, (time.perf_counter() - t1) * 1e3 / n


def run(bundle: Path, threads: int, rounds: int, utterances: int = 3, new_tokens: int = 40) -> dict:
    from qasr.daemon.bench.engine_bench import bench_audio
    from qasr.engine.decoder import Decoder, DecoderOptions
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    engine = Transcriber(bundle, TranscribeOptions(threads=threads))
    reference_path = engine.bundle.path("decoder")
    clips = [engine.encode(bench_audio(10.0, seed=100 + k)) for k in range(utterances)]
    forced, want = [], []
    for embeds in clips:
        ids, tops = greedy(engine.decoder, embeds, new_tokens)
        forced.append(ids)
        want.append(tops)
    engine.close()
    variants = make_variants(reference_path, reference_path.parent / "variants")
    result: dict = {"reference": reference_path.name, "threads": threads, "rounds": rounds,
                    "teacher_forced_steps": sum(len(w) for w in want), "variants": {}}
    decoders = {name: Decoder(path, DecoderOptions(n_ctx=1024, threads=threads)) for name, path in variants.items()}
    for name, dec in decoders.items():
        got = [teacher_forced_top1(dec, embeds, ids) for embeds, ids in zip(clips, forced)]
        agree = np.mean([g == w for gs, ws in zip(got, want) for g, w in zip(gs, ws)])
        result["variants"][name] = {"top1_agreement": round(float(agree), 3), "file_mb": round(variants[name].stat().st_size / 2**20, 1)}
        timed(dec, clips[0], 4)  # warm-up
    names = list(decoders)
    samples = {name: [] for name in names}
    for r in range(rounds):  # interleaved, the order rotated each round
        for name in names[r % len(names):] + names[: r % len(names)]:
            samples[name].append(timed(decoders[name], clips[0], new_tokens))
    for name in names:
        pre = [s[0] for s in samples[name]]
        tok = [s[1] for s in samples[name]]
        result["variants"][name].update({
            "prefill_ms": round(statistics.median(pre), 1), "prefill_ms_range": [round(min(pre)), round(max(pre))],
            "ms_per_token": round(statistics.median(tok), 2), "ms_per_token_range": [round(min(tok), 1), round(max(tok), 1)],
        })
        decoders[name].close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="quant_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="a bundle whose decoder is f16 or f32 (e.g. made by qasr-daemon bench)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--utterances", type=int, default=3)
    args = p.parse_args(argv)
    print(json.dumps(run(args.bundle, args.threads, args.rounds, args.utterances)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
