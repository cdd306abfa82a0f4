"""The peer benchmark's plumbing (no build, no conversion, no timing): llama-mtmd-cli's log is read right,
and a bench worker reports its own peak memory, not its parent's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from qasr.daemon.bench.peers import parse_mtmd_log

MTMD_LOG = """\
encoding audio slice...
audio slice encoded in 912 ms
decoding audio batch 1/1, n_tokens_batch = 130
audio decoded (batch 1/1) in 498 ms
llama_perf_context_print:        load time =     812.33 ms
llama_perf_context_print: prompt eval time =     601.50 ms /   148 tokens (    4.06 ms per token,   246.05 tokens per second)
llama_perf_context_print:        eval time =    1185.20 ms /    40 runs   (   29.63 ms per token,    33.75 tokens per second)
llama_perf_context_print:       total time =    2900.00 ms /   188 tokens
"""


def test_mtmd_log_gives_encoder_prefill_and_per_token_times():
    got = parse_mtmd_log(MTMD_LOG)
    assert got["llama_cpp_encoder_ms"] == 912.0
    assert got["llama_cpp_prefill_ms"] == 601.5
    assert got["llama_cpp_generated"] == 40
    assert got["llama_cpp_decode_ms_per_token"] == 29.63
    assert got["llama_cpp_total_ms"] == round(912 + 601.5 + 1185.2, 1)


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
