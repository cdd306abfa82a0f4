"""Python client library and `qasr-daemon listen` against a real EventServer on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from qasr.clients.client import (
    Ack,
    CommandFailed,
    DaemonNotRunning,
    Disconnected,
    Error,
    Final,
    Hello,
    Partial,
    Pong,
    QasrClient,
    ReconnectPolicy,
    State,
    Unknown,
    Vad,
    Warning,
    discover,
    iter_events,
    parse_event,
    send_command,
    transcribe_pcm,
)
from qasr.config import paths
from qasr.errors import QasrError
from qasr import protocol
from qasr.daemon.cli.cmd_listen import CLEAR_LINE, DIM, RESET, TranscriptPrinter
from qasr.daemon.server.ws_server import EventServer, ServerOptions
from tests.test_ws_server import RecordingHandler, running

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def private_runtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    return tmp_path


FAST_RECONNECT = ReconnectPolicy(initial_delay=0.05, max_delay=0.3)


async def next_of(client: QasrClient, cls, timeout: float = 10.0):
    """Next event of type ``cls``, skipping others."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        event = await client.next_event(max(0.01, deadline - asyncio.get_running_loop().time()))
        if isinstance(event, cls):
            return event


def test_parse_event_gives_typed_events_and_keeps_raw():
    final = protocol.final("u1", 4, "hello world", "English", [9, 8], 0.5, 2.0, {"latency_ms": 80}, "xtest", source="mic")
    event = parse_event(final)
    assert isinstance(event, Final)
    assert (event.text, event.token_ids, event.sink, event.audio_end) == ("hello world", [9, 8], "xtest", 2.0)
    assert event.raw["source"] == "mic" and event.type == "final"
    part = parse_event(protocol.partial("u1", 3, "hello ", "wor", 0.5, 1.5))
    assert isinstance(part, Partial) and part.text == "hello wor" and part.seq == 3
    assert parse_event(protocol.state("recording")) == State(state="recording")
    assert parse_event(protocol.vad(True, 1.25, "u2")) == Vad(speech=True, time=1.25, utterance_id="u2")
    err = parse_event(protocol.error("bad_json", "nope", 5, "set"))
    assert isinstance(err, Error) and (err.code, err.id, err.command) == ("bad_json", 5, "set")
    assert isinstance(parse_event(protocol.warning("w", "careful")), Warning)
    ack = parse_event(protocol.ack("start", "a1", state="recording"))
    assert isinstance(ack, Ack) and ack.result == {"state": "recording"}
    assert isinstance(parse_event({"type": "from.the.future", "x": 1}), Unknown)
    hello = parse_event(protocol.hello("c1", "m", state="idle"))
    assert isinstance(hello, Hello) and hello.protocol == "qasr.v1" and hello.state == "idle"


def test_discover_reports_missing_and_stale_daemons():
    with pytest.raises(DaemonNotRunning, match="not running"):
        discover()
    paths.ensure_private_dir(paths.runtime_dir())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    paths.server_info_file().write_text(json.dumps({"ws_url": "ws://127.0.0.1:9/", "pid": dead.pid, "port": 9}))
    with pytest.raises(DaemonNotRunning, match="stale"):
        discover()
    paths.server_info_file().write_text(
        json.dumps({"ws_url": "ws://127.0.0.1:9/", "pid": os.getpid(), "port": 9, "token_file": str(paths.token_file())})
    )
    paths.token_file().write_text("secret\n")
    info = discover()
    assert (info.ws_url, info.port, info.token) == ("ws://127.0.0.1:9/", 9, "secret")


def test_connect_without_daemon_is_one_clear_error():
    async def main():
        with pytest.raises(DaemonNotRunning) as exc:
            await QasrClient().connect()
        assert "\n" not in str(exc.value)
        with pytest.raises(DaemonNotRunning, match="cannot reach"):
            await QasrClient(url="ws://127.0.0.1:9/", token="x").connect()

    asyncio.run(main())


