"""Sans-I/O protocol: client message validation, server builders, PCM decoding, and the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soxr

import qasr.config
from qasr import protocol
from qasr.daemon.server.metrics import Metrics, percentile
from qasr.protocol import AudioFormat, ErrorCode, PcmDecoder, ProtocolError, parse_client_message

SCHEMA_FILE = Path(qasr.config.__file__).parent / "protocol.schema.json"

VALID_CLIENT = [
    {"type": "start"},
    {"type": "stop", "id": "x"},
    {"type": "toggle", "id": 3},
    {"type": "cancel"},
    {"type": "set", "language": "English"},
    {"type": "set", "context": "Kubernetes, kubectl", "language": None},
    {"type": "audio.start", "format": "s16le", "sample_rate": 16000},
    {"type": "audio.start", "format": "f32le", "sample_rate": 48000, "channels": 2, "segment": "none", "language": "Chinese"},
    {"type": "audio.end", "id": "e"},
    {"type": "audio.cancel"},
    {"type": "subscribe", "events": ["final", "state"]},
    {"type": "subscribe", "events": []},
    {"type": "ping", "id": 1},
    {"type": "history"},
    {"type": "history", "count": 5, "search": "café"},
    {"type": "history.copy", "n": 2, "id": "c"},
    {"type": "history.clear"},
    {"type": "paste_last"},
    {"type": "undo", "id": 3},
]

INVALID_CLIENT = [
    ({"type": "fly"}, ErrorCode.UNKNOWN_TYPE),
    ({"kind": "start"}, ErrorCode.BAD_MESSAGE),
    ({"type": "start", "id": True}, ErrorCode.BAD_MESSAGE),
    ({"type": "start", "id": "x" * 200}, ErrorCode.BAD_MESSAGE),
    ({"type": "set"}, ErrorCode.BAD_MESSAGE),
    ({"type": "set", "language": 7}, ErrorCode.BAD_MESSAGE),
    ({"type": "set", "context": "x" * 10001}, ErrorCode.BAD_MESSAGE),
    ({"type": "audio.start", "format": "mp3", "sample_rate": 16000}, ErrorCode.BAD_MESSAGE),
    ({"type": "audio.start", "format": "s16le"}, ErrorCode.BAD_MESSAGE),
    ({"type": "audio.start", "format": "s16le", "sample_rate": 16000.5}, ErrorCode.BAD_MESSAGE),
    ({"type": "audio.start", "format": "s16le", "sample_rate": 4000}, ErrorCode.BAD_MESSAGE),
    ({"type": "audio.start", "format": "s16le", "sample_rate": 16000, "channels": 3}, ErrorCode.BAD_MESSAGE),
    ({"type": "audio.start", "format": "s16le", "sample_rate": 16000, "segment": "words"}, ErrorCode.BAD_MESSAGE),
    ({"type": "subscribe", "events": ["hello"]}, ErrorCode.BAD_MESSAGE),
    ({"type": "subscribe"}, ErrorCode.BAD_MESSAGE),
    ({"type": "history", "count": 0}, ErrorCode.BAD_MESSAGE),
    ({"type": "history", "count": "5"}, ErrorCode.BAD_MESSAGE),
    ({"type": "history", "search": 1}, ErrorCode.BAD_MESSAGE),
    ({"type": "history.copy", "n": 0}, ErrorCode.BAD_MESSAGE),
    ({"type": "history.copy", "n": True}, ErrorCode.BAD_MESSAGE),
]


def server_examples() -> list[dict]:
    return [
        protocol.hello("c1", "Qwen3-ASR-0.6B", 16000, state="idle", limits={"max_message_bytes": 1, "commands_per_second": 2.0}),
        protocol.hello("c2", None),
        protocol.state("recording", source="hotkey"),
        protocol.vad(True, 1.23456),
        protocol.vad(False, 2.0, "u1"),
        protocol.partial("u1", 0, "hello ", "wor", 0.0, 1.5, {"latency_ms": 140.2}, "English", source="mic"),
        protocol.final("u1", 1, "hello world", "English", [1, 2, 3], 0.0, 2.0, {"compute_ms": 200, "latency_ms": 300}, "xtest"),
        protocol.final("7", 2, "", None, [], 2.0, 2.5),
        protocol.final("8", 3, "hi you", "English", [4], 3.0, 4.0, {"align_ms": 12.0}, None,
                       words=[{"word": "hi", "start": 0.08, "end": 0.32}, {"word": "you", "start": 0.4, "end": 0.72}]),
        protocol.error(ErrorCode.BAD_JSON, "bad"),
        protocol.error(ErrorCode.INVALID_STATE, "not recording", "r1", "stop"),
        protocol.warning("output", "clipboard fallback"),
        protocol.ack("start", 5, state="recording"),
        protocol.ack("audio.end", "e", bytes=10, samples=5, utterances=1),
        protocol.pong("p"),
        protocol.pong(),
    ]


@pytest.mark.parametrize("msg", VALID_CLIENT, ids=lambda m: m["type"])
def test_valid_client_messages_parse(msg):
    parsed = parse_client_message(json.dumps(msg))
    assert parsed["type"] == msg["type"]
    if msg["type"] == "audio.start":
        assert parsed["channels"] == msg.get("channels", 1)
        assert parsed["segment"] == msg.get("segment", "vad")


@pytest.mark.parametrize("msg,code", INVALID_CLIENT, ids=lambda m: str(m)[:40])
def test_invalid_client_messages_raise_with_code(msg, code):
    with pytest.raises(ProtocolError) as exc:
        parse_client_message(json.dumps(msg))
    assert exc.value.code == code
    assert exc.value.message and "\n" not in exc.value.message


@pytest.mark.parametrize("text", ["{", "[1, 2]", '"start"', "null", b"\xff\xfe"])
def test_non_object_frames_are_bad_json(text):
    with pytest.raises(ProtocolError) as exc:
        parse_client_message(text)
    assert exc.value.code == ErrorCode.BAD_JSON


def test_error_keeps_request_id_and_command_for_the_reply():
    with pytest.raises(ProtocolError) as exc:
        parse_client_message(json.dumps({"type": "set", "id": "abc"}))
    assert (exc.value.request_id, exc.value.command) == ("abc", "set")


def test_builders_round_numbers_and_drop_non_finite_timings():
    event = protocol.partial(3, "4", "a", "b", 0.12345, 1.98765, {"x": float("nan"), "latency_ms": 12.34567})
    assert event["utterance_id"] == "3" and event["seq"] == 4
    assert (event["audio_start"], event["audio_end"]) == (0.123, 1.988)
    assert event["timings"] == {"latency_ms": 12.346}
    final = protocol.final("u", 0, "x", None, np.array([1, 2], dtype=np.int64), 0, 1)
    assert final["token_ids"] == [1, 2] and all(type(t) is int for t in final["token_ids"])
    assert json.loads(protocol.encode(protocol.final("u", 0, "你好", "Chinese", [1], 0, 1)))["text"] == "你好"
    assert "你好" in protocol.encode(protocol.final("u", 0, "你好", "Chinese", [1], 0, 1))
    odd = json.loads(protocol.encode({"type": "warning", "n": np.float32(0.5), "a": np.arange(2), "p": Path("/x")}))
    assert odd == {"type": "warning", "n": 0.5, "a": [0, 1], "p": "/x"}
    ack = protocol.ack("start", None, type="evil", id="evil", state="x")
    assert ack == {"type": "ack", "command": "start", "state": "x"}


# ---- JSON Schema ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency")
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _valid_as(validator, msg: dict, kind: str) -> bool:
    sub = {"$ref": f"#/$defs/{kind}", "$defs": validator.schema["$defs"]}
    return type(validator)(sub).is_valid(msg)


def test_schema_accepts_every_server_message_the_builders_make(validator):
    for event in server_examples():
        errors = list(validator.iter_errors(event))
        assert not errors, (event, [e.message for e in errors])
        assert _valid_as(validator, event, "server_message")
        assert not _valid_as(validator, event, "client_message")


def test_schema_agrees_with_the_parser_on_client_messages(validator):
    for msg in VALID_CLIENT:
        assert _valid_as(validator, msg, "client_message"), msg
    for msg, _ in INVALID_CLIENT:
        assert not _valid_as(validator, msg, "client_message"), msg


def test_schema_lists_every_message_type(validator):
    defs = validator.schema["$defs"]
    assert {k.split(".", 1)[1] for k in defs if k.startswith("client.")} == set(protocol.CLIENT_TYPES)
    assert {k.split(".", 1)[1] for k in defs if k.startswith("server.")} == set(protocol.SERVER_TYPES)
    codes = {v for k, v in vars(ErrorCode).items() if k.isupper()}
    described = defs["server.error"]["properties"]["code"]["description"]
    assert all(code in described for code in codes)


# ---- PCM ------------------------------------------------------------------------------------------


def test_decode_s16le_is_exact_and_f32le_passes_through():
    ints = np.array([-32768, -1, 0, 1, 16384, 32767], dtype="<i2")
    out = protocol.decode_pcm(ints.tobytes(), "s16le")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ints.astype(np.float32) / 32768.0)
    floats = np.array([0.5, -0.25, 1.0], dtype="<f4")
    np.testing.assert_array_equal(protocol.decode_pcm(floats.tobytes(), "f32le"), floats)
    stereo = np.array([[0.5, -0.5], [1.0, 0.0]], dtype="<f4")
    np.testing.assert_array_equal(protocol.decode_pcm(stereo.tobytes(), "f32le", 2), [0.0, 0.5])
    with pytest.raises(ProtocolError, match="whole number"):
        protocol.decode_pcm(b"\x00\x00\x00", "s16le")
    with pytest.raises(ProtocolError, match="NaN"):
        protocol.decode_pcm(np.array([np.inf], "<f4").tobytes(), "f32le")


def test_streaming_decoder_handles_frames_split_anywhere():
    rng = np.random.default_rng(3)
    stereo = rng.integers(-32768, 32767, size=(5000, 2), dtype=np.int16)
    data = stereo.astype("<i2").tobytes()
    decoder = PcmDecoder(AudioFormat("s16le", 16000, 2))
    pieces = []
    cuts = sorted(rng.choice(np.arange(1, len(data)), size=40, replace=False))
    for a, b in zip([0, *cuts], [*cuts, len(data)]):
        pieces.append(decoder.feed(data[a:b]))
    pieces.append(decoder.flush())
    got = np.concatenate(pieces)
    expected = (stereo.astype(np.float32) / 32768.0).mean(axis=1, dtype=np.float32)
    np.testing.assert_array_equal(got, expected)
    assert decoder.bytes_in == len(data) and decoder.samples_out == 5000


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_streaming_resample_matches_one_shot(rate):
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    decoder = PcmDecoder(AudioFormat("f32le", rate))
    data = tone.astype("<f4").tobytes()
    chunks = [decoder.feed(data[i : i + 4097]) for i in range(0, len(data), 4097)] + [decoder.flush()]
    streamed = np.concatenate(chunks)
    one_shot = protocol.pcm_to_float32_16k(data, "f32le", rate)
    assert abs(streamed.size - 16000) <= 2 and one_shot.size == soxr.resample(tone, rate, 16000).size
    n = min(streamed.size, one_shot.size)
    # Same signal apart from the edges: a 440 Hz tone survives any of these rates.
    np.testing.assert_allclose(streamed[200 : n - 200], one_shot[200 : n - 200], atol=2e-3)
    ref = 0.5 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    np.testing.assert_allclose(one_shot[200:15800], ref[200:15800], atol=1e-2)


# ---- metrics ---------------------------------------------------------------------------------------


def test_percentile_and_metrics_from_events():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(np.percentile(values, 50))
    assert percentile(values, 95) == pytest.approx(np.percentile(values, 95))
    assert percentile([], 50) is None
    metrics = Metrics(window=3)
    for i, latency in enumerate([100, 200, 300, 400]):
        metrics.observe_event(protocol.final(f"u{i}", 0, "x", None, [], 0, 2, {"latency_ms": latency, "compute_ms": 500}))
    metrics.observe_event(protocol.partial("u9", 0, "", "", 0, 1, {"latency_ms": 50}))
    metrics.observe_event(protocol.state("idle"))
    metrics.count("partials_dropped", 3)
    snap = metrics.snapshot()
    assert snap["series"]["final_latency_ms"] == {"count": 3, "p50": 300.0, "p95": 390.0, "mean": 300.0}
    assert snap["series"]["rtf"]["p50"] == pytest.approx(0.25)
    assert snap["series"]["partial_latency_ms"]["count"] == 1
    text = metrics.prometheus({"clients": 2, "flag": True})
    assert 'qasr_final_latency_ms{quantile="0.95"} 390.0' in text
    assert "qasr_partials_dropped_total 3" in text and "qasr_clients 2" in text and "flag" not in text


# ---- typed events (the clients' view of the same messages) ----------------------------------------


def typed_examples() -> list[protocol.Event]:
    return [
        protocol.Hello(protocol="qasr.v1", version="1.2.3", model="m", sample_rate=16000, client_id="c1", state="idle"),
        protocol.Hello(protocol="qasr.v1", version="1.2.3", model=None, sample_rate=16000, client_id="c2"),
        protocol.State(state="recording"),
        protocol.Vad(speech=True, time=1.25),
        protocol.Vad(speech=False, time=2.5, utterance_id="u1"),
        protocol.Partial(utterance_id="u1", seq=2, committed="a ", tentative="b", language=None, audio_start=0.0,
                         audio_end=1.5, timings={"latency_ms": 12.5}),
        protocol.Final(utterance_id="u1", seq=3, text="a b", language="English", token_ids=[1, 2], audio_start=0.0,
                       audio_end=2.0, timings={"compute_ms": 3.0}, sink="xtest"),
        protocol.Final(utterance_id="u2", seq=0, text="", language=None, token_ids=[], audio_start=2.0, audio_end=2.5),
        protocol.Final(utterance_id="u3", seq=1, text="你好", language="Chinese", token_ids=[9], audio_start=0.0,
                       audio_end=1.0, words=[{"word": "你", "start": 0.1, "end": 0.3}, {"word": "好", "start": 0.3, "end": 0.6}]),
        protocol.Error(code=ErrorCode.BAD_MESSAGE, message="no"),
        protocol.Error(code=ErrorCode.INVALID_STATE, message="idle", command="stop", id="r1"),
        protocol.Warning(code="output", message="clipboard fallback"),
        protocol.Ack(command="start", id=7),
        protocol.Ack(command="toggle"),
        protocol.Pong(id="p"),
        protocol.Pong(),
    ]


def test_every_builder_output_parses_to_its_typed_event_and_back(validator):
    for message in server_examples():
        event = protocol.parse_event(message)
        assert type(event) is protocol.EVENT_TYPES[message["type"]] and event.type == message["type"]
        again = event.to_dict()
        assert again == message and list(again) == list(message)
        assert not list(validator.iter_errors(again))
        assert protocol.parse_server_message(protocol.encode(message)) == event


def test_every_typed_event_round_trips_through_the_wire_and_the_schema(validator):
    covered = set()
    for event in typed_examples():
        message = event.to_dict()
        covered.add(message["type"])
        assert message["type"] == event.TYPE
        assert _valid_as(validator, message, f"server.{event.TYPE}"), message
        assert _valid_as(validator, message, "server_message") and not _valid_as(validator, message, "client_message")
        back = protocol.parse_server_message(protocol.encode(message))
        assert type(back) is type(event) and back == event and back.to_dict() == message
    assert covered == set(protocol.SERVER_TYPES) == set(protocol.EVENT_TYPES)


def test_typed_events_leave_out_absent_optional_fields_like_the_builders():
    assert protocol.Vad(speech=True, time=1.0).to_dict() == protocol.vad(True, 1.0)
    assert protocol.Error(code="bad_json", message="x").to_dict() == protocol.error("bad_json", "x")
    assert protocol.Ack(command="stop", id="r").to_dict() == protocol.ack("stop", "r")
    assert protocol.Pong().to_dict() == protocol.pong()
    assert protocol.Hello(protocol=protocol.PROTOCOL, version="v", model=None, client_id="c").to_dict() == {
        "type": "hello", "protocol": "qasr.v1", "version": "v", "model": None, "sample_rate": 16000, "client_id": "c"
    }


def test_final_words_are_optional_rounded_and_checked_by_the_schema(validator):
    plain = protocol.final("u", 1, "a b", "English", [1], 0, 1)
    assert "words" not in plain and protocol.parse_event(plain).words is None
    assert "words" not in protocol.parse_event(plain).to_dict()
    timed = protocol.final("u", 1, "a b", "English", [1], 0, 1, words=[{"word": "a", "start": 0.12345, "end": 0.5},
                                                                       {"word": "b", "start": 0.5, "end": 0.91}])
    assert timed["words"][0] == {"word": "a", "start": 0.123, "end": 0.5}
    assert protocol.parse_event(timed).words == timed["words"] and _valid_as(validator, timed, "server.final")
    for bad in ([{"word": "a", "start": 0.1}], [{"word": 1, "start": 0, "end": 1}], [{"word": "a", "start": -1, "end": 1}],
                {"word": "a"}):
        assert not _valid_as(validator, {**timed, "words": bad}, "server.final"), bad


def test_unknown_event_types_and_extra_fields_survive_parsing():
    event = protocol.parse_server_message('{"type": "from.the.future", "x": [1]}')
    assert isinstance(event, protocol.Unknown) and event.type == "from.the.future"
    assert event.to_dict() == {"type": "from.the.future", "x": [1]}
    final = protocol.parse_event(protocol.final("u", 1, "t", None, [], 0, 1, source="mic"))
    assert final.raw["source"] == "mic" and final.to_dict()["source"] == "mic"


@pytest.mark.parametrize("text", ["{", "[]", "7", b"\xff"])
def test_server_frames_that_are_not_objects_raise_one_line_protocol_errors(text):
    with pytest.raises(ProtocolError) as exc:
        protocol.parse_server_message(text)
    assert exc.value.code == ErrorCode.BAD_JSON and "\n" not in exc.value.message


# ---- absurd nesting --------------------------------------------------------------------------------

DEEP = 100_000


@pytest.mark.parametrize(
    "text",
    [
        "[" * DEEP + "]" * DEEP,
        '{"a":' * DEEP + "1" + "}" * DEEP,
        '{"type":"start","x":' + "[" * DEEP + "]" * DEEP + "}",
    ],
    ids=["array", "object", "field"],
)
def test_deeply_nested_messages_are_bad_message_not_recursion_errors(text):
    with pytest.raises(ProtocolError) as exc:
        parse_client_message(text)
    assert exc.value.code == ErrorCode.BAD_MESSAGE and "nested too deeply" in exc.value.message
    with pytest.raises(ProtocolError) as exc:
        protocol.parse_server_message(text)
    assert exc.value.code == ErrorCode.BAD_MESSAGE


def test_encode_pcm_is_the_inverse_of_decode_pcm():
    stereo = np.array([[1000, -1000], [32767, -32768]], dtype=np.int16)
    data, fmt, channels = protocol.encode_pcm(stereo)
    assert (fmt, channels) == ("s16le", 2)
    np.testing.assert_array_equal(protocol.decode_pcm(data, fmt, channels), stereo.astype(np.float32).mean(axis=1) / 32768)
    floats = np.array([0.25, -0.5], dtype=np.float64)
    data, fmt, channels = protocol.encode_pcm(floats)
    assert (fmt, channels) == ("f32le", 1) and len(data) == 8
    np.testing.assert_array_equal(protocol.decode_pcm(data, fmt), floats.astype(np.float32))
    assert protocol.encode_pcm(b"\x00\x00", "s16le") == (b"\x00\x00", "s16le", 1)
    for bad in [(b"\x00", None), (np.zeros((1, 1, 1)), None)]:
        with pytest.raises(ProtocolError) as exc:
            protocol.encode_pcm(*bad)
        assert exc.value.code == ErrorCode.BAD_AUDIO and "\n" not in exc.value.message
