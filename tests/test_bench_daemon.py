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


@pytest.mark.system
def test_bench_daemon_smoke(tiny_bundle):
    for tool in ("pulseaudio", "pactl", "paplay", "espeak-ng"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    typing = shutil.which("Xvfb") is not None
    cmd = [sys.executable, str(SCRIPT), "--model", str(tiny_bundle), "--json", "--idle-s", "1", "--settle-s", "0.5",
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
    assert [m["when"] for m in by["memory"]] == ["after_start", "after_speech"]
    assert all(m["rss_mb"] > 0 and m["peak_rss_mb"] >= m["rss_mb"] for m in by["memory"])

    [latency] = by["final_latency"]
    assert latency.get("measured", True), latency
    assert latency["utterances"] >= 1 and latency["audio_s"] > 1.0
    assert latency["prepared"] in (True, False)
    # a final prepared during the hangover is out the moment the utterance ends: 0 ms is a real value
    assert latency["utt_end_to_final_ms"] >= 0 and latency["daemon_latency_ms"] >= 0
    if not latency["prepared"]:
        assert latency["daemon_latency_ms"] > 0
    assert latency["speech_end_to_final_ms"] > latency["utt_end_to_final_ms"]  # the hangover lies between
    assert latency["hangover_ms"] == 600

    [clients] = by["clients"]
    assert clients["clients"] == 3 and clients["finals_missing"] == 0
    assert clients["cpu_s_1"] > 0 and clients["cpu_s_n"] > 0 and clients["extra_cpu_pct"] is not None

    if typing:
        assert {t["sink"] for t in by["typing"]} == {"type", "paste"}
        for t in by["typing"]:
            if t.get("measured", True):
                assert t["chars"] == 40 and t["release_to_last_char_ms"] >= t["release_to_first_char_ms"] > 0
                assert t["final_sink"] == t["sink"]
            else:
                assert t["reason"]
        speeds = by["sink_speed"]
        assert {(s["sink"], s["chars"]) for s in speeds} == {("type", 40), ("type", 200), ("paste", 40), ("paste", 200)}
        assert all(s["cps"] > 0 for s in speeds)

    # cleanup: the daemons and the work folder are gone
    pids = [int(p) for p in re.findall(r"daemon (\d+) ready", proc.stderr)]
    assert pids and all(wait_for_exit(pid, 10) for pid in pids)
    work = re.search(r"work dir (\S+)", proc.stderr).group(1)
    assert not Path(work).exists()
