"""The OpenAI-compatible endpoint: sans-I/O parts (multipart, request checks, formats) and the running
daemon through the real ``openai`` package. Every final must equal offline ``transcribe`` of the same
file token for token (verbose_json carries each segment's token ids)."""

from __future__ import annotations

import io
import json
import threading
import urllib.error
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest

from qasr.daemon.server import openai_api as api
from qasr.daemon.server.http_front import goes_to_front
from qasr.daemon.server.multipart import FormError, parse_form
from qasr.engine.subtitles import Cue, format_srt, format_vtt
from tests.harness.daemon import DaemonProcess

SR = 16000
LANGS = ["Chinese", "English", "German"]


def tone(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    audio = sum(np.sin(2 * np.pi * (110 + 40 * seed) * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    audio *= 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2
    audio += 0.01 * rng.standard_normal(t.size)
    return (0.2 * audio / np.max(np.abs(audio))).astype(np.float32)


def wav_bytes(audio: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def form(fields: dict[str, str], file: bytes | None = b"RIFF", boundary: str = "XyZ") -> tuple[str, bytes]:
    body = b""
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    if file is not None:
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                 f"Content-Type: audio/wav\r\n\r\n").encode() + file + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


# ------------------------------------------------------------------------------ sans-I/O


def test_multipart_parts_and_malformed_bodies():
    content_type, body = form({"model": "m", "language": "en"}, file=b"\x00\r\n--Xy\xff")
    parts = parse_form(content_type, body)
    assert [(p.name, p.filename) for p in parts] == [("model", None), ("language", None), ("file", "a.wav")]
    assert parts[2].data == b"\x00\r\n--Xy\xff" and parts[2].content_type == "audio/wav"
    for bad_type, bad_body in [
        ("multipart/form-data", body),  # no boundary
        ("multipart/form-data; boundary=other", body),  # boundary absent from the body
        (content_type, body[: len(body) // 2]),  # truncated
        (content_type, b"--XyZ\r\nContent-Type: x\r\n\r\ndata\r\n--XyZ--"),  # no Content-Disposition
    ]:
        with pytest.raises(FormError):
            parse_form(bad_type, bad_body)


def test_transcription_requests_are_checked_with_openai_errors():
    content_type, body = form({"model": "whisper-1", "language": "de", "response_format": "srt", "prompt": "Qasr"})
    request = api.parse_transcription(content_type, body, LANGS)
    assert (request.language, request.response_format, request.prompt, request.stream) == ("German", "srt", "Qasr", False)
    assert api.parse_transcription(*form({"language": "zh-CN"}), LANGS).language == "Chinese"
    assert api.parse_transcription(*form({"language": "english"}), LANGS).language == "English"
    note = api.parse_transcription(*form({"temperature": "0.4"}), LANGS).notes
    assert note and "temperature" in note[0]

    def error(fields, file=b"RIFF", content_type=None, aligner=False):
        ct, b = form(fields, file)
        with pytest.raises(api.ApiError) as info:
            api.parse_transcription(content_type or ct, b, LANGS, aligner=aligner)
        return info.value

    assert error({}, content_type="application/json").status == 415
    assert error({}, file=None).param == "file"
    assert error({}, file=b"").status == 400
    unknown = error({"language": "xx"})
    assert unknown.status == 400 and "en" in unknown.message and unknown.param == "language"
    assert error({"response_format": "mp3"}).param == "response_format"
    assert error({"stream": "true", "response_format": "srt"}).param == "stream"
    assert error({"stream": "maybe"}).param == "stream"
    words = error({"response_format": "verbose_json", "timestamp_granularities[]": "word"})
    assert words.status == 400 and "aligner" in words.message and words.code == "aligner_not_installed"
    assert error({"temperature": "hot"}).param == "temperature"
    shaped = json.loads(words.response().body)
    assert shaped["error"]["type"] == "invalid_request_error" and shaped["error"]["message"] == words.message


def test_formats_render_segments():
    segments = [api.Segment(0.0, 1.5, "Hello there.", [1, 2]), api.Segment(1.5, 3.25, "Bye.", [3])]
    result = api.Transcript("Hello there. Bye.", "English", 3.25, segments)
    request = api.parse_transcription(*form({"response_format": "srt"}), LANGS)
    srt = api.render(request, result).body.decode()
    assert srt == "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n00:00:01,500 --> 00:00:03,250\nBye.\n"
    vtt = api.vtt(segments)
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n")
    # one writer: engine/subtitles.py (its edge cases: tests/test_subtitles.py)
    odd = [api.Segment(0.0, 1.5, "Hello\n\nthere.", [1]), api.Segment(1.5, 2.0, " ", []),
           api.Segment(2.0, 3.25, "a <b>", [2])]
    cues = [Cue(s.start, s.end, s.text) for s in odd]
    assert api.srt(odd) == format_srt(cues) and api.vtt(odd) == format_vtt(cues)
    assert api.vtt(odd).count("\n\n") == 2  # header, one cue, the other: no blank line inside a cue
    silent = api.Transcript("", "", 2.0, [])
    for fmt, body, kind in (("vtt", "WEBVTT\n\n", "text/vtt"), ("srt", "", "application/x-subrip")):
        response = api.render(api.parse_transcription(*form({"response_format": fmt}), LANGS), silent)
        assert response.body.decode() == body and response.content_type.startswith(kind)
    verbose = json.loads(api.render(api.parse_transcription(*form({"response_format": "verbose_json"}), LANGS),
                                    result).body)
    assert verbose["language"] == "english" and verbose["duration"] == 3.25
    assert [s["tokens"] for s in verbose["segments"]] == [[1, 2], [3]]


def test_only_plain_gets_outside_v1_stay_with_the_websocket_server():
    assert not goes_to_front(b"GET / HTTP/1.1")
    assert not goes_to_front(b"GET /health?x=1 HTTP/1.1")
    assert goes_to_front(b"GET /v1/models HTTP/1.1")
    assert goes_to_front(b"POST /v1/audio/transcriptions HTTP/1.1")
    assert goes_to_front(b"POST /health HTTP/1.1")
    assert goes_to_front(b"\x16\x03\x01garbage")


# ------------------------------------------------------------------------------ the running daemon

MAX_UPLOAD = 2_000_000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tiny_bundle):
    env = DaemonProcess(tmp_path_factory.mktemp("openai"))
    env.start(tiny_bundle, "--set", f"openai.max_upload_bytes={MAX_UPLOAD}", "--set", "openai.max_audio_s=60")
    yield env
    env.stop()


def client(env: DaemonProcess, key: str | None = None):
    import openai

    return openai.OpenAI(base_url=env.server_info()["http_url"] + "/v1", api_key=key or env.token(), max_retries=0,
                         timeout=300)


def test_every_response_format_equals_offline_transcribe(daemon, tiny_transcriber, tmp_path):
    audio = tone(3.0, 1)
    path = tmp_path / "three.wav"
    path.write_bytes(wav_bytes(audio))
    reference = tiny_transcriber.transcribe_file(path)  # what `qasr-daemon transcribe three.wav` computes
    c = client(daemon)
    assert [m.id for m in c.models.list()] == [daemon.status()["model"]]

    verbose = c.audio.transcriptions.create(model="qwen3-asr", file=path, response_format="verbose_json")
    assert [t for s in verbose.segments for t in s.tokens] == reference.token_ids
    assert verbose.text == reference.text and verbose.duration == pytest.approx(3.0)
    assert verbose.segments[0].start == 0.0 and verbose.segments[0].end == pytest.approx(3.0)

    assert c.audio.transcriptions.create(model="x", file=path).text == reference.text
    assert c.audio.transcriptions.create(model="x", file=path, response_format="text").rstrip("\n") == reference.text
    srt = c.audio.transcriptions.create(model="x", file=path, response_format="srt")
    vtt = c.audio.transcriptions.create(model="x", file=path, response_format="vtt")
    if reference.text:
        assert srt.startswith("1\n00:00:00,000 --> 00:00:03,000\n") and reference.text in srt
        assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:03.000\n") and reference.text in vtt

    events = list(c.audio.transcriptions.create(model="x", file=path, stream=True))
    assert events and events[-1].type == "transcript.text.done" and events[-1].text == reference.text
    # deltas are committed text, append-only (random weights may commit what the exact final then drops)
    assert all(e.delta for e in events if e.type == "transcript.text.delta")
    assert all(e.type == "transcript.text.delta" for e in events[:-1])

    metrics = daemon.metrics()
    assert metrics["counters"]["finals_openai"] >= 6 and metrics["counters"]["openai_requests"] >= 6
    journal = [json.loads(line) for line in daemon.journal_file.read_text().splitlines()] if reference.text else []
    assert all(entry["source"].startswith("openai:") for entry in journal)


def test_a_long_file_is_cut_where_transcribe_cuts_it(daemon, tiny_transcriber, tmp_path):
    audio = np.concatenate([tone(20.0, 2), np.zeros(SR // 2, np.float32), tone(14.0, 3)])
    path = tmp_path / "long.wav"
    path.write_bytes(wav_bytes(audio))
    reference = tiny_transcriber.transcribe_file(path)
    verbose = client(daemon).audio.transcriptions.create(model="x", file=path, response_format="verbose_json")
    assert len(verbose.segments) == len(reference.segments) == 2
    for got, want in zip(verbose.segments, reference.segments):
        assert got.tokens == want.token_ids
        assert got.start == pytest.approx(want.start_s, abs=1e-3) and got.end == pytest.approx(want.end_s, abs=1e-3)
    assert verbose.text == reference.text


def test_errors_have_openai_status_codes_and_one_line_messages(daemon, tmp_path):
    import openai

    good = tmp_path / "one.wav"
    good.write_bytes(wav_bytes(tone(1.0, 4)))
    with pytest.raises(openai.AuthenticationError) as wrong_key:
        client(daemon, key="not-the-token").audio.transcriptions.create(model="x", file=good)
    assert "token" in wrong_key.value.message

    oversize = tmp_path / "big.wav"
    oversize.write_bytes(wav_bytes(tone(MAX_UPLOAD / 2 / SR + 5, 5)))
    with pytest.raises(openai.APIStatusError) as too_big:
        client(daemon).audio.transcriptions.create(model="x", file=oversize)
    assert too_big.value.status_code == 413 and "max_upload_bytes" in too_big.value.message

    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3\x03\x00" + bytes(range(256)) * 40)
    with pytest.raises(openai.BadRequestError) as bad_file:
        client(daemon).audio.transcriptions.create(model="x", file=corrupt)
    assert "corrupt.mp3" in bad_file.value.message and "\n" not in bad_file.value.message

    too_long = tmp_path / "long.wav"
    too_long.write_bytes(wav_bytes(np.zeros(61 * SR, np.float32)))
    with pytest.raises(openai.BadRequestError) as over:
        client(daemon).audio.transcriptions.create(model="x", file=too_long)
    assert "max_audio_s" in over.value.message

    with pytest.raises(openai.BadRequestError) as language:
        client(daemon).audio.transcriptions.create(model="x", file=good, language="tlh")
    assert "ISO-639-1" in language.value.message
    with pytest.raises(openai.BadRequestError) as words:
        client(daemon).audio.transcriptions.create(model="x", file=good, response_format="verbose_json",
                                                   timestamp_granularities=["word"])
    assert "aligner" in words.value.message

    url = daemon.server_info()["http_url"] + "/v1/audio/transcriptions"
    as_json = urllib.request.Request(url, data=b'{"file": "x"}', method="POST", headers={
        "Authorization": f"Bearer {daemon.token()}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as unsupported:
        urllib.request.urlopen(as_json, timeout=30)
    assert unsupported.value.code == 415 and json.loads(unsupported.value.read())["error"]["message"]
    with pytest.raises(openai.PermissionDeniedError):
        client(daemon).with_options(default_headers={"Origin": "http://evil.example"}).models.list()
    assert "Traceback" not in daemon.log()
    assert daemon.status()["state"] in ("no-device", "listening")  # still serving


def test_rate_and_job_limits_answer_429(tmp_path, tiny_bundle):
    import openai

    env = DaemonProcess(tmp_path / "limits")
    try:
        env.start(tiny_bundle, "--set", "openai.requests_per_minute=6", "--set", "openai.max_concurrent_jobs=1")
        path = tmp_path / "one.wav"
        path.write_bytes(wav_bytes(tone(1.0, 6)))
        client(env).audio.transcriptions.create(model="x", file=path)  # the burst allows one
        with pytest.raises(openai.RateLimitError) as limited:
            client(env).audio.transcriptions.create(model="x", file=path)
        assert "requests_per_minute" in limited.value.message
        assert env.metrics()["counters"]["openai_errors_429"] == 1
    finally:
        env.stop()


def test_websocket_audio_keeps_working_while_a_file_is_transcribed(daemon, tiny_transcriber, tmp_path):
    """A long OpenAI job runs in the background while a WebSocket client streams audio: both finals equal
    offline transcription, and the streamed audio (foreground) is not held back behind the file."""
    import asyncio

    from websockets.asyncio.client import connect

    path = tmp_path / "bg.wav"
    path.write_bytes(wav_bytes(tone(25.0, 7)))
    done: dict = {}

    def post():
        done["verbose"] = client(daemon).audio.transcriptions.create(model="x", file=path,
                                                                     response_format="verbose_json")

    speech = tone(2.0, 8)
    pcm16 = (np.clip(speech, -1, 1) * 32767).astype("<i2")

    async def stream():
        headers = {"Authorization": f"Bearer {daemon.token()}"}
        async with connect(daemon.server_info()["ws_url"], additional_headers=headers) as ws:
            await ws.recv()  # hello
            await ws.send(json.dumps({"type": "audio.start", "format": "s16le", "sample_rate": SR, "segment": "none"}))
            for chunk in np.array_split(pcm16, 10):
                await ws.send(chunk.tobytes())
            await ws.send(json.dumps({"type": "audio.end"}))
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 300))
                if message["type"] == "final":
                    return message

    worker = threading.Thread(target=post)
    worker.start()
    final = asyncio.run(stream())
    worker.join(300)
    assert final["token_ids"] == tiny_transcriber.transcribe(pcm16.astype(np.float32) / 32768.0).token_ids
    reference = tiny_transcriber.transcribe_file(path)
    assert [t for s in done["verbose"].segments for t in s.tokens] == reference.token_ids


def test_malformed_http_on_the_port_gets_one_answer_and_websockets_still_work(daemon):
    import socket

    port = daemon.server_info()["port"]

    def exchange(data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(data)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return received

    assert exchange(b"\x16\x03\x01\x02\x00garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"
    assert exchange(huge).startswith(b"HTTP/1.1 431 ")
    not_found = exchange(b"DELETE /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + daemon.token().encode()
                         + b"\r\n\r\n")
    assert not_found.startswith(b"HTTP/1.1 404 ") and b'"error"' in not_found
    unauthorised = exchange(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    assert unauthorised.startswith(b"HTTP/1.1 401 ")
    health = exchange(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  # still the websockets server's page
    assert health.startswith(b"HTTP/1.1 200 ") and b'"protocol": "qasr.v1"' in health
    assert "Traceback" not in daemon.log()
