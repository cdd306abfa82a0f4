"""`qasr-daemon transcribe FILE...`: offline transcription of audio files (no daemon needed)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from qasr.config.settings import DEFAULT_MODEL_NAME, ModelSettings
from qasr.daemon.cli.cmd_align import (add_cue_options, aligner_dir, check_cue_options, load_aligner, subtitle_text,
                                       word_cues)
from qasr.errors import QasrError, UsageError

FORMATS = ("text", "json", "srt", "vtt")
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
    p.add_argument("--model", metavar="DIR", help=f"model bundle (default: <data dir>/models/{DEFAULT_MODEL_NAME})")
    p.add_argument("--language", metavar="L", help="force the language (e.g. English, chinese); default: detect")
    p.add_argument("--context", metavar="TEXT", default="", help="hotwords, names or topic to bias recognition")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help="most tokens generated per 30 s piece")
    p.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    p.add_argument("--timestamps", choices=TIMESTAMPS, default="segment",
                   help="segment: times of the pieces (default); word: every word's start and end from the "
                   "forced aligner (`qasr-daemon models pull aligner`), added to json as `words` and making "
                   "srt/vtt cues word-timed")
    p.add_argument("--aligner", metavar="DIR", help="aligner bundle for --timestamps word (default: [model] "
                   "aligner in the config file, else the installed qwen3-forcedaligner-0.6b)")
    add_cue_options(p)
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


def subtitle_cues(result, args: argparse.Namespace) -> list:
    """One cue per piece with text; with --timestamps word, word-level cues (--max-chars, --max-seconds)."""
    if args.timestamps == "word":
        from qasr.engine.align.segments import result_words

        return word_cues(result_words(result), args)
    from qasr.engine.subtitles import Cue

    return [Cue(seg.start_s, seg.end_s, seg.text) for seg in result.segments if seg.text]


def json_record(file: str, result) -> dict:
    data = {"file": file, **result.to_dict()}
    if any(seg.words is not None for seg in result.segments):
        from qasr.engine.align.segments import result_words

        data["words"] = [w.to_dict() for w in result_words(result)]
    return data


def cmd_transcribe(args: argparse.Namespace) -> int:
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError("--max-new-tokens must be at least 1")
    check_cue_options(args)
    words = args.timestamps == "word"
    if words and args.format == "text":
        raise UsageError("--timestamps word needs --format json, srt or vtt")
    if args.aligner and not words:
        raise UsageError("--aligner is for --timestamps word")
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    options = TranscribeOptions(
        language=args.language, context=args.context or "", max_new_tokens=args.max_new_tokens, threads=args.threads
    )
    aligner_path = aligner_dir(args.aligner, "--aligner") if words else None  # before any model loads
    transcriber = Transcriber(_model_dir(args.model), options)
    aligner = None
    failed = 0
    try:
        aligner = load_aligner(aligner_path, args.threads) if aligner_path else None
        for index, file in enumerate(args.files):
            try:
                result = _transcribe(transcriber, aligner, file)
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


def _transcribe(transcriber, aligner, file: str):
    if aligner is None:
        return transcriber.transcribe_file(file)
    from qasr.engine.align.segments import align_segments
    from qasr.engine.audio import load_audio

    audio = load_audio(file, transcriber.feature_params.sample_rate)
    return align_segments(transcriber.transcribe(audio), audio, aligner)


def _emit(args: argparse.Namespace, file: str, result, index: int) -> None:
    n_files = len(args.files)
    if args.format == "json":
        print(json.dumps(json_record(file, result), ensure_ascii=False), flush=True)
    elif args.format in ("srt", "vtt"):
        if n_files > 1:
            print(f"{'' if index == 0 else chr(10)}==> {file} <==")
        print(subtitle_text(args.format, subtitle_cues(result, args)), flush=True)
    else:
        print(f"{file}: {result.text}" if n_files > 1 else result.text, flush=True)
