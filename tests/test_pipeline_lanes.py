"""The pipeline's lanes: dictation first, then live system audio (captions), then background jobs. A live
final waits for a dictation utterance being spoken (at most HOLD_S), a live partial may run meanwhile and
is interrupted when the dictation utterance ends, and live work goes before older background work."""

from __future__ import annotations

import threading
import time

from qasr.daemon.transcription import pipeline as pipeline_module
from qasr.daemon.transcription.routes import BACKGROUND, LIVE
from tests.test_prepared_final import WAIT_S, FakeBackend, FakeStream, block, run_pipeline, src


def final_order(backend) -> list[str]:
    return [name for name, kind in backend.log if kind == "final"]


def test_a_live_final_waits_for_the_dictation_utterance_being_spoken():
    backend = FakeBackend()
    seen_before_end: list = []

    def script(p):
        mic = p.begin(src("mic"))
        p.audio(mic, block(), partial=False)  # stream "a": dictation, still being spoken
        live = p.begin(src("system", LIVE))
        p.audio(live, block(), partial=False)  # stream "b"
        p.end(live)
        p._inbox.join()
        time.sleep(0.4)
        seen_before_end.extend(backend.log)
        p.end(mic)

    run_pipeline(backend, script)
    assert ("b", "final") not in seen_before_end
    assert final_order(backend) == ["a", "b"]


def test_the_hold_is_bounded(monkeypatch):
    monkeypatch.setitem(pipeline_module.HOLD_S, LIVE, 0.2)
    backend = FakeBackend()
    ran = threading.Event()

    def script(p):
        mic = p.begin(src("mic"))
        p.audio(mic, block(), partial=False)
        live = p.begin(src("system", LIVE))
        p.audio(live, block(), partial=False)
        p.end(live)
        deadline = time.monotonic() + 10
        while ("b", "final") not in backend.log and time.monotonic() < deadline:
            time.sleep(0.02)
        if ("b", "final") in backend.log:
            ran.set()
        p.end(mic)

    run_pipeline(backend, script)
    assert ran.is_set()  # the live final ran while dictation was still open, after its hold
    assert final_order(backend) == ["b", "a"]


class SlowPartialStream(FakeStream):
    """A partial step that runs until it is interrupted."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_partial = threading.Event()
        self.interrupted = threading.Event()

    def decode_partial(self, should_stop=lambda: False):
        self.log.append((self.name, "partial"))
        self.in_partial.set()
        assert self.interrupted.wait(WAIT_S)
        return None

    def interrupt(self):
        self.interrupted.set()


class LiveFirstBackend(FakeBackend):
    def open_stream(self, options):
        if self.streams:
            return super().open_stream(options)
        stream = SlowPartialStream("a", self.log)
        stream.utterance_id = options.utterance_id
        self.streams.append(stream)
        return stream


def test_a_live_partial_in_flight_is_interrupted_when_dictation_ends():
    backend = LiveFirstBackend()

    def script(p):
        live = p.begin(src("system", LIVE))
        p.audio(live, block())  # partial wanted: the decoder starts a (long) live partial step
        assert _wait_streams(backend) and backend.streams[0].in_partial.wait(WAIT_S)
        mic = p.begin(src("mic"))
        p.audio(mic, block(), partial=False)
        p.end(mic)  # interrupts the live step: the dictation final does not wait for it
        p._inbox.join()
        deadline = time.monotonic() + 10
        while ("b", "final") not in backend.log and time.monotonic() < deadline:
            time.sleep(0.02)
        p.end(live)

    run_pipeline(backend, script)
    assert backend.streams[0].interrupted.is_set()
    assert final_order(backend) == ["b", "a"]


def _wait_streams(backend) -> bool:
    deadline = time.monotonic() + WAIT_S
    while not backend.streams and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(backend.streams)


def test_live_work_goes_before_older_background_work():
    gate = threading.Event()
    backend = FakeBackend(a={"gate": gate})  # the first utterance holds the decoder until the gate opens

    def script(p):
        first = p.begin(src("mic"))
        p.audio(first, block(), partial=False)
        p.end(first)
        p._inbox.join()
        job = p.begin(src("openai:1", BACKGROUND))
        p.audio(job, block(), partial=False)
        p.end(job)
        live = p.begin(src("system", LIVE))
        p.audio(live, block(), partial=False)
        p.end(live)
        p._inbox.join()
        gate.set()

    run_pipeline(backend, script)
    assert final_order(backend) == ["a", "c", "b"]
