"""One worker's job: a warm model (and aligner) that turns one file into its outputs, through the very code
`transcribe` runs (`cli.file_outputs`). Used in the worker processes of the local pool and in Ray actors;
what crosses to and from a worker is plain data (`EngineSpec`, `Job`, `JobResult`)."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from qasr.daemon.batch.manifest import file_sha256
from qasr.daemon.cli.file_outputs import CueOptions, load_transcriber, render, transcribe_file
from qasr.errors import QasrError


@dataclass(frozen=True)
class EngineSpec:
    """What every worker loads: the same model and options everywhere (absolute paths)."""

    model: str
    aligner: str | None = None  # with --timestamps word
    language: str | None = None
    context: str = ""
    max_new_tokens: int | None = None
    threads: int = 1  # per worker
    cue: CueOptions = CueOptions()


@dataclass(frozen=True)
class Job:
    key: str  # absolute path: the worker reads this (a Ray worker's folder is not ours)
    path: str  # as named: what json's "file" says
    formats: tuple[str, ...]  # "text", "json", "srt", "vtt"
    audio_s: float = 0.0  # duration from the container (for the schedule and the progress), 0 if unknown


@dataclass
class JobResult:
    key: str
    ok: bool
    outputs: dict[str, str] = field(default_factory=dict)  # format → text, exactly as `transcribe` prints it
    audio_s: float = 0.0
    seconds: float = 0.0  # worker time for this file
    sha256: str | None = None
    error: str | None = None
    worker: str = ""  # host:pid


class FileWorker:
    def __init__(self, spec: EngineSpec):
        from qasr.engine.transcribe import TranscribeOptions

        model = Path(spec.model)
        if not model.is_dir():
            raise QasrError(f"no model bundle at {model} on {socket.gethostname()}; install it there "
                            "(`qasr-daemon models pull`) or put the bundle on a shared filesystem")
        options = TranscribeOptions(language=spec.language, context=spec.context,
                                    max_new_tokens=spec.max_new_tokens, threads=spec.threads)
        self.spec = spec
        self.transcriber = load_transcriber(model, options)
        self.aligner = None
        try:
            if spec.aligner:
                from qasr.daemon.cli.cmd_align import load_aligner

                self.aligner = load_aligner(Path(spec.aligner), spec.threads)
        except BaseException:
            self.transcriber.close()
            raise
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, job: Job) -> JobResult:
        started = time.perf_counter()
        result = JobResult(job.key, ok=False, sha256=file_sha256(job.key), worker=self.name)
        try:
            transcript = transcribe_file(self.transcriber, self.aligner, job.key)
            result.outputs = {fmt: render(fmt, job.path, transcript, self.spec.cue) for fmt in job.formats}
            result.audio_s = transcript.audio_s
            result.ok = True
        except QasrError as exc:
            result.error = str(exc).replace(job.key, job.path)
        except Exception as exc:  # noqa: BLE001 - one bad file must not end the run
            first = (str(exc).strip().splitlines() or [""])[0]
            result.error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        result.seconds = time.perf_counter() - started
        return result

    def close(self) -> None:
        self.transcriber.close()
        if self.aligner is not None:
            self.aligner.close()
