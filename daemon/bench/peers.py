"""Same-run peer benchmark: qasr, llama.cpp's own Qwen3-ASR pipeline and the official transformers path
on one checkpoint, one workload, one host, interleaved.

    .venv/bin/python scripts/bench_peers.py [--rounds 3] [--threads 2] [--checkpoint DIR]

Workload as `qasr-daemon bench`: 10 s of synthetic speech, the ASR prompt, exactly 40 new tokens
(end-of-sequence ignored), random weights with the real 0.6B shapes unless --checkpoint is given.
- qasr: int8 encoder + q4_k decoder (`engine_bench` offline worker, its own process);
- llama.cpp: the checkpoint converted by llama.cpp's own `convert_hf_to_gguf.py` (text model → f16 →
  `llama-quantize` Q4_K_M, llama.cpp's default mix; audio tower → `--mmproj` at q8_0), run by
  `llama-mtmd-cli --audio` with greedy sampling and `--ignore-eos`; its compute is what it logs
  (llama_perf's prompt eval, which spans the audio encode, + generation), model loading excluded as for qasr;
- official: transformers + qwen-asr in fp32 (`engine_bench` official worker), if installed;
- llama-bench (the llama.cpp qasr links) on qasr's own decoder GGUF: the decoder yardstick.
Tools and conversions are cached under ~/.cache/qasr/peers; every conversion runs in its own process,
so no measured process carries a converter's memory. Never part of the test suite.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np

from qasr.daemon.bench import engine_bench, peer_tools

SAMPLE_RATE = 16000
PROMPT = "Transcribe this audio."  # llama-mtmd-cli needs a user text; the prompt scaffold is its own


def _log(msg: str) -> None:
    print(f"peers: {msg}", file=sys.stderr, flush=True)


def write_wav(path: Path, audio: np.ndarray) -> Path:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return path


def convert_llama_cpp(checkpoint: Path, out_dir: Path, tools: dict[str, Path]) -> tuple[Path, Path]:
    """llama.cpp's converter on the checkpoint: (text model Q4_K_M, audio mmproj q8_0), cached."""
    src = peer_tools.source_dir(peer_tools.PIPELINE_VERSION)
    out_dir.mkdir(parents=True, exist_ok=True)
    text_f16, text_q4 = out_dir / "text-f16.gguf", out_dir / "text-Q4_K_M.gguf"
    mmproj = out_dir / "mmproj-q8_0.gguf"
    # the converter imports sentencepiece before it looks for a tokenizer.model (Qwen has none): install
    # it beside the tools, not into the project's environment
    pylib = peer_tools.peers_dir() / "pylib"
    if not (pylib / "sentencepiece").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(pylib), "sentencepiece"], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src / "gguf-py"), str(pylib), os.environ.get("PYTHONPATH", "")])}
    # The random checkpoint's synthetic BPE tokenizer has no known pre-tokenizer hash; declare it "qwen2",
    # what the converter finds for the real Qwen3-ASR tokenizer (speed does not depend on it).
    code = ("import runpy, sys; sys.path.insert(0, sys.argv[1]); import conversion.base as b; "
            "b.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'qwen2'; "
            "script = sys.argv[1] + '/convert_hf_to_gguf.py'; sys.argv = [script] + sys.argv[2:]; "
            "runpy.run_path(script, run_name='__main__')")
    convert = [sys.executable, "-c", code, str(src), str(checkpoint)]
    if not text_q4.is_file():
        if not text_f16.is_file():
            _log("converting the text model with llama.cpp's convert_hf_to_gguf.py ...")
            subprocess.run([*convert, "--outtype", "f16", "--outfile", str(text_f16)], env=env, check=True,
                           stdout=subprocess.DEVNULL)
        subprocess.run([str(tools["llama-quantize"]), str(text_f16), str(text_q4), "Q4_K_M"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not mmproj.is_file():
        _log("converting the audio tower (--mmproj) with llama.cpp's convert_hf_to_gguf.py ...")
        subprocess.run([*convert, "--mmproj", "--outtype", "q8_0", "--outfile", str(mmproj)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
    return text_q4, mmproj


_MS = r"([0-9]+(?:\.[0-9]+)?) ms"


def run_mtmd(binary: Path, model: Path, mmproj: Path, wav: Path, threads: int, new_tokens: int) -> dict:
    cmd = [str(binary), "-m", str(model), "--mmproj", str(mmproj), "--audio", str(wav), "-p", PROMPT,
           "-n", str(new_tokens), "--ignore-eos", "--temp", "0", "-t", str(threads), "-tb", str(threads),
           "-c", "1024", "-lv", "4"]  # llama_perf's lines are libllama INFO, shown from verbosity 4 (trace) on
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    wall = (time.perf_counter() - t0) * 1000.0
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        return {"error": (log.strip().splitlines() or ["no output"])[-1][:300]}
    return {**parse_mtmd_log(log), "llama_cpp_wall_ms": round(wall, 1)}


def parse_mtmd_log(log: str) -> dict:
    """llama-mtmd-cli's own timings: audio encoder (`mtmd batch encoding done in N ms`), llama_perf's `prompt
    eval time` and generation (`eval time`)."""
    # llama_perf's prompt eval clock runs from the first decode after a sync to the next sync, and nothing syncs
    # between the prompt's text chunks, the audio encoding and the audio decodes: it spans the whole prefill,
    # encoder included. So total = prompt eval + eval, and the decoder's prefill = prompt eval - encoder.
    encode = sum(float(m) for m in re.findall(r"(?:slice encoded|batch encoding done) in " + _MS, log))
    prompt = re.search(r"prompt eval time =\s+" + _MS, log)
    gen = re.search(r"\beval time =\s+" + _MS + r" /\s+(\d+) runs", log)
    result: dict = {"llama_cpp_encoder_ms": encode}
    if prompt and gen:
        result["llama_cpp_prefill_ms"] = round(float(prompt.group(1)) - encode, 1)
        result["llama_cpp_decode_ms_per_token"] = round(float(gen.group(1)) / max(1, int(gen.group(2))), 2)
        result["llama_cpp_generated"] = int(gen.group(2))
        result["llama_cpp_total_ms"] = round(float(prompt.group(1)) + float(gen.group(1)), 1)
    return result


def _median(rows: list[dict], key: str):
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return (round(statistics.median(values), 2), [round(min(values), 2), round(max(values), 2)]) if values else (None, None)


def run(args) -> dict:
    work = Path(args.work_dir) if args.work_dir else peer_tools.peers_dir().parent / "bench"
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint) if args.checkpoint else engine_bench.ensure_checkpoint(work, "0.6b")
    bundle = engine_bench.ensure_bundle(checkpoint, work, "int8", "q4_k")
    tools = {**peer_tools.build(peer_tools.PIPELINE_VERSION)}
    runtime_bench = peer_tools.build(peer_tools.RUNTIME_VERSION)["llama-bench"]
    text, mmproj = convert_llama_cpp(checkpoint, peer_tools.peers_dir() / f"gguf-{checkpoint.name}", tools)
    wav = write_wav(work / f"bench-{args.audio_s:g}s.wav", engine_bench.bench_audio(args.audio_s))
    threads = args.threads
    rows: list[dict] = []
    official = None
    for r in range(args.rounds):
        _log(f"round {r + 1}/{args.rounds}")
        row = engine_bench.run_worker(["offline", str(bundle), str(args.audio_s), str(args.new_tokens), str(threads), "1"])
        row.update(run_mtmd(tools["llama-mtmd-cli"], text, mmproj, wav, threads, args.new_tokens))
        if args.official and (official is None or args.official_every_round):
            off = engine_bench.run_worker(["official", str(checkpoint), str(args.audio_s), str(args.new_tokens),
                                           str(threads), "1"])
            official = off if official is None else official
            row.update(off)
        rows.append(row)
    from qasr.daemon.bench import decoder_bench

    decoder = decoder_bench.run(bundle / _decoder_file(bundle), threads, args.rounds, binary=runtime_bench)
    summary: dict = {"host": engine_bench.machine_description(), "threads": threads, "rounds": args.rounds,
                     "audio_s": args.audio_s, "new_tokens": args.new_tokens, "checkpoint": str(checkpoint)}
    for key in ("total_ms", "encoder_ms", "prefill_ms", "decode_ms_per_token", "peak_rss_mb", "llama_cpp_total_ms",
                "llama_cpp_encoder_ms", "llama_cpp_prefill_ms", "llama_cpp_decode_ms_per_token", "llama_cpp_wall_ms",
                "official_total_ms", "official_peak_rss_mb"):
        summary[key], summary[f"{key}_range"] = _median(rows, key)
    pairs = [(r["total_ms"], r.get("llama_cpp_total_ms"), r.get("official_total_ms")) for r in rows if "total_ms" in r]
    vs_llama = [b / a for a, b, _ in pairs if b]
    vs_official = [c / a for a, _, c in pairs if c]
    if vs_llama:
        summary["speedup_vs_llama_cpp"] = round(statistics.median(vs_llama), 2)
    if vs_official:
        summary["speedup_vs_official"] = round(statistics.median(vs_official), 2)
    elif official and "official_total_ms" in official and summary.get("total_ms"):
        summary["speedup_vs_official"] = round(official["official_total_ms"] / summary["total_ms"], 2)
    summary["decoder_vs_llama_bench"] = decoder
    summary["rows"] = rows
    return summary


def _decoder_file(bundle: Path) -> str:
    return json.loads((bundle / "manifest.json").read_text())["files"]["decoder"]["path"]


def print_summary(s: dict) -> None:
    d = s["decoder_vs_llama_bench"]
    print(f"# {s['host']}; {s['threads']} threads; {s['audio_s']:g} s audio, {s['new_tokens']} new tokens; "
          f"medians of {s['rounds']} interleaved rounds")
    print(f"qasr int8/q4_k      total {s['total_ms']} ms {s['total_ms_range']}  encoder {s['encoder_ms']}  "
          f"prefill {s['prefill_ms']}  {s['decode_ms_per_token']} ms/token  peak RSS {s['peak_rss_mb']} MB")
    print(f"llama.cpp mtmd-cli  total {s['llama_cpp_total_ms']} ms {s['llama_cpp_total_ms_range']}  encoder "
          f"{s['llama_cpp_encoder_ms']}  prefill {s['llama_cpp_prefill_ms']}  {s['llama_cpp_decode_ms_per_token']} ms/token")
    print(f"official fp32       total {s['official_total_ms']} ms {s['official_total_ms_range']}  peak RSS "
          f"{s['official_peak_rss_mb']} MB")
    print(f"qasr vs official: {s.get('speedup_vs_official')}× (goal ≥ 3×); vs llama.cpp's pipeline: "
          f"{s.get('speedup_vs_llama_cpp')}× (goal ≥ 1.6×)")
    print(f"decoder vs llama-bench (same GGUF, same threads; >1 = qasr slower): pp148 {d.get('ratio_pp_ms')}, "
          f"tg {d.get('ratio_tg_ms_per_token')}, qasr's prompt (one decode) with the head kept vs pp148 "
          f"{d.get('ratio_prompt_warm_vs_pp')}")


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", help="Hugging Face checkpoint dir (default: random, real 0.6B shapes)")
    p.add_argument("--work-dir", help="where the random checkpoint and bundles are cached")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--audio-s", type=float, default=10.0)
    p.add_argument("--new-tokens", type=int, default=40)
    p.add_argument("--no-official", dest="official", action="store_false")
    p.add_argument("--official-every-round", action="store_true", help="the official path in every round (slow)")
    p.add_argument("--json", action="store_true")
