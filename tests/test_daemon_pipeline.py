"""The transcription pipeline in-process, and the running daemon end to end (WebSocket audio, microphone).

The reference for every final is the offline Transcriber run on the very audio the daemon used
(``debug.save_audio_dir`` keeps it): token ids must be identical.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qasr.engine.streaming import CONTINUATION_CONTEXT_CHARS
from tests.harness.daemon import DaemonProcess
from tests.test_prepared_final import src

SR = 16000


def _tone_audio(seconds: float, seed: int) -> np.ndarray:
    """Voiced-like audio: a few harmonics with a slow envelope plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 110 + 40 * seed
    audio = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    audio *= 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2
    audio += 0.01 * rng.standard_normal(t.size)
    return (0.2 * audio / np.max(np.abs(audio))).astype(np.float32)


@pytest.fixture
def transcriber(tiny_transcriber):
    return tiny_transcriber  # tests/fixtures/engine.py: one per session


# ------------------------------------------------------------------------------ pipeline, in-process

def test_pipeline_finals_in_order_equal_offline_transcription(transcriber):
    from qasr.daemon.transcription.engine_streams import WholeUtteranceBackend
    from qasr.daemon.transcription.pipeline import Pipeline

    events: list = []
    done = threading.Event()

    def emit(source, event):
        events.append(event)
        if event.type == "final" and event.utterance_id == "3":
            done.set()

    pipeline = Pipeline(WholeUtteranceBackend(lambda audio, options: transcriber.transcribe(audio)), emit,
                        max_queued_blocks=8)
    pipeline.start()
    audios = {1: _tone_audio(1.2, 1), 2: _tone_audio(0.9, 2), 3: _tone_audio(1.5, 3)}
    try:
        ids = {}
        for n, audio in audios.items():
            ids[n] = pipeline.begin(src("mic"), audio_start=float(n))
            for block in np.array_split(audio, 12):  # more blocks than the queue holds: put() waits
                pipeline.audio(ids[n], block)
            if n == 2:
                pipeline.cancel(ids[n])
            else:
                pipeline.end(ids[n])
        assert pipeline.drain(120)
        assert done.is_set()
        assert not pipeline.busy() and pipeline.pending() == 0
    finally:
        pipeline.stop()
    finals = [e for e in events if e.type == "final"]
    assert [f.utterance_id for f in finals] == [ids[1], ids[3]]
    assert [e.utterance_id for e in events if e.type == "cancelled"] == [ids[2]]
    for final, n in zip(finals, (1, 3)):
        reference = transcriber.transcribe(audios[n])
        assert final.token_ids == reference.token_ids
        assert final.text == reference.text
        assert final.audio_start_s == float(n)
        assert final.audio_end_s == pytest.approx(n + audios[n].size / SR)
        assert 0 <= final.timings.latency_ms < 120_000  # end() -> final, within the drain above
    assert pipeline.utterances_done == 2 and pipeline.last_latency_ms == finals[-1].timings.latency_ms


def test_failed_transcription_reports_an_error_and_the_next_utterance_still_runs(transcriber):
    from qasr.daemon.transcription.engine_streams import WholeUtteranceBackend
    from qasr.daemon.transcription.pipeline import Pipeline

    events: list = []

    def transcribe(audio, options):
        if options.language == "Klingon":
            from qasr.engine.prompt import resolve_language

            resolve_language("Klingon", transcriber.bundle.manifest.languages)  # raises
        return transcriber.transcribe(audio)

    pipeline = Pipeline(WholeUtteranceBackend(transcribe), lambda source, event: events.append(event))
    pipeline.start()
    try:
        bad = pipeline.begin(src("mic"), language="Klingon")
        pipeline.audio(bad, _tone_audio(0.6, 4))
        pipeline.end(bad)
        good = pipeline.begin(src("mic"))
        pipeline.audio(good, _tone_audio(0.6, 5))
        pipeline.end(good)
        assert pipeline.drain(120)
    finally:
        pipeline.stop()
    errors = [e for e in events if e.type == "error"]
    assert len(errors) == 1 and errors[0].utterance_id == bad and "Klingon" in errors[0].message
    assert [e.utterance_id for e in events if e.type == "final"] == [good]


# ------------------------------------------------------------------------------ the daemon process

