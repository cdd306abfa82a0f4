"""The WebSocket server's per-connection state (daemon/server/connection.py), driven without a socket."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from qasr import protocol
from qasr.daemon.server.connection import (
    CancelIngest,
    Close,
    Connection,
    ConnectionLimits,
    EndIngest,
    FeedIngest,
    IngestRequest,
    OpenIngest,
    RunCommand,
    TokenBucket,
)
from qasr.errors import QasrError
from qasr.protocol import CloseCode, ErrorCode, ProtocolError


def drain(conn: Connection) -> list[dict]:
    out = []
    while (data := conn.next_outgoing()) is not None:
        out.append(json.loads(data))
    return out


def text(msg: dict) -> str:
    return json.dumps(msg)


class Sink:
    def __init__(self):
        self.fed: list[np.ndarray] = []

    def feed(self, samples):
        self.fed.append(samples)

    def end(self):
        return {"utterances": 1}

    def cancel(self):
        pass


def opened(conn: Connection, now: float = 0.0, **fields) -> Sink:
    request = conn.receive_text(text({"type": "audio.start", "id": "a", "format": "s16le", "sample_rate": 16000, **fields}), now)
    assert isinstance(request, OpenIngest) and isinstance(request.request, IngestRequest)
    sink = Sink()
    assert conn.complete(request, sink) is None
    assert drain(conn) == [{"type": "ack", "command": "audio.start", "sample_rate": 16000, "id": "a"}]
    return sink


# ---- outgoing queue ----------------------------------------------------------------------------


def test_newer_partial_replaces_the_queued_one_and_its_final_drops_it():
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    conn.queue_event(protocol.partial("u1", 1, "", "a", 0, 1))
    conn.queue_event(protocol.partial("u2", 1, "", "x", 0, 1))
    conn.queue_event(protocol.partial("u1", 2, "", "ab", 0, 1))
    assert [(e["utterance_id"], e["seq"]) for e in drain(conn)] == [("u1", 2), ("u2", 1)]
    conn.queue_event(protocol.partial("u1", 3, "", "abc", 0, 1))
    conn.queue_event(protocol.final("u1", 4, "abc", None, [], 0, 1))
    conn.queue_event(protocol.partial("u1", 5, "", "next", 0, 1))  # after the final: queued again
    assert [(e["type"], e["seq"]) for e in drain(conn)] == [("final", 4), ("partial", 5)]
    assert conn.metrics.snapshot()["counters"]["partials_dropped"] == 2


def test_a_partial_sent_already_is_not_replaced_by_the_next_one():
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    conn.queue_event(protocol.partial("u", 1, "", "a", 0, 1))
    assert json.loads(conn.next_outgoing())["seq"] == 1
    conn.queue_event(protocol.partial("u", 2, "", "ab", 0, 1))
    conn.queue_event(protocol.partial("u", 3, "", "abc", 0, 1))
    assert [e["seq"] for e in drain(conn)] == [3]


def test_finals_are_never_dropped_and_a_slow_client_is_closed_with_4000():
    conn = Connection("c1", ConnectionLimits(max_queued_events=3), now=0.0)
    for i in range(3):
        assert conn.queue_event(protocol.final(f"u{i}", 0, str(i), None, [], 0, 1)) is None
    for i in range(50):  # partials never count against the limit
        assert conn.queue_event(protocol.partial("p", i, "", "x", 0, 1)) is None
    close = conn.queue_event(protocol.state("idle"))
    assert close == Close(CloseCode.SLOW_CLIENT, "client too slow: more than 3 events waiting")
    assert conn.closing and conn.next_outgoing() is None
    assert conn.queue_event(protocol.final("later", 0, "x", None, [], 0, 1)) is None and conn.next_outgoing() is None


def test_subscriptions_filter_broadcasts_but_never_replies():
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    assert all(conn.wants(t) for t in protocol.SUBSCRIBABLE)
    assert conn.receive_text(text({"type": "subscribe", "id": 1, "events": ["final"]}), 0.0) is None
    assert drain(conn) == [{"type": "ack", "command": "subscribe", "events": ["final"], "id": 1}]
    assert conn.wants("final") and not conn.wants("partial") and not conn.wants("state")
    assert conn.wants("ack") and conn.wants("pong") and conn.wants("hello")


# ---- requests and replies ----------------------------------------------------------------------


def test_ping_is_answered_at_once_and_commands_go_to_the_handler():
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    assert conn.receive_text(text({"type": "ping", "id": "p"}), 0.0) is None
    assert drain(conn) == [{"type": "pong", "id": "p"}]
    request = conn.receive_text(text({"type": "start", "id": 7}), 0.0)
    assert request == RunCommand({"type": "start", "id": 7})
    assert drain(conn) == []  # nothing until the handler answered
    conn.complete(request, {"state": "recording"})
    assert drain(conn) == [{"type": "ack", "command": "start", "state": "recording", "id": 7}]


@pytest.mark.parametrize(
    "exc,code,message",
    [
        (ProtocolError(ErrorCode.INVALID_STATE, "not recording"), ErrorCode.INVALID_STATE, "not recording"),
        (QasrError("no microphone"), ErrorCode.FAILED, "no microphone"),
        (ZeroDivisionError("x"), ErrorCode.INTERNAL, "internal error (ZeroDivisionError); see the daemon log"),
    ],
)
def test_handler_failures_become_error_replies_with_id_and_command(exc, code, message, caplog):
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    request = conn.receive_text(text({"type": "stop", "id": "s"}), 0.0)
    assert conn.fail(request, exc) is None
    assert drain(conn) == [{"type": "error", "code": code, "message": message, "command": "stop", "id": "s"}]
    bug = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(bug) == (1 if code == ErrorCode.INTERNAL else 0)


@pytest.mark.parametrize(
    "frame,reply",
    [
        ("{", {"type": "error", "code": "bad_json"}),
        (text({"type": "fly", "id": 3}), {"type": "error", "code": "unknown_type", "id": 3}),
        (text({"type": "set", "id": "x"}), {"type": "error", "code": "bad_message", "command": "set", "id": "x"}),
        ("[" * 100_000 + "]" * 100_000, {"type": "error", "code": "bad_message", "message": "message is nested too deeply"}),
    ],
)
def test_bad_frames_are_answered_without_reaching_the_handler(frame, reply, caplog):
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    assert conn.receive_text(frame, 0.0) is None
    (got,) = drain(conn)
    assert {k: got[k] for k in reply} == reply and "\n" not in got["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# ---- rate limits -------------------------------------------------------------------------------


def test_token_bucket_refills_with_the_time_passed_in():
    bucket = TokenBucket(rate=10, burst=2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0) and not bucket.take(0.0)
    assert not bucket.take(0.05) and bucket.take(0.15)
    assert bucket.debt_delay(0.15, 5) == pytest.approx(0.45)  # 0.5 left, 4.5 owed at 10/s


def test_excess_messages_get_one_rate_error_per_second_then_the_connection_is_closed():
    limits = ConnectionLimits(commands_per_second=10, command_burst=2, rate_violation_limit=3)
    conn = Connection("c1", limits, now=0.0)
    ping = text({"type": "ping"})
    assert conn.receive_text(ping, 0.0) is None and conn.receive_text(ping, 0.0) is None
    assert conn.receive_text(ping, 0.0) is None  # dropped: first violation, with an error
    assert conn.receive_text(ping, 0.0) is None  # dropped: no second error within the second
    events = drain(conn)
    assert [e["type"] for e in events] == ["pong", "pong", "error"]
    assert events[2]["code"] == ErrorCode.RATE_LIMITED and "more than 10 messages per second" in events[2]["message"]
    assert conn.receive_text(ping, 0.0) is None
    assert conn.receive_text(ping, 0.0) == Close(CloseCode.POLICY, "rate limit exceeded: too many messages")
    assert conn.closing


def test_rate_recovers_after_waiting():
    conn = Connection("c1", ConnectionLimits(commands_per_second=10, command_burst=1), now=0.0)
    ping = text({"type": "ping"})
    conn.receive_text(ping, 0.0)
    conn.receive_text(ping, 0.01)
    assert [e["type"] for e in drain(conn)] == ["pong", "error"]
    conn.receive_text(ping, 1.0)
    assert [e["type"] for e in drain(conn)] == ["pong"]


def test_audio_is_paced_not_refused():
    conn = Connection("c1", ConnectionLimits(audio_bytes_per_second=1000), now=0.0)
    assert conn.pace_audio(1000, 0.0) == 0.0
    assert conn.pace_audio(500, 0.0) == pytest.approx(0.5)
    assert conn.pace_audio(500, 1.5) == 0.0
    assert conn.metrics.snapshot()["counters"]["audio_bytes_received"] == 2000


# ---- ingestion state machine ---------------------------------------------------------------------


def test_audio_stream_open_feed_end():
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    opened(conn, segment="none", language="English")
    assert conn.ingest.request.segment == "none" and conn.ingest.request.language == "English"
    again = conn.receive_text(text({"type": "audio.start", "format": "s16le", "sample_rate": 16000}), 0.0)
    assert again is None and drain(conn)[0]["code"] == ErrorCode.INGEST_ACTIVE
    samples = np.array([0, 16384, -16384], dtype="<i2").tobytes()
    feed = conn.receive_binary(samples[:3], 0.0)  # one and a half frames
    assert isinstance(feed, FeedIngest)
    np.testing.assert_array_equal(feed.samples, [0.0])
    assert conn.complete(feed) is None
    feed = conn.receive_binary(samples[3:], 0.0)
    np.testing.assert_array_equal(feed.samples, [0.5, -0.5])
    end = conn.receive_text(text({"type": "audio.end", "id": "e"}), 0.0)
    assert isinstance(end, EndIngest) and end.tail.size == 0 and conn.ingest is None
    conn.complete(end, {"utterances": 1})
    assert drain(conn) == [{"type": "ack", "command": "audio.end", "bytes": 6, "samples": 3, "utterances": 1, "id": "e"}]


def test_audio_without_a_stream_is_one_error_per_second():
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    for now in (0.0, 0.1, 0.5):
        assert conn.receive_binary(b"\x00\x00", now) is None
    assert [e["code"] for e in drain(conn)] == [ErrorCode.NO_INGEST]
    assert conn.receive_binary(b"\x00\x00", 1.2) is None and len(drain(conn)) == 1
    for mtype in ("audio.end", "audio.cancel"):
        assert conn.receive_text(text({"type": mtype, "id": 1}), 2.0) is None
        (err,) = drain(conn)
        assert (err["code"], err["command"], err["id"]) == (ErrorCode.NO_INGEST, mtype, 1)


def test_undecodable_audio_cancels_the_stream_and_says_why():
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    opened(conn, format="f32le")
    cancel = conn.receive_binary(np.array([np.nan], "<f4").tobytes(), 0.0)
    assert isinstance(cancel, CancelIngest) and cancel.ingest is not None and conn.ingest is None
    assert drain(conn) == []  # the reply follows the sink's cancel
    conn.complete(cancel)
    (err,) = drain(conn)
    assert err["code"] == ErrorCode.BAD_AUDIO and err["message"].endswith("; the audio stream was cancelled")


def test_a_failing_sink_cancels_the_stream_with_an_internal_error(caplog):
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    opened(conn)
    feed = conn.receive_binary(b"\x00\x00", 0.0)
    cancel = conn.fail(feed, RuntimeError("boom"))
    assert isinstance(cancel, CancelIngest) and conn.ingest is None
    assert conn.fail(cancel, RuntimeError("cannot cancel")) is None  # logged; the reply goes out anyway
    (err,) = drain(conn)
    assert err == {"type": "error", "code": "internal",
                   "message": "internal error (RuntimeError); see the daemon log; the audio stream was cancelled"}
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2


def test_audio_cancel_is_acked_after_the_sink_cancelled_and_close_cancels_an_open_stream():
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    opened(conn)
    cancel = conn.receive_text(text({"type": "audio.cancel", "id": 9}), 0.0)
    assert isinstance(cancel, CancelIngest) and drain(conn) == []
    conn.complete(cancel)
    assert drain(conn) == [{"type": "ack", "command": "audio.cancel", "id": 9}]
    assert conn.close() is None  # nothing open
    conn = Connection("c2", ConnectionLimits(), now=0.0)
    sink = opened(conn)
    closing = conn.close()
    assert isinstance(closing, CancelIngest) and closing.ingest.sink is sink and closing.reply is None
    assert conn.closing and conn.ingest is None


def test_open_ingest_refused_by_the_handler_leaves_no_stream():
    conn = Connection("c1", ConnectionLimits(), now=0.0)
    request = conn.receive_text(text({"type": "audio.start", "id": 2, "format": "s16le", "sample_rate": 8000}), 0.0)
    conn.fail(request, ProtocolError(ErrorCode.NOT_SUPPORTED, "no audio streams"))
    assert conn.ingest is None
    assert drain(conn) == [{"type": "error", "code": "not_supported", "message": "no audio streams", "command": "audio.start", "id": 2}]
