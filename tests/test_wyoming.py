"""The Wyoming server: frame validation (sans-I/O) and the running daemon through the ``wyoming`` package's
own async client. Transcripts must equal offline ``transcribe`` of the same audio token for token; bad
clients get one log line and a closed connection, never a hang or a traceback."""

from __future__ import annotations

import asyncio
import json
import re
import time

import numpy as np
import pytest

from qasr.daemon.server.wyoming_frames import FrameError, FrameReader
from tests.harness.daemon import DaemonProcess
from tests.test_openai_api import tone

SR = 16000
MAX_EVENT = 65536


# ------------------------------------------------------------------------------ frames, sans-I/O


def test_frames_split_anywhere_are_read_whole():
    from wyoming.audio import AudioChunk

    chunk = AudioChunk(rate=16000, width=2, channels=1, audio=b"\x01\x02" * 100).event()
    header = {"type": chunk.type, "data_length": 0, "payload_length": len(chunk.payload)}
    data = json.dumps({"rate": 16000, "width": 2, "channels": 1}).encode()
    header["data_length"] = len(data)
    raw = json.dumps(header).encode() + b"\n" + data + chunk.payload
    raw = raw * 2 + b'{"type": "describe"}\n'
    reader = FrameReader(4096)
    events = []
    for i in range(0, len(raw), 7):
        events += reader.feed(raw[i:i + 7])
    assert [e.type for e in events] == ["audio-chunk", "audio-chunk", "describe"]
    assert events[0].data == {"rate": 16000, "width": 2, "channels": 1} and events[0].payload == chunk.payload
    assert not reader.mid_event


@pytest.mark.parametrize("raw, message", [
    (b"x" * 5000, "without a newline"),
    (b"not json\n", "not JSON"),
    (b"[1, 2]\n", "not an object"),
    (b'{"data": {}}\n', "no valid 'type'"),
    (b'{"type": ""}\n', "no valid 'type'"),
    (b'{"type": "audio-chunk", "payload_length": -5}\n', "negative payload_length"),
    (b'{"type": "audio-chunk", "data_length": -1}\n', "negative data_length"),
    (b'{"type": "audio-chunk", "data_length": "12"}\n', "not a whole number"),
    (b'{"type": "audio-chunk", "payload_length": 1000000000}\n', "over 4096"),
    (b'{"type": "x", "data": [1]}\n', "not an object"),
    (b'{"type": "x", "data_length": 3}\n[1]', "not an object"),
    (b'{"type": "x", "data_length": 3}\n\xff\xfe\xfd', "not JSON"),
    (b"[" * 100000 + b"\n", "over 4096"),
])
def test_bad_frames_are_one_line_errors(raw, message):
    with pytest.raises(FrameError) as info:
        FrameReader(4096).feed(raw)
    assert message in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------ the running daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tiny_bundle):
    env = DaemonProcess(tmp_path_factory.mktemp("wyoming"))
    env.start(tiny_bundle, "--set", "wyoming.enabled=true", "--set", "wyoming.uri=tcp://127.0.0.1:0",
              "--set", "wyoming.idle_timeout_s=2", "--set", f"wyoming.max_event_bytes={MAX_EVENT}")
    yield env
    env.stop()


def address(env: DaemonProcess) -> tuple[str, int]:
    match = re.fullmatch(r"tcp://(.+):(\d+)", env.status()["wyoming_uri"])
    return match.group(1), int(match.group(2))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 300))


async def utterance(host, port, pcm16: np.ndarray, transcribe=None, chunk_samples: int = 1024) -> list:
    """describe-free utterance with the real client: (transcribe), audio-start, chunks, audio-stop → events
    up to the transcript."""
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient

    async with AsyncTcpClient(host, port) as client:
        await client.write_event((transcribe or Transcribe()).event())
        await client.write_event(AudioStart(rate=SR, width=2, channels=1).event())
        for start in range(0, pcm16.size, chunk_samples):
            block = pcm16[start:start + chunk_samples].tobytes()
            await client.write_event(AudioChunk(rate=SR, width=2, channels=1, audio=block).event())
        await client.write_event(AudioStop().event())
        events = []
        while True:
            event = await client.read_event()
            assert event is not None, f"connection closed after {[e.type for e in events]}"
            events.append(event)
            if Transcript.is_type(event.type):
                return events


