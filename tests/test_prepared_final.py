"""Prepared finals: the segmenter's SpeechPause makes the pipeline compute the final during the VAD's
hangover; the end then publishes it at no cost. Fake streams check the decoder's scheduling (prepare
before partials, never instead of a wanted final, failures harmless); the real engine on the tiny bundle
checks that a prepared final is the offline transcription of the utterance's audio, and that speech
resuming after a pause invalidates it."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from qasr.daemon.audio.segmenter import Segmenter, SegmenterOptions, SpeechAudio, SpeechEnd, SpeechPause, SpeechStart
from qasr.daemon.transcription.engine_streams import StreamingBackend, StreamOptions, WholeUtteranceStream
from qasr.daemon.transcription.pipeline import Pipeline
from qasr.daemon.transcription.routes import DICTATION, Source
from qasr.engine.events import FinalEvent, FinalTimings, PartialEvent, StepTimings
from tests.test_segmenter import silence, voiced_burst

SR = 16000
WAIT_S = 60.0


# ------------------------------------------------------------------------------ fakes


class FakeStream:
    """Records the decoder's calls; a prepared final is used only if no audio came after it."""

    def __init__(self, name: str, log: list, fail_prepare: bool = False, gate: threading.Event | None = None,
                 encode_gate: threading.Event | None = None):
        self.name, self.log, self.fail_prepare, self.gate = name, log, fail_prepare, gate
        self.encode_gate = encode_gate
        self.utterance_id = "?"
        self.samples = 0
        self.prepared_at: int | None = None
        self.prepared = threading.Event()
        self.partials = 0

    def encode(self, pcm):
        if self.encode_gate is not None:  # the first block waits for the gate, the next ones take a while
            assert self.encode_gate.wait(WAIT_S)
            if self.samples:
                time.sleep(0.2)
        self.samples += len(pcm)

    def decode_partial(self, should_stop=lambda: False):
        self.log.append((self.name, "partial"))
        self.partials += 1
        return PartialEvent("?", 0, committed="", tentative=f"p{self.partials}", audio_start_s=0.0,
                            audio_end_s=self.samples / SR, timings=StepTimings())

    def prepare_final(self):
        self.log.append((self.name, "prepare"))
        try:
            if self.fail_prepare:
                raise RuntimeError("prepare broke")
            self.prepared_at = self.samples
        finally:
            self.prepared.set()

    def decode_final(self):
        self.log.append((self.name, "final"))
        if self.gate is not None:
            assert self.gate.wait(WAIT_S)
        prepared = self.prepared_at == self.samples
        return FinalEvent(self.utterance_id, 0, text=f"{self.name}:{self.samples}", language="English",
                          token_ids=[self.samples], audio_start_s=0.0, audio_end_s=self.samples / SR,
                          stop_reason="stop", committed="", timings=FinalTimings(final_ms=10.0, compute_ms=10.0),
                          prepared=prepared)

    def close(self):
        pass


class FakeBackend:
    def __init__(self, **kwargs):
        self.log: list = []
        self.streams: list[FakeStream] = []
        self.kwargs = kwargs  # name -> FakeStream options

    def open_stream(self, options):
        name = "abcdefgh"[len(self.streams)]
        stream = FakeStream(name, self.log, **self.kwargs.get(name, {}))
        stream.utterance_id = options.utterance_id
        self.streams.append(stream)
        return stream


def src(name: str = "mic", lane: int = DICTATION) -> Source:
    """A source for tests that read the events the pipeline emits (no route runs)."""
    return Source(name.partition(":")[0], name, route=None, lane=lane)


def run_pipeline(backend, script):
    events: list = []
    pipeline = Pipeline(backend, lambda source, event: events.append(event))
    pipeline.start()
    try:
        script(pipeline)
        assert pipeline.drain(WAIT_S)
    finally:
        pipeline.stop()
    return events


def finals(events):
    return {e.utterance_id: e for e in events if e.type == "final"}


def block(n=1600):
    return np.zeros(n, np.float32)


def speak_and_pause(p, backend) -> int:
    """A new utterance with one block of audio and a pause; returns once its final is prepared."""
    u = p.begin(src("mic"))
    p.audio(u, block(), partial=False)
    p.pause(u)
    p._inbox.join()
    assert backend.streams[-1].prepared.wait(WAIT_S)
    return u


# ------------------------------------------------------------------------------ pipeline scheduling


