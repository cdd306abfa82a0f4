"""EventServer over real sockets on 127.0.0.1 with the real websockets client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import stat
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from qasr.config import paths
from qasr import protocol
from qasr.protocol import ErrorCode, ProtocolError
from qasr.daemon.server.ws_server import (
    BaseServerHandler,
    EventServer,
    HttpReply,
    IngestRequest,
    ServerOptions,
    load_or_create_token,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def private_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path


class ChecksumSink:
    """Real ingestion code path: checks dtype, counts samples and hashes the exact float32 bytes it gets."""

    def __init__(self, server: EventServer, client_id: str, request: IngestRequest):
        self.server, self.client_id, self.request = server, client_id, request
        self.samples = 0
        self.digest = hashlib.sha256()
        self.total = 0.0
        self.seq = 0
        self.cancelled = False

    def feed(self, samples: np.ndarray) -> None:
        assert samples.dtype == np.float32 and samples.ndim == 1
        self.samples += samples.size
        self.digest.update(samples.tobytes())
        self.total += float(samples.astype(np.float64).sum())
        self.seq += 1
        seconds = self.samples / protocol.TARGET_SAMPLE_RATE
        self.server.send_to(
            self.client_id, protocol.partial("ingest-1", self.seq, "", str(self.samples), 0.0, seconds)
        )

    def end(self) -> dict:
        self.seq += 1
        seconds = self.samples / protocol.TARGET_SAMPLE_RATE
        self.server.send_to(
            self.client_id,
            protocol.final(
                "ingest-1", self.seq, f"{self.samples} samples", self.request.language, [self.samples % 151936],
                0.0, seconds, {"compute_ms": 1.0, "latency_ms": 2.0},
            ),
        )
        return {"sha256": self.digest.hexdigest(), "sum": self.total}

    def cancel(self) -> None:
        self.cancelled = True


class RecordingHandler(BaseServerHandler):
    def __init__(self):
        self.server: EventServer | None = None
        self.commands: list[tuple[str, dict]] = []
        self.sinks: list[ChecksumSink] = []
        self.state = "idle"

    def hello_info(self) -> dict:
        return {"model": "tiny-test", "state": self.state}

    def on_command(self, client_id: str, msg: dict) -> dict | None:
        self.commands.append((client_id, msg))
        if msg["type"] == "stop" and self.state == "idle":
            raise ProtocolError(ErrorCode.INVALID_STATE, "not recording; nothing to stop")
        if msg["type"] == "start":
            self.state = "recording"
        return {"state": self.state}

    def open_ingest(self, client_id: str, request: IngestRequest) -> ChecksumSink:
        sink = ChecksumSink(self.server, client_id, request)
        self.sinks.append(sink)
        return sink

    def health_info(self) -> dict:
        return {"ok": True, "state": self.state, "model": "tiny-test"}

    def metrics_info(self) -> dict:
        return {"engine_loaded": 1}

    def http_response(self, path, query):
        if path == "/captions":
            return HttpReply(200, "text/html; charset=utf-8", b"<html>captions</html>")
        return None


@contextlib.asynccontextmanager
async def running(**options):
    handler = RecordingHandler()
    server = EventServer(ServerOptions(port=0, **options), handler)
    handler.server = server
    await server.start()
    try:
        yield server, handler
    finally:
        await server.stop()


def auth(server: EventServer) -> dict:
    return {"Authorization": f"Bearer {server.token}"}


async def recv_json(ws, timeout: float = 5.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, etype: str, timeout: float = 10.0) -> tuple[dict, list[dict]]:
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        event = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        seen.append(event)
        if event["type"] == etype:
            return event, seen


def http_get(url: str, headers: dict | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


# ---- start-up ----------------------------------------------------------------------------------


def test_start_writes_token_and_info_file_and_stop_removes_it():
    async def main():
        async with running() as (server, _):
            info = json.loads(paths.server_info_file().read_text())
            assert info["port"] == server.port > 0
            assert info["ws_url"] == f"ws://127.0.0.1:{server.port}/"
            assert info["http_url"] == f"http://127.0.0.1:{server.port}"
            assert info["pid"] == os.getpid()
            assert info["token_file"] == str(paths.token_file())
            token_mode = stat.S_IMODE(paths.token_file().stat().st_mode)
            assert token_mode == 0o600
            assert stat.S_IMODE(paths.server_info_file().stat().st_mode) == 0o600
            assert paths.token_file().read_text().strip() == server.token
            assert len(server.token) >= 32
            sockname = server._server.sockets[0].getsockname()
            assert sockname[0] == "127.0.0.1"
        assert not paths.server_info_file().exists()

    asyncio.run(main())


def test_token_is_reused_and_permissions_repaired(tmp_path):
    path = tmp_path / "t" / "token"
    first = load_or_create_token(path)
    os.chmod(path, 0o644)
    assert load_or_create_token(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# ---- authentication and origin -------------------------------------------------------------------


def test_authentication_and_origin_rules():
    async def main():
        async with running(allowed_origins=("https://captions.example",)) as (server, _):
            url = server.ws_url

            with pytest.raises(InvalidStatus) as missing:
                await connect(url)
            assert missing.value.response.status_code == 401
            assert b"missing token" in missing.value.response.body

            with pytest.raises(InvalidStatus) as wrong:
                await connect(url, additional_headers={"Authorization": "Bearer " + "x" * len(server.token)})
            assert wrong.value.response.status_code == 401

            with pytest.raises(InvalidStatus) as wrong_query:
                await connect(url + "?token=nope")
            assert wrong_query.value.response.status_code == 401

            async with connect(f"{url}?token={server.token}") as ws:
                hello = await recv_json(ws)
                assert hello["type"] == "hello" and hello["protocol"] == "qasr.v1"

            with pytest.raises(InvalidStatus) as foreign:
                await connect(url, additional_headers=auth(server), origin="https://evil.example")
            assert foreign.value.response.status_code == 403
            assert b"not allowed" in foreign.value.response.body

            for origin in (f"http://127.0.0.1:{server.port}", "https://captions.example"):
                async with connect(f"{url}?token={server.token}", origin=origin) as ws:
                    assert (await recv_json(ws))["type"] == "hello"

            # A browser on a foreign origin cannot get in even with the right token.
            with pytest.raises(InvalidStatus) as foreign_with_token:
                await connect(f"{url}?token={server.token}", origin="http://127.0.0.1:1")
            assert foreign_with_token.value.response.status_code == 403
            assert server.metrics.counter("rejected_auth") == 3
            assert server.metrics.counter("rejected_origin") == 2

    asyncio.run(main())


def test_client_limit_refuses_extra_connections():
    async def main():
        async with running(max_clients=2) as (server, _):
            async with connect(server.ws_url, additional_headers=auth(server)) as a, connect(
                server.ws_url, additional_headers=auth(server)
            ) as b:
                await recv_json(a), await recv_json(b)
                assert server.clients_count == 2
                with pytest.raises(InvalidStatus) as full:
                    await connect(server.ws_url, additional_headers=auth(server))
                assert full.value.response.status_code == 503
            await asyncio.sleep(0.1)
            async with connect(server.ws_url, additional_headers=auth(server)) as c:
                assert (await recv_json(c))["type"] == "hello"

    asyncio.run(main())


# ---- messages ----------------------------------------------------------------------------------


def test_hello_commands_acks_and_errors():
    async def main():
        async with running() as (server, handler):
            async with connect(server.ws_url, additional_headers=auth(server)) as ws:
                hello = await recv_json(ws)
                assert hello["model"] == "tiny-test" and hello["state"] == "idle"
                assert hello["sample_rate"] == 16000 and hello["client_id"].startswith("c")
                assert hello["limits"]["max_message_bytes"] == server.options.max_message_bytes

                await ws.send("{not json")
                err = await recv_json(ws)
                assert err["type"] == "error" and err["code"] == "bad_json"

                await ws.send(json.dumps({"type": "fly", "id": 7}))
                err = await recv_json(ws)
                assert err["code"] == "unknown_type" and err["id"] == 7

                await ws.send(json.dumps({"type": "stop", "id": "s1"}))
                err = await recv_json(ws)
                assert (err["code"], err["id"], err["command"]) == ("invalid_state", "s1", "stop")

                await ws.send(json.dumps({"type": "start", "id": "a"}))
                ack = await recv_json(ws)
                assert ack == {"type": "ack", "command": "start", "id": "a", "state": "recording"}

                await ws.send(json.dumps({"type": "set", "language": "English", "context": "qasr"}))
                ack = await recv_json(ws)
                assert ack["command"] == "set" and "id" not in ack
                assert handler.commands[-1][1]["language"] == "English"
                assert handler.commands[-1][0] == hello["client_id"]

                await ws.send(json.dumps({"type": "set", "language": 5, "id": 9}))
                assert (await recv_json(ws))["code"] == "bad_message"

                await ws.send(json.dumps({"type": "ping", "id": "p"}))
                assert await recv_json(ws) == {"type": "pong", "id": "p"}
                await ws.send(b"\x00\x01")
                assert (await recv_json(ws))["code"] == "no_ingest"

    asyncio.run(main())


def test_deeply_nested_message_is_bad_message_without_a_traceback(caplog):
    deep = 100_000

    async def main():
        async with running() as (server, _):
            async with connect(server.ws_url, additional_headers=auth(server)) as ws:
                await recv_json(ws)  # hello
                for frame in ("[" * deep + "]" * deep, '{"type":"start","x":' + "[" * deep + "]" * deep + "}"):
                    await ws.send(frame)
                    err = await recv_json(ws)
                    assert err == {"type": "error", "code": "bad_message", "message": "message is nested too deeply"}
                await ws.send(json.dumps({"type": "ping", "id": 1}))  # the connection is still fine
                assert await recv_json(ws) == {"type": "pong", "id": 1}

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR], caplog.text
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text


def test_oversize_frame_closes_with_1009():
    async def main():
        async with running(max_message_bytes=4096) as (server, _):
            async with connect(server.ws_url, additional_headers=auth(server)) as ws:
                await recv_json(ws)
                await ws.send(json.dumps({"type": "set", "context": "x" * 5000}))
                with pytest.raises(ConnectionClosed):
                    await recv_json(ws)
                assert ws.close_code == 1009

    asyncio.run(main())


def test_rate_limit_drops_then_recovers_and_flood_is_closed():
    async def main():
        async with running(commands_per_second=5, command_burst=5, rate_violation_limit=1000) as (server, _):
            async with connect(server.ws_url, additional_headers=auth(server)) as ws:
                await recv_json(ws)
                for i in range(12):
                    await ws.send(json.dumps({"type": "ping", "id": i}))
                replies = []
                with contextlib.suppress(asyncio.TimeoutError):
                    while True:
                        replies.append(await recv_json(ws, timeout=0.5))
                pongs = [r for r in replies if r["type"] == "pong"]
                errors = [r for r in replies if r["type"] == "error"]
                assert 5 <= len(pongs) < 12
                assert errors and all(e["code"] == "rate_limited" for e in errors)
                await asyncio.sleep(0.5)
                await ws.send(json.dumps({"type": "ping", "id": "later"}))
                assert await recv_json(ws) == {"type": "pong", "id": "later"}
            assert server.metrics.counter("rate_limited") >= 1

        async with running(commands_per_second=5, command_burst=5, rate_violation_limit=10) as (server, _):
            async with connect(server.ws_url, additional_headers=auth(server)) as ws:
                await recv_json(ws)
                with contextlib.suppress(ConnectionClosed):
                    for i in range(200):
                        await ws.send(json.dumps({"type": "ping"}))
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await recv_json(ws)
                assert ws.close_code == 1008
                assert "rate limit" in ws.close_reason

    asyncio.run(main())


def test_subscribe_filters_broadcasts_but_not_replies():
    async def main():
        async with running() as (server, _):
            async with connect(server.ws_url, additional_headers=auth(server)) as ws:
                await recv_json(ws)
                await ws.send(json.dumps({"type": "subscribe", "events": ["final"], "id": 1}))
                assert (await recv_json(ws))["events"] == ["final"]
                server.publish(protocol.partial("u1", 1, "hel", "lo", 0, 1))
                server.publish(protocol.state("recording"))
                server.publish(protocol.final("u1", 2, "hello", "English", [1, 2], 0, 1))
                event = await recv_json(ws)
                assert event["type"] == "final" and event["text"] == "hello"

    asyncio.run(main())


# ---- ingestion -----------------------------------------------------------------------------------


async def ingest(server, pcm: bytes, fmt: str, rate: int, channels: int = 1, chunk: int = 3001, segment="none"):
    async with connect(server.ws_url, additional_headers=auth(server)) as ws:
        await recv_json(ws)
        await ws.send(
            json.dumps({"type": "audio.start", "format": fmt, "sample_rate": rate, "channels": channels,
                        "segment": segment, "language": "English", "id": "up"})
        )
        ack = await recv_json(ws)
        assert ack["type"] == "ack" and ack["command"] == "audio.start" and ack["id"] == "up"
        for start in range(0, len(pcm), chunk):  # odd chunk sizes split samples across frames
            await ws.send(pcm[start : start + chunk])
        await ws.send(json.dumps({"type": "audio.end", "id": "end"}))
        done, seen = await recv_until(ws, "ack", timeout=30)
        assert done["command"] == "audio.end" and done["id"] == "end"
        finals = [e for e in seen if e["type"] == "final"]
        partials = [e for e in seen if e["type"] == "partial"]
        return done, finals, partials


def test_ingest_s16le_round_trip_is_exact():
    rng = np.random.default_rng(1)
    ints = rng.integers(-32768, 32767, size=48_000, dtype=np.int16)
    pcm = ints.astype("<i2").tobytes()
    expected = (ints.astype(np.float32) / np.float32(32768.0)).astype(np.float32)

    async def main():
        async with running() as (server, handler):
            done, finals, partials = await ingest(server, pcm, "s16le", 16000)
            assert done["samples"] == expected.size and done["bytes"] == len(pcm)
            assert done["sha256"] == hashlib.sha256(expected.tobytes()).hexdigest()
            assert done["sum"] == pytest.approx(float(expected.astype(np.float64).sum()), abs=1e-6)
            assert len(finals) == 1 and finals[0]["text"] == f"{expected.size} samples"
            assert finals[0]["token_ids"] == [expected.size % 151936]
            assert finals[0]["language"] == "English"
            assert partials and int(partials[-1]["tentative"]) <= expected.size
            assert handler.sinks[0].request.segment == "none"
            assert server.metrics.snapshot()["series"]["rtf"]["count"] == 1

    asyncio.run(main())


def test_ingest_f32le_stereo_48k_is_downmixed_and_resampled():
    rng = np.random.default_rng(2)
    stereo = rng.uniform(-0.5, 0.5, size=(48_000, 2)).astype(np.float32)
    pcm = stereo.astype("<f4").tobytes()
    mono = stereo.mean(axis=1, dtype=np.float32)
    reference = soxr.resample(mono, 48000, 16000, quality="HQ")

    async def main():
        async with running() as (server, handler):
            done, finals, _ = await ingest(server, pcm, "f32le", 48000, channels=2, chunk=4099)
            assert abs(done["samples"] - reference.size) <= 2
            assert done["sum"] == pytest.approx(float(reference.astype(np.float64).sum()), abs=0.05)
            assert finals[0]["audio_end"] == pytest.approx(1.0, abs=0.01)

    asyncio.run(main())


def test_ingest_errors_and_disconnect_cancels():
    async def main():
        async with running() as (server, handler):
            async with connect(server.ws_url, additional_headers=auth(server)) as ws:
                await recv_json(ws)
                await ws.send(json.dumps({"type": "audio.start", "format": "mp3", "sample_rate": 16000}))
                assert (await recv_json(ws))["code"] == "bad_message"
                await ws.send(json.dumps({"type": "audio.end"}))
                assert (await recv_json(ws))["code"] == "no_ingest"
                await ws.send(json.dumps({"type": "audio.start", "format": "f32le", "sample_rate": 16000}))
                assert (await recv_json(ws))["type"] == "ack"
                await ws.send(json.dumps({"type": "audio.start", "format": "f32le", "sample_rate": 16000}))
                assert (await recv_json(ws))["code"] == "ingest_active"
                await ws.send(np.full(4, np.nan, dtype="<f4").tobytes())
                err = await recv_json(ws)
                assert err["code"] == "bad_audio"
                assert handler.sinks[0].cancelled
                await ws.send(json.dumps({"type": "audio.start", "format": "s16le", "sample_rate": 16000}))
                assert (await recv_json(ws))["type"] == "ack"
                await ws.send(np.zeros(160, "<i2").tobytes())
                await recv_json(ws)  # partial
            for _ in range(50):
                if handler.sinks[1].cancelled:
                    break
                await asyncio.sleep(0.02)
            assert handler.sinks[1].cancelled
            assert server.clients_count == 0

    asyncio.run(main())


# ---- fan-out and back-pressure ---------------------------------------------------------------------


def test_twenty_clients_receive_a_final_published_from_a_worker_thread():
    async def main():
        async with running() as (server, _):
            clients = [await connect(server.ws_url, additional_headers=auth(server)) for _ in range(20)]
            try:
                for ws in clients:
                    await recv_json(ws)
                assert server.clients_count == 20
                event = protocol.final("u9", 3, "привет 世界", "Russian", [5, 6], 1.0, 2.5, {"latency_ms": 120}, "xtest")
                worker = threading.Thread(target=server.publish, args=(event,))
                worker.start()
                worker.join()
                received = await asyncio.gather(*(recv_json(ws) for ws in clients))
                assert all(r == event for r in received)
            finally:
                await asyncio.gather(*(ws.close() for ws in clients))

    asyncio.run(main())


async def connect_stalling(server):
    """A client that stops reading: tiny kernel receive buffer and a one-message library queue."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.setblocking(False)
    return await connect(server.ws_url, additional_headers=auth(server), max_queue=1, sock=sock)


