#!/usr/bin/env python3
"""Batch throughput: audio hours per wall hour of `qasr-daemon batch` (1 and 2 local workers, and through a
local Ray) against a shell loop of `qasr-daemon transcribe` over the same files, plus memory per worker.

    .venv/bin/python scripts/bench_batch.py [--model DIR] [--files 50] [--ray] [--runs 1x2,1x1,2x1] [--work DIR]

Without --model it makes the tiny random bundle of the test suite (what it measures then is the per-file
overhead a batch saves: model loads and process starts, not the speed of a real model). The files are
synthetic speech-like audio of 3 to 9 s. Every run uses the same options; the outputs are compared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLI = [sys.executable, "-m", "qasr.daemon.cli.main"]
OPTIONS = ["--language", "English", "--max-new-tokens", "24"]


def make_files(folder: Path, n: int) -> float:
    import soundfile as sf

    from qasr.daemon.bench.synthetic_audio import make_test_audio

    total = 0.0
    for i in range(n):
        seconds = 3.0 + (i * 7919 % 61) / 10.0  # 3.0 .. 9.0 s, mixed order
        sub = folder / f"part{i % 4}"
        sub.mkdir(parents=True, exist_ok=True)
        sf.write(sub / f"f{i:03d}.wav", make_test_audio(seconds, seed=1000 + i), 16000)
        total += seconds
    return total


def tiny_bundle(work: Path) -> Path:
    from qasr.daemon.bench.random_checkpoint import make_checkpoint
    from qasr.engine.convert import convert_checkpoint

    return convert_checkpoint(make_checkpoint(work / "ckpt", preset="tiny", seed=0), work / "tiny", "fp32", "f32")


class MemoryWatch:
    """Peak proportional set size (PSS) of each worker process while a run lasts."""

    def __init__(self, parent_pid: int, ray: bool):
        self.parent, self.ray, self.peak = parent_pid, ray, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _workers(self):
        import psutil

        if self.ray:
            return [p for p in psutil.process_iter(["cmdline"]) if "RayFileWorker" in " ".join(p.info["cmdline"] or [])]
        try:
            children = psutil.Process(self.parent).children()
            return [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]
        except psutil.NoSuchProcess:
            return []

    def _watch(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            for proc in self._workers():
                try:
                    pss = proc.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                self.peak[proc.pid] = max(self.peak.get(proc.pid, 0), pss)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join()
        return sorted(self.peak.values())


def timed_batch(files: Path, out: Path, model: Path, workers: int, threads: int,
                ray: bool) -> tuple[float, float, list[int]]:
    """(wall s, s until the first file was done, peak PSS per worker)."""
    args = [*CLI, "batch", str(files), "--out", str(out), "--model", str(model), "--workers", str(workers),
            "--threads", str(threads), *OPTIONS] + (["--ray"] if ray else [])
    started = time.perf_counter()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    watch = MemoryWatch(proc.pid, ray)
    first, lines = None, []
    for line in proc.stderr:  # one plain line per file (not a terminal)
        lines.append(line)
        if first is None and line.startswith("done ["):
            first = time.perf_counter() - started
    proc.wait()
    wall = time.perf_counter() - started
    peaks = watch.stop()
    if proc.returncode != 0:
        raise SystemExit("batch failed:\n" + "".join(lines))
    return wall, first or wall, peaks


def timed_loop(files: Path, out: Path, model: Path, threads: int) -> float:
    """The shell loop: `for f in ...; do qasr-daemon transcribe "$f" > out/...; done`."""
    started = time.perf_counter()
    for path in sorted(files.rglob("*.wav")):
        target = out / path.relative_to(files).with_suffix(".txt")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w") as f:
            subprocess.run([*CLI, "transcribe", str(path), "--model", str(model), "--threads", str(threads),
                            *OPTIONS], stdout=f, check=True)
    return time.perf_counter() - started


def same_texts(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a) for p in a.rglob("*.txt"))
    return bool(names) and all((a / n).read_text() == (b / n).read_text() for n in names)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="bundle (default: the tiny random bundle, made here)")
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--ray", action="store_true", help="also the same runs through a local Ray")
    parser.add_argument("--runs", default="1x2,1x1,2x1", help="local WORKERSxTHREADS runs (default: 1x2,1x1,2x1); "
                        "with --ray, 1x1 and 2x1 through Ray too")
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args()

    from qasr.daemon.bench.aligner_bench import cpu_model

    work = args.work or Path(tempfile.mkdtemp(prefix="qasr-bench-batch-"))
    model = args.model or tiny_bundle(work)
    audio_s = make_files(work / "audio", args.files)
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs; load average before: {os.getloadavg()}")
    print(f"# {args.files} files, {audio_s / 60:.1f} min of audio; model {model}")
    print("| run | wall s | first file done at s | audio h per wall h | × the loop | peak PSS per worker MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    loop_wall = timed_loop(work / "audio", work / "out-loop", model, threads=2)
    print(f"| shell loop of transcribe (--threads 2) | {loop_wall:.1f} | – | {audio_s / loop_wall:.1f} | 1.00 | – |")
    local = [tuple(int(n) for n in run.split("x")) for run in args.runs.split(",") if run]
    runs = [(w, t, False) for w, t in local] + ([(1, 1, True), (2, 1, True)] if args.ray else [])
    for workers, threads, ray in runs:
        out = work / f"out-{'ray' if ray else 'local'}-{workers}x{threads}"
        wall, first, peaks = timed_batch(work / "audio", out, model, workers, threads, ray)
        assert same_texts(work / "out-loop", out), f"{out}: outputs differ from the loop's"
        mem = ", ".join(f"{p / 2**20:.0f}" for p in peaks) or "?"
        name = f"batch {'--ray ' if ray else ''}--workers {workers} --threads {threads}"
        print(f"| {name} | {wall:.1f} | {first:.1f} | {audio_s / wall:.1f} | {loop_wall / wall:.2f} | {mem} |",
              flush=True)
    print(f"# load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
