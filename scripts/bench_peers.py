#!/usr/bin/env python3
"""Same-run peer benchmark: qasr vs llama.cpp's own Qwen3-ASR pipeline vs the official transformers path.

    .venv/bin/python scripts/bench_peers.py                  # builds/converts on first use (~15 min), cached
    .venv/bin/python scripts/bench_peers.py --rounds 5 --json

See qasr.daemon.bench.peers for what is measured and how; the llama.cpp tools are built by
`python -m qasr.daemon.bench.peer_tools build` (cmake, cached in ~/.cache/qasr/peers).
"""

from __future__ import annotations

import argparse
import json

from qasr.daemon.bench import peers


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench_peers", description=__doc__.split("\n\n")[0])
    peers.add_arguments(parser)
    args = parser.parse_args()
    summary = peers.run(args)
    if args.json:
        print(json.dumps(summary))
    else:
        peers.print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