def test_refusals_become_one_line_errors():
    async def main():
        async with running(max_clients=1) as (server, _):
            with pytest.raises(QasrError, match="invalid token"):
                await QasrClient(token="wrong").connect()
            async with QasrClient():
                with pytest.raises(QasrError, match="too many clients") as exc:
                    await QasrClient().connect()
                assert "\n" not in str(exc.value)

    asyncio.run(main())


def test_events_and_commands_round_trip():
    async def main():
        async with running() as (server, handler):
            async with QasrClient() as client:
                assert isinstance(await client.next_event(5), Hello)
                assert client.hello.model == "tiny-test"
                ack = await client.start()
                assert ack.command == "start" and ack.result["state"] == "recording"
                await client.set(language="German", context="Kubernetes")
                assert handler.commands[-1][1] == {"type": "set", "id": handler.commands[-1][1]["id"],
                                                   "language": "German", "context": "Kubernetes"}
                assert isinstance(await client.ping(), Pong)
                server.publish(protocol.partial("u1", 1, "guten ", "Tag", 0, 1))
                partial = await next_of(client, Partial)
                server.publish(protocol.final("u1", 2, "guten Tag", "German", [1, 2, 3], 0, 1.2))
                final = await next_of(client, Final)
                assert partial.text == "guten Tag" and final.token_ids == [1, 2, 3]
            handler.state = "idle"
            async with QasrClient() as client:
                with pytest.raises(CommandFailed) as failed:
                    await client.stop()
                assert failed.value.code == "invalid_state"

    asyncio.run(main())


def test_client_skips_frames_it_cannot_parse_even_absurdly_nested_ones(caplog):
    """A server frame that is not a JSON object (or nested 100 000 deep) is skipped; the link stays up."""
    from websockets.asyncio.server import serve

    async def fake_daemon(ws):
        await ws.send(protocol.encode(protocol.hello("c1", "m")))
        await ws.send("[" * 100_000 + "]" * 100_000)
        await ws.send("{not json")
        await ws.send(protocol.encode(protocol.final("u", 1, "still here", None, [], 0, 1)))
        await ws.wait_closed()

    async def main():
        async with serve(fake_daemon, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with QasrClient(url=f"ws://127.0.0.1:{port}/", token="t", reconnect=False) as client:
                assert isinstance(await client.next_event(5), Hello)
                event = await client.next_event(5)
                assert isinstance(event, Final) and event.text == "still here"
                assert client.connected

    asyncio.run(main())
    assert "RecursionError" not in caplog.text and not [r for r in caplog.records if r.exc_info]


def test_transcribe_pcm_returns_finals_for_this_client_only():
    ints = (np.sin(np.arange(32_000) / 10.0) * 20000).astype(np.int16)

    async def main():
        async with running() as (server, handler):
            async with QasrClient() as listener:
                await next_of(listener, Hello)
                finals = await transcribe_pcm(ints, 16000, language="English")
                assert len(finals) == 1
                assert finals[0].text == "32000 samples" and finals[0].token_ids == [32000]
                assert finals[0].language == "English"
                floats = np.random.default_rng(0).uniform(-1, 1, (24_000, 2)).astype(np.float32)
                finals = await transcribe_pcm(floats, 48000)
                assert abs(int(finals[0].text.split()[0]) - 8000) <= 2
                with pytest.raises(CommandFailed, match="NaN"):
                    await transcribe_pcm(np.full(100, np.nan, np.float32), 16000)
                # The listener (another client) saw none of it.
                with pytest.raises(asyncio.TimeoutError):
                    await next_of(listener, Final, timeout=0.3)

    asyncio.run(main())


def test_client_reconnects_after_server_restart_on_same_port():
    async def main():
        handler = RecordingHandler()
        first = EventServer(ServerOptions(port=0), handler)
        await first.start()
        port = first.port
        client = QasrClient(reconnect=FAST_RECONNECT)
        await client.connect()
        await next_of(client, Hello)
        first.publish(protocol.final("a", 0, "before", "English", [1], 0, 1))
        assert (await next_of(client, Final)).text == "before"

        await first.stop()
        lost = await next_of(client, Disconnected)
        assert "1001" in lost.reason
        await asyncio.sleep(0.4)  # a few failed attempts while nothing listens
        second = EventServer(ServerOptions(port=port), handler)
        await second.start()
        try:
            hello = await next_of(client, Hello)
            assert hello.protocol == "qasr.v1"
            second.publish(protocol.final("b", 0, "after", "English", [2], 0, 1))
            assert (await next_of(client, Final)).text == "after"
            assert (await client.start()).command == "start"
        finally:
            await client.close()
            await second.stop()

    asyncio.run(main())


def test_blocking_iter_events_and_send_command():
    async def main():
        async with running() as (server, handler):
            events = iter_events()
            assert isinstance(await asyncio.to_thread(next, events), Hello)
            server.publish(protocol.final("u1", 0, "blocking works", "English", [7], 0, 1))
            final = await asyncio.to_thread(next, events)
            assert isinstance(final, Final) and final.text == "blocking works"
            await asyncio.to_thread(events.close)
            ack = await asyncio.to_thread(send_command, "toggle")
            assert ack.command == "toggle" and handler.commands[-1][1]["type"] == "toggle"

    asyncio.run(main())


def test_iter_events_raises_when_no_daemon():
    with pytest.raises(DaemonNotRunning):
        next(iter_events())


# ---- listen ------------------------------------------------------------------------------------


def test_printer_redraws_partials_on_a_terminal_and_prints_finals_on_their_own_line():
    out = io.StringIO()
    printer = TranscriptPrinter(out, live=True, width=21)
    printer.show(parse_event(protocol.partial("u", 1, "hello ", "wor", 0, 1)))
    printer.show(parse_event(protocol.partial("u", 2, "hello world ", "and more text", 0, 2)))
    printer.show(parse_event(protocol.final("u", 3, "hello world and more.", "English", [1], 0, 2)))
    first, second = out.getvalue().split(CLEAR_LINE)[1:3]
    assert first == f"hello {DIM}wor{RESET}"
    assert second == f" world {DIM}and more text{RESET}"  # the tail that fits in 20 columns
    assert out.getvalue().endswith(CLEAR_LINE + "hello world and more.\n")

    piped = io.StringIO()
    printer = TranscriptPrinter(piped, live=False)
    printer.show(parse_event(protocol.partial("u", 1, "hel", "lo", 0, 1)))
    printer.show(parse_event(protocol.final("u", 2, "hello", "English", [1], 0, 1)))
    assert piped.getvalue() == "hello\n"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "qasr.daemon.cli.main", *args]


