"""Word timestamps in the daemon (issue 12): ``[output] word_timestamps`` puts the forced aligner's ``words`` on
finals, the OpenAI endpoint answers ``timestamp_granularities[]=word``.

In-process: the aligner host's lanes and ordering, and the routes with a fake aligner (typing never waits for
the alignment; later events never overtake a final that waits for its words; a failed alignment still
publishes the final). Real daemons (tiny random ASR + aligner bundles): the words equal the engine's
``ForcedAligner.align`` of the very audio and text of the final, on the WebSocket and through the ``openai``
package; without an aligner bundle the daemon starts, says so in one line, and finals come without words.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest

from qasr.daemon.desktop.output import DeliveryResult
from qasr.daemon.results.final_words import FinalWords
from qasr.daemon.results.desktop_delivery import DesktopDelivery
from qasr.daemon.results.dictation_route import DictationRoute
from qasr.daemon.results.requester_route import RequesterRoute
from qasr.daemon.results.result_services import ResultServices
from qasr.daemon.transcription.aligner_host import AlignerHost, AlignerHostOptions
from qasr.engine.events import FinalEvent, FinalTimings, PartialEvent, StepTimings
from qasr.errors import QasrError
from tests.harness.daemon import DaemonProcess

SR = 16000


class FakeAligner:
    """Words one per second-ish; ``gate`` holds an alignment until set; ``fail`` raises like the engine."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[tuple[int, str, str | None]] = []
        self.fail: Exception | None = None

    def align(self, audio, text, language=None):
        from types import SimpleNamespace

        self.gate.wait(10)
        self.calls.append((audio.size, text, language))
        if self.fail is not None:
            raise self.fail
        step = audio.size / SR / max(1, len(text.split()))
        return [SimpleNamespace(word=w, start=i * step, end=(i + 1) * step,
                                to_dict=lambda w=w, i=i: {"word": w, "start": i * step, "end": (i + 1) * step})
                for i, w in enumerate(text.split())]

    def close(self) -> None:
        pass


def fake_host(tmp_path) -> tuple[AlignerHost, FakeAligner]:
    host = AlignerHost(tmp_path, AlignerHostOptions())
    fake = FakeAligner()
    host._aligner = fake  # loaded
    return host, fake


def final(uid: str, text: str, seconds: float) -> FinalEvent:
    return FinalEvent(uid, 1, text, "English", [1, 2], 10.0, 10.0 + seconds, "stop", text, FinalTimings(latency_ms=5.0))


def partial(uid: str) -> PartialEvent:
    return PartialEvent(uid, 0, "next", "", 20.0, 20.5, StepTimings())


class FakeOutput:
    def __init__(self) -> None:
        self.typed: list[tuple[float, str]] = []

    def deliver(self, text, target=None):
        self.typed.append((time.monotonic(), text))
        return DeliveryResult("type", True, chars=len(text))

    def close(self) -> None:
        pass


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_host_lanes_run_foreground_first_and_in_order_keeps_the_order(tmp_path):
    host, fake = fake_host(tmp_path)
    ran: list[str] = []
    host.in_order(lambda: ran.append("idle: at once"))
    assert ran == ["idle: at once"]
    fake.gate.clear()
    slow = host.submit(lambda h: h.align(np.zeros(SR, np.float32), "a b", None))
    time.sleep(0.1)
    background = host.submit(lambda h: ran.append("background"), background=True)
    host.in_order(lambda: ran.append("after the slow job"))
    host.submit(lambda h: ran.append("foreground"))
    assert ran == ["idle: at once"]  # everything waits for the running foreground job
    fake.gate.set()
    assert [w["word"] for w in slow.result(10)] == ["a", "b"]
    background.result(10)
    assert ran == ["idle: at once", "after the slow job", "foreground", "background"]
    assert host.drain(5)
    host.close()


def test_host_without_a_bundle_says_once_what_to_run(tmp_path):
    lines: list[str] = []
    host = AlignerHost(None, warn=lines.append)
    assert not host.available
    host.warn_unavailable()
    host.warn_unavailable()
    assert len(lines) == 1 and "qasr-daemon models pull aligner" in lines[0]
    with pytest.raises(QasrError):
        host.submit(lambda h: h.aligner()).result(10)
    broken = AlignerHost(tmp_path, warn=lines.append)  # a folder that is no bundle
    with pytest.raises(QasrError):
        broken.submit(lambda h: h.aligner()).result(30)
    assert not broken.available and len(lines) == 2 and "models pull aligner" in lines[1]
    for h in (host, broken):
        h.close()


class Routes:
    """The microphone's route and requesters' routes over one set of result services, as the daemon has them."""

    def __init__(self, host: AlignerHost, enabled: bool, published: list[dict], output: FakeOutput) -> None:
        self.results = ResultServices(published.append)
        self.results.words = self.words = FinalWords(host, lambda: enabled)
        desktop = DesktopDelivery(self.results)
        desktop._output = output
        self.mic = DictationRoute(self.results, desktop, live_typing=lambda: False)

    def requester(self, kind: str, name: str, deliver=lambda utterance_id, message, outcome: None) -> RequesterRoute:
        return RequesterRoute(kind, name, self.results, deliver)


