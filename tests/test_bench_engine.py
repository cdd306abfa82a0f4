"""`qasr-daemon bench --streaming` on the tiny bundle: the workload runs and its numbers are coherent."""

from __future__ import annotations

from qasr.daemon.bench.engine_bench import streaming_worker


def test_streaming_bench_reports_partials_finals_and_the_prepared_final(tiny_bundle):
    result = streaming_worker(tiny_bundle, 3.0, threads=1, rtf_budget=100.0, realtime=False)
    assert result["partials"] >= 2 and result["first_partial_s"] > 0
    assert result["final_tokens"] >= 1 and result["final_ms"] > 0
    # the draft equal to the final is accepted whole, an empty draft accepts nothing
    assert result["all_accepted_tokens"] == f"{result['final_tokens']}/{result['final_tokens']}"
    assert result["final_latency_all_accepted_ms"] > 0 and result["final_latency_none_accepted_ms"] > 0
    assert result["paused_final_prepared"] is True and result["paused_prepare_ms"] > 0
    assert 0 < result["compute_fraction"]
    # commits: a lag exists only for committed tokens and lies within the audio; nothing committed is
    # trivially kept, and kept commits are a prefix of the final
    committed, lag, kept = result["committed_tokens"], result["commit_lag_s"], result["final_kept_commits"]
    assert isinstance(committed, int) and isinstance(kept, bool)
    assert committed > 0 or (lag is None and kept)
    if lag is not None:
        assert 0 <= lag <= result["audio_s"]
    if kept:
        assert committed <= result["final_tokens"]
    assert result["official_recipe"]["steps"] >= 1


def test_commit_stats_measure_lag_and_agreement():
    from qasr.daemon.bench.engine_bench import commit_stats

    trace = [(1.0, 3, 0), (2.0, 5, 1), (3.0, 6, 3)]  # (audio s, hypothesis tokens, committed tokens)
    stats = commit_stats(trace, [7, 8, 9], [7, 8, 9, 10])
    # token 0 seen at 1.0, committed at 2.0; tokens 1, 2 seen at 1.0, committed at 3.0
    assert stats == {"committed_tokens": 3, "commit_lag_s": 2.0, "final_kept_commits": True}
    assert commit_stats(trace, [7, 8, 9], [7, 5])["final_kept_commits"] is False
    assert commit_stats([], [], [1])["commit_lag_s"] is None
