"""How many workers and how many threads each: from the cores, the free memory and a worker's footprint.

Every worker holds one model, so memory caps the count: a worker needs about its bundle files (mapped and
read) plus `RUNTIME_BYTES` (Python, onnxruntime arenas, the KV cache, one file's audio). The cores are
split between the workers, one thread each while memory allows: a batch wants throughput, and one decoder
stream per core keeps every core busy without thread barriers, which stall whenever the machine has other
work (measured: docs/benchmarks.md, "Batch transcription"). When memory holds fewer models than there are
cores, each worker gets more threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RUNTIME_BYTES = 600 * 1024**2  # measured: ~590 MiB PSS over a 0.6B int8/q4_k bundle (docs/benchmarks.md)
THREADS_PER_WORKER = 1
MEMORY_SHARE = 0.8  # of the available memory, for the workers


@dataclass(frozen=True)
class Plan:
    workers: int
    threads: int  # per worker
    reason: str  # one line: why these numbers


def bundle_bytes(*folders: Path | None) -> int:
    return sum(p.stat().st_size for folder in folders if folder for p in Path(folder).rglob("*") if p.is_file())


def worker_bytes(*folders: Path | None) -> int:
    return bundle_bytes(*folders) + RUNTIME_BYTES


def available_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def plan(cpus: int, memory: int, per_worker: int, n_files: int,
         workers: int | None = None, threads: int | None = None) -> Plan:
    """Workers × threads for `cpus` cores and `memory` bytes free; explicit values win."""
    cpus = max(1, cpus)
    by_memory = max(1, int(memory * MEMORY_SHARE // max(per_worker, 1)))
    if workers is None:
        per = threads or min(THREADS_PER_WORKER, cpus)
        workers = max(1, min(cpus // per, by_memory, max(n_files, 1)))
        why = f"{cpus} cores / {per} threads, memory for {by_memory} models of {per_worker / 1024**3:.1f} GiB"
    else:
        why = "--workers"
    if threads is None:
        threads = max(1, cpus // workers)
    return Plan(workers, threads, why)


def local_cpus() -> int:
    from qasr.engine.encoder import default_threads

    return default_threads()