def router_with_words(tmp_path, enabled=True):
    host, fake = fake_host(tmp_path)
    published: list[dict] = []
    output = FakeOutput()
    return Routes(host, enabled, published, output), host, fake, published, output


def feed(router: Routes, uid: str, seconds: float, source: str = "mic") -> np.ndarray:
    audio = np.random.default_rng(int(uid)).standard_normal(int(seconds * SR)).astype(np.float32) * 0.1
    for piece in np.array_split(audio, 3):
        router.words.collect(uid, piece, source)
    return audio


def test_mic_final_is_typed_before_its_words_and_later_events_wait_behind_it(tmp_path):
    router, host, fake, published, output = router_with_words(tmp_path)
    feed(router, "1", 1.5)
    fake.gate.clear()  # the alignment takes its time
    router.mic.final(final("1", "hello big world", 1.5))
    assert [text for _, text in output.typed] and "hello big world" in output.typed[0][1]  # typed already
    router.mic.partial(partial("2"))  # the next utterance's partial must not overtake the final
    jobs: list = []
    job = router.requester("openai", "openai:1", lambda utterance_id, message, outcome: jobs.append((utterance_id,
                                                                                                     outcome)))
    job.final(final("3", "a request", 1.0))  # goes to its own request: never waits for words
    assert jobs == [("3", "final")]
    time.sleep(0.1)
    assert published == []
    fake.gate.set()
    assert wait_for(lambda: len(published) == 2)
    first, second = published
    assert first["type"] == "final" and second["type"] == "partial"
    assert [w["word"] for w in first["words"]] == ["hello", "big", "world"]
    assert first["words"][-1]["end"] == pytest.approx(1.5) and "align_ms" in first["timings"]
    assert fake.calls == [(int(1.5 * SR), "hello big world", "English")]
    host.close()


def test_failed_alignment_publishes_the_final_without_words(tmp_path, caplog):
    router, host, fake, published, _ = router_with_words(tmp_path)
    fake.fail = QasrError("the text has no words the aligner knows")
    feed(router, "1", 1.0, source="ws:c1")
    delivered: list[tuple] = []

    stream = router.requester("stream", "ws:c1", lambda *result: delivered.append(result))
    with caplog.at_level("WARNING", logger="qasr.words"):
        stream.final(final("1", "some words", 1.0))
        assert wait_for(lambda: delivered)
    [(uid, message, outcome)] = delivered
    assert (uid, outcome) == ("1", "final") and message["text"] == "some words" and "words" not in message
    assert [r.getMessage() for r in caplog.records if "without words" in r.getMessage()] == [
        "final #1 goes out without words: the text has no words the aligner knows"]
    host.close()