def test_listen_without_daemon_prints_one_line_and_fails():
    result = subprocess.run(_cli("listen"), capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not running" in lines[0]


def test_listen_json_and_text_follow_the_daemon():
    async def read_lines(proc, n: int) -> list[str]:
        return [(await asyncio.wait_for(proc.stdout.readline(), 30)).decode() for _ in range(n)]

    async def main():
        async with running() as (server, _):
            json_proc = await asyncio.create_subprocess_exec(*_cli("listen", "--json"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            text_proc = await asyncio.create_subprocess_exec(*_cli("listen"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            try:
                hello = json.loads((await read_lines(json_proc, 1))[0])
                assert hello["type"] == "hello"
                while server.clients_count < 2:
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.2)  # let the text listener's subscribe arrive
                server.publish(protocol.partial("u1", 1, "one ", "two", 0, 1))
                assert json.loads((await read_lines(json_proc, 1))[0])["committed"] == "one "
                server.publish(protocol.final("u1", 2, "one two", "English", [1, 2], 0, 1))
                server.publish(protocol.final("u2", 0, "три", "Russian", [3], 1, 2))
                events = [json.loads(line) for line in await read_lines(json_proc, 2)]
                assert [e["type"] for e in events] == ["final", "final"]
                assert events[1]["text"] == "три" and events[0]["token_ids"] == [1, 2]
                assert await read_lines(text_proc, 2) == ["one two\n", "три\n"]
            finally:
                for proc in (json_proc, text_proc):
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
                    await proc.wait()

    asyncio.run(main())
