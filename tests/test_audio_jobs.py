"""AudioJob and the pipeline's foreground/background order: a job (an uploaded file) goes through the same
feed and pipeline as dictation, is cut where offline ``transcribe`` cuts it, and never delays a
foreground utterance that is waiting for the decoder."""

from __future__ import annotations

import threading

import numpy as np

from qasr.daemon.results.requester_route import RequesterRoute
from qasr.daemon.results.result_services import ResultServices
from qasr.daemon.transcription.audio_jobs import AudioJob
from qasr.daemon.transcription.engine_streams import WholeUtteranceBackend
from qasr.daemon.transcription.pipeline import Pipeline
from qasr.daemon.transcription.route_dispatch import RouteDispatcher
from qasr.daemon.transcription.routes import BACKGROUND, OPENAI
from qasr.daemon.transcription.service import TranscriptionService
from tests.test_openai_api import tone
from tests.test_prepared_final import WAIT_S, FakeBackend, block, run_pipeline, src

SR = 16000


def test_a_background_final_waits_for_a_foreground_one_queued_after_it():
    gate = threading.Event()
    backend = FakeBackend(a={"gate": gate})  # the first utterance holds the decoder until the gate opens

    def script(p):
        first = p.begin(src("mic"))
        p.audio(first, block(), partial=False)
        p.end(first)
        p._inbox.join()
        background = p.begin(src("openai:1", BACKGROUND))  # older, but background
        p.audio(background, block(), partial=False)
        p.end(background)
        foreground = p.begin(src("ws:c1"))
        p.audio(foreground, block(), partial=False)
        p.end(foreground)
        p._inbox.join()
        gate.set()

    run_pipeline(backend, script)
    assert [entry for entry in backend.log if entry[1] == "final"] == [("a", "final"), ("c", "final"), ("b", "final")]


def test_background_partials_give_way_to_foreground_partials():
    backend = FakeBackend()

    def script(p):
        background = p.begin(src("openai:1", BACKGROUND))
        foreground = p.begin(src("mic"))
        for _ in range(3):
            p.audio(background, block())
            p.audio(foreground, block())
        p._inbox.join()
        p.end(foreground)
        p.end(background)

    run_pipeline(backend, script)
    finals = [name for name, kind in backend.log if kind == "final"]
    assert finals == ["b", "a"]


def test_a_job_is_cut_and_routed_like_offline_transcribe(tiny_transcriber):
    results = ResultServices(publish=lambda message: None)
    seen: list[dict] = []
    results.on_final = lambda kind, message: seen.append(message)
    dispatch = RouteDispatcher()
    pipeline = Pipeline(WholeUtteranceBackend(lambda audio, options: tiny_transcriber.transcribe(audio)), dispatch,
                        delivery=dispatch)
    service = TranscriptionService(pipeline, None, lambda kind, name, deliver: RequesterRoute(kind, name, results,
                                                                                              deliver),
                                   segmenter_options=lambda mode: None)
    pipeline.start()
    audio = np.concatenate([tone(22.0, 4), np.zeros(SR // 4, np.float32), tone(12.0, 5)])
    try:
        job = AudioJob(service, OPENAI, "openai:1", partials=False)
        assert job.source.lane == BACKGROUND
        job.transcribe_audio(audio)
        result = job.wait(WAIT_S)
    finally:
        pipeline.stop()
        dispatch.stop()
    reference = tiny_transcriber.transcribe(audio)
    assert len(result.finals) == len(reference.segments) == 2 and result.error is None
    for final, span, segment in zip(result.finals, result.pieces, reference.segments):
        assert final["token_ids"] == segment.token_ids and final["source"] == "openai:1"
        assert span == (segment.start_s, segment.end_s)
    assert seen == result.finals and job.done()  # every utterance was routed and closed


def test_background_work_waits_while_a_foreground_utterance_is_spoken():
    backend = FakeBackend()

    def script(p):
        foreground = p.begin(src("mic"))
        p.audio(foreground, block(), partial=False)
        p._inbox.join()  # being spoken: open, not ended
        background = p.begin(src("openai:1", BACKGROUND))
        p.audio(background, block(), partial=False)
        p.end(background)
        p._inbox.join()
        assert not backend.streams[1].log or ("b", "final") not in backend.log
        import time

        time.sleep(0.5)
        assert ("b", "final") not in backend.log  # held while the foreground utterance is open
        p.end(foreground)

    run_pipeline(backend, script)
    finals = [name for name, kind in backend.log if kind == "final"]
    assert finals == ["a", "b"]
