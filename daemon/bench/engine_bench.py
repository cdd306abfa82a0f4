"""`qasr-daemon bench`: speed and memory of the engine on a fixed workload, one process per configuration.

Offline workload (issue 2): 10 s of synthetic speech-like audio, the prompt, and exactly 40 new
tokens (end-of-sequence ignored), on a random checkpoint with the real 0.6B shapes unless one is
given. For each encoder/decoder precision: encoder ms, prefill ms, ms per decoded token, total, RTF
and peak RSS; and, when the official `qwen-asr` + torch are installed, the official transformers
implementation on the same checkpoint and workload, with the ratio.

Streaming workload (issue 3, `--streaming`): audio fed in real time (100 ms pieces on the wall
clock) into a `StreamingSession`; reports first-partial latency, partial interval, end-of-speech →
final latency (measured, and the bounds with the draft fully accepted / nothing accepted),
sustained compute as a fraction of real time, and the official streaming recipe (re-feed all audio
every 2 s, previous text minus 5 tokens as prefix) on the same engine for comparison. A second run
plays the daemon's end of speech: the speech, then the 0.3 s of trailing silence the VAD keeps, at
which point the final is prepared (`prepare_final`), and the VAD's confirmation 0.6 s after the last
voice; it reports how long after that confirmation the final was ready.

Every configuration runs in its own subprocess (`python -m qasr.daemon.bench.engine_bench worker ...`) so that
peak RSS is that configuration's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# numpy and the engine are imported inside the functions: `qasr-daemon` builds this command's parser
# for every subcommand, `toggle` too.

DEFAULT_CONFIGS = ("fp32/f32", "fp16/f16", "int8/q8_0", "int8/q4_k")
SAMPLE_RATE = 16000


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and
    exec, so a worker started by a parent that had converted a model (5+ GB) reported the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_audio(seconds: float, seed: int = 1234) -> np.ndarray:
    from qasr.daemon.bench.synthetic_audio import make_test_audio

    return make_test_audio(seconds, seed=seed)


# --- workers (run in a subprocess) ------------------------------------------------------------------


def offline_worker(bundle: Path, audio_s: float, new_tokens: int, threads: int, repeats: int) -> dict:
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    t0 = time.perf_counter()
    engine = Transcriber(bundle, TranscribeOptions(threads=threads))
    load_ms = (time.perf_counter() - t0) * 1000.0
    audio = bench_audio(audio_s)
    runs = []
    for _ in range(repeats + 1):  # the first run warms caches and is not counted
        t_start = time.perf_counter()
        embeds = engine.encode(audio)
        t_enc = time.perf_counter()
        engine.prefill(embeds)
        t_pre = time.perf_counter()
        token = engine.decoder.argmax()
        for _ in range(new_tokens):  # exactly `new_tokens`, stop tokens ignored; as Transcriber.generate
            token = engine.decoder.step(token)
        t_end = time.perf_counter()
        runs.append(
            {
                "encoder_ms": (t_enc - t_start) * 1000.0,
                "prefill_ms": (t_pre - t_enc) * 1000.0,
                "decode_ms": (t_end - t_pre) * 1000.0,
                "total_ms": (t_end - t_start) * 1000.0,
                "prompt_tokens": engine.decoder.cache.n_past - new_tokens,
            }
        )
    runs = runs[1:]
    best = min(runs, key=lambda r: r["total_ms"])
    manifest = engine.bundle.manifest
    return {
        "encoder": manifest.files["encoder_frontend"].precision,
        "decoder": manifest.files["decoder"].precision,
        "encoder_ms": round(statistics.median(r["encoder_ms"] for r in runs), 1),
        "prefill_ms": round(statistics.median(r["prefill_ms"] for r in runs), 1),
        "decode_ms_per_token": round(statistics.median(r["decode_ms"] for r in runs) / new_tokens, 2),
        "total_ms": round(statistics.median(r["total_ms"] for r in runs), 1),
        "best_total_ms": round(best["total_ms"], 1),
        "rtf": round(statistics.median(r["total_ms"] for r in runs) / 1000.0 / audio_s, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_ms": round(load_ms, 1),
        "prompt_tokens": best["prompt_tokens"],
        "new_tokens": new_tokens,
        "audio_s": audio_s,
        "threads": threads,
        "repeats": repeats,
    }


def official_worker(checkpoint: Path, audio_s: float, new_tokens: int, threads: int, repeats: int) -> dict:
    import torch

    from qasr.daemon.bench.random_checkpoint import import_official_qwen_asr

    torch.set_num_threads(threads)
    torch.set_grad_enabled(False)
    qwen_asr = import_official_qwen_asr()
    t0 = time.perf_counter()
    asr = qwen_asr.Qwen3ASRModel.from_pretrained(str(checkpoint), dtype=torch.float32, max_new_tokens=new_tokens)
    load_ms = (time.perf_counter() - t0) * 1000.0
    vocab = asr.processor.tokenizer.get_vocab()
    stop_ids = [vocab["<|im_end|>"], vocab["<|endoftext|>"]]
    audio = bench_audio(audio_s)
    prompt = asr._build_text_prompt(context="", force_language=None)
    totals = []
    for _ in range(repeats + 1):
        t_start = time.perf_counter()
        inputs = asr.processor(text=[prompt], audio=[audio], return_tensors="pt", padding=True)
        inputs = inputs.to(asr.model.device).to(asr.model.dtype)
        out = asr.model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, eos_token_id=stop_ids
        )
        totals.append((time.perf_counter() - t_start) * 1000.0)
        generated = out.sequences.shape[1] - inputs["input_ids"].shape[1]
    totals = totals[1:]
    return {
        "official_total_ms": round(statistics.median(totals), 1),
        "official_peak_rss_mb": round(peak_rss_mb(), 1),
        "official_load_ms": round(load_ms, 1),
        "official_new_tokens": int(generated),
    }


def _stream_in_real_time(session, audio: np.ndarray, start: float, realtime: bool, offset: int = 0,
                         trace: list | None = None) -> list[float]:
    """Feed `audio` in 100 ms pieces; the piece ending at sample offset+i+piece exists only once that
    much wall time has passed since `start`. Returns when each partial was ready (s since start);
    `trace` gets (audio seconds, hypothesis tokens, committed tokens) at each partial."""
    from qasr.engine.streaming import PartialEvent

    piece = SAMPLE_RATE // 10
    times: list[float] = []
    for i in range(0, audio.shape[0], piece):
        if realtime:
            wait = start + (offset + i + piece) / SAMPLE_RATE - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        for event in session.feed(audio[i : i + piece]):
            if isinstance(event, PartialEvent):
                times.append(time.perf_counter() - start)
                if trace is not None:
                    trace.append((session.audio_s, len(session._hyp.ids), len(session.commits.committed)))
    return times


def commit_stats(trace: list[tuple[float, int, int]], committed: list[int], final_ids: list[int]) -> dict:
    """How the commit policy did: tokens committed before the end, the audio time between a token position
    first appearing in a hypothesis and its commit (median), and whether the final kept the commits."""
    import numpy as np

    lags = []
    for k in range(len(committed)):
        seen = next((t for t, n_hyp, _ in trace if n_hyp > k), None)
        done = next((t for t, _, n_committed in trace if n_committed > k), None)
        if seen is not None and done is not None:
            lags.append(done - seen)
    return {
        "committed_tokens": len(committed),
        "commit_lag_s": round(float(np.median(lags)), 2) if lags else None,
        "final_kept_commits": final_ids[: len(committed)] == list(committed),
    }


def _sleep_until(t: float) -> None:
    if time.perf_counter() < t:
        time.sleep(t - time.perf_counter())


def streaming_worker(bundle: Path, audio_s: float, threads: int, rtf_budget: float, realtime: bool,
                     pause_tail_s: float = 0.3, hangover_s: float = 0.6) -> dict:
    import numpy as np

    from qasr.engine.streaming import StreamingOptions, StreamingSession
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    engine = Transcriber(bundle, TranscribeOptions(threads=threads))
    audio = bench_audio(audio_s, seed=int(audio_s * 7))
    engine.transcribe(bench_audio(2.0))  # warm-up
    options = StreamingOptions(rtf_budget=rtf_budget)

    # 1. Speech, then finish() as soon as the last audio exists (no pause detection: the cold final).
    session = StreamingSession(engine, options, "bench")
    start = time.perf_counter()
    trace: list[tuple[float, int, int]] = []
    partial_times = _stream_in_real_time(session, audio, start, realtime, trace=trace)
    end_of_speech = start + audio.shape[0] / SAMPLE_RATE
    if realtime:
        _sleep_until(end_of_speech)
    t_final = time.perf_counter()
    compute_fraction = session.compute_s / audio_s  # while the speech lasted, the final excluded
    final = session.finish()
    final_latency_ms = (time.perf_counter() - (end_of_speech if realtime else t_final)) * 1000.0
    skipped = session.skipped
    commits = commit_stats(trace, session.commits.committed, final.token_ids)
    bounds = _final_latency_bounds(engine, audio, final.token_ids)

    # 2. As the daemon runs it: the VAD keeps `pause_tail_s` of the trailing silence and confirms the end
    # after `hangover_s`; the final is prepared when the kept tail is complete and published at the end.
    tail = (0.003 * np.random.default_rng(5).standard_normal(int(pause_tail_s * SAMPLE_RATE))).astype(np.float32)
    session = StreamingSession(engine, options, "bench-pause")
    start = time.perf_counter()
    _stream_in_real_time(session, audio, start, realtime)
    voice_end = start + audio.shape[0] / SAMPLE_RATE
    if realtime:
        _sleep_until(voice_end + pause_tail_s)
    t0 = time.perf_counter()
    session.encoder.push(tail)  # the daemon runs no partial step once the speaker pauses
    session.prepare_final()
    prepare_ms = (time.perf_counter() - t0) * 1000.0
    vad_end = voice_end + hangover_s if realtime else time.perf_counter()
    _sleep_until(vad_end)
    paused = session.finish()
    after_vad_end_ms = max(0.0, (time.perf_counter() - vad_end) * 1000.0)
    # The same with the draft all accepted: the prepare starts at the pause, (hangover - tail) before the end.
    paused_bounds = _final_latency_bounds(engine, np.concatenate([audio, tail]), paused.token_ids)
    accepted_after_vad_end_ms = max(0.0, paused_bounds["all_accepted_ms"] - (hangover_s - pause_tail_s) * 1000.0)

    intervals = np.diff(partial_times) if len(partial_times) > 1 else np.array([])
    return {
        "audio_s": audio_s,
        "partials": len(partial_times),
        "first_partial_s": round(partial_times[0], 3) if partial_times else None,
        "partial_interval_mean_s": round(float(intervals.mean()), 3) if intervals.size else None,
        "partial_interval_max_s": round(float(intervals.max()), 3) if intervals.size else None,
        "final_latency_ms": round(final_latency_ms, 1),
        "final_ms": round(final.timings.final_ms, 1),
        "final_draft_tokens": final.timings.draft_tokens,
        "final_accepted_tokens": final.timings.accepted_tokens,
        "final_latency_all_accepted_ms": bounds["all_accepted_ms"],
        "all_accepted_tokens": bounds["all_accepted_tokens"],
        "final_latency_none_accepted_ms": bounds["none_accepted_ms"],
        "final_tokens": len(final.token_ids),
        "compute_fraction": round(compute_fraction, 3),
        **commits,
        "skipped_steps": skipped,
        "paused_prepare_ms": round(prepare_ms, 1),
        "paused_final_after_vad_end_ms": round(after_vad_end_ms, 1),
        "paused_final_prepared": paused.prepared,
        "paused_all_accepted_prepare_ms": paused_bounds["all_accepted_ms"],
        "paused_all_accepted_after_vad_end_ms": round(accepted_after_vad_end_ms, 1),
        "official_recipe": official_recipe(engine, audio),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "threads": threads,
    }


def _final_latency_bounds(engine, audio: np.ndarray, final_ids: list[int]) -> dict:
    """End-of-speech → final compute from the state a last partial step leaves, with the draft equal to
    the final (best case) and with no draft (worst case).

    With a quantized decoder, verifying a draft in one batch rounds differently from generating one
    token at a time, so random weights (full of near-ties) may reject a token of a draft that equals
    the final; the best case then retries with the final it produced, up to 4 times.
    """
    from qasr.engine.streaming import StreamingOptions, StreamingSession

    def run(draft: list[int]):
        session = StreamingSession(engine, StreamingOptions(rtf_budget=1e9, step_s=1e9, first_step_s=1e9), "bound")
        _stream_in_real_time(session, audio, 0.0, realtime=False)
        session._read_windows()
        session._sync_audio_into_kv(session.encoder.open_window())
        session._hyp.ids = list(draft)
        t0 = time.perf_counter()
        final = session.finish()
        return (time.perf_counter() - t0) * 1000.0, final

    draft = list(final_ids)
    for _ in range(4):
        best_ms, final = run(draft)
        if final.timings.accepted_tokens == len(draft) == len(final.token_ids):
            break
        draft = list(final.token_ids)
    worst_ms, _ = run([])
    return {"all_accepted_ms": round(best_ms, 1), "all_accepted_tokens": f"{final.timings.accepted_tokens}/{len(draft)}",
            "none_accepted_ms": round(worst_ms, 1)}


def official_recipe(engine, audio: np.ndarray, chunk_s: float = 2.0, rollback: int = 5, unfixed_chunks: int = 2,
                    max_new: int = 32) -> dict:
    """The official streaming recipe on our engine: every chunk re-encodes ALL audio so far and
    re-decodes with the previous output minus its last `rollback` tokens as a forced prefix."""
    import numpy as np

    from qasr.engine import output as out

    chunk = int(chunk_s * SAMPLE_RATE)
    previous: list[int] = []
    step_ms = []
    total = 0.0
    stop_ids = engine.stop_ids
    for k, end in enumerate(list(range(chunk, audio.shape[0], chunk)) + [audio.shape[0]]):
        t0 = time.perf_counter()
        prefix = [] if k < unfixed_chunks else previous[: max(0, len(previous) - rollback)]
        embeds = engine.encode(audio[:end])
        logits = engine.prefill(embeds)
        if prefix:
            logits = engine.decoder.feed_tokens(prefix)
        ids = list(prefix)
        for _ in range(max_new):
            token = int(np.argmax(logits))
            if token in stop_ids:
                break
            ids.append(token)
            if out.find_loop(ids) is not None:
                break
            logits = engine.decoder.feed_tokens([token])
        previous = ids
        elapsed = time.perf_counter() - t0
        step_ms.append(elapsed * 1000.0)
        total += elapsed
    return {
        "chunk_s": chunk_s,
        "steps": len(step_ms),
        "last_step_ms": round(step_ms[-1], 1),
        "mean_step_ms": round(float(np.mean(step_ms)), 1),
        "compute_fraction": round(total / (audio.shape[0] / SAMPLE_RATE), 3),
    }


# --- orchestration -----------------------------------------------------------------------------------


def ensure_checkpoint(work_dir: Path, preset: str) -> Path:
    target = work_dir / f"random-{preset}"
    if (target / "model.safetensors").is_file() or (target / "model.safetensors.index.json").is_file():
        return target
    from qasr.daemon.bench.random_checkpoint import make_checkpoint

    print(f"making a random checkpoint with the {preset} shapes in {target} ...", file=sys.stderr)
    return make_checkpoint(target, preset=preset, seed=0)


def ensure_bundle(checkpoint: Path, work_dir: Path, encoder: str, decoder: str) -> Path:
    from qasr.engine.bundle import BundleError, load_bundle

    target = work_dir / f"{checkpoint.name}-{encoder}-{decoder}"
    try:
        load_bundle(target, verify="size")
        return target
    except BundleError:
        pass
    print(f"converting {checkpoint.name} to {encoder}/{decoder} ...", file=sys.stderr)
    # in its own process: the converter's memory (5+ GB at 0.6B) stays out of this one and its workers
    code = ("import sys; from pathlib import Path; from qasr.engine.convert import convert_checkpoint; "
            "convert_checkpoint(Path(sys.argv[1]), Path(sys.argv[2]), encoder=sys.argv[3], decoder=sys.argv[4])")
    subprocess.run([sys.executable, "-c", code, str(checkpoint), str(target), encoder, decoder], check=True)
    return target


def run_worker(args: list[str], module: str = "qasr.daemon.bench.engine_bench") -> dict:
    cmd = [sys.executable, "-m", module, "worker", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": tail[0][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_description() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} cores"


def run_bench(args: argparse.Namespace) -> int:
    from qasr.config import paths

    work_dir = Path(args.work_dir) if args.work_dir else paths.cache_dir() / "bench"
    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint) if args.checkpoint else ensure_checkpoint(work_dir, args.preset)
    threads = args.threads or len(os.sched_getaffinity(0))
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not args.json:
        print(f"# {machine_description()}; checkpoint {checkpoint}; {args.audio_s:g} s audio; "
              f"{args.new_tokens} new tokens; {threads} threads")
    official = None
    if args.official and not args.streaming:
        official = run_worker(["official", str(checkpoint), str(args.audio_s), str(args.new_tokens), str(threads),
                               str(args.repeats)])
        if "error" in official and not args.json:
            print(f"official path not measured: {official['error']}")
    for config in configs:
        encoder, _, decoder = config.partition("/")
        bundle = ensure_bundle(checkpoint, work_dir, encoder, decoder)
        if args.release:
            result = run_worker([str(bundle), ",".join(map(str, args.streaming_lengths)), str(threads),
                                 str(args.rtf_budget), str(args.release_points), str(args.paused_points)],
                                module="qasr.daemon.bench.release_bench")
            result.update({"encoder": encoder, "decoder": decoder})
            _print(result, args.json)
            continue
        if args.streaming:
            for seconds in args.streaming_lengths:
                result = run_worker(["streaming", str(bundle), str(seconds), str(threads), str(args.rtf_budget),
                                     "1" if args.realtime else "0"])
                result.update({"encoder": encoder, "decoder": decoder})
                _print(result, args.json)
            continue
        result = run_worker(["offline", str(bundle), str(args.audio_s), str(args.new_tokens), str(threads),
                             str(args.repeats)])
        if official and "official_total_ms" in official and "total_ms" in result:
            result.update(official)
            result["speedup_vs_official"] = round(official["official_total_ms"] / result["total_ms"], 2)
        _print(result, args.json)
    return 0


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result), flush=True)
        return
    print("  ".join(f"{k}={v}" for k, v in result.items()), flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="Hugging Face checkpoint dir (default: a random one with --preset shapes)")
    p.add_argument("--preset", default="0.6b", choices=["tiny", "0.6b", "1.7b"])
    p.add_argument("--work-dir", help="where random checkpoints and bundles are cached")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="encoder/decoder precision pairs")
    p.add_argument("--audio-s", type=float, default=10.0)
    p.add_argument("--new-tokens", type=int, default=40)
    p.add_argument("--threads", type=int, default=0, help="0 = every core this process may use")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-official", dest="official", action="store_false", help="skip the transformers reference")
    p.add_argument("--streaming", action="store_true", help="the streaming workload instead of the offline one")
    p.add_argument("--streaming-lengths", type=float, nargs="+", default=[3.0, 10.0, 20.0])
    p.add_argument("--release", action="store_true",
                   help="key release -> final through the daemon's pipeline at --release-points random points")
    p.add_argument("--release-points", type=int, default=20)
    p.add_argument("--paused-points", type=int, default=10, help="utterances ended by the VAD (final prepared)")
    p.add_argument("--rtf-budget", type=float, default=0.5)
    p.add_argument("--no-realtime", dest="realtime", action="store_false", help="feed audio as fast as possible")
    p.add_argument("--json", action="store_true", help="one JSON object per configuration")


def worker_main(argv: list[str]) -> int:
    kind, *rest = argv
    if kind == "offline":
        bundle, audio_s, new_tokens, threads, repeats = rest
        result = offline_worker(Path(bundle), float(audio_s), int(new_tokens), int(threads), int(repeats))
    elif kind == "official":
        ckpt, audio_s, new_tokens, threads, repeats = rest
        result = official_worker(Path(ckpt), float(audio_s), int(new_tokens), int(threads), int(repeats))
    elif kind == "streaming":
        bundle, audio_s, threads, budget, realtime = rest
        result = streaming_worker(Path(bundle), float(audio_s), int(threads), float(budget), realtime == "1")
    else:
        raise SystemExit(f"unknown worker {kind}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        raise SystemExit(worker_main(sys.argv[2:]))
    parser = argparse.ArgumentParser(prog="qasr-bench")
    add_arguments(parser)
    raise SystemExit(run_bench(parser.parse_args()))
