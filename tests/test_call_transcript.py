"""The call recorder without a daemon: finals of both sources on one clock, the echo rule, the four files,
control characters kept out, nothing written for a silent call. (The daemon end to end: test_system_audio.py.)"""

from __future__ import annotations

import json
import time

import pytest

from qasr.daemon.audio.source_clock import SourceClock
from qasr.daemon.results.call_transcript import CallRecorder
from qasr.daemon.results.transcript_files import ECHO_WINDOW_S, Turn, drop_echoes, is_echo
from qasr.errors import QasrError


def final(source: str, start: float, end: float, text: str, uid: str, words=None) -> dict:
    message = {"type": "final", "source": source, "audio_start": start, "audio_end": end, "text": text,
               "utterance_id": uid, "language": "English"}
    if words is not None:
        message["words"] = words
    return message


def test_echo_rule_drops_the_microphone_copy_of_what_was_played():
    played = Turn("them", "system", 10.0, 13.0, "Can you hear me now? The budget is ready.")
    echo = Turn("you", "mic", 10.3, 12.5, "can you hear me now the budget")  # a fragment, other case/punctuation
    own = Turn("you", "mic", 10.5, 12.0, "Yes, I hear you fine.")
    late = Turn("you", "mic", 13.0 + ECHO_WINDOW_S + 1, 20.0, "can you hear me now the budget")
    assert is_echo(echo, played) and not is_echo(own, played) and not is_echo(late, played)
    kept, dropped = drop_echoes([played, echo, own, late])
    assert kept == [played, own, late] and dropped == 1
    cjk = Turn("them", "system", 0.0, 2.0, "今天下午开会")
    assert is_echo(Turn("you", "mic", 0.2, 1.8, "今天下午开"), cjk)


def test_recorder_orders_both_sides_by_audio_time_and_writes_every_format(tmp_path):
    mic, system = SourceClock(), SourceClock()
    now = time.time()
    mic.mark(100.0, wall=now)  # the microphone's stream time 100 s is now
    system.mark(5.0, wall=now)  # system audio's stream time 5 s is now
    recorder = CallRecorder(lambda: tmp_path, {"mic": mic, "system": system}.get)
    recorder._started = now - 10.0  # the call began 10 s ago (start() uses the current time)
    # arrival order: the microphone's final first (dictation priority), though "them" spoke first
    recorder.observe(final("mic", 96.0, 97.5, "Thanks, see you\x07 Friday.", "7",
                           words=[{"word": "Thanks", "start": 0.1, "end": 0.4}, {"word": "see", "start": 0.5,
                                  "end": 0.7}, {"word": "you", "start": 0.7, "end": 0.9},
                                  {"word": "Friday", "start": 1.0, "end": 1.4}]))
    recorder.observe(final("system", 0.5, 2.0, "Hello, the report is done.", "6"))
    recorder.observe(final("ws:c1", 0.0, 1.0, "not a side of the call", "8"))
    recorder.observe({"type": "partial", "source": "system", "committed": "x"})
    result = recorder.stop()
    assert result["turns"] == 2 and result["echoes_dropped"] == 0
    files = {p.rsplit(".", 1)[1]: p for p in result["files"]}
    assert set(files) == {"txt", "srt", "vtt", "json"}
    txt = open(files["txt"], encoding="utf-8").read().splitlines()
    assert txt[1] == "[00:00:05.500] them: Hello, the report is done."
    assert txt[2] == "[00:00:06.000] you: Thanks, see you Friday."  # the control character is gone
    srt = open(files["srt"], encoding="utf-8").read()
    assert srt.index("them: Hello") < srt.index("you: Thanks see you Friday")  # words → word-timed cues
    assert "00:00:06,100 --> 00:00:07,400" in srt
    vtt = open(files["vtt"], encoding="utf-8").read()
    assert vtt.startswith("WEBVTT") and vtt.index("<v them>Hello") < vtt.index("<v you>Thanks")
    doc = json.loads(open(files["json"], encoding="utf-8").read())
    assert [(t["speaker"], t["source"], t["utterance_id"]) for t in doc["turns"]] == [
        ("them", "system", "6"), ("you", "mic", "7")]
    assert doc["turns"][1]["words"][0] == {"word": "Thanks", "start": 6.1, "end": 6.4}
    assert not recorder.recording


def test_a_silent_call_writes_nothing_and_stop_without_start_is_one_line(tmp_path):
    recorder = CallRecorder(lambda: tmp_path / "transcripts", lambda source: None)
    with pytest.raises(QasrError, match="no call is being recorded"):
        recorder.stop()
    assert recorder.start()["already"] is False and recorder.start()["already"] is True
    recorder.observe(final("system", 0.0, 1.0, "   ", "1"))  # an empty final is no turn
    result = recorder.stop()
    assert result["files"] == [] and "nothing was said" in result["message"]
    assert not (tmp_path / "transcripts").exists()