def test_stalled_client_loses_only_partials_and_slows_no_one():
    big = "x" * 60_000
    n_partials = 150

    async def main():
        async with running(ping_interval=None) as (server, _):
            fast = [await connect(server.ws_url, additional_headers=auth(server)) for _ in range(3)]
            stalled = await connect_stalling(server)
            for ws in fast:
                await recv_json(ws)

            async def drain_fast(ws):
                finals = []
                while len(finals) < 2:
                    event = await recv_json(ws, timeout=20)
                    if event["type"] == "final":
                        finals.append((event, time.monotonic()))
                return finals

            tasks = [asyncio.create_task(drain_fast(ws)) for ws in fast]
            started = time.monotonic()
            for seq in range(n_partials):
                server.publish(protocol.partial("u1", seq, "", big, 0, seq * 0.1))
                if seq % 10 == 0:
                    await asyncio.sleep(0)
            server.publish(protocol.final("u1", n_partials, "first", "English", [1], 0, 15))
            server.publish(protocol.final("u2", 0, "second", "English", [2], 15, 16))
            results = await asyncio.gather(*tasks)
            for finals in results:
                assert [f[0]["text"] for f in finals] == ["first", "second"]
                assert finals[-1][1] - started < 10.0
            # The stalled client's queue got coalesced partials; now read everything it has.
            await asyncio.sleep(0.2)
            got = []
            while True:
                event = await recv_json(stalled, timeout=10)
                got.append(event)
                if event["type"] == "final" and event["text"] == "second":
                    break
            partials = [e for e in got if e["type"] == "partial"]
            finals = [e["text"] for e in got if e["type"] == "final"]
            assert finals == ["first", "second"]
            assert len(partials) < n_partials
            seqs = [p["seq"] for p in partials]
            assert seqs == sorted(seqs)
            assert server.metrics.counter("partials_dropped") >= n_partials - len(partials)
            for ws in fast + [stalled]:
                await ws.close()

    asyncio.run(main())


