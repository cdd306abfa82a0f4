"""`qasr-daemon bench --streaming` on the tiny bundle: the workload runs and its numbers are coherent."""

from __future__ import annotations

from qasr.daemon.bench import streaming_worker


def test_streaming_bench_reports_partials_finals_and_the_prepared_final(tiny_bundle):
    result = streaming_worker(tiny_bundle, 3.0, threads=1, rtf_budget=100.0, realtime=False)
    assert result["partials"] >= 2 and result["first_partial_s"] > 0
    assert result["final_tokens"] >= 1 and result["final_ms"] > 0
    # the draft equal to the final is accepted whole, an empty draft accepts nothing
    assert result["all_accepted_tokens"] == f"{result['final_tokens']}/{result['final_tokens']}"
    assert result["final_latency_all_accepted_ms"] > 0 and result["final_latency_none_accepted_ms"] > 0
    assert result["paused_final_prepared"] is True and result["paused_prepare_ms"] > 0
    assert 0 < result["compute_fraction"]
    assert result["official_recipe"]["steps"] >= 1
