"""`qasr-daemon align FILE --text TEXT`: word timestamps for a transcript you already have (no daemon needed).

The forced aligner (Qwen3-ForcedAligner, `qasr-daemon models pull aligner`) gives every word (every CJK
character) of the text a start and end time in the audio: json prints them, srt/vtt group them into
subtitle cues of at most --max-chars characters and --max-seconds seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qasr.errors import QasrError, UsageError

FORMATS = ("json", "srt", "vtt")
PULL_HINT = "run `qasr-daemon models pull aligner`"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "align",
        help="word timestamps for a known transcript of an audio file (forced alignment)",
        description="Align a transcript with its audio: every word (every CJK character) gets a start and "
        "end time, from the Qwen3-ForcedAligner bundle (`qasr-daemon models pull aligner`). Audio longer "
        "than 3 minutes is cut at quiet points.",
    )
    p.add_argument("file", metavar="FILE", help="audio file (any format FFmpeg decodes)")
    p.add_argument("--text", metavar="TEXT", help="the words spoken in FILE")
    p.add_argument("--text-file", metavar="F", help="read the words spoken in FILE from this UTF-8 file")
    p.add_argument("--language", metavar="L", help="language of the text (e.g. English, Chinese, Japanese); "
                   "it decides how the text is split into words")
    p.add_argument("--format", choices=FORMATS, default="json", help="output format (default: json)")
    p.add_argument("--model", metavar="DIR", help="aligner bundle (default: [model] aligner in the config file, "
                   "else the installed qwen3-forcedaligner-0.6b)")
    add_cue_options(p)
    p.add_argument("--threads", type=int, default=0, metavar="N", help="CPU threads (default: all available)")
    p.set_defaults(func=cmd_align)


def add_cue_options(p: argparse.ArgumentParser) -> None:
    """--max-chars / --max-seconds: the size of word-level subtitle cues (also used by transcribe)."""
    p.add_argument("--max-chars", type=int, default=42, metavar="N",
                   help="word-level srt/vtt: at most N characters per cue (default: 42)")
    p.add_argument("--max-seconds", type=float, default=5.0, metavar="S",
                   help="word-level srt/vtt: at most S seconds per cue (default: 5)")


def check_cue_options(args: argparse.Namespace) -> None:
    if args.max_chars < 1:
        raise UsageError("--max-chars must be at least 1")
    if not args.max_seconds > 0:
        raise UsageError("--max-seconds must be more than 0")
    if args.threads < 0:
        raise UsageError("--threads must be 0 (all) or more")


def aligner_dir(arg: str | None, option: str = "--model") -> Path:
    """The aligner bundle folder: the one the option names, else [model] aligner from the config file (as
    the daemon), else the installed one (`models pull aligner`)."""
    if not arg:
        arg = _configured_aligner()
    if arg:
        path = Path(arg).expanduser()
        if not path.is_dir():
            raise QasrError(f"no aligner bundle at {path}; {PULL_HINT} or pass {option} DIR")
        return path
    from qasr.daemon.models.store import find_aligner_bundle

    found = find_aligner_bundle()
    if found is None:
        raise QasrError(f"word timestamps need the forced aligner, which is not installed; {PULL_HINT}")
    return found


def _configured_aligner() -> str | None:
    """[model] aligner (a relative path is under the models folder); None when unset or unreadable."""
    from qasr.config import paths
    from qasr.config.loader import load_settings

    try:
        settings, _ = load_settings()
    except QasrError:
        return None  # a broken config file is `config check`'s business, not this command's
    if not settings.model.aligner:
        return None
    path = Path(settings.model.aligner).expanduser()
    return str(path if path.is_absolute() else paths.models_dir() / path)


def load_aligner(path: Path, threads: int):
    from qasr.engine.align.aligner import AlignerOptions, ForcedAligner

    return ForcedAligner(path, AlignerOptions(threads=threads))


def subtitle_text(fmt: str, cues) -> str:
    """srt or vtt text of subtitle cues (qasr.engine.subtitles.Cue)."""
    from qasr.engine.subtitles import format_srt, format_vtt

    return (format_srt if fmt == "srt" else format_vtt)(cues)


def word_cues(words, args: argparse.Namespace):
    from qasr.engine.subtitles import word_cues as group

    return group([(w.word, w.start, w.end) for w in words], max_chars=args.max_chars, max_seconds=args.max_seconds)


def _read_text(args: argparse.Namespace) -> str:
    if (args.text is None) == (args.text_file is None):
        raise UsageError("give the transcript with either --text TEXT or --text-file F")
    if args.text is not None:
        text, where = args.text, "--text"
    else:
        try:
            text = Path(args.text_file).expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise QasrError(f"cannot read --text-file {args.text_file}: {reason}") from None
        where = f"--text-file {args.text_file}"
    if not text.strip():
        raise UsageError(f"{where} is empty; give the words spoken in the audio")
    return text


def cmd_align(args: argparse.Namespace) -> int:
    check_cue_options(args)
    text = _read_text(args)
    model = aligner_dir(args.model)
    from qasr.engine.align.words import normalize_language
    from qasr.engine.audio import load_audio
    from qasr.engine.audio_constants import SAMPLE_RATE

    language = normalize_language(args.language) if args.language else None
    audio = load_audio(args.file, SAMPLE_RATE)  # a bad file fails before the model loads
    aligner = load_aligner(model, args.threads)
    try:
        words = aligner.align(audio, text, language)
    finally:
        aligner.close()
    if args.format == "json":
        record = {"file": args.file, "language": language, "words": [w.to_dict() for w in words]}
        print(json.dumps(record, ensure_ascii=False), flush=True)
    else:
        print(subtitle_text(args.format, word_cues(words, args)), end="", flush=True)
    return 0
