"""Sources and their routes (issue 23): the pipeline hands each event to its source's route through the
route dispatcher, never on the decoder thread; one kind's events keep their order, none is dropped; a slow
dictation route (typing, paste, the journal's fsync) does not delay the next utterance's decode; ``drain``
returns once the routes have every final; the pipeline keeps the text a continued utterance gets as context."""

from __future__ import annotations

import threading

from qasr.daemon.transcription.pipeline import KEPT_FINAL_TEXTS, Pipeline
from qasr.daemon.transcription.route_dispatch import RouteDispatcher
from qasr.daemon.transcription.routes import BACKGROUND, DICTATION, LIVE, MIC, OPENAI, STREAM, SYSTEM, Source, \
    UtteranceCancelled, UtteranceFailed
from qasr.engine.events import FinalEvent, FinalTimings, PartialEvent, StepTimings
from tests.test_prepared_final import WAIT_S, FakeBackend, FakeStream, block


class RecordingRoute:
    def __init__(self, gate: threading.Event | None = None) -> None:
        self.events: list[tuple] = []
        self.threads: set[str] = set()
        self.gate = gate

    def _record(self, *entry) -> None:
        self.threads.add(threading.current_thread().name)
        self.events.append(entry)

    def partial(self, event: PartialEvent) -> None:
        self._record("partial", event.utterance_id, event.tentative)

    def final(self, event: FinalEvent) -> None:
        if self.gate is not None:
            assert self.gate.wait(WAIT_S)
        self._record("final", event.utterance_id, event.text)

    def cancelled(self, utterance_id: str) -> None:
        self._record("cancelled", utterance_id)

    def failed(self, utterance_id: str, message: str) -> None:
        self._record("failed", utterance_id, message)


def final(uid: str, text: str = "x") -> FinalEvent:
    return FinalEvent(uid, 0, text, "English", [1], 0.0, 1.0, "stop", text, FinalTimings())


def test_sources_take_their_kinds_lane():
    route = RecordingRoute()
    assert [Source.of(kind, kind, route).lane for kind in (MIC, STREAM, OPENAI, SYSTEM)] == [
        DICTATION, DICTATION, BACKGROUND, LIVE]


def test_each_kind_has_its_thread_and_keeps_its_order_and_a_failing_route_keeps_the_thread():
    woken: list[int] = []
    dispatch = RouteDispatcher(after=lambda: woken.append(1))
    mic, stream = RecordingRoute(), RecordingRoute()

    class Broken(RecordingRoute):
        def final(self, event):
            raise RuntimeError("a route bug")

    broken = Broken()
    mic_source, stream_source = Source.of(MIC, MIC, mic), Source.of(STREAM, "ws:c1", stream)
    try:
        dispatch(Source.of(OPENAI, "openai:1", broken), final("9"))  # logged; the thread goes on
        for n in range(50):
            dispatch(mic_source, PartialEvent(str(n), 0, "", f"p{n}", 0.0, 1.0, StepTimings()))
            dispatch(mic_source, final(str(n)))
            dispatch(stream_source, UtteranceCancelled(str(n)) if n % 2 else UtteranceFailed(str(n), "bad"))
        dispatch(Source.of(OPENAI, "openai:2", broken), UtteranceCancelled("10"))
        assert dispatch.wait_idle(WAIT_S)
    finally:
        dispatch.stop()
    assert mic.events == [e for n in range(50) for e in (("partial", str(n), f"p{n}"), ("final", str(n), "x"))]
    assert stream.events == [("cancelled", str(n)) if n % 2 else ("failed", str(n), "bad") for n in range(50)]
    assert broken.events == [("cancelled", "10")]
    assert mic.threads == {"route-mic"} and stream.threads == {"route-stream"}
    assert len(woken) == 152  # after every event


def test_a_slow_dictation_route_never_delays_the_next_decode_and_drain_waits_for_it():
    gate = threading.Event()  # the first final's typing takes "forever"
    route = RecordingRoute(gate)
    dispatch = RouteDispatcher()
    backend = FakeBackend()
    pipeline = Pipeline(backend, dispatch, delivery=dispatch)
    pipeline.start()
    mic = Source.of(MIC, MIC, route)
    try:
        for _ in range(2):
            uid = pipeline.begin(mic)
            pipeline.audio(uid, block(), partial=False)
            pipeline.end(uid)
        deadline = threading.Event()
        while [kind for _, kind in backend.log].count("final") < 2 and not deadline.wait(0.01):
            pass
        assert [kind for _, kind in backend.log].count("final") == 2  # both decoded while the route waits
        assert not pipeline.drain(0.3)  # the routes do not have them yet
        assert pipeline.busy()  # the daemon says "transcribing" until the text is in the window
        gate.set()
        assert pipeline.drain(WAIT_S) and not pipeline.busy()
    finally:
        pipeline.stop()
        dispatch.stop()
    assert [e[:2] for e in route.events] == [("final", "1"), ("final", "2")]
    assert route.threads == {"route-mic"}
    assert pipeline.final_text("1") == "a:1600" and pipeline.final_text("2") == "b:1600"


class ManyUtterances(FakeBackend):
    def open_stream(self, options):
        stream = FakeStream(f"u{len(self.streams)}", self.log)
        stream.utterance_id = options.utterance_id
        self.streams.append(stream)
        return stream


def test_the_pipeline_keeps_the_last_finals_text_for_continued_speech():
    events: list = []
    pipeline = Pipeline(ManyUtterances(), lambda source, event: events.append(event))
    pipeline.start()
    mic = Source.of(MIC, MIC, RecordingRoute())
    try:
        ids = []
        for _ in range(KEPT_FINAL_TEXTS + 1):
            uid = pipeline.begin(mic)
            pipeline.audio(uid, block(), partial=False)
            pipeline.end(uid)
            ids.append(uid)
        assert pipeline.drain(WAIT_S)
    finally:
        pipeline.stop()
    assert pipeline.final_text(ids[0]) == ""  # the oldest is forgotten
    assert pipeline.final_text(ids[-1]) == events[-1].text and pipeline.final_text(None) == ""
