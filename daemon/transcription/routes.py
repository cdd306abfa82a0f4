"""Sources and their routes: who an utterance's audio came from and where its results go.

Every utterance belongs to a ``Source``: the microphone, a ``qasr.v1`` WebSocket audio stream, an OpenAI
request, a Wyoming request, a ``/v1/realtime`` session or the system audio. The source carries its
``route``; the pipeline hands each of the utterance's events to it (through ``route_dispatch``, never on the
decoder thread), so nothing looks a route up by the source's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Union

from qasr.engine.events import FinalEvent, PartialEvent

MIC, STREAM, OPENAI, WYOMING, REALTIME, SYSTEM = "mic", "stream", "openai", "wyoming", "realtime", "system"
KINDS = (MIC, STREAM, OPENAI, WYOMING, REALTIME, SYSTEM)
DICTATION, LIVE, BACKGROUND = 0, 1, 2  # decoder lanes, highest priority first
LANES = {OPENAI: BACKGROUND, SYSTEM: LIVE}  # the rest: DICTATION
JOURNALED = (OPENAI, WYOMING, REALTIME)  # kinds whose finals go into the journal besides the microphone's


@dataclass(frozen=True)
class UtteranceCancelled:
    utterance_id: str
    type: str = field(default="cancelled", init=False)


@dataclass(frozen=True)
class UtteranceFailed:
    utterance_id: str
    message: str
    type: str = field(default="error", init=False)


PipelineEvent = Union[PartialEvent, FinalEvent, UtteranceCancelled, UtteranceFailed]
# A requester's end of its route: (utterance_id, qasr.v1 message or None, outcome final/cancelled/error or None)
Deliver = Callable[[str, "dict | None", "str | None"], None]


class Route(Protocol):
    """Where one source's results go. Called on the route's own thread (``route_dispatch``), in order."""

    def partial(self, event: PartialEvent) -> None: ...

    def final(self, event: FinalEvent) -> None: ...

    def cancelled(self, utterance_id: str) -> None: ...

    def failed(self, utterance_id: str, message: str) -> None: ...


@dataclass(frozen=True, eq=False)
class Source:
    """``kind``: one of ``KINDS``; ``name``: as the wire says it (``mic``, ``ws:c3``, ``openai:7``);
    ``lane``: the decoder's lane for its utterances; ``route``: where its results go."""

    kind: str
    name: str
    route: Route
    lane: int = DICTATION

    @classmethod
    def of(cls, kind: str, name: str, route: Route) -> "Source":
        """A source in its kind's lane."""
        if kind not in KINDS:
            raise ValueError(f"unknown source kind {kind!r}")
        return cls(kind, name, route, LANES.get(kind, DICTATION))


def route_call(route: Route, event: PipelineEvent) -> tuple[Callable[..., None], tuple]:
    """One event → the route's method for it and its arguments."""
    if isinstance(event, FinalEvent):
        return route.final, (event,)
    if isinstance(event, PartialEvent):
        return route.partial, (event,)
    if isinstance(event, UtteranceCancelled):
        return route.cancelled, (event.utterance_id,)
    return route.failed, (event.utterance_id, event.message)