async def _ws_session(env: DaemonProcess, script):
    from websockets.asyncio.client import connect

    async with connect(env.server_info()["ws_url"], additional_headers={"Authorization": f"Bearer {env.token()}"},
                       max_size=None) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello"
        return await script(ws)


async def _until(ws, predicate, timeout: float = 120) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
        seen.append(message)
        if predicate(message):
            return seen


def _vad_stream(stream: np.ndarray, pieces: int):
    """A WebSocket script: ``stream`` as f32le in ``pieces`` frames, segmented by the daemon's VAD, until
    the audio.end ack."""
    async def script(ws):
        await ws.send(json.dumps({"type": "audio.start", "format": "f32le", "sample_rate": SR, "segment": "vad"}))
        for chunk in np.array_split(stream, pieces):
            await ws.send(chunk.astype("<f4").tobytes())
        await ws.send(json.dumps({"type": "audio.end"}))
        return await _until(ws, lambda m: m["type"] == "ack" and m["command"] == "audio.end")
    return script


def _saved_audio(folder: Path) -> list[np.ndarray]:
    from qasr.engine.audio import load_audio

    return [load_audio(p, SR) for p in sorted(folder.glob("*.wav"))]


def test_websocket_audio_streams_get_finals_equal_to_offline(tmp_path, tiny_bundle, transcriber):
    env = DaemonProcess(tmp_path)
    saved = tmp_path / "saved"
    try:
        env.start(tiny_bundle, "--set", f"debug.save_audio_dir={saved}")
        whole = _tone_audio(2.0, 6)
        pcm16 = (np.clip(whole, -1, 1) * 32767).astype("<i2")

        async def one_utterance(ws):
            await ws.send(json.dumps({"type": "audio.start", "format": "s16le", "sample_rate": SR,
                                      "segment": "none", "id": 1}))
            for chunk in np.array_split(pcm16, 7):
                await ws.send(chunk.tobytes())
            await ws.send(json.dumps({"type": "audio.end", "id": 2}))
            return await _until(ws, lambda m: m["type"] == "ack" and m["command"] == "audio.end")

        messages = asyncio.run(_ws_session(env, one_utterance))
        finals = [m for m in messages if m["type"] == "final"]
        assert len(finals) == 1 and messages[-1]["utterances"] == 1
        decoded = pcm16.astype(np.float32) / 32768.0
        reference = transcriber.transcribe(decoded)
        assert finals[0]["token_ids"] == reference.token_ids
        assert finals[0]["text"] == reference.text
        assert finals[0]["source"].startswith("ws:") and finals[0]["sink"] is None
        [stored] = _saved_audio(saved)
        np.testing.assert_array_equal(stored, decoded)

        # segment "vad": two bursts of sound separated by silence are two utterances
        silence = np.zeros(int(1.5 * SR), np.float32)
        stream = np.concatenate([silence[:SR // 2], _tone_audio(1.2, 7), silence, _tone_audio(1.0, 8), silence])

        for path in saved.glob("*.wav"):
            path.unlink()
        messages = asyncio.run(_ws_session(env, _vad_stream(stream, 20)))
        finals = [m for m in messages if m["type"] == "final"]
        segments = _saved_audio(saved)
        assert len(finals) == len(segments) >= 1
        for final, audio in zip(finals, segments):
            assert final["token_ids"] == transcriber.transcribe(audio).token_ids
            assert final["audio_end"] - final["audio_start"] == pytest.approx(audio.size / SR, abs=1e-3)
        assert not env.journal_file.exists()  # the journal keeps dictation (microphone) only
    finally:
        env.stop()


@pytest.mark.system
def test_microphone_to_websocket_final_equals_offline(tmp_path, tiny_bundle, transcriber, pulse_server):
    from tests.harness.speech import espeak_wav

    env = DaemonProcess(tmp_path, extra_env=pulse_server.client_env)
    saved = tmp_path / "saved"
    try:
        env.start(tiny_bundle, "--set", f"debug.save_audio_dir={saved}", "--set", "vad.hangover_ms=450")
        assert env.wait_status(lambda s: s["state"] == "listening")["state"] == "listening"
        speech = espeak_wav("hello world, this is a dictation test")

        async def listen(ws):
            player = threading.Thread(target=pulse_server.play, args=(speech,))
            player.start()
            try:
                return await _until(ws, lambda m: m["type"] == "final", timeout=120)
            finally:
                player.join()

        messages = asyncio.run(_ws_session(env, listen))
        final = messages[-1]
        assert final["source"] == "mic"
        assert {"vad", "state"} <= {m["type"] for m in messages}
        [audio] = _saved_audio(saved)
        assert audio.size > SR  # most of the phrase, not a fragment
        assert final["token_ids"] == transcriber.transcribe(audio).token_ids
        assert final["timings"]["latency_ms"] > 0
        status = env.status()
        assert status["utterances"] == 1 and status["last_latency_ms"] == final["timings"]["latency_ms"]
        entries = [json.loads(line) for line in env.journal_file.read_text().splitlines()]
        assert [e["utterance_id"] for e in entries] == [final["utterance_id"]]
        assert entries[0]["text"] == final["text"]
    finally:
        env.stop()


def test_streaming_backend_gives_partials_and_offline_equal_finals(transcriber):
    from qasr.daemon.transcription.engine_streams import StreamingBackend
    from qasr.daemon.transcription.pipeline import Pipeline
    from qasr.engine.streaming import StreamingOptions, StreamingSession

    events: list = []
    backend = StreamingBackend(lambda options, guard: StreamingSession(
        transcriber, StreamingOptions(rtf_budget=10.0), utterance_id=options.utterance_id, encoder_guard=guard))
    pipeline = Pipeline(backend, lambda source, event: events.append(event))
    pipeline.start()
    audios = [_tone_audio(3.0, 9), _tone_audio(1.5, 10)]
    try:
        ids = []
        for audio in audios:  # the second utterance starts before the first one's final is out
            ids.append(pipeline.begin(src("mic")))
            for block in np.array_split(audio, int(audio.size / 480)):  # 30 ms blocks, as from the microphone
                pipeline.audio(ids[-1], block)
                time.sleep(0.002)
            pipeline.end(ids[-1])
        assert pipeline.drain(180)
    finally:
        pipeline.stop()
    finals = [e for e in events if e.type == "final"]
    assert [f.utterance_id for f in finals] == ids
    for final, audio in zip(finals, audios):
        assert final.token_ids == transcriber.transcribe(audio).token_ids
    partials = [e for e in events if e.type == "partial"]
    assert partials and {p.utterance_id for p in partials} <= set(ids)
    for uid in ids:  # committed text only grows within an utterance
        committed = [p.committed for p in partials if p.utterance_id == uid]
        assert all(later.startswith(earlier) for earlier, later in zip(committed, committed[1:]))
    # every partial of an utterance comes before its final
    order = [(e.type, e.utterance_id) for e in events if e.type in ("partial", "final")]
    for uid in ids:
        final_at = order.index(("final", uid))
        assert all(i < final_at for i, item in enumerate(order) if item == ("partial", uid))


def test_speech_cut_at_max_length_continues_with_the_previous_text_as_context(tmp_path, tiny_bundle):
    """Continuous sound longer than engine.max_utterance_s: the segmenter cuts it; each continuation is
    transcribed with the previous final's text as context (checked against offline set_prompt)."""
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    env = DaemonProcess(tmp_path)
    saved = tmp_path / "saved"
    try:
        env.start(tiny_bundle, "--set", f"debug.save_audio_dir={saved}", "--set", "engine.max_utterance_s=3")
        stream = np.concatenate([np.zeros(SR // 2, np.float32), _tone_audio(7.5, 3), np.zeros(SR, np.float32)])

        messages = asyncio.run(_ws_session(env, _vad_stream(stream, 30)))
        finals = [m for m in messages if m["type"] == "final"]
        segments = _saved_audio(saved)
        assert len(finals) == len(segments) >= 3
        for a, b in zip(finals, finals[1:]):
            assert b["audio_start"] == pytest.approx(a["audio_end"], abs=1e-3)  # cut, not a pause
        with Transcriber(tiny_bundle, TranscribeOptions(context_reserve_bytes=4096)) as reference:
            for previous, final, audio in zip([None, *finals], finals, segments):
                reference.set_prompt(None, previous["text"][-CONTINUATION_CONTEXT_CHARS:] if previous else "")
                assert final["token_ids"] == reference.transcribe(audio).token_ids
    finally:
        env.stop()
