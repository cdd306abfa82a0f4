"""The peer benchmark's plumbing (no build, no conversion, no timing): llama-mtmd-cli's log is read right,
and a bench worker reports its own peak memory, not its parent's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from qasr.daemon.bench import peers
from qasr.daemon.bench.peers import parse_mtmd_log

# llama-mtmd-cli of llama-cpp-python 0.3.36 with `-lv 4` (llama_perf is libllama INFO = verbosity 4), 10 s of
# audio in two media chunks, -n 40 (an excerpt of a real run)
MTMD_LOG = """\
0.01.525.212 I main: loading model: /root/.cache/qasr/peers/gguf-random-0.6b/text-Q4_K_M.gguf
0.01.657.592 I encoding mtmd batch, n_chunks = 1 (done = 1, total = 4)
0.03.118.963 I mtmd batch encoding done in 1461 ms
0.03.119.012 I decoding audio batch 1/1, n_tokens_batch = 104
0.03.876.998 I audio decoded (batch 1/1) in 758 ms
0.03.877.080 I encoding mtmd batch, n_chunks = 1 (done = 2, total = 4)
0.04.414.357 I mtmd batch encoding done in 538 ms
0.04.414.403 I decoding audio batch 1/1, n_tokens_batch = 39
0.04.855.187 I audio decoded (batch 1/1) in 441 ms
0.06.992.053 I llama_perf_context_print:        load time =     831.98 ms
0.06.992.057 I llama_perf_context_print: prompt eval time =    3515.69 ms /   168 tokens (   20.93 ms per token,    47.79 tokens per second)
0.06.992.060 I llama_perf_context_print:        eval time =    1832.18 ms /    39 runs   (   46.98 ms per token,    21.29 tokens per second)
0.06.992.061 I llama_perf_context_print:       total time =    5672.10 ms /   207 tokens
0.06.992.062 I llama_perf_context_print:    graphs reused =         39
"""


def test_mtmd_log_gives_encoder_prefill_and_per_token_times():
    """The prompt eval clock spans the audio encoding (no sync between the chunks): total = prompt eval + eval."""
    got = parse_mtmd_log(MTMD_LOG)
    assert got["llama_cpp_encoder_ms"] == 1461.0 + 538.0
    assert got["llama_cpp_prefill_ms"] == round(3515.69 - 1999.0, 1)
    assert got["llama_cpp_generated"] == 39
    assert got["llama_cpp_decode_ms_per_token"] == 46.98
    assert got["llama_cpp_total_ms"] == round(3515.69 + 1832.18, 1)


def test_the_bench_asks_mtmd_cli_for_llama_perf(monkeypatch, tmp_path):
    """Without `-lv 4` llama-mtmd-cli 0.3.36 prints no llama_perf lines at all."""
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr=MTMD_LOG)

    monkeypatch.setattr(peers.subprocess, "run", fake_run)
    got = peers.run_mtmd(tmp_path / "cli", tmp_path / "m", tmp_path / "p", tmp_path / "a.wav", 2, 40)
    assert seen["cmd"][seen["cmd"].index("-lv") + 1] == "4"
    assert got["llama_cpp_total_ms"] == round(3515.69 + 1832.18, 1)


def test_batch_encoding_lines_of_newer_llama_cpp_are_summed():
    log = "I mtmd batch encoding done in 440 ms\nI mtmd batch encoding done in 283 ms\n"
    assert parse_mtmd_log(log)["llama_cpp_encoder_ms"] == 723.0


def test_a_log_without_timings_gives_no_total():
    assert "llama_cpp_total_ms" not in parse_mtmd_log("error: failed to load model")


def test_a_worker_does_not_report_its_parents_peak_memory():
    """ru_maxrss survives fork + exec on Linux; the bench reads VmHWM instead."""
    ballast = np.ones(300 * 2**20 // 8)  # 300 MB resident in this process
    code = "from qasr.daemon.bench.engine_bench import peak_rss_mb; print(peak_rss_mb())"
    child_mb = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert ballast.sum() > 0
    assert child_mb < 250
