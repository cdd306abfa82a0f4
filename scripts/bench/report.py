"""Output of the bench: one line (or JSON object) per measurement, log lines on stderr."""

from __future__ import annotations

import json
import statistics
import sys

from tests.harness import HarnessError as BenchError  # noqa: F401 - the bench's one error type


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


class Reporter:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.results: list[dict] = []

    def __call__(self, bench: str, **fields) -> None:
        record = {"bench": bench, **fields}
        self.results.append(record)
        if self.as_json:
            print(json.dumps(record), flush=True)
        else:
            print(f"{bench:<14}" + "  ".join(f"{k}={_fmt(v)}" for k, v in fields.items()), flush=True)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def r1(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