def test_client_that_never_reads_is_disconnected_with_4000():
    async def main():
        async with running(max_queued_events=30, ping_interval=None) as (server, _):
            stalled = await connect_stalling(server)
            reader = await connect(server.ws_url, additional_headers=auth(server))
            await recv_json(reader)

            async def read_all():
                return [(await recv_json(reader))["n"] for _ in range(100)]

            reading = asyncio.create_task(read_all())
            big = "y" * 50_000
            for i in range(100):
                server.publish(protocol.warning("test", big, n=i))
                await asyncio.sleep(0.001)
            while server.metrics.counter("slow_client_disconnects") == 0:
                await asyncio.sleep(0.01)
            # The close frame waits behind what is already buffered: read it before close_timeout aborts.
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await asyncio.wait_for(stalled.recv(), 10)
            assert stalled.close_code == 4000
            assert "too slow" in stalled.close_reason
            assert await reading == list(range(100))  # the other client got everything
            assert server.metrics.counter("slow_client_disconnects") == 1
            await reader.close()

    asyncio.run(main())


# ---- HTTP ----------------------------------------------------------------------------------------


def test_health_metrics_and_app_pages_over_http():
    async def main():
        before = time.monotonic()
        async with running() as (server, _):
            base = server.http_url
            async with connect(server.ws_url, additional_headers=auth(server)) as ws:
                await recv_json(ws)
                server.publish(protocol.final("u1", 0, "hi", "English", [1], 0.0, 2.0, {"latency_ms": 300, "compute_ms": 500}))
                server.publish(protocol.final("u2", 0, "yo", "English", [1], 2.0, 3.0, {"latency_ms": 100, "compute_ms": 100}))
                await recv_json(ws), await recv_json(ws)

                status, ctype, body = await asyncio.to_thread(http_get, base + "/health")
                health = json.loads(body)
                assert status == 200 and ctype == "application/json"
                assert health["ok"] is True and health["state"] == "idle" and health["model"] == "tiny-test"
                assert health["clients"] == 1 and 0 <= health["uptime_s"] <= time.monotonic() - before + 0.01

                status, ctype, body = await asyncio.to_thread(http_get, base + "/metrics?format=json")
                metrics = json.loads(body)
                assert status == 200 and metrics["clients"] == 1
                latency = metrics["series"]["final_latency_ms"]
                assert latency["count"] == 2 and latency["p50"] == pytest.approx(200.0)
                assert latency["p95"] == pytest.approx(290.0)
                assert metrics["series"]["rtf"]["p50"] == pytest.approx((0.25 + 0.1) / 2)
                assert metrics["app"] == {"engine_loaded": 1}

                status, ctype, body = await asyncio.to_thread(http_get, base + "/metrics")
                assert status == 200 and ctype.startswith("text/plain")
                assert 'qasr_final_latency_ms{quantile="0.5"} 200.0' in body
                assert "qasr_clients 1" in body and "qasr_engine_loaded 1" in body

            status, _, body = await asyncio.to_thread(http_get, base + "/captions")
            assert status == 401 and "token" in body
            status, ctype, body = await asyncio.to_thread(http_get, f"{base}/captions?token={server.token}")
            assert (status, ctype, body) == (200, "text/html; charset=utf-8", "<html>captions</html>")
            status, _, _ = await asyncio.to_thread(http_get, f"{base}/nothing?token={server.token}")
            assert status == 404

    asyncio.run(main())


