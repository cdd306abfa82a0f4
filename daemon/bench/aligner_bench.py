"""What word timestamps cost: the forced aligner beside the transcription of the same audio, one process.

    python -m qasr.daemon.bench.aligner_bench --asr ASR_BUNDLE --aligner ALIGNER_BUNDLE \
        [--threads 2] [--rounds 3] [--json]

For 10 s of audio with 40 words and 60 s with 240 words (synthetic speech-like audio, words from a
fixed list: random weights make the times meaningless, the cost is what counts): the aligner's encoder
and its one decoder pass, and the transcription of the same audio (`Transcriber.transcribe`, at most
`1.3 × words` new tokens so both sides handle about as much text), interleaved, medians over rounds.
Peak RSS (VmHWM) is this process's with both bundles loaded.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time


WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "while", "we", "talk", "about",
         "weather", "tomorrow", "morning", "meeting", "notes", "and", "send", "them")
CASES = ((10.0, 40), (60.0, 240))


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def text_of(n_words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n_words))


def run(asr_dir: str, aligner_dir: str, threads: int, rounds: int) -> dict:
    from qasr.daemon.bench.engine_bench import bench_audio, peak_rss_mb
    from qasr.engine.align.aligner import AlignerOptions, ForcedAligner
    from qasr.engine.align.words import split_words
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    rss_start = peak_rss_mb()
    aligner = ForcedAligner(aligner_dir, AlignerOptions(threads=threads))
    results: dict = {"cpu": cpu_model(), "threads": threads, "rounds": rounds, "cases": []}
    transcriber = Transcriber(asr_dir, TranscribeOptions(threads=threads, max_piece_s=30.0, language="English"))
    for seconds, n_words in CASES:
        audio = bench_audio(seconds)
        words = split_words(text_of(n_words), "English")
        transcriber.set_prompt("English", "", max_new_tokens=int(1.3 * n_words))
        aligner.align(audio[:16000], "warm up", "English")
        timings: dict[str, list[float]] = {"align_encoder_ms": [], "align_decoder_ms": [], "align_total_ms": [],
                                           "transcribe_ms": []}
        for _ in range(rounds):
            t0 = time.perf_counter()
            embeds = aligner.encode(audio)
            t1 = time.perf_counter()
            aligner.align(audio, " ".join(words), "English")
            t2 = time.perf_counter()
            transcriber.transcribe(audio)
            t3 = time.perf_counter()
            timings["align_encoder_ms"].append((t1 - t0) * 1000)
            timings["align_total_ms"].append((t2 - t1) * 1000)
            timings["align_decoder_ms"].append((t2 - t1 - (t1 - t0)) * 1000)
            timings["transcribe_ms"].append((t3 - t2) * 1000)
        ids, _ = aligner.input_ids(embeds.shape[0], words)
        case = {"audio_s": seconds, "words": n_words, "positions": len(ids)}
        case.update({k: round(statistics.median(v), 1) for k, v in timings.items()})
        case["align_vs_transcribe"] = round(case["align_total_ms"] / case["transcribe_ms"], 3)
        results["cases"].append(case)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    results["rss_before_models_mb"] = round(rss_start, 1)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qasr.daemon.bench.aligner_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--asr", required=True, help="speech-recognition bundle")
    parser.add_argument("--aligner", required=True, help="forced-aligner bundle")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run(args.asr, args.aligner, args.threads, args.rounds)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"# {result['cpu']}; {result['threads'] or 'default'} threads; medians of {result['rounds']}")
    for c in result["cases"]:
        print(f"{c['audio_s']:>5.0f} s, {c['words']:>3} words ({c['positions']} positions): aligner "
              f"{c['align_total_ms']:.0f} ms (encoder {c['align_encoder_ms']:.0f}, decoder {c['align_decoder_ms']:.0f}); "
              f"transcription {c['transcribe_ms']:.0f} ms; aligner/transcription {c['align_vs_transcribe']:.2f}")
    print(f"peak RSS with both bundles loaded: {result['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