def test_prepare_runs_at_the_pause_and_the_final_uses_it():
    backend = FakeBackend()

    def script(p):
        u = speak_and_pause(p, backend)
        p.end(u)

    events = run_pipeline(backend, script)
    (final,) = finals(events).values()
    assert backend.log == [("a", "prepare"), ("a", "final")]
    assert final.prepared is True and final.prepares == 1 and final.timings.final_ms == 10.0
    assert final.token_ids == [1600]


def test_audio_after_the_pause_makes_the_final_compute_again():
    backend = FakeBackend()

    def script(p):
        u = speak_and_pause(p, backend)
        p.audio(u, block(800), partial=False)  # speech resumed; ends without a second pause
        p.end(u)

    (final,) = finals(run_pipeline(backend, script)).values()
    assert final.prepared is False and final.prepares == 1 and final.token_ids == [2400]


def test_a_wanted_final_is_never_preceded_by_a_prepare_and_prepares_go_before_partials():
    gate = threading.Event()
    backend = FakeBackend(a={"gate": gate})

    def script(p):
        a = p.begin(src("mic"))
        p.audio(a, block(), partial=False)
        p.end(a)  # the decoder holds in a's final until the gate opens
        b = p.begin(src("mic"))
        p.audio(b, block(), partial=True)
        p.pause(b)
        p.end(b)  # paused and ended before the decoder is free: the final is due, nothing to prepare
        c = p.begin(src("mic"))
        p.audio(c, block(), partial=True)  # a partial is wanted ...
        p.pause(c)  # ... but the pause comes first and covers the same audio
        p._inbox.join()
        gate.set()
        assert backend.streams[2].prepared.wait(WAIT_S)
        p.audio(c, block(), partial=True)  # speech again: partials work as before
        p.audio(c, block(), partial=False)
        p.end(c)

    events = run_pipeline(backend, script)
    fin = finals(events)
    assert [(n, kind) for n, kind in backend.log if n != "c"] == [("a", "final"), ("b", "final")]
    c_calls = [kind for n, kind in backend.log if n == "c"]
    assert c_calls[0] == "prepare" and c_calls[-1] == "final"
    assert set(c_calls[1:-1]) <= {"partial"}  # a partial may run for the resumed speech, none before
    assert [f.prepared for f in fin.values()] == [False, False, False]
    assert [f.prepares for f in fin.values()] == [0, 0, 1]
    order = [e.type for e in events if e.type in ("partial", "final")]
    assert order[:2] == ["final", "final"]


def test_audio_still_queued_at_the_end_asks_for_no_partial_before_the_final():
    """Push-to-talk release: the last blocks (voiced: partial=True) are still queued for the encoder when
    end() comes; a partial started for them would run to its end before the final (it is not interrupted:
    the interrupt came first), so none is started."""
    gate = threading.Event()
    backend = FakeBackend(a={"encode_gate": gate})

    def script(p):
        a = p.begin(src("mic"))
        p.audio(a, block(), partial=True)  # the encoder worker holds in here until the gate opens ...
        p.audio(a, block(), partial=True)  # ... and the decoder would be free for a partial meanwhile
        p.end(a)
        gate.set()

    (final,) = finals(run_pipeline(backend, script)).values()
    assert backend.log == [("a", "final")] and final.token_ids == [3200]


def test_a_failed_prepare_loses_nothing():
    backend = FakeBackend(a={"fail_prepare": True})

    def script(p):
        u = speak_and_pause(p, backend)
        p.end(u)
        v = speak_and_pause(p, backend)
        p.end(v)

    events = run_pipeline(backend, script)
    assert not [e for e in events if e.type == "error"]
    a, b = finals(events).values()
    assert a.prepared is False and a.prepares == 0 and a.token_ids == [1600]  # computed at the end
    assert b.prepared is True


def test_whole_utterance_stream_reuses_the_prepared_transcription():
    calls = []

    def transcribe(audio, options):
        calls.append(audio.size)
        return SimpleNamespace(text=f"n{audio.size}", language="English", token_ids=[audio.size],
                               audio_s=audio.size / SR, elapsed_s=0.02, rtf=0.1, encoder_ms=5.0, prefill_ms=5.0,
                               decode_ms=10.0, segments=[])

    stream = WholeUtteranceStream(transcribe, StreamOptions("1"))
    stream.encode(block())
    stream.prepare_final()
    final = stream.decode_final()
    assert calls == [1600] and final.token_ids == [1600] and final.prepared is True
    assert final.timings.final_ms == 20.0

    stream = WholeUtteranceStream(transcribe, StreamOptions("2"))
    stream.encode(block())
    stream.prepare_final()
    stream.encode(block(400))  # speech resumed: the prepared result is stale
    final = stream.decode_final()
    assert calls == [1600, 1600, 2000] and final.token_ids == [2000] and final.prepared is False


