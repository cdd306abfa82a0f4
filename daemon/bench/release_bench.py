"""Key release → final through the daemon's own pipeline, at many random release points (`bench --release`).

One process, one model: the daemon's ``Pipeline`` (encoder and decoder workers) over the streaming
backend as the engine host builds it. Each utterance is synthetic speech fed in real time in 60 ms
blocks (the microphone's block) with partials wanted, and "released" at a random point: the length
is ``L + U(0, 1) s``, so the release falls at a random phase of the partial work in flight. The time
from ``end()`` to the final leaving the decoder is the key release → final latency; the pipeline's
own timings say where it went (``wait_ms``: end → the final's computation starting, i.e. audio queued
or a step in flight; ``final_ms``: the final's own computation).

Also, in the same run: the offline transcription of each length (what per-utterance tools pay after
the key), the VAD end → final with the final prepared at the pause (0.3 s of kept silence, end
confirmed 0.6 s after the voice), and the time from the first audio to the first partial.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from pathlib import Path

import numpy as np

BLOCK_S = 0.06
SAMPLE_RATE = 16000


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(np.floor(k)), int(np.ceil(k))
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 1)


def _summary(values: list[float]) -> dict:
    return {"p50": _percentile(values, 0.5), "p95": _percentile(values, 0.95), "max": _percentile(values, 1.0),
            "n": len(values)}


class _Recorder:
    """The pipeline's emit: events with the time they left the decoder, per utterance."""

    def __init__(self) -> None:
        self.finals: dict[str, queue.Queue] = {}
        self.first_partial: dict[str, float] = {}
        self._lock = threading.Lock()

    def expect(self, utterance_id: str) -> queue.Queue:
        with self._lock:
            return self.finals.setdefault(utterance_id, queue.Queue())

    def __call__(self, source, event) -> None:
        from qasr.engine.events import PartialEvent

        now = time.perf_counter()
        if isinstance(event, PartialEvent):
            self.first_partial.setdefault(event.utterance_id, now)
        else:  # a final, or the utterance cancelled or failed: it ends the wait either way
            self.expect(event.utterance_id).put((now, event))


def _speak(pipeline, recorder: _Recorder, audio: np.ndarray, tail: np.ndarray | None = None,
           hangover_s: float = 0.6) -> tuple[float, object, float | None]:
    """Feed ``audio`` in real time, then end (``tail``: trailing silence given with a pause first, the end
    confirmed ``hangover_s`` after the voice). Returns (end → final ms, the final, first partial s)."""
    block = int(BLOCK_S * SAMPLE_RATE)
    utterance_id = pipeline.begin(_dictation_source())
    finals = recorder.expect(utterance_id)
    start = time.perf_counter()
    for i in range(0, audio.shape[0], block):
        _sleep_until(start + min(i + block, audio.shape[0]) / SAMPLE_RATE)
        pipeline.audio(utterance_id, audio[i : i + block])
    voice_end = start + audio.shape[0] / SAMPLE_RATE
    if tail is not None:
        _sleep_until(voice_end + tail.shape[0] / SAMPLE_RATE)
        pipeline.audio(utterance_id, tail, partial=False)
        pipeline.pause(utterance_id)
        _sleep_until(voice_end + hangover_s)
    released = time.perf_counter()
    pipeline.end(utterance_id)
    done, final = finals.get(timeout=120)
    first = recorder.first_partial.get(utterance_id)
    return (done - released) * 1000.0, final, (first - start) if first is not None else None


def _dictation_source():
    """A microphone-like source; its route is never called (the pipeline's emit records the events)."""
    try:
        from qasr.daemon.transcription.routes import MIC, Source
    except ImportError:  # a checkout from before sources were typed
        return "mic"
    return Source.of(MIC, "bench", route=None)


def _sleep_until(t: float) -> None:
    wait = t - time.perf_counter()
    if wait > 0:
        time.sleep(wait)


def release_worker(bundle: Path, lengths: list[float], threads: int, rtf_budget: float, points: int,
                   paused_points: int, seed: int = 7) -> dict:
    from dataclasses import replace

    from qasr.daemon.bench.engine_bench import bench_audio, peak_rss_mb
    from qasr.daemon.transcription.engine_streams import StreamingBackend
    from qasr.daemon.transcription.pipeline import Pipeline
    from qasr.engine.streaming import StreamingOptions, StreamingSession
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    engine = Transcriber(bundle, TranscribeOptions(threads=threads))
    engine.warm_up()
    options = StreamingOptions(rtf_budget=rtf_budget)

    def session(o, guard=None):
        guarded = {"encoder_guard": guard} if guard is not None else {}  # (a checkout before the guard: none)
        return StreamingSession(engine, replace(options, language=o.language), utterance_id=o.utterance_id,
                                start_s=o.audio_start, **guarded)

    recorder = _Recorder()
    pipeline = Pipeline(StreamingBackend(session), recorder)
    pipeline.start()
    rng = np.random.default_rng(seed)
    result: dict = {"threads": threads, "rtf_budget": rtf_budget, "lengths": {}}
    try:
        for length in lengths:
            offline = []
            for k in range(3):
                clip = bench_audio(length, seed=int(length * 7))
                t0 = time.perf_counter()
                transcript = engine.transcribe(clip)
                offline.append((time.perf_counter() - t0) * 1000.0)
            releases, waits, own, first_partials, tokens, accepted = [], [], [], [], [], []
            for i in range(points):
                clip = bench_audio(length + float(rng.uniform(0.0, 1.0)), seed=1000 + i)
                latency, final, first = _speak(pipeline, recorder, clip)
                releases.append(latency)
                own.append(final.timings.final_ms)
                waits.append(getattr(final.timings, "wait_ms", None) or 0.0)
                tokens.append(len(final.token_ids))
                accepted.append(final.timings.accepted_tokens)
                if first is not None:
                    first_partials.append(first * 1000.0)
                time.sleep(0.3)
            tail = (0.003 * np.random.default_rng(5).standard_normal(int(0.3 * SAMPLE_RATE))).astype(np.float32)
            vad_end, prepared = [], 0
            for i in range(paused_points):
                clip = bench_audio(length + float(rng.uniform(0.0, 1.0)), seed=2000 + i)
                latency, final, _ = _speak(pipeline, recorder, clip, tail=tail)
                vad_end.append(latency)
                prepared += bool(final.prepared)
                time.sleep(0.3)
            offline_ms = statistics.median(offline)
            p50 = _percentile(releases, 0.5)
            result["lengths"][f"{length:g}"] = {
                "release_to_final_ms": _summary(releases),
                "wait_ms": _summary(waits),
                "final_own_ms": _summary(own),
                "final_tokens_median": statistics.median(tokens),
                "accepted_tokens_median": statistics.median(accepted),
                "offline_ms": round(offline_ms, 1),
                "offline_tokens": len(transcript.token_ids),
                "offline_over_release_p50": round(offline_ms / p50, 2) if p50 else None,
                "vad_end_to_final_ms": _summary(vad_end),
                "vad_end_prepared": f"{prepared}/{paused_points}",
                "first_partial_ms": _summary(first_partials),
            }
    finally:
        pipeline.stop()
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


if __name__ == "__main__":  # python -m qasr.daemon.bench.release_bench worker BUNDLE 3,10 THREADS BUDGET POINTS PAUSED
    import json
    import sys

    _, bundle, lengths, threads, budget, points, paused = sys.argv[1:8]
    print(json.dumps(release_worker(Path(bundle), [float(x) for x in lengths.split(",")], int(threads), float(budget),
                                    int(points), int(paused))))