def test_stop_closes_clients_with_going_away_and_publish_after_stop_is_harmless():
    async def main():
        handler = RecordingHandler()
        server = EventServer(ServerOptions(port=0), handler)
        await server.start()
        ws = await connect(server.ws_url, additional_headers=auth(server))
        await recv_json(ws)
        await server.stop()
        with pytest.raises(ConnectionClosed):
            await recv_json(ws)
        assert ws.close_code == 1001
        server.publish(protocol.state("idle"))
        assert server.clients_count == 0

    asyncio.run(main())


def test_blocking_handler_calls_do_not_starve_other_clients():
    release = threading.Event()

    class BlockingSink(ChecksumSink):
        def end(self) -> dict:
            release.wait(30)
            return super().end()

    class AsyncCommands(RecordingHandler):
        def open_ingest(self, client_id, request):
            sink = BlockingSink(self.server, client_id, request)
            self.sinks.append(sink)
            return sink

        async def on_command(self, client_id, msg):  # coroutine handlers run on the loop
            return {"on_loop": threading.current_thread() is threading.main_thread()}

    async def main():
        handler = AsyncCommands()
        server = EventServer(ServerOptions(port=0), handler)
        handler.server = server
        await server.start()
        blocked = []
        try:
            for _ in range(8):  # more than asyncio's default executor has threads on a small machine
                ws = await connect(server.ws_url, additional_headers=auth(server))
                await recv_json(ws)
                await ws.send(json.dumps({"type": "audio.start", "format": "s16le", "sample_rate": 16000}))
                await recv_json(ws)
                await ws.send(json.dumps({"type": "audio.end"}))
                blocked.append(ws)
            await asyncio.sleep(0.2)
            async with connect(server.ws_url, additional_headers=auth(server)) as other:
                hello = await recv_json(other, timeout=5)
                assert hello["state"] == "idle"
                await other.send(json.dumps({"type": "start", "id": 1}))
                assert await recv_json(other, timeout=5) == {"type": "ack", "command": "start", "id": 1, "on_loop": True}
            release.set()
            for ws in blocked:
                done, _ = await recv_until(ws, "ack")
                assert done["command"] == "audio.end" and done["samples"] == 0
        finally:
            release.set()
            for ws in blocked:
                await ws.close()
            await server.stop()

    asyncio.run(main())