def test_the_protocol_final_says_whether_it_was_prepared():
    from qasr.daemon.results.messages import final_message
    from qasr.daemon.server.metrics import Metrics

    base = FinalEvent("3", 4, text="hi", language="English", token_ids=[1], audio_start_s=1.0, audio_end_s=2.0,
                      stop_reason="stop", committed="hi",
                      timings=FinalTimings(final_ms=300.0, compute_ms=500.0, latency_ms=12.0))
    prepared = final_message(replace(base, prepared=True), "mic", "hi", "paste")
    assert prepared["prepared"] is True and prepared["timings"]["final_ms"] == 300.0
    assert prepared["timings"] == {"latency_ms": 12.0, "compute_ms": 500.0, "final_ms": 300.0}
    assert final_message(replace(base, prepared=False), "mic", "hi")["prepared"] is False
    assert final_message(base, "mic", "hi")["prepared"] is False  # an engine final says it either way
    metrics = Metrics()
    for event in (prepared, final_message(replace(base, prepared=False), "mic", "hi")):
        metrics.observe_event(event)
    assert metrics.counter("finals_prepared") == 1
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency")
    from tests.test_protocol import SCHEMA_FILE

    schema = json.loads(SCHEMA_FILE.read_text())
    validator = jsonschema.Draft202012Validator({"$ref": "#/$defs/server.final", "$defs": schema["$defs"]})
    validator.validate(prepared)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(dict(prepared, prepared="yes"))


# ------------------------------------------------------------------------------ the real engine


@pytest.fixture
def transcriber(tiny_transcriber):
    return tiny_transcriber  # tests/fixtures/engine.py: one per session


class SignallingBackend:
    """StreamingBackend whose streams say when a prepare is done (the test waits for it, as the real
    hangover would)."""

    def __init__(self, transcriber):
        from qasr.engine.streaming import StreamingOptions, StreamingSession

        self.inner = StreamingBackend(lambda options, guard: StreamingSession(
            transcriber, StreamingOptions(rtf_budget=10.0), utterance_id=options.utterance_id,
            start_s=options.audio_start, encoder_guard=guard))
        self.prepares = threading.Semaphore(0)

    def open_stream(self, options):
        stream = self.inner.open_stream(options)
        real = stream.prepare_final

        def prepare_final():
            try:
                real()
            finally:
                self.prepares.release()

        stream.prepare_final = prepare_final
        return stream


def dictate(transcriber, signal, stop_at_s=None):
    """Segmenter events → pipeline, as the daemon does; waits at each pause until its prepare is done.
    ``stop_at_s``: end the utterance there (a stop command) instead of feeding the rest."""
    backend = SignallingBackend(transcriber)
    events: list = []
    audio: dict[int, list[np.ndarray]] = {}
    pauses = 0
    pipeline = Pipeline(backend, lambda source, event: events.append(event))
    pipeline.start()
    seg = Segmenter(SegmenterOptions(mode="vad", tail_ms=300, hangover_ms=600))
    ids: dict[int, int] = {}
    try:
        end = len(signal) if stop_at_s is None else int(stop_at_s * SR)
        for i in range(0, end, 480):  # 30 ms blocks, as from the microphone
            seg_events = seg.process(signal[i:min(i + 480, end)])
            if stop_at_s is not None and i + 480 >= end:
                seg_events += seg.finish()
            for e in seg_events:
                if isinstance(e, SpeechStart):
                    ids[e.utterance_id] = pipeline.begin(src("mic"), audio_start=e.t_s)
                elif isinstance(e, SpeechAudio):
                    audio.setdefault(e.utterance_id, []).append(e.pcm)
                    pipeline.audio(ids[e.utterance_id], e.pcm, e.t_s, partial=seg.silence_s < 0.25)
                elif isinstance(e, SpeechPause):
                    pipeline.pause(ids[e.utterance_id])
                    pauses += 1
                    assert backend.prepares.acquire(timeout=WAIT_S)  # the hangover is longer than the prepare
                elif isinstance(e, SpeechEnd):
                    pipeline.end(ids[e.utterance_id])
        assert pipeline.drain(WAIT_S * 3)
    finally:
        pipeline.stop()
    assert len(ids) == 1, "one utterance expected"
    (final,) = [e for e in events if e.type == "final"]
    return final, np.concatenate(audio[1]), pauses


