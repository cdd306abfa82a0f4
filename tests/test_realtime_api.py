"""OpenAI Realtime transcription on ``/v1/realtime``: the sans-I/O protocol and session, then the running
daemon through the real ``openai`` package's realtime client. Every ``completed`` transcript must equal
offline ``transcribe`` of the same audio."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import numpy as np
import pytest

from qasr.daemon.server import realtime_protocol as rt
from qasr.daemon.server.connection import Close, ConnectionLimits
from qasr.daemon.server.http_front import goes_to_front
from qasr.daemon.server.realtime_session import Clear, Commit, Feed, RealtimeSession, Reconfigure
from qasr.protocol import PcmDecoder, AudioFormat
from tests.harness.daemon import DaemonProcess

SR = 16000
LANGS = {"en": "English", "de": "German"}


def resolve(code: str) -> str:
    if code not in LANGS:
        raise ValueError(f"language {code!r} is not one this model transcribes")
    return LANGS[code]


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


def append(data: bytes, event_id: str | None = None) -> str:
    event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(data).decode()}
    return json.dumps({**event, "event_id": event_id} if event_id else event)


# ------------------------------------------------------------------------------ sans-I/O


def test_client_events_are_parsed_and_bad_ones_are_openai_errors():
    assert rt.parse_event('{"type": "input_audio_buffer.commit", "event_id": "e1"}').kind == "commit"
    assert rt.parse_event('{"type": "transcription_session.update", "session": {}}').kind == "update"

    def error(text) -> rt.RealtimeError:
        with pytest.raises(rt.RealtimeError) as info:
            event = rt.parse_event(text)
            rt.decode_audio(event)
        return info.value

    assert error("{not json").code == "invalid_json"
    assert error("[1, 2]").code == "invalid_json"
    assert error("[" * 100000).code == "invalid_json"
    unknown = error('{"type": "nope", "event_id": "e7"}')
    assert (unknown.code, unknown.param, unknown.event_id) == ("invalid_value", "type", "e7")
    assert "transcription sessions only" in error('{"type": "response.create"}').message
    assert error('{"type": "input_audio_buffer.append"}').code == "missing_required_parameter"
    assert error('{"type": "input_audio_buffer.append", "audio": "@@@"}').param == "audio"
    assert error('{"type": 5}').param == "type"


def test_session_updates_ga_and_beta_shapes():
    config = rt.SessionConfig()
    ga = rt.parse_event(json.dumps({"type": "session.update", "session": {
        "type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 16000},
            "transcription": {"model": "gpt-4o-transcribe", "language": "de", "prompt": "Qasr, Wyoming"},
            "turn_detection": None}}}}))
    updated = rt.apply_update(config, ga, resolve)
    assert (updated.rate, updated.language, updated.prompt, updated.vad, updated.beta) == (
        16000, "German", "Qasr, Wyoming", False, False)
    shown = rt.session_object(updated, "sess_1")
    assert shown["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    assert shown["audio"]["input"]["transcription"]["language"] == "de" and shown["type"] == "transcription"

    beta = rt.parse_event(json.dumps({"type": "transcription_session.update", "session": {
        "input_audio_format": "pcm16", "input_audio_transcription": {"model": "x", "language": "en"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 300, "prefix_padding_ms": 200}}}))
    updated = rt.apply_update(updated, beta, resolve)
    assert (updated.rate, updated.language, updated.beta) == (24000, "English", True)
    assert updated.turn_detection == rt.TurnDetection(prefix_padding_ms=200, silence_duration_ms=300)
    event = rt.session_event(rt.EventIds("c1"), updated, "sess_1", created=False)
    assert event["type"] == "transcription_session.updated" and event["session"]["input_audio_format"] == "pcm16"
    assert event["session"]["turn_detection"]["silence_duration_ms"] == 300

    def error(session: dict, etype: str = "session.update") -> rt.RealtimeError:
        with pytest.raises(rt.RealtimeError) as info:
            rt.apply_update(config, rt.parse_event(json.dumps({"type": etype, "session": session})), resolve)
        return info.value

    assert error({"type": "realtime"}).param == "session.type"
    assert error({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}}}).param == \
        "session.audio.input.format.rate"
    assert "audio/pcmu" in error({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}).message
    assert error({"audio": {"input": {"transcription": {"language": "xx"}}}}).param == \
        "session.audio.input.transcription.language"
    assert error({"audio": {"input": {"turn_detection": {"silence_duration_ms": -5}}}}).param.endswith(
        "silence_duration_ms")
    assert error({"input_audio_format": "g711_ulaw"}, "transcription_session.update").param == \
        "session.input_audio_format"
    assert error({"audio": "loud"}).code == "invalid_type"


def session(vad: bool = False, rate: int = 16000, limits: ConnectionLimits = ConnectionLimits()) -> RealtimeSession:
    config = rt.SessionConfig(rate=rate, turn_detection=rt.TurnDetection() if vad else None)
    s = RealtimeSession("c9", config, limits, now=0.0, max_item_s=2.0, languages=resolve)
    assert [e["type"] for e in s.take()] == ["session.created"]
    return s


def test_a_manual_item_commits_streams_deltas_and_completes():
    s = session()
    empty = s.receive('{"type": "input_audio_buffer.commit", "event_id": "c"}', 0.1)
    [error] = s.take()
    assert empty is None and error["type"] == "error"
    assert (error["error"]["code"], error["error"]["event_id"]) == ("input_audio_buffer_commit_empty", "c")

    feed = s.receive(append(pcm16(np.full(SR // 2, 0.25, np.float32))), 0.2)
    assert isinstance(feed, Feed) and feed.pcm.size == SR // 2 and np.allclose(feed.pcm, 0.25, atol=1e-4)
    s.began("41", 0.0)
    s.result({"type": "partial", "utterance_id": "41", "committed": "Hello", "tentative": " wor"}, 0.3)
    s.result({"type": "partial", "utterance_id": "41", "committed": "Hello", "tentative": " world"}, 0.4)
    assert isinstance(s.receive('{"type": "input_audio_buffer.commit"}', 0.5), Commit)
    s.stopped("41", 0.5, "commit", 0.5)
    s.result({"type": "final", "utterance_id": "41", "text": "Hello world.", "audio_start_s": 0.0,
              "audio_end_s": 0.5}, 0.6)
    events = s.take()
    assert [e["type"] for e in events] == [
        "conversation.item.input_audio_transcription.delta", "input_audio_buffer.committed",
        "conversation.item.added", "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed", "conversation.item.done"]
    assert "".join(e["delta"] for e in events if e["type"].endswith("delta")) == events[4]["transcript"]
    assert events[1] == {**events[1], "item_id": "item_41", "previous_item_id": None}
    assert events[4]["usage"] == {"type": "duration", "seconds": 0.5}
    assert events[5]["item"]["content"][0]["transcript"] == "Hello world."
    assert len({e["event_id"] for e in events}) == 6
    assert s.metrics.snapshot()["series"]["realtime_end_to_completed_ms"]["count"] == 1

    # the buffer holds at most max_item_s (2 s) without turn detection
    assert isinstance(s.receive(append(pcm16(np.zeros(SR, np.float32))), 1.0), Feed)
    assert s.receive(append(pcm16(np.zeros(SR + 1, np.float32))), 1.1) is None
    assert s.take()[0]["error"]["code"] == "input_audio_buffer_too_large"
    assert isinstance(s.receive('{"type": "input_audio_buffer.clear"}', 1.2), Clear)
    s.cleared()
    assert s.take()[0]["type"] == "input_audio_buffer.cleared"


def test_vad_items_and_the_format_change_rule():
    s = session(vad=True, rate=24000)
    feed = s.receive(append(pcm16(np.zeros(2400, np.float32))), 0.0)  # 100 ms at 24 kHz → 16 kHz
    s.began("7", 1.25)
    s.result({"type": "partial", "utterance_id": "7", "committed": "", "tentative": "x"}, 0.1)
    update = '{"type": "session.update", "session": {"audio": {"input": {"turn_detection": null}}}}'
    assert s.receive(update, 0.2) is None  # an item is open: the turn detection cannot change now
    s.stopped("7", 2.5, "silence", 0.3)
    s.result({"type": "final", "utterance_id": "7", "text": "Hi", "audio_start_s": 1.0, "audio_end_s": 2.5}, 0.4)
    events = s.take()
    assert isinstance(feed, Feed) and feed.pcm.size < 1600  # the resampler holds its latency back
    assert [e["type"] for e in events] == [
        "input_audio_buffer.speech_started", "error", "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed", "conversation.item.added", "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed", "conversation.item.done"]
    assert (events[0]["audio_start_ms"], events[2]["audio_end_ms"]) == (1250, 2500)
    reconfigure = s.receive(update, 0.5)
    assert isinstance(reconfigure, Reconfigure) and reconfigure.rebuild and not s.config.vad
    assert s.take()[0]["type"] == "session.updated"
    s.began("8", 3.0)
    s.stopped("8", 3.1, "too_short", 0.6)  # never committed: no transcript follows
    assert s.open_items == 0


def test_garbage_is_rate_limited_then_closed_and_binary_frames_are_refused():
    s = session(limits=ConnectionLimits(commands_per_second=2, command_burst=2, rate_violation_limit=3))
    replies = [s.receive("garbage", 0.0) for _ in range(6)]
    errors = [e["error"]["code"] for e in s.take()]
    assert errors == ["invalid_json", "invalid_json", "rate_limit_exceeded"]
    assert isinstance(replies[-1], Close) and replies[-1].code == 1008
    audio = session(limits=ConnectionLimits(commands_per_second=1, command_burst=1))
    assert all(isinstance(audio.receive(append(b"\0\0" * 160), 0.0), Feed) for _ in range(50))  # audio is paced
    assert audio.binary(0.0) is None and audio.take()[0]["error"]["code"] == "invalid_json"


def test_realtime_upgrades_stay_with_the_websocket_server():
    assert not goes_to_front(b"GET /v1/realtime?intent=transcription HTTP/1.1")
    assert goes_to_front(b"GET /v1/models HTTP/1.1")
    assert goes_to_front(b"POST /v1/realtime HTTP/1.1")


# ------------------------------------------------------------------------------ the running daemon

COMPLETED = "conversation.item.input_audio_transcription.completed"
DONE = "conversation.item.done"  # GA: after each completed
DELTA = "conversation.item.input_audio_transcription.delta"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tiny_bundle):
    env = DaemonProcess(tmp_path_factory.mktemp("realtime"))
    env.start(tiny_bundle)
    yield env
    env.stop()


@pytest.fixture(scope="module")
def speech():
    from tests.harness.speech import espeak_speech

    return espeak_speech(3.0)


def aclient(env: DaemonProcess, key: str | None = None):
    import openai

    info = env.server_info()  # the beta client needs websocket_base_url (it would take wss:// from base_url)
    return openai.AsyncOpenAI(base_url=info["http_url"] + "/v1", websocket_base_url=info["ws_url"].rstrip("/") + "/v1",
                              api_key=key or env.token(), max_retries=0)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Recorder:
    """Every server event with its arrival time, until ``count`` events of type ``until`` came."""

    def __init__(self, connection, until: str = COMPLETED, count: int = 1) -> None:
        self.events: list[tuple[float, object]] = []
        self.until, self.count = until, count
        self.done = asyncio.Event()
        self.task = asyncio.create_task(self._run(connection))

    async def _run(self, connection) -> None:
        async for event in connection:
            self.events.append((time.monotonic(), event))
            if sum(e.type == self.until for _, e in self.events) >= self.count:
                self.done.set()

    async def wait(self, timeout: float = 180.0) -> list:
        await asyncio.wait_for(self.done.wait(), timeout)
        self.task.cancel()
        return [e for _, e in self.events]

    def of(self, etype: str) -> list:
        return [e for _, e in self.events if e.type == etype]


async def stream(connection, data: bytes, rate: int, chunk_s: float = 0.1, real_time: bool = True) -> float:
    """Append ``data`` (PCM16) in ``chunk_s`` pieces, at real time; returns when the last one was sent."""
    step = int(rate * chunk_s) * 2
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(data), step)):
        await connection.input_audio_buffer.append(audio=b64(data[offset:offset + step]))
        if real_time:
            await asyncio.sleep(max(0.0, start + (i + 1) * chunk_s - time.monotonic()))
    return time.monotonic()


def test_ga_client_streams_at_real_time_and_completed_equals_transcribe(daemon, tiny_transcriber):
    """16 kHz without turn detection: 100 ms appends at real time, deltas while the audio comes, one commit;
    then the default 24 kHz on the same connection. Each transcript is ``transcribe`` of the same samples.
    (A one-second harmonic tone repeated: the random weights' hypotheses agree on it, so words are committed
    while it streams; on speech they rarely are.)"""
    from tests.test_openai_api import tone

    speech = np.tile(tone(1.0, 1), 5)
    data16 = pcm16(speech)
    reference16 = tiny_transcriber.transcribe(np.frombuffer(data16, "<i2").astype(np.float32) / 32768.0)
    import soxr

    data24 = pcm16(soxr.resample(speech, SR, 24000).astype(np.float32))
    decoder = PcmDecoder(AudioFormat("s16le", 24000, 1))  # as the server decodes it, 100 ms at a time
    decoded = [decoder.feed(data24[i:i + 4800]) for i in range(0, len(data24), 4800)] + [decoder.flush()]
    reference24 = tiny_transcriber.transcribe(np.concatenate(decoded))

    async def run():
        async with aclient(daemon).realtime.connect(model="qwen3-asr", extra_query={"intent": "transcription"}) as conn:
            recorder = Recorder(conn, until=DONE)
            await conn.session.update(session={"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 16000}, "transcription": {"model": "qwen3-asr"},
                "turn_detection": None}}})
            last = await stream(conn, data16, SR)
            await conn.input_audio_buffer.commit()
            first = await recorder.wait()
            timed = recorder.events
            early = [t for t, e in timed if e.type == DELTA and t < last]
            again = []  # whether words are committed mid-stream depends on when the (loaded) decoder steps
            while not early and len(again) < 2:
                recorder = Recorder(conn, until=DONE)
                sent = await stream(conn, data16, SR)
                await conn.input_audio_buffer.commit()
                again.append(await recorder.wait())
                early = [t for t, e in recorder.events if e.type == DELTA and t < sent]
            recorder = Recorder(conn, until=DONE)
            await conn.session.update(session={"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 24000}}}})
            await stream(conn, data24, 24000, real_time=False)
            await conn.input_audio_buffer.commit()
            return first, again, early, await recorder.wait()

    first, again, early, second = asyncio.run(run())
    types = [e.type for e in first]
    assert types[:2] == ["session.created", "session.updated"] and types[-2:] == [COMPLETED, DONE]
    assert first[0].session.type == "transcription"
    assert first[1].session.audio.input.format.rate == 16000 and first[1].session.audio.input.turn_detection is None
    [committed] = [e for e in first if e.type == "input_audio_buffer.committed"]
    [added] = [e for e in first if e.type == "conversation.item.added"]
    completed = first[-2]
    assert added.item.id == committed.item_id == first[-1].item.id
    assert completed.item_id == committed.item_id and completed.transcript == reference16.text
    # deltas are committed words, append-only, all before `completed` (random weights may commit what the
    # exact final then drops: `completed` is the final all the same)
    deltas = [e.delta for e in first if e.type == DELTA]
    assert all(deltas) and types.index(COMPLETED) > max(i for i, t in enumerate(types) if t == DELTA)
    assert completed.usage.seconds == pytest.approx(5.0, abs=0.2)
    assert second[0].type == "session.updated" and second[-2].transcript == reference24.text
    assert second[-2].item_id != completed.item_id
    [committed2] = [e for e in second if e.type == "input_audio_buffer.committed"]
    assert committed2.previous_item_id == (again[-1][-1].item.id if again else committed.item_id)
    metrics = daemon.metrics()
    assert metrics["counters"]["finals_realtime"] >= 2 and metrics["counters"]["realtime_connections"] >= 1
    journal = [json.loads(line) for line in daemon.journal_file.read_text().splitlines()] if reference16.text else []
    assert any(entry["source"].startswith("realtime:") for entry in journal) or not reference16.text
    assert early, "no committed words while the audio streamed, in three items"
    assert all(events[-2].type == COMPLETED and events[-2].transcript == reference16.text for events in again)


def test_beta_client_server_vad_cuts_two_utterances(daemon, speech, tiny_transcriber):
    """The beta names (``transcription_session.update``, OpenAI-Beta header), server VAD: speech, a pause,
    speech: two items, each started, stopped, committed (chained) and completed."""
    pause = np.zeros(int(1.2 * SR), np.float32)
    audio = np.concatenate([pause[:SR // 2], speech[:int(1.6 * SR)], pause, speech[int(1.6 * SR):], pause])

    async def run():
        async with aclient(daemon).beta.realtime.connect(model="qwen3-asr") as conn:
            recorder = Recorder(conn, count=2)
            await conn.transcription_session.update(session={
                "input_audio_format": "pcm16", "input_audio_transcription": {"model": "qwen3-asr"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 500, "prefix_padding_ms": 300}})
            import soxr

            await stream(conn, pcm16(soxr.resample(audio, SR, 24000).astype(np.float32)), 24000, real_time=False)
            return await recorder.wait()

    events = asyncio.run(run())
    kinds = [e.type for e in events]
    assert kinds[:2] == ["transcription_session.created", "transcription_session.updated"]
    assert events[1].session.turn_detection.silence_duration_ms == 500
    started = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    stopped = [e for e in events if e.type == "input_audio_buffer.speech_stopped"]
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    completed = [e for e in events if e.type == COMPLETED]
    assert len(started) == len(stopped) == len(committed) == len(completed) == 2
    assert [e.item_id for e in started] == [e.item_id for e in committed] == [e.item_id for e in completed]
    assert committed[1].previous_item_id == committed[0].item_id
    assert started[0].audio_start_ms < stopped[0].audio_end_ms < started[1].audio_start_ms < stopped[1].audio_end_ms
    assert 300 <= started[0].audio_start_ms <= 900 and 2900 <= started[1].audio_start_ms <= 3700


def test_wrong_key_origin_and_the_browser_subprotocol(daemon):
    import openai
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    async def refused(**kwargs) -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url, **kwargs):
                pass
        body = json.loads(info.value.response.body)
        assert body["error"]["message"] and "\n" not in body["error"]["message"]
        return info.value.response.status_code

    url = daemon.server_info()["ws_url"].rstrip("/") + "/v1/realtime?intent=transcription"
    token = daemon.token()

    async def run():
        with pytest.raises(Exception) as wrong:
            async with aclient(daemon, key="not-the-token").realtime.connect(model="x") as conn:
                await conn.recv()
        assert "401" in str(wrong.value) or isinstance(wrong.value, (InvalidStatus, openai.OpenAIError))
        assert await refused() == 401
        assert await refused(subprotocols=["realtime", "openai-insecure-api-key.wrong"]) == 401
        assert await refused(additional_headers={"Authorization": f"Bearer {token}"},
                             origin="http://evil.example") == 403
        async with connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{token}"]) as ws:
            assert ws.subprotocol == "realtime"
            created = json.loads(await ws.recv())
            assert created["type"] == "session.created" and created["event_id"]

    asyncio.run(run())
    counters = daemon.metrics()["counters"]
    assert counters["realtime_rejected_401"] >= 3 and counters["realtime_rejected_403"] >= 1


def test_garbage_gets_error_events_and_the_session_keeps_working(daemon, speech, tiny_transcriber):
    clip = speech[:SR]
    data = pcm16(clip)
    reference = tiny_transcriber.transcribe(np.frombuffer(data, "<i2").astype(np.float32) / 32768.0)

    async def run():
        async with aclient(daemon).realtime.connect(model="qwen3-asr") as conn:
            recorder = Recorder(conn, until=DONE)
            for raw in ["not json", json.dumps({"type": "nope", "event_id": "evt_1"}),
                        json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}),
                        json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {
                            "input": {"format": {"type": "audio/pcm", "rate": 8000}}}}}),
                        json.dumps({"type": "input_audio_buffer.commit"}),
                        json.dumps({"type": "response.create"}), "[" * 50000]:
                await conn.send_raw(raw)
            await conn.send_raw(b"\x00\x01binary")
            await conn.session.update(session={"type": "transcription", "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}}})
            await stream(conn, data, SR, real_time=False)
            await conn.input_audio_buffer.clear()
            await stream(conn, data, SR, real_time=False)
            await conn.input_audio_buffer.commit()
            return await recorder.wait()

    events = asyncio.run(run())
    errors = [e.error for e in events if e.type == "error"]
    assert [e.code for e in errors] == ["invalid_json", "invalid_value", "invalid_value", "invalid_value",
                                        "input_audio_buffer_commit_empty", "invalid_value", "invalid_json",
                                        "invalid_json"]
    assert errors[1].event_id == "evt_1" and errors[3].param == "session.audio.input.format.rate"
    assert all(e.type == "invalid_request_error" and e.message and "\n" not in e.message for e in errors)
    assert [e.type for e in events if e.type.startswith("input_audio_buffer.")] == [
        "input_audio_buffer.cleared", "input_audio_buffer.committed"]
    assert events[-2].transcript == reference.text
    assert "Traceback" not in daemon.log()
    status = daemon.status()
    assert status["state"] in ("no-device", "listening")
    assert status["realtime_url"] == daemon.server_info()["ws_url"].rstrip("/") + "/v1/realtime"


def test_handshake_refusals_are_openai_errors():
    from websockets.datastructures import Headers

    from qasr.daemon.server.realtime_bridge import RealtimeEndpoint, offered_key

    endpoint = RealtimeEndpoint(service=None, options=None)

    def refuse(headers, query=None, origin_ok=True, full=False, upgrade=True):
        answer = endpoint.refuse(Headers(headers), query or {}, "tok", "/run/token", origin_ok, full, upgrade)
        return None if answer is None else (answer[0], json.loads(answer[1])["error"]["code"])

    bearer = {"Authorization": "Bearer tok"}
    assert refuse(bearer) is None
    assert refuse({"Sec-WebSocket-Protocol": "realtime, openai-insecure-api-key.tok"}) is None
    assert refuse({}, {"token": ["tok"]}) is None
    assert refuse({}) == (401, "invalid_api_key") and refuse({"Authorization": "Bearer x"}) == (401, "invalid_api_key")
    assert refuse(bearer, origin_ok=False)[0] == 403
    assert refuse(bearer, full=True) == (503, "too_many_clients")
    assert refuse(bearer, upgrade=False) == (426, "upgrade_required")
    assert offered_key(Headers({"Sec-WebSocket-Protocol": "openai-insecure-api-key.k1"}), {}) == "k1"
    assert endpoint.select_subprotocol(["openai-insecure-api-key.tok", "realtime"]) == "realtime"
    assert endpoint.select_subprotocol(["openai-insecure-api-key.tok"]) is None
