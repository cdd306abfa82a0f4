"""System audio captions and call transcripts, end to end: a private PulseAudio with null sinks — ``vsink``
(its monitor is the microphone), ``speakers`` (the default output: its monitor is system audio) and
``headset`` — espeak-ng speech played into them, and the real daemon on the tiny random bundle.

Every system final equals offline ``transcribe`` of the audio the daemon used (``debug.save_audio_dir``);
speech into both at once gives both, dictation's final first (the LIVE lane waits for it); the call
transcript holds both sides in audio-time order in every format, with word timestamps (the aligner is
installed: a call turns them on); a muted output captions nothing; the
default output switching mid-session keeps captioning; without parec/pactl the microphone keeps working
and system audio is one warning line."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from tests.harness.daemon import DaemonProcess
from tests.harness.events import Subscribers
from tests.harness.pulse import PulseServer
from tests.harness.speech import espeak_wav

pytestmark = pytest.mark.system

SR = 16000
OUTPUTS = ("speakers", "headset")


@pytest.fixture(scope="module")
def pulse():
    for tool in ("pulseaudio", "pactl", "paplay", "parec"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt install pulseaudio pulseaudio-utils)")
    server = PulseServer(Path(tempfile.mkdtemp(prefix="qasr-pulse-out-")), outputs=OUTPUTS)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, tiny_bundle, tiny_aligner_bundle, pulse):
    root = tmp_path_factory.mktemp("system-audio")
    env = DaemonProcess(root, extra_env=pulse.client_env)
    env.saved = root / "saved"
    try:
        env.start(tiny_bundle, "--set", "audio.system=true", "--set", f"debug.save_audio_dir={env.saved}",
                  "--set", "vad.hangover_ms=450", "--set", f"model.aligner={tiny_aligner_bundle}")
        env.wait_status(lambda s: (s.get("system_audio") or {}).get("state") == "running", timeout=30)
        env.events = Subscribers.of(env)
        yield env
    finally:
        if getattr(env, "events", None) is not None:
            env.events.close()
        env.stop()


def saved_audio(env: DaemonProcess, utterance_id: str) -> np.ndarray:
    from qasr.engine.audio import load_audio

    [path] = env.saved.glob(f"utterance-*-{int(utterance_id):04d}.wav")
    return load_audio(path, SR)


def test_system_audio_finals_equal_transcribe_and_are_never_the_microphone(daemon, pulse, tiny_transcriber):
    status = daemon.status()["system_audio"]
    assert status["on"] and status["monitor"] == "speakers.monitor"
    mark = daemon.events.mark()
    pulse.play(espeak_wav("the computer is playing a video about the weather"), sink="speakers")
    final = daemon.events.wait(mark, "final", timeout_s=60)
    assert final is not None and final["source"] == "system" and final["sink"] is None
    assert final["token_ids"] == tiny_transcriber.transcribe(saved_audio(daemon, final["utterance_id"])).token_ids
    time.sleep(0.5)
    finals = daemon.events.since(mark, "final")
    assert {m["source"] for m in finals} == {"system"}
    assert {m["source"] for m in daemon.events.since(mark, "partial")} <= {"system"}
    assert not daemon.journal_file.exists()  # never journaled (nor typed) as dictation

    pulse.pactl("set-sink-mute", "speakers", "1")  # a muted output: its monitor is silence
    try:
        mark = daemon.events.mark()
        pulse.play(espeak_wav("nobody can hear this sentence"), sink="speakers")
        time.sleep(1.5)
        assert daemon.events.since(mark, "final") == [] and daemon.events.since(mark, "partial") == []
    finally:
        pulse.pactl("set-sink-mute", "speakers", "0")


def test_both_at_once_gives_both_dictation_first_and_a_call_transcript_in_audio_order(daemon, pulse):
    from qasr.daemon.results.call_transcript import clean_text as clean

    them = espeak_wav("good morning the quarterly report is ready")
    you = espeak_wav("thank you please send it to the whole team today")
    started = daemon.control("record-call", action="start")
    assert started["recording"] and started["system_audio"]["call"]
    mark = daemon.events.mark()
    player = pulse.play(them, wait=False, sink="speakers")  # "them" speak first and stop first ...
    time.sleep(0.6)
    pulse.play(you, sink="vsink")  # ... while "you" still speak: their final waits for dictation's
    player.wait(timeout=60)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and {m["source"] for m in daemon.events.since(mark, "final")} != {"mic", "system"}:
        time.sleep(0.1)
    finals = daemon.events.since(mark, "final")
    assert [m["source"] for m in finals] == ["mic", "system"], finals
    assert finals[1]["audio_end"] > 0 and all(m["text"].strip() for m in finals)

    result = daemon.control("record-call", timeout=120, action="stop")
    assert result["turns"] == 2 and result["echoes_dropped"] == 0
    files = {Path(p).suffix[1:]: Path(p) for p in result["files"]}
    assert set(files) == {"txt", "srt", "vtt", "json"}
    assert all(p.parent == daemon.root / "data" / "qasr" / "transcripts" for p in files.values())
    by_source = {m["source"]: clean(m["text"]) for m in finals}  # as the files keep it (no control characters)
    doc = json.loads(files["json"].read_text(encoding="utf-8"))
    assert [(t["speaker"], t["source"], t["text"]) for t in doc["turns"]] == [
        ("them", "system", by_source["system"]), ("you", "mic", by_source["mic"])]
    assert -1.0 < doc["turns"][0]["start"] < doc["turns"][1]["start"] < doc["turns"][0]["end"]
    for turn, message in zip(doc["turns"], (finals[1], finals[0])):  # a call gets words (the aligner is installed)
        assert turn["words"] and len(turn["words"]) == len(message["words"])
        assert turn["words"][0]["start"] == pytest.approx(turn["start"] + message["words"][0]["start"], abs=0.0021)
        assert all(turn["start"] - 0.002 <= w["start"] <= w["end"] <= turn["end"] + 0.002 for w in turn["words"])
    txt = files["txt"].read_text(encoding="utf-8").splitlines()[1:]
    assert [line.split("] ", 1)[1] for line in txt] == [f"them: {by_source['system']}", f"you: {by_source['mic']}"]
    for ext, marks in (("srt", ("them: ", "you: ")), ("vtt", ("<v them>", "<v you>"))):
        cues = cue_texts(files[ext].read_text(encoding="utf-8"))  # word-timed cues, in time order
        assert cues[0].startswith(marks[0]) and all(c.startswith(marks) for c in cues)
        for mark, turn in zip(marks, doc["turns"]):
            spoken = "".join(c[len(mark):] for c in cues if c.startswith(mark)).replace(" ", "")
            assert spoken == "".join(w["word"] for w in turn["words"]).replace(" ", "")  # CJK joins unspaced
    assert not daemon.status()["system_audio"]["call"]


def cue_texts(subtitles: str) -> list[str]:
    """The text of each SRT/WebVTT cue (the lines after its timing line), in file order."""
    blocks = [b.splitlines() for b in subtitles.strip().split("\n\n")]
    return [" ".join(b[i + 1:]) for b in blocks for i, line in enumerate(b) if "-->" in line]


def test_switching_the_default_output_mid_session_keeps_captioning(daemon, pulse, tiny_transcriber):
    pulse.set_default_sink("headset")
    try:
        status = daemon.wait_status(lambda s: s["system_audio"].get("monitor") == "headset.monitor"
                                    and s["system_audio"].get("state") == "running", timeout=30)["system_audio"]
        assert status["monitor"] == "headset.monitor" and status["sink_switches"] >= 1
        mark = daemon.events.mark()
        pulse.play(espeak_wav("now the sound comes out of the headset"), sink="headset")
        final = daemon.events.wait(mark, "final", timeout_s=60, source="system")
        assert final is not None
        assert final["token_ids"] == tiny_transcriber.transcribe(saved_audio(daemon, final["utterance_id"])).token_ids
    finally:
        pulse.set_default_sink("speakers")


def test_without_parec_the_microphone_keeps_working_and_system_audio_is_one_line(tmp_path, tiny_bundle, pulse):
    bare_path = tmp_path / "bin"  # a PATH without parec/pactl (PortAudio reaches the server itself)
    bare_path.mkdir()
    env = DaemonProcess(tmp_path / "d", extra_env={**pulse.client_env, "PATH": str(bare_path)})
    try:
        env.start(tiny_bundle, "--set", "audio.system=true", "--set", "vad.hangover_ms=450")
        status = env.wait_status(lambda s: s["state"] == "listening", timeout=30)
        assert status["state"] == "listening" and status["system_audio"]["state"] == "no-device"
        notes = [w for w in status["warnings"] if "system audio" in w]
        assert notes == ["no system audio captions: parec and pactl are missing (install pulseaudio-utils); "
                         "the microphone keeps working"]
        assert env.control("record-call", action="start")["recording"]  # a call records "you" at least
        events = Subscribers.of(env)
        try:
            mark = events.mark()
            pulse.play(espeak_wav("dictation still works"), sink="vsink")
            final = events.wait(mark, "final", timeout_s=60)
            assert final is not None and final["source"] == "mic"
        finally:
            events.close()
    finally:
        env.stop()  # stopping the daemon ends the call: its transcript is written
    assert "Traceback" not in env.log()
    [written] = (env.root / "data" / "qasr" / "transcripts").glob("call-*.json")
    turns = json.loads(written.read_text(encoding="utf-8"))["turns"]
    assert [(t["speaker"], t["utterance_id"]) for t in turns] == [("you", final["utterance_id"])]


def test_no_sound_server_is_a_clear_error(tmp_path, monkeypatch):
    from qasr.daemon.audio.monitor_capture import NoMonitorError, default_sink
    from tests.harness.pulse import no_pulse_env

    for key, value in no_pulse_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(NoMonitorError, match=r"no sound server to capture from \(.*; is PulseAudio/PipeWire running\?\)"):
        default_sink()
