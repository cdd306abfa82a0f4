"""One audio file → `transcribe`'s outputs (text, json, srt, vtt): shared by `transcribe` and `batch`, so a
batch output is byte for byte what `qasr-daemon transcribe FILE --format F` prints for that file."""

from __future__ import annotations

import json
from dataclasses import dataclass

from qasr.daemon.cli.cmd_align import subtitle_text, word_cues

FORMATS = ("text", "json", "srt", "vtt")


@dataclass(frozen=True)
class CueOptions:
    """How results become subtitle cues (the attribute names of `transcribe`'s command-line options)."""

    timestamps: str = "segment"  # "segment" or "word" (the words come from the forced aligner)
    max_chars: int = 42
    max_seconds: float = 5.0


def load_transcriber(model, options):
    """A `Transcriber`, warmed up before its first file: on some builds (q4_k decoder, AVX2 llama.cpp) the
    first prefill after loading gives other logits than every later one, so without the warm-up a file's
    transcript would depend on whether it came first; with it, `transcribe FILE`, `transcribe A FILE` and a
    batch worker that has done other files all give the same."""
    from qasr.engine.transcribe import Transcriber

    transcriber = Transcriber(model, options)
    try:
        transcriber.warm_up()
    except BaseException:
        transcriber.close()
        raise
    return transcriber


def transcribe_file(transcriber, aligner, file: str):
    """A `TranscriptionResult` of one file; with an aligner, its segments carry word times."""
    if aligner is None:
        return transcriber.transcribe_file(file)
    from qasr.engine.align.segments import align_segments
    from qasr.engine.audio import load_audio

    audio = load_audio(file, transcriber.feature_params.sample_rate)
    return align_segments(transcriber.transcribe(audio), audio, aligner)


def subtitle_cues(result, options) -> list:
    """One cue per piece with text; with timestamps "word", word-level cues (max_chars, max_seconds)."""
    if options.timestamps == "word":
        from qasr.engine.align.segments import result_words

        return word_cues(result_words(result), options)
    from qasr.engine.subtitles import Cue

    return [Cue(seg.start_s, seg.end_s, seg.text) for seg in result.segments if seg.text]


def json_record(file: str, result) -> dict:
    data = {"file": file, **result.to_dict()}
    if any(seg.words is not None for seg in result.segments):
        from qasr.engine.align.segments import result_words

        data["words"] = [w.to_dict() for w in result_words(result)]
    return data


def render(fmt: str, file: str, result, options) -> str:
    """What `transcribe` prints for a single file in format `fmt`, final newline included."""
    if fmt == "json":
        return json.dumps(json_record(file, result), ensure_ascii=False) + "\n"
    if fmt in ("srt", "vtt"):
        return subtitle_text(fmt, subtitle_cues(result, options)) + "\n"
    if fmt == "text":
        return result.text + "\n"
    raise ValueError(f"unknown output format {fmt!r}")
