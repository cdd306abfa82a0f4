"""What a streaming session emits: partial and final events with their timings, named as on the wire.

The daemon's pipeline passes them to the protocol encoder unchanged (it numbers ``seq`` and sets the
final's ``latency_ms`` and ``prepares``, which only it knows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class StepTimings:
    """One partial step, named as on the wire (`partial.timings`)."""

    encoder_ms: float = 0.0
    prefill_ms: float = 0.0  # audio + prompt tail + draft verification
    sync_ms: float = 0.0  # finished 8 s windows entering the decoder cache before the step (in step_ms)
    decode_ms: float = 0.0  # greedy tokens beyond the draft
    step_ms: float = 0.0
    draft_tokens: int = 0
    accepted_tokens: int = 0


@dataclass
class FinalTimings:
    """The final's computation, named as on the wire (`final.timings`)."""

    encoder_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    final_ms: float = 0.0  # this computation (at the pause when the final was prepared)
    compute_ms: float = 0.0  # all engine time the utterance took: encoder pushes, partial steps, the final
    draft_tokens: int = 0
    accepted_tokens: int = 0
    latency_ms: float | None = None  # end of the audio -> final out; the caller that knows the end sets it
    wait_ms: float | None = None  # end of the audio -> this computation starting (set by that caller too)


@dataclass
class PartialEvent:
    utterance_id: str
    seq: int
    committed: str  # append-only within the utterance
    tentative: str  # may change at the next partial
    audio_start_s: float
    audio_end_s: float
    timings: StepTimings
    type: str = "partial"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FinalEvent:
    utterance_id: str
    seq: int
    text: str
    language: str
    token_ids: list[int]  # every generated id incl. the language header, excluding the stop token
    audio_start_s: float
    audio_end_s: float
    stop_reason: str  # stop, max_tokens, loop, silence, empty, cancelled
    committed: str  # what partials had committed (a prefix of `text` unless the model changed its mind)
    timings: FinalTimings
    cut: bool = False  # ended by max_utterance_s; the speech continues in the next utterance
    prepared: bool = False  # computed ahead by prepare_final(); `timings` are that computation's
    prepares: int = 0  # finals prepared ahead for this utterance (counted by the caller that schedules them)
    type: str = "final"

    def to_dict(self) -> dict:
        return asdict(self)
