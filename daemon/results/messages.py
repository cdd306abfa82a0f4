"""The engine's events → ``qasr.v1`` messages, once: ``partial_message`` / ``final_message``.

Partial timings keep their engine names on the wire; a final carries ``latency_ms``/``compute_ms``/``final_ms``.
"""

from __future__ import annotations

from dataclasses import asdict

from qasr import protocol
from qasr.engine.events import FinalEvent, PartialEvent

PARTIAL_TIMINGS = ("encoder_ms", "prefill_ms", "decode_ms", "step_ms", "draft_tokens", "accepted_tokens")
FINAL_TIMINGS = ("latency_ms", "compute_ms", "final_ms")


def partial_message(event: PartialEvent, source: str) -> dict:
    timings = asdict(event.timings)
    return protocol.partial(event.utterance_id, event.seq, event.committed, event.tentative, event.audio_start_s,
                            event.audio_end_s, timings={k: timings[k] for k in PARTIAL_TIMINGS}, source=source)


def final_message(event: FinalEvent, source: str, text: str, sink: str | None = None) -> dict:
    """``text``: the final's text as shaped for its source (the event keeps the model's)."""
    timings = {k: v for k, v in asdict(event.timings).items() if k in FINAL_TIMINGS and v is not None}
    return protocol.final(event.utterance_id, event.seq, text, event.language or None, event.token_ids,
                          event.audio_start_s, event.audio_end_s, timings=timings, sink=sink, source=source,
                          prepared=bool(event.prepared))
