"""`qasr-daemon batch INPUT... --out DIR`: transcribe an archive into files, resumably, on a pool of warm
workers (this machine, or Ray actors with --ray). The orchestration lives in qasr.daemon.batch."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from qasr.daemon.cli.cmd_align import aligner_dir
from qasr.daemon.cli.cmd_transcribe import add_transcription_options, check_transcription_options, model_dir
from qasr.errors import UsageError

FORMAT_NAMES = {"txt": "text", "text": "text", "json": "json", "srt": "srt", "vtt": "vtt"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="transcribe many files (folders, globs, lists) into output files, resumably",
        description="Transcribe an archive: every output equals `qasr-daemon transcribe FILE` with the same "
        "options, written under --out in the input's folder tree. DIR/batch.jsonl records every finished file; "
        "running the same command again skips what is done. Workers each keep one model loaded.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="audio/video files, folders (searched recursively), globs ('talks/**/*.mp3') or lists "
                   "(@LIST, or a .txt/.lst file: one path per line)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (also holds batch.jsonl)")
    p.add_argument("--format", action="append", metavar="F",
                   help="txt, json, srt or vtt; repeat or comma-separate for several (default: txt)")
    add_transcription_options(p)
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes (Ray actors with --ray), each with its own model; default: one per "
                   "core, as many as the free memory holds")
    p.add_argument("--threads", type=int, default=0, metavar="N",
                   help="CPU threads per worker (default: the cores split between the workers)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="do every file again, even those batch.jsonl records as done")
    p.add_argument("--resume", dest="resume", action="store_true", help="skip files already done (the default)")
    p.add_argument("--retry-failed", action="store_true", help="try again the files that failed in an earlier run")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run the workers as Ray actors: a local Ray, or the cluster at ADDRESS (host:port or "
                   "'auto'); needs pip install 'qasr[batch]'")
    p.set_defaults(func=cmd_batch, resume=True)


def parse_formats(values: list[str] | None) -> tuple[str, ...]:
    formats: list[str] = []
    for value in values or ["txt"]:
        for name in filter(None, (part.strip().lower() for part in value.split(","))):
            if name not in FORMAT_NAMES:
                raise UsageError(f"--format {name!r}: choose txt, json, srt or vtt")
            if FORMAT_NAMES[name] not in formats:
                formats.append(FORMAT_NAMES[name])
    return tuple(formats)


def _check_model(path: Path, language: str | None) -> None:
    """The bundle is a recognizer and knows the language: said once here, not once per worker."""
    from qasr.engine.bundle import BundleError, load_bundle
    from qasr.engine.prompt import resolve_language
    from qasr.errors import QasrError

    try:
        manifest = load_bundle(path, verify="none").manifest
    except BundleError as exc:
        raise QasrError(str(exc)) from None
    if manifest.is_aligner:
        raise QasrError(f"{path} is a forced aligner, not a speech recognizer; pass a Qwen3-ASR model to --model")
    resolve_language(language, manifest.languages)


def cmd_batch(args: argparse.Namespace) -> int:
    if args.ray and os.path.exists(args.ray):  # `--ray talks/`: an input, not an address
        args.inputs.insert(0, args.ray)
        args.ray = ""
    if not args.inputs:
        raise UsageError("name the files to transcribe: files, folders, globs or @LIST")
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    check_transcription_options(args)
    formats = parse_formats(args.format)
    words = args.timestamps == "word"
    model = model_dir(args.model).resolve()
    _check_model(model, args.language)
    aligner = aligner_dir(args.aligner, "--aligner").resolve() if words else None

    from qasr.daemon.batch.runner import BatchOptions, run_batch
    from qasr.daemon.batch.work import EngineSpec
    from qasr.daemon.cli.file_outputs import CueOptions

    spec = EngineSpec(model=str(model), aligner=str(aligner) if aligner else None, language=args.language,
                      context=args.context or "", max_new_tokens=args.max_new_tokens,
                      cue=CueOptions(args.timestamps, args.max_chars, args.max_seconds))
    options = BatchOptions(inputs=args.inputs, out=Path(args.out).expanduser(), formats=formats, spec=spec,
                           resume=args.resume, retry_failed=args.retry_failed, workers=args.workers,
                           threads=args.threads or None, ray=args.ray)
    return run_batch(options)
