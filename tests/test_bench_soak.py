"""Smoke test of scripts/bench_soak.py on the tiny bundle: a short soak whose counts agree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_soak.py"
MINUTES = 0.3
SAMPLE_S = 1.0


@pytest.mark.system
def test_bench_soak_smoke(tiny_bundle):
    for tool in ("pulseaudio", "paplay", "espeak-ng"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    cmd = [sys.executable, str(SCRIPT), "--model", str(tiny_bundle), "--minutes", str(MINUTES),
           "--sample-s", str(SAMPLE_S), "--json", "--daemon-set", "engine.max_new_tokens=8"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["phrases"] >= 2
    # every phrase is one utterance (pauses are longer than the hangover), each gets exactly one final,
    # and every final with text is journaled
    assert result["utterances"] == result["finals"] == result["phrases"], result
    assert result["journal_lines"] == result["nonempty_finals"], result
    assert result["errors"] == 0
    curve = result["curve"]
    assert len(curve) >= int(0.5 * result["minutes"] * 60 / SAMPLE_S)  # sampled all along (a loaded host is late)
    assert all(b[0] > a[0] for a, b in zip(curve, curve[1:]))  # sampled in time order
    assert result["rss_max_mb"] == max(r for _, r in curve) and result["rss_end_mb"] == curve[-1][1]
    assert 0 < result["rss_start_mb"] <= result["rss_max_mb"]
