"""Word times for a transcription: every segment's text aligned with that segment's audio.

    result = transcriber.transcribe(audio)
    result = align_segments(result, audio, ForcedAligner(aligner_dir))
    for seg in result.segments:
        print(seg.start_s, seg.words)   # [AlignedWord(word, start, end)], times in the file's seconds

Each segment is aligned on its own (audio[start:end], its own language), and the word times are offset
by the segment's start, so they count from the start of `audio`. A segment without text gets `[]`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from qasr.engine.align.aligner import AlignedWord, ForcedAligner
from qasr.engine.transcribe import Segment, TranscriptionResult, normalize_waveform


def align_segment(segment: Segment, audio: np.ndarray, aligner: ForcedAligner) -> list[AlignedWord]:
    """The words of one segment; `audio` is the whole (normalized) waveform the segment was cut from."""
    if not segment.text.strip():
        return []
    rate = aligner.audio_params.sample_rate
    clip = audio[int(round(segment.start_s * rate)) : int(round(segment.end_s * rate))]
    words = aligner.align(clip, segment.text, segment.language or None)
    offset = segment.start_s
    return [AlignedWord(w.word, round(w.start + offset, 3), round(w.end + offset, 3)) for w in words]


def align_segments(result: TranscriptionResult, audio: np.ndarray, aligner: ForcedAligner) -> TranscriptionResult:
    """A copy of `result` whose segments carry `words`; `audio` is what was transcribed (16 kHz mono)."""
    audio = normalize_waveform(audio)  # as Transcriber.transcribe saw it
    segments = [dataclasses.replace(seg, words=align_segment(seg, audio, aligner)) for seg in result.segments]
    return dataclasses.replace(result, segments=segments)


def result_words(result: TranscriptionResult) -> list[AlignedWord]:
    """Every segment's words in order (segments not aligned contribute none)."""
    return [w for seg in result.segments for w in (seg.words or [])]
