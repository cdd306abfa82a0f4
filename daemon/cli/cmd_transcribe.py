"""`qasr-daemon transcribe FILE...`: offline transcription of audio files (no daemon needed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qasr.config.settings import DEFAULT_MODEL_NAME, ModelSettings
from qasr.errors import QasrError, UsageError

FORMATS = ("text", "json", "srt")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe audio files (wav, flac, ogg/opus, mp3, webm ...)",
        description="Transcribe audio files offline. Long files are cut at quiet points into pieces "
        "of at most 30 s. Per-file errors are reported and the other files still run; the exit "
        "status is non-zero if any file failed.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (any format FFmpeg decodes)")
    p.add_argument("--model", metavar="DIR", help=f"model bundle (default: <data dir>/models/{DEFAULT_MODEL_NAME})")
    p.add_argument("--language", metavar="L", help="force the language (e.g. English, chinese); default: detect")
    p.add_argument("--context", metavar="TEXT", default="", help="hotwords, names or topic to bias recognition")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="most tokens generated per 30 s piece")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (default: all available)")
    p.set_defaults(func=cmd_transcribe)


def _model_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).expanduser()
    path = ModelSettings().resolved_path()  # the daemon's default bundle
    if not path.exists():
        raise QasrError(
            f"no model at {path}; run `qasr-daemon models pull 0.6b` or pass --model DIR"
        )
    return path


def srt_time(seconds: float) -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def format_srt(result) -> str:
    blocks = []
    for seg in (s for s in result.segments if s.text):
        blocks.append(f"{len(blocks) + 1}\n{srt_time(seg.start_s)} --> {srt_time(seg.end_s)}\n{seg.text}\n")
    return "\n".join(blocks)


def json_record(file: str, result) -> dict:
    data = result.to_dict()
    return {"file": file, **data}


def cmd_transcribe(args: argparse.Namespace) -> int:
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    if args.threads < 0:
        raise UsageError("--threads must be 0 (all) or more")
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    options = TranscribeOptions(
        language=args.language, context=args.context or "", max_new_tokens=args.max_new_tokens, threads=args.threads
    )
    transcriber = Transcriber(_model_dir(args.model), options)
    failed = 0
    try:
        for index, file in enumerate(args.files):
            try:
                result = transcriber.transcribe_file(file)
            except QasrError as exc:
                failed += 1
                print(f"qasr-daemon: error: {exc}", file=sys.stderr, flush=True)
                continue
            _emit(args.format, file, result, len(args.files), index)
    finally:
        transcriber.close()
    if failed:
        print(f"qasr-daemon: {failed} of {len(args.files)} files failed", file=sys.stderr)
        return 1
    return 0


def _emit(fmt: str, file: str, result, n_files: int, index: int) -> None:
    if fmt == "json":
        print(json.dumps(json_record(file, result), ensure_ascii=False), flush=True)
    elif fmt == "srt":
        if n_files > 1:
            print(f"{'' if index == 0 else chr(10)}==> {file} <==")
        print(format_srt(result), flush=True)
    else:
        print(f"{file}: {result.text}" if n_files > 1 else result.text, flush=True)