def test_paused_utterance_gets_the_prepared_final_equal_to_offline(transcriber):
    signal = np.concatenate([silence(0.5), voiced_burst(1.6, seed=1), silence(1.5)])
    final, audio, pauses = dictate(transcriber, signal)
    assert pauses == 1
    assert final.prepared is True and final.prepares == 1 and final.timings.final_ms > 0
    reference = transcriber.transcribe(audio)
    assert final.token_ids == reference.token_ids and final.text == reference.text
    assert final.audio_end_s - final.audio_start_s == pytest.approx(audio.size / SR, abs=1e-3)


def test_speech_resuming_after_a_pause_still_ends_equal_to_offline(transcriber):
    signal = np.concatenate([silence(0.5), voiced_burst(1.2, seed=2), silence(0.5), voiced_burst(1.0, seed=3),
                             silence(1.5)])
    # ends after a second pause: that prepare is the final
    final, audio, pauses = dictate(transcriber, signal)
    assert pauses == 2
    assert final.prepared is True and final.prepares == 2
    assert final.token_ids == transcriber.transcribe(audio).token_ids
    assert audio.size > (1.2 + 0.5 + 1.0) * SR  # the whole pause is inside the one utterance

    # stopped mid-speech after the pause: the first prepare is stale, the final is computed at the end
    final, audio, pauses = dictate(transcriber, signal, stop_at_s=0.5 + 1.2 + 0.5 + 0.8)
    assert pauses == 1
    assert final.prepared is False and final.prepares == 1
    assert final.token_ids == transcriber.transcribe(audio).token_ids


class BlockingPartialStream(FakeStream):
    """A partial step that runs until interrupted (as a long engine step would)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_partial = threading.Event()
        self.interrupted = threading.Event()

    def decode_partial(self, should_stop=lambda: False):
        self.log.append((self.name, "partial"))
        self.in_partial.set()
        assert self.interrupted.wait(WAIT_S), "the pause did not interrupt the partial step"
        return None  # an interrupted step gives no partial

    def interrupt(self):
        self.log.append((self.name, "interrupt"))
        self.interrupted.set()


def test_a_pause_interrupts_the_partial_step_in_flight():
    backend = FakeBackend()
    backend.open_stream = lambda options: backend.streams.append(BlockingPartialStream("a", backend.log)) or backend.streams[-1]

    def script(p):
        u = p.begin(src("mic"))
        p.audio(u, block(), partial=True)
        assert p._inbox.join() is None and backend.streams[0].in_partial.wait(WAIT_S)
        p.pause(u)  # from the segmenter thread, while the decoder is inside the partial step
        assert backend.streams[0].prepared.wait(WAIT_S)
        p.end(u)

    events = run_pipeline(backend, script)
    assert backend.log[:3] == [("a", "partial"), ("a", "interrupt"), ("a", "prepare")]
    (final,) = finals(events).values()
    assert final.prepared is True
    assert not [e for e in events if e.type == "partial"]


class DeafPartialStream(FakeStream):
    """A partial step still reading the encoder when the end comes: the engine's interrupt cannot reach it
    yet, only the step's ``should_stop`` can."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_partial = threading.Event()

    def decode_partial(self, should_stop=lambda: False):
        self.log.append((self.name, "partial"))
        self.in_partial.set()
        deadline = time.monotonic() + WAIT_S
        while not should_stop():
            assert time.monotonic() < deadline, "the end did not stop the partial step"
            time.sleep(0.005)
        self.log.append((self.name, "stopped"))
        return None

    def interrupt(self):
        pass  # missed: no decode in flight yet


def test_the_end_stops_a_partial_step_before_its_decodes():
    backend = FakeBackend()
    backend.open_stream = lambda options: backend.streams.append(DeafPartialStream("a", backend.log)) or backend.streams[-1]

    def script(p):
        u = p.begin(src("mic"))
        p.audio(u, block(), partial=True)
        assert p._inbox.join() is None and backend.streams[0].in_partial.wait(WAIT_S)
        p.end(u)

    events = run_pipeline(backend, script)
    assert backend.log[:3] == [("a", "partial"), ("a", "stopped"), ("a", "final")]
    assert len(finals(events)) == 1