def pcm16_of(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2")


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True if the server closes the connection (EOF) within ``seconds``; what it sent before is skipped."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(reader.read(65536), deadline - time.monotonic())
        except asyncio.TimeoutError:
            return False
        except ConnectionError:
            return True
        if not data:
            return True
    return False


def test_describe_gives_info(daemon):
    from wyoming.client import AsyncTcpClient
    from wyoming.info import Describe, Info

    async def describe():
        async with AsyncTcpClient(*address(daemon)) as client:
            await client.write_event(Describe().event())
            return await client.read_event()

    info = Info.from_event(run(describe()))
    [program] = info.asr
    assert program.name == "qasr" and program.supports_transcript_streaming
    assert program.models[0].name == daemon.status()["model"]
    assert {"en", "zh", "de"} <= set(program.models[0].languages)


def test_an_utterance_streams_chunks_and_its_transcript_equals_offline(daemon, tiny_transcriber):
    from wyoming.asr import Transcribe, Transcript, TranscriptChunk

    pcm16 = pcm16_of(tone(3.0, 11))
    events = run(utterance(*address(daemon), pcm16))
    types = [e.type for e in events]
    assert types[0] == "transcript-start" and types[-2:] == ["transcript-stop", "transcript"]
    transcript = Transcript.from_event(events[-1])
    reference = tiny_transcriber.transcribe(pcm16.astype(np.float32) / 32768.0)
    assert transcript.text == reference.text
    # chunks carry committed text (append-only; random weights may commit what the exact final then drops)
    chunks = [TranscriptChunk.from_event(e).text for e in events if e.type == "transcript-chunk"]
    assert all(chunks) and set(types[1:-2]) <= {"transcript-chunk"}

    # the journal keeps Wyoming finals with their source
    if reference.text:
        entries = [json.loads(line) for line in daemon.journal_file.read_text().splitlines()]
        assert [e["text"] for e in entries if e["source"].startswith("wyoming:")] == [reference.text]

    # a forced language, and an unknown one (an error event, the utterance still transcribed)
    forced = run(utterance(*address(daemon), pcm16, Transcribe(language="en")))
    assert forced[-1].type == "transcript"
    unknown = run(utterance(*address(daemon), pcm16, Transcribe(language="tlh")))
    assert unknown[0].type == "error" and "ISO-639-1" in unknown[0].data["text"]
    assert daemon.metrics()["counters"]["wyoming_transcripts"] >= 3


def test_bad_clients_are_closed_with_one_log_line_and_others_keep_working(daemon, tiny_transcriber):
    from wyoming.audio import AudioChunk, AudioStart
    from wyoming.client import AsyncTcpClient
    from wyoming.event import async_write_event

    host, port = address(daemon)

    async def raw(data: bytes, wait: float = 5.0) -> bool:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(data)
        await writer.drain()
        closed = await closed_within(reader, wait)
        writer.close()
        return closed

    async def with_client(events, wait: float = 5.0) -> bool:
        client = AsyncTcpClient(host, port)
        await client.connect()
        try:
            for event in events:
                await client.write_event(event)
        except ConnectionError:  # the server closed while the oversize event was still going out
            await client.disconnect()
            return True
        closed = await closed_within(client._reader, wait)
        await client.disconnect()
        return closed

    async def scenarios():
        results = {
            "garbage": await raw(b"\x16\x03\x01\x00garbage bytes\x00\xff\n"),
            "no type": await raw(b'{"data": {}}\n'),
            "huge data_length": await raw(b'{"type": "audio-chunk", "data_length": 999999999}\n'),
            "negative payload": await raw(b'{"type": "audio-chunk", "payload_length": -1}\n'),
            "endless header": await raw(b"{" + b" " * (MAX_EVENT + 10)),
            "oversize chunk": await with_client([AudioStart(rate=SR, width=2, channels=1).event(),
                                                 AudioChunk(rate=SR, width=2, channels=1,
                                                            audio=b"\0" * (MAX_EVENT + 2)).event()]),
            "zero rate": await with_client([AudioStart(rate=0, width=2, channels=1).event()]),
            "zero channels": await with_client([AudioStart(rate=SR, width=2, channels=0).event()]),
            "chunk before start": await with_client([AudioChunk(rate=SR, width=2, channels=1,
                                                                audio=b"\0\0" * 100).event()]),
            "idle": await raw(b"", wait=6.0),
        }
        # dropped mid-audio: the utterance is cancelled, nothing stays stuck
        client = AsyncTcpClient(host, port)
        await client.connect()
        await client.write_event(AudioStart(rate=SR, width=2, channels=1).event())
        await async_write_event(AudioChunk(rate=SR, width=2, channels=1, audio=pcm16_of(tone(1.0, 12)).tobytes()).event(),
                                client._writer)
        await client.disconnect()
        return results

    results = run(scenarios())
    assert all(results.values()), results
    pcm16 = pcm16_of(tone(1.5, 13))
    events = run(utterance(host, port, pcm16))  # the server still serves
    assert events[-1].data["text"] == tiny_transcriber.transcribe(pcm16.astype(np.float32) / 32768.0).text
    deadline = time.monotonic() + 30
    while daemon.status()["pending_utterances"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert daemon.status()["pending_utterances"] == 0  # no stuck utterance
    log = daemon.log()
    assert "Traceback" not in log
    for needle in ("header line is not JSON", "no valid 'type'", "data_length 999999999", "negative payload_length",
                   "without a newline", "rate 0", "channels 0", "audio-chunk before audio-start", "silent for",
                   "went away mid-audio"):
        assert needle in log, needle


def test_wyoming_openai_and_websocket_audio_at_once(daemon, tiny_transcriber, tmp_path):
    """A Wyoming command, a WebSocket stream (foreground, like dictation) and an OpenAI file (background)
    at the same time: each result equals offline transcription of its own audio."""
    import threading

    import openai
    from websockets.asyncio.client import connect

    from tests.test_openai_api import wav_bytes

    path = tmp_path / "file.wav"
    path.write_bytes(wav_bytes(tone(8.0, 21)))
    files: dict = {}

    def post():
        c = openai.OpenAI(base_url=daemon.server_info()["http_url"] + "/v1", api_key=daemon.token(), max_retries=0)
        files["text"] = c.audio.transcriptions.create(model="x", file=path, response_format="verbose_json")

    command, spoken = pcm16_of(tone(2.0, 22)), pcm16_of(tone(2.5, 23))

    async def websocket():
        async with connect(daemon.server_info()["ws_url"],
                           additional_headers={"Authorization": f"Bearer {daemon.token()}"}) as ws:
            await ws.recv()
            await ws.send(json.dumps({"type": "audio.start", "format": "s16le", "sample_rate": SR, "segment": "none"}))
            for chunk in np.array_split(spoken, 8):
                await ws.send(chunk.tobytes())
                await asyncio.sleep(0.05)
            await ws.send(json.dumps({"type": "audio.end"}))
            while True:
                message = json.loads(await ws.recv())
                if message["type"] == "final":
                    return message

    async def both():
        return await asyncio.gather(utterance(*address(daemon), command), websocket())

    worker = threading.Thread(target=post)
    worker.start()
    wyoming_events, final = run(both())
    worker.join(300)
    assert wyoming_events[-1].data["text"] == tiny_transcriber.transcribe(command.astype(np.float32) / 32768.0).text
    assert final["token_ids"] == tiny_transcriber.transcribe(spoken.astype(np.float32) / 32768.0).token_ids
    assert [t for s in files["text"].segments for t in s.tokens] == tiny_transcriber.transcribe_file(path).token_ids
