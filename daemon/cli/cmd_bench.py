"""`qasr-daemon bench`: see qasr.daemon.bench.engine_bench."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from qasr.daemon.bench import engine_bench as bench

    p = sub.add_parser("bench", help="measure speed and memory on a fixed workload (random 0.6B-shape model)",
                       description=(bench.__doc__ or "").split("\n\n")[0])
    bench.add_arguments(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from qasr.daemon.bench import engine_bench as bench

    return bench.run_bench(args)
