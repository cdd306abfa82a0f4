"""`qasr-daemon transcribe FILE...`: offline transcription of audio files (no daemon needed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qasr.config.settings import DEFAULT_MODEL_NAME, ModelSettings
from qasr.daemon.cli.cmd_align import add_cue_options, aligner_dir, check_cue_options, load_aligner
from qasr.daemon.cli.file_outputs import FORMATS, load_transcriber, render, transcribe_file
from qasr.errors import QasrError, UsageError

TIMESTAMPS = ("segment", "word")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe audio files (wav, flac, ogg/opus, mp3, webm ...)",
        description="Transcribe audio files offline. Long files are cut at quiet points into pieces "
        "of at most 30 s. Per-file errors are reported and the other files still run; the exit "
        "status is non-zero if any file failed.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (any format FFmpeg decodes)")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    add_transcription_options(p)
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (default: all available)")
    p.set_defaults(func=cmd_transcribe)


def add_transcription_options(p: argparse.ArgumentParser) -> None:
    """The options that decide what a file's transcript is (also `batch`'s)."""
    p.add_argument("--model", metavar="DIR", help=f"model bundle (default: <data dir>/models/{DEFAULT_MODEL_NAME})")
    p.add_argument("--language", metavar="L", help="force the language (e.g. English, chinese); default: detect")
    p.add_argument("--context", metavar="TEXT", default="", help="hotwords, names or topic to bias recognition")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="most tokens generated per 30 s piece")
    p.add_argument("--timestamps", choices=TIMESTAMPS, default="segment",
                   help="segment: times of the pieces (default); word: every word's start and end from the "
                   "forced aligner (`qasr-daemon models pull aligner`), added to json as `words` and making "
                   "srt/vtt cues word-timed")
    p.add_argument("--aligner", metavar="DIR", help="aligner bundle for --timestamps word (default: [model] "
                   "aligner in the config file, else the installed qwen3-forcedaligner-0.6b)")
    add_cue_options(p)


def model_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser()
    path = ModelSettings().resolved_path()  # the daemon's default bundle
    if not path.exists():
        raise QasrError(
            f"no model at {path}; run `qasr-daemon models pull 0.6b` or pass --model DIR"
        )
    return path


def check_transcription_options(args: argparse.Namespace) -> None:
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    check_cue_options(args)
    if args.aligner and args.timestamps != "word":
        raise UsageError("--aligner is for --timestamps word")


def cmd_transcribe(args: argparse.Namespace) -> int:
    check_transcription_options(args)
    words = args.timestamps == "word"
    if words and args.format == "text":
        raise UsageError("--timestamps word needs --format json, srt or vtt")
    from qasr.engine.transcribe import TranscribeOptions

    options = TranscribeOptions(
        language=args.language, context=args.context or "", max_new_tokens=args.max_new_tokens, threads=args.threads
    )
    aligner_path = aligner_dir(args.aligner, "--aligner") if words else None  # before any model loads
    transcriber = load_transcriber(model_dir(args.model), options)
    aligner = None
    failed = 0
    try:
        aligner = load_aligner(aligner_path, args.threads) if aligner_path else None
        for index, file in enumerate(args.files):
            try:
                result = transcribe_file(transcriber, aligner, file)
            except QasrError as exc:
                failed += 1
                print(f"qasr-daemon: error: {exc}", file=sys.stderr, flush=True)
                continue
            _emit(args, file, result, index)
    finally:
        transcriber.close()
        if aligner is not None:
            aligner.close()
    if failed:
        print(f"qasr-daemon: {failed} of {len(args.files)} files failed", file=sys.stderr)
        return 1
    return 0


def _emit(args: argparse.Namespace, file: str, result, index: int) -> None:
    n_files = len(args.files)
    if args.format in ("srt", "vtt") and n_files > 1:
        print(f"{'' if index == 0 else chr(10)}==> {file} <==")
    if args.format == "text" and n_files > 1:
        print(f"{file}: {result.text}", flush=True)
    else:
        print(render(args.format, file, result, args), end="", flush=True)