def test_finals_without_all_their_audio_or_with_words_off_have_no_words(tmp_path):
    router, host, fake, published, _ = router_with_words(tmp_path)
    audio = feed(router, "1", 1.0)
    router.words.drop("1")
    router.words.collect("1", audio[: SR // 2], "mic")  # turned on in mid-utterance: half the audio
    router.mic.final(final("1", "half", 1.0))
    router.requester("openai", "openai:3").final(final("2", "not ours", 1.0))  # OpenAI requests align themselves
    assert wait_for(lambda: published) and "words" not in published[0] and fake.calls == []
    off, off_host, off_fake, off_published, _ = router_with_words(tmp_path, enabled=False)
    feed(off, "1", 1.0)
    off.mic.final(final("1", "off", 1.0))
    assert "words" not in off_published[0] and off_fake.calls == [] and not off.words._audio
    for h in (host, off_host):
        h.close()


# ------------------------------------------------------------------------------ real daemons


def voiced(seconds: float, seed: int) -> np.ndarray:
    """Voiced-like audio: a few harmonics with a slow envelope plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    audio = sum(np.sin(2 * np.pi * (110 + 40 * seed) * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    audio *= 0.5 + 0.5 * np.sin(2 * np.pi * 2.5 * t) ** 2
    audio += 0.01 * rng.standard_normal(t.size)
    return (0.2 * audio / np.max(np.abs(audio))).astype(np.float32)


AUDIO = voiced(2.5, 6)


def ws_final(env: DaemonProcess, audio: np.ndarray = AUDIO) -> dict:
    """One WebSocket audio stream (f32le, one utterance, English): its final event."""
    from websockets.asyncio.client import connect

    async def session():
        async with connect(env.server_info()["ws_url"], additional_headers={"Authorization": f"Bearer {env.token()}"},
                           max_size=None) as ws:
            assert json.loads(await ws.recv())["type"] == "hello"
            await ws.send(json.dumps({"type": "audio.start", "format": "f32le", "sample_rate": SR, "segment": "none",
                                      "language": "English"}))
            for chunk in np.array_split(audio, 5):
                await ws.send(chunk.astype("<f4").tobytes())
            await ws.send(json.dumps({"type": "audio.end"}))
            finals = []
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 120))
                if message["type"] == "final":
                    finals.append(message)
                if message["type"] == "ack" and message["command"] == "audio.end":
                    assert len(finals) == 1, finals
                    return finals[0]

    return asyncio.run(session())


@pytest.fixture(scope="module")
def reference_aligner(tiny_aligner_bundle):
    from qasr.engine.align.aligner import ForcedAligner

    with ForcedAligner(tiny_aligner_bundle) as aligner:
        yield aligner


def expected_words(aligner, audio: np.ndarray, text: str, language: str | None) -> list[dict]:
    return [w.to_dict() for w in aligner.align(audio, text, language)]


def config_text(word_timestamps: bool, aligner_dir) -> str:
    return f'[output]\nword_timestamps = {str(word_timestamps).lower()}\n[model]\naligner = "{aligner_dir}"\n'


def test_finals_get_the_aligners_words_only_when_asked(tmp_path, tiny_bundle, tiny_aligner_bundle, reference_aligner):
    """Off: no `words`, no aligner loaded. A reload turns it on: the final's words are the aligner's own for
    that audio and text. The OpenAI endpoint answers timestamp_granularities[]=word either way."""
    env = DaemonProcess(tmp_path / "d")
    env.write_config(config_text(False, tiny_aligner_bundle))
    try:
        env.start(tiny_bundle)
        plain = ws_final(env)
        assert "words" not in plain and plain["text"].strip(), plain
        assert "forced aligner loaded" not in env.log()
        assert env.status()["word_timestamps"]["loaded"] is False

        env.write_config(config_text(True, tiny_aligner_bundle))
        env.control("reload")
        timed = ws_final(env)
        assert timed["text"] == plain["text"] and timed["token_ids"] == plain["token_ids"]
        want = expected_words(reference_aligner, AUDIO, timed["text"], timed["language"])
        assert want and timed["words"] == want
        assert all(0 <= w["start"] <= w["end"] <= timed["audio_end"] - timed["audio_start"] for w in timed["words"])
        assert timed["timings"]["align_ms"] > 0
        assert env.log().count("forced aligner loaded") == 1
        words_status = env.status()["word_timestamps"]
        assert words_status["on"] and words_status["loaded"] and words_status["aligned"] >= 1
        assert words_status["aligner"] == str(tiny_aligner_bundle) and words_status["error"] is None

        import openai

        from qasr.engine.audio import load_audio
        from tests.test_openai_api import wav_bytes

        path = tmp_path / "talk.wav"
        path.write_bytes(wav_bytes(AUDIO))
        decoded = load_audio(path, SR)  # what the daemon decodes from the upload
        c = openai.OpenAI(base_url=env.server_info()["http_url"] + "/v1", api_key=env.token(), max_retries=0,
                          timeout=300)
        verbose = c.audio.transcriptions.create(model="qwen3-asr", file=path, response_format="verbose_json",
                                                timestamp_granularities=["word"], language="en")
        got = [{"word": w.word, "start": w.start, "end": w.end} for w in verbose.words]
        assert got and got == expected_words(reference_aligner, decoded, verbose.text, "English")
        assert verbose.segments and verbose.segments[0].end == pytest.approx(2.5)
        assert not getattr(c.audio.transcriptions.create(model="x", file=path, response_format="verbose_json"),
                           "words", None)
    finally:
        env.stop()


def test_without_an_aligner_the_daemon_says_so_once_and_finals_have_no_words(tmp_path, tiny_bundle):
    env = DaemonProcess(tmp_path / "d")  # its own empty models folder: no aligner installed
    try:
        env.start(tiny_bundle, "--set", "output.word_timestamps=true")
        first, second = ws_final(env), ws_final(env)
        assert "words" not in first and "words" not in second and first["token_ids"] == second["token_ids"]
        lines = [line for line in env.log().splitlines() if "aligner" in line.replace(str(tmp_path), "")]
        assert len(lines) == 1 and "qasr-daemon models pull aligner" in lines[0] and "WARNING" in lines[0], lines
        assert any("models pull aligner" in w for w in env.status()["warnings"])

        import openai

        from tests.test_openai_api import wav_bytes

        path = tmp_path / "talk.wav"
        path.write_bytes(wav_bytes(AUDIO))
        c = openai.OpenAI(base_url=env.server_info()["http_url"] + "/v1", api_key=env.token(), max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            c.audio.transcriptions.create(model="x", file=path, response_format="verbose_json",
                                          timestamp_granularities=["word"])
        assert refused.value.code == "aligner_not_installed" and "models pull aligner" in refused.value.message
    finally:
        env.stop()
