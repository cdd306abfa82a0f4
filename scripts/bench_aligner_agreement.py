#!/usr/bin/env python3
"""How often a quantized aligner bundle picks the same timestamp class as the official f32 aligner.

    .venv/bin/python scripts/bench_aligner_agreement.py CHECKPOINT BUNDLE [BUNDLE ...]

CHECKPOINT is a (random) Qwen3-ForcedAligner folder in the Hugging Face layout, each BUNDLE a qasr
conversion of it. For 10 s / 40 words and 30 s / 120 words of synthetic speech-like audio it prints the
share of <timestamp> positions whose class equals the official one, and the share of words whose
repaired start and end equal the official ones. Random weights: agreement, not accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = ((10.0, 40), (30.0, 120))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("bundles", nargs="+")
    args = parser.parse_args()

    from qasr.daemon.bench.aligner_bench import cpu_model, text_of
    from qasr.daemon.bench.engine_bench import bench_audio
    from qasr.engine.align.aligner import ForcedAligner
    from qasr.engine.align.words import split_words
    from tests.official_aligner import OfficialAligner

    official = OfficialAligner(args.checkpoint)
    print(f"# {cpu_model()}; official f32 (transformers) vs qasr bundles")
    wanted = []
    for seconds, n_words in CASES:
        audio, text = bench_audio(seconds), text_of(n_words)
        wanted.append((audio, text, official.class_indices(audio, text, "English"), official.align(audio, text, "English")))
    for bundle in args.bundles:
        with ForcedAligner(bundle) as aligner:
            for (seconds, n_words), (audio, text, classes, items) in zip(CASES, wanted):
                words = split_words(text, "English")
                got = aligner.class_indices(audio, words)
                ours = [(w.word, w.start, w.end) for w in aligner.align_piece(audio, words)]
                same_words = sum(a == b for a, b in zip(ours, items)) / max(1, len(items))
                print(f"{Path(bundle).name}: {seconds:.0f} s, {n_words} words: classes {np.mean(got == classes):.3f}, "
                      f"words with identical times {same_words:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
