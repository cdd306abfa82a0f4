"""One batch run: inputs → what is left to do (the manifest) → longest first through a pool → outputs written
and one manifest line per file as it finishes → summary.

Only this process writes: the outputs (each file written whole and renamed into place, before its manifest
line) and the manifest. Ctrl+C or SIGTERM stops the workers at once; a file in progress has no line and is
done by the next run, a finished one is never done again.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from qasr.daemon.batch import sizing
from qasr.daemon.batch.inputs import InputFile, collect
from qasr.daemon.batch.manifest import FileStat, Manifest
from qasr.daemon.batch.probe import audio_seconds
from qasr.daemon.batch.progress import Progress, Tally, hours
from qasr.daemon.batch.work import EngineSpec, Job, JobResult
from qasr.errors import QasrError

SUFFIX = {"text": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}


@dataclass
class BatchOptions:
    inputs: list[str]
    out: Path
    formats: tuple[str, ...]
    spec: EngineSpec  # its threads are set by the plan
    resume: bool = True
    retry_failed: bool = False
    workers: int | None = None
    threads: int | None = None
    ray: str | None = None  # None: the local pool; "": a local Ray; else a cluster address
    tty: bool | None = None  # None: the stream's own isatty()
    notes: list[str] = field(default_factory=list)


def options_key(spec: EngineSpec) -> dict:
    """What decides the outputs, as the manifest records it."""
    return {"model": spec.model, "aligner": spec.aligner, "language": spec.language, "context": spec.context,
            "max_new_tokens": spec.max_new_tokens, "timestamps": spec.cue.timestamps,
            "max_chars": spec.cue.max_chars, "max_seconds": spec.cue.max_seconds}


def output_names(item: InputFile, formats: tuple[str, ...]) -> dict[str, str]:
    return {fmt: f"{item.out}{SUFFIX[fmt]}" for fmt in formats}


def run_batch(opts: BatchOptions, stream: TextIO = sys.stderr) -> int:
    found = collect(opts.inputs, opts.out)
    for note in found.notes:
        print(f"qasr-daemon: {note}", file=stream)
    if not found.files:
        raise QasrError("no audio files found in the inputs")
    with Manifest(opts.out) as manifest:
        key = options_key(opts.spec)
        todo, skipped_done, skipped_failed = [], 0, 0
        for item in found.files:
            state = manifest.status(item.key, FileStat.of(item.key), key, list(opts.formats), opts.out) \
                if opts.resume else None
            if state == "done":
                skipped_done += 1
            elif state == "failed" and not opts.retry_failed:
                skipped_failed += 1
            else:
                todo.append(item)
        if not todo:
            failed = f", {skipped_failed} failed earlier (--retry-failed tries them again)" if skipped_failed else ""
            print(f"batch: nothing to do: {skipped_done} files done{failed}; see {manifest.path}", file=stream)
            return 0
        return _run(opts, todo, manifest, skipped_done, skipped_failed, stream)


def _run(opts: BatchOptions, todo: list[InputFile], manifest: Manifest, skipped_done: int, skipped_failed: int,
         stream: TextIO) -> int:
    items = {item.key: item for item in todo}
    jobs = [Job(item.key, item.path, opts.formats, audio_seconds(item.key)) for item in todo]
    jobs.sort(key=lambda job: -job.audio_s)  # longest first: the last to finish are the short ones
    pool, plan = _make_pool(opts, len(jobs))
    where = f"Ray at {opts.ray}" if opts.ray else "a local Ray" if opts.ray == "" else "this machine"
    tally = Tally(files=len(jobs), audio_s=sum(job.audio_s for job in jobs))
    progress = Progress(tally, stream, opts.tty)
    progress.note(f"batch: {len(jobs)} files ({hours(tally.audio_s)} of audio) on {where}: {plan.workers} "
                  f"worker{'s' * (plan.workers != 1)} × {plan.threads} thread{'s' * (plan.threads != 1)} "
                  f"({plan.reason}); {skipped_done} already done")
    interrupted = False
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for result in pool.run(jobs):
            if result is None:
                progress.tick()
                continue
            item = items.pop(result.key)
            record = _finish(opts, item, result)
            manifest.append(record)
            progress.file_finished(item.path, record["status"] == "done", result.audio_s, result.seconds,
                                   record["error"])
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C must not cut the clean-up short
        try:
            pool.close()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
    progress.summary(str(manifest.path), skipped_done, skipped_failed, len(items), interrupted)
    if interrupted:
        return 130
    return 1 if tally.failed else 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _make_pool(opts: BatchOptions, n_files: int):
    from dataclasses import replace

    per_worker = sizing.worker_bytes(Path(opts.spec.model), Path(opts.spec.aligner) if opts.spec.aligner else None)
    if opts.ray is not None:
        from qasr.daemon.batch.ray_pool import RayPool, cluster_cpus

        cpus = cluster_cpus(opts.ray or None)
        # a cluster's memory is spread over its nodes (Ray places the actors): there the cores decide
        memory = sizing.available_memory() if opts.ray == "" else sys.maxsize // 2
        plan = sizing.plan(cpus, memory, per_worker, n_files, opts.workers, opts.threads)
        return RayPool(replace(opts.spec, threads=plan.threads), plan.workers), plan
    from qasr.daemon.batch.local_pool import LocalPool

    plan = sizing.plan(sizing.local_cpus(), sizing.available_memory(), per_worker, n_files, opts.workers, opts.threads)
    return LocalPool(replace(opts.spec, threads=plan.threads), plan.workers), plan


def _finish(opts: BatchOptions, item: InputFile, result: JobResult) -> dict:
    """Write the outputs of a finished file; its manifest line."""
    names = output_names(item, opts.formats)
    error = result.error
    if result.ok:
        try:
            for fmt, name in names.items():
                _write(opts.out / name, result.outputs[fmt])
        except OSError as exc:
            error = f"cannot write {opts.out / name}: {exc.strerror or exc}"
    stat = FileStat.of(item.key)
    return {"file": item.path, "path": item.key, "size": stat.size, "mtime": stat.mtime, "sha256": result.sha256,
            "status": "done" if error is None else "failed", "seconds": round(result.seconds, 3),
            "audio_s": round(result.audio_s, 3), "error": error, "formats": list(opts.formats),
            "outputs": list(names.values()) if error is None else [], "options": options_key(opts.spec),
            "worker": result.worker}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)
