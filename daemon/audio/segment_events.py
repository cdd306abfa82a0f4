"""What the segmenter says about a stream, in stream order (times are stream seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np


@dataclass(frozen=True)
class VadState:
    speaking: bool
    t_s: float


@dataclass(frozen=True)
class SpeechStart:
    utterance_id: int
    t_s: float
    continued: bool = False


@dataclass(frozen=True, eq=False)
class SpeechAudio:
    utterance_id: int
    pcm: np.ndarray
    t_s: float


@dataclass(frozen=True)
class SpeechPause:
    utterance_id: int
    t_s: float  # end of the audio emitted so far: where the utterance ends if the pause is its end


@dataclass(frozen=True)
class SpeechEnd:
    utterance_id: int
    t_s: float
    reason: str  # "silence" | "stop" | "max_length"
    last_voice_s: float | None = None


@dataclass(frozen=True)
class Cancelled:
    utterance_id: int
    reason: str = "cancel"  # "cancel" | "too_short" | "no_speech"


SegmentEvent = Union[VadState, SpeechStart, SpeechAudio, SpeechPause, SpeechEnd, Cancelled]
