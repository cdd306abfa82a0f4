#!/usr/bin/env python3
"""Memory over a working day: the real daemon hears espeak-ng phrases with pauses for a long time.

    .venv/bin/python scripts/bench_soak.py --model DIR [--minutes 30] [--sample-s 10] [--json]

Prints one summary (``--json``: one JSON object, with the RSS curve) and, without ``--json``, the RSS
curve thinned to one line per ``--curve-every-min`` minutes. Built on tests/harness and scripts/bench/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.harness; scripts/ (bench) is sys.path[0]

from bench.procfs import machine  # noqa: E402
from bench.soak import run_soak  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, type=Path, help="model bundle")
    p.add_argument("--minutes", type=float, default=30.0, help="speaking time (default 30)")
    p.add_argument("--sample-s", type=float, default=10.0, help="RSS sampling period (default 10 s)")
    p.add_argument("--curve-every-min", type=float, default=2.0, help="curve lines in the text report")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--daemon-set", action="append", default=[], metavar="KEY=VALUE", help="daemon --set")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("pulseaudio", "paplay", "espeak-ng"):
        if shutil.which(tool) is None:
            print(f"bench_soak: {tool} is missing; run scripts/install.sh --dev", file=sys.stderr)
            return 2
    root = Path(tempfile.mkdtemp(prefix="qasr-soak-", dir="/tmp"))
    try:
        result = run_soak(root, args.model, args.minutes, args.sample_s, args.daemon_set, args.seed)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result["machine"] = machine()
    if args.json:
        print(json.dumps(result))
        return 0
    curve = result.pop("curve")
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    next_t = 0.0
    for t, rss in curve:
        if t >= next_t:
            print(f"  {t:6.1f} min  {rss:7.1f} MB")
            next_t = t + args.curve_every_min
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
