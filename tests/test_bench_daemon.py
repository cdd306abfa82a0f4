"""Smoke test of scripts/bench_daemon.py on the tiny bundle: every measurement prints a sane JSON line
and everything the script started (daemons, pulseaudio, Xvfb, its work folder) is gone afterwards."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qasr.daemon.lifecycle import wait_for_exit

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_daemon.py"
IDLE_S = 1.0


@pytest.mark.system
def test_bench_daemon_smoke(tiny_bundle):
    for tool in ("pulseaudio", "pactl", "paplay", "espeak-ng"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    typing = shutil.which("Xvfb") is not None
    cmd = [sys.executable, str(SCRIPT), "--model", str(tiny_bundle), "--json", "--idle-s", str(IDLE_S), "--settle-s", "0.5",
           "--lengths", "2", "--repeats", "1", "--clients", "3", "--client-rounds", "1",
           "--daemon-set", "engine.max_new_tokens=8"]
    if not typing:
        cmd.append("--skip-typing")
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    by = {}
    for line in lines:
        by.setdefault(line["bench"], []).append(line)

    [idle] = by["idle"]
    assert idle["no_model_work"] is True and idle["state"] == "listening"
    assert 0 <= idle["cpu_pct"] < 200
    assert idle["seconds"] == pytest.approx(IDLE_S, abs=0.3)  # the window asked for
    # cpu_pct is CPU time over the window (both reported rounded: 0.01 s and 0.1 s)
    cpu_tol = 100 * (0.005 / idle["seconds"] + idle["cpu_s"] * 0.05 / idle["seconds"] ** 2) + 0.01
    assert idle["cpu_pct"] == pytest.approx(100 * idle["cpu_s"] / idle["seconds"], abs=cpu_tol)
    assert idle["events_seen"] == {} and not any(idle["model_work"].values())
    assert [m["when"] for m in by["memory"]] == ["after_start", "after_speech"]
    assert all(m["rss_mb"] > 0 and m["peak_rss_mb"] >= m["rss_mb"] for m in by["memory"])

    [latency] = by["final_latency"]
    assert latency.get("measured", True), latency
    assert latency["utterances"] >= 1 and latency["audio_s"] > 1.0
    # the utterance holds the played speech, plus at most the pre-roll and the hangover
    assert latency["speech_s"] - 0.1 <= latency["audio_s"] <= latency["speech_s"] + 2.0
    assert latency["hangover_ms"] == 600
    # stream time from the first voiced frame to the utterance end is the speech plus about the hangover
    assert 600 - 300 <= latency["speech_end_to_utt_end_ms"] <= 600 + 600
    # a final prepared during the hangover is out the moment the utterance ends: 0 ms is a real value; the
    # final never arrives before the utterance's vad end event, and the daemon's latency excludes the hangover
    assert latency["utt_end_to_final_ms"] >= 0
    assert 0 <= latency["daemon_latency_ms"] < latency["speech_end_to_final_ms"]
    if not latency["prepared"]:
        assert latency["daemon_latency_ms"] > 0
    assert latency["speech_end_to_final_ms"] > latency["utt_end_to_final_ms"]  # the hangover lies between
    # the derived fields recomputed from the reported ones (each rounded to 0.1 ms)
    assert latency["speech_end_to_final_ms"] == pytest.approx(
        latency["speech_end_to_utt_end_ms"] + latency["utt_end_to_final_ms"], abs=0.25)
    assert latency["ws_overhead_ms"] == pytest.approx(
        latency["utt_end_to_final_ms"] - latency["daemon_latency_ms"], abs=0.25)
    assert latency["played_end_to_final_ms"] == pytest.approx(
        latency["speech_end_to_final_ms"] + latency["playback_delay_ms"], abs=0.25)
    # overhead is derived exactly for a final computed after the utterance end with a known engine time
    assert isinstance(latency["prepared"], bool)
    if latency["prepared"] or latency["engine_final_ms"] is None:
        assert latency["overhead_ms"] is None
    else:
        assert latency["overhead_ms"] == pytest.approx(
            latency["speech_end_to_final_ms"] - 600 - latency["engine_final_ms"], abs=0.25)

    [clients] = by["clients"]
    assert clients["clients"] == 3 and clients["finals_missing"] == 0
    assert clients["cpu_s_1"] > 0 and clients["cpu_s_n"] > 0
    # one round: the medians are the single runs; the extra is recomputed from them (rounded to 1 ms)
    one, many = clients["cpu_s_1"], clients["cpu_s_n"]
    assert clients["cpu_s_1_all"] == [one] and clients["cpu_s_n_all"] == [many]
    assert clients["extra_cpu_s"] == pytest.approx(many - one, abs=0.0015)
    pct_tol = 100 * (0.0005 / one + many * 0.0005 / one ** 2) + 0.05
    assert clients["extra_cpu_pct"] == pytest.approx(100 * (many / one - 1), abs=pct_tol)

    if typing:
        assert {t["sink"] for t in by["typing"]} == {"type", "paste"}
        for t in by["typing"]:
            if t.get("measured", True):
                assert t["chars"] == 40 and t["release_to_last_char_ms"] >= t["release_to_first_char_ms"] > 0
                assert t["typing_ms"] == pytest.approx(
                    t["release_to_last_char_ms"] - t["release_to_first_char_ms"], abs=0.25)
                # the X11 debounce + the segmenter's in-flight tail (hotkey.release_tail_s only holds on voice)
                assert t["entry_changes"] >= 1 and t["configured_tails_ms"] == 40 + 100
                assert t["release_to_end_ms"] is None or t["release_to_end_ms"] > 0
                assert t["final_sink"] == t["sink"]
            else:
                assert t["reason"]
        speeds = by["sink_speed"]
        assert {(s["sink"], s["chars"]) for s in speeds} == {("type", 40), ("type", 200), ("paste", 40), ("paste", 200)}
        for s in speeds:  # characters over the time to the last one, recomputed (cps rounded to 0.1)
            assert s["cps"] == pytest.approx(s["chars"] * 1000 / s["deliver_to_last_char_ms"], rel=0.01, abs=0.1)

    # cleanup: the daemons and the work folder are gone
    pids = [int(p) for p in re.findall(r"daemon (\d+) ready", proc.stderr)]
    assert pids and all(wait_for_exit(pid, 10) for pid in pids)
    work = re.search(r"work dir (\S+)", proc.stderr).group(1)
    assert not Path(work).exists()
