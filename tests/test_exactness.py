"""qasr's transcription (fp32 encoder / f32 decoder bundle) gives exactly the official token ids.

The reference is the official qwen-asr transformers code on the same random checkpoint
(tests/official.py), greedy, with the same max_new_tokens. Before comparing, each case checks that
the reference output is long and varied enough to prove something; on a mismatch the first
differing step and the reference's top-1/top-2 logit gap there are reported.
"""

from __future__ import annotations

import numpy as np
import pytest

from qasr.engine.transcribe import TranscribeOptions, Transcriber
from tests.audio_samples import make_test_audio

MAX_NEW = 48  # below the audio-length cap for every clip used here (>= 4 s -> cap >= 56)

CASES = [
    # (id, seconds, seed, language, context)
    ("auto-5.5s", 5.5, 1, None, ""),
    ("auto-11s-windowed", 11.0, 2, None, ""),
    ("forced-english-5.5s", 5.5, 3, "English", ""),
    ("forced-chinese-lowercase-9s", 9.0, 4, "chinese", ""),
    ("context-6s", 6.0, 5, None, "Names: Zoë Quinlan, Bjørn Åberg. Topic: 语音识别 and Qwen."),
    ("context-forced-17s", 17.0, 6, "French", "hotwords: qasr, llama.cpp, ONNX"),
]


@pytest.fixture(scope="module")
def transcribers(tiny_bundle):
    made: dict[tuple, Transcriber] = {}

    def get(language, context, loop_guard=False) -> Transcriber:
        key = (language, context, loop_guard)
        if key not in made:
            options = TranscribeOptions(
                language=language, context=context, max_new_tokens=MAX_NEW, threads=1, loop_guard=loop_guard
            )
            made[key] = Transcriber(tiny_bundle, options)
        return made[key]

    yield get
    for t in made.values():
        t.close()


def _first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@pytest.fixture(scope="module")
def outcomes(official_ref, transcribers):
    """Run every case once (reference and qasr); tests below assert on the collected results."""
    results = {}
    for case_id, seconds, seed, language, context in CASES:
        audio = make_test_audio(seconds, seed=seed)
        ref = official_ref.generate_with_scores(audio, language=language, context=context, max_new_tokens=MAX_NEW)
        got = transcribers(language, context).transcribe(audio)  # loop guard off: the official has none
        guarded = transcribers(language, context, loop_guard=True).transcribe(audio)
        results[case_id] = (audio, ref, got, guarded)
    return results


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_token_ids_equal_official(case, outcomes, official_ref):
    case_id, seconds, _, language, context = case
    audio, ref, got, _ = outcomes[case_id]
    # an informative reference: not a collapse to the stop token or to one repeated id
    assert len(ref.ids) >= 8, f"reference generated only {ref.ids}"
    assert len(set(ref.ids)) >= 6, f"reference output is not varied: {ref.ids}"
    assert len(got.segments) == 1  # all clips are below the 30 s piece limit
    seg = got.segments[0]
    print(
        f"\n{case_id}: {len(ref.ids)} tokens ({len(set(ref.ids))} distinct), stopped={ref.stopped}, "
        f"min top1-top2 gap {ref.min_gap():.4f}; qasr stop={seg.stop_reason}, "
        f"encoder {seg.encoder_ms:.0f} ms, prefill {seg.prefill_ms:.0f} ms, decode {seg.decode_ms:.0f} ms"
    )
    if got.token_ids != ref.ids:
        i = _first_difference(got.token_ids, ref.ids)
        step = ref.steps[i] if i is not None and i < len(ref.steps) else None
        detail = f"top1 {step.token} ({step.top1:.4f}) vs top2 {step.second} ({step.top2:.4f}), gap {step.gap:.5f}" if step else ""
        pytest.fail(
            f"{case_id}: first different token at step {i}: qasr {got.token_ids[i:i + 5]} vs "
            f"official {ref.ids[i:i + 5]}; {detail}"
        )
    want_language, want_text = official_ref.safe_parse(ref.ids, language)  # the official text, safe to type
    assert (got.language, got.text) == (want_language, want_text)
    if official_ref.parse(ref.ids, language) != (want_language, want_text):
        print(f"{case_id}: markers or control characters left out of {official_ref.parse(ref.ids, language)[1]!r}")
    assert got.n_tokens == len(ref.ids)
    assert seg.stop_reason == ("stop" if ref.stopped else "max_tokens")


def test_reference_outputs_are_informative_overall(outcomes):
    """Across the cases at least one long generation, and generations differ between cases."""
    refs = [ref.ids for _, ref, _, _ in outcomes.values()]
    assert max(len(ids) for ids in refs) >= 40
    assert len({tuple(ids) for ids in refs}) == len(refs)


def test_loop_guard_cuts_a_prefix_of_the_official_output(outcomes):
    """With the guard on (the default) the ids are the official ones up to where a loop was caught."""
    caught = 0
    for case_id, (_, ref, _, guarded) in outcomes.items():
        seg = guarded.segments[0]
        assert guarded.token_ids == ref.ids[: len(guarded.token_ids)], case_id
        if seg.stop_reason == "loop":
            caught += 1
            tail = guarded.token_ids[-15:]
            print(f"\n{case_id}: loop caught after {len(guarded.token_ids)} tokens, tail {tail}; text {guarded.text!r}")
            assert len(guarded.token_ids) < len(ref.ids) or not ref.stopped
        else:
            assert guarded.token_ids == ref.ids, case_id
    print(f"\nloops caught in {caught} of {len(outcomes)} cases")


def test_prompt_ids_equal_official(transcribers, official_ref):
    for _, _, _, language, context in CASES:
        t = transcribers(language, context)
        for n_audio in (1, 13, 143):
            ours = t.prompt(n_audio).token_ids(official_ref.audio_token_id)
            assert ours == official_ref.prompt_ids(n_audio, language, context)


def test_clip_under_one_second(official_ref, tiny_bundle):
    """0.8 s: one front-end chunk, which the official code does not pad to 100 frames.

    Exact when the bundle's front-end has a dynamic time axis; with a fixed 100-frame front-end the
    chunk is zero-padded (the tail embeddings differ), which is reported as an expected failure.
    """
    audio = make_test_audio(0.8, seed=8)
    ref = official_ref.generate_with_scores(audio, max_new_tokens=MAX_NEW)
    with Transcriber(tiny_bundle, TranscribeOptions(threads=1, max_new_tokens=MAX_NEW, loop_guard=False)) as t:
        dynamic = t.encoder.frontend_dynamic_time
        got = t.transcribe(audio)
    print(f"\n0.8 s clip: dynamic front-end={dynamic}, reference {len(ref.ids)} tokens, equal={got.token_ids == ref.ids}")
    if not dynamic:
        pytest.xfail("fixed 100-frame front-end: a lone short chunk is padded, unlike the official code")
    assert len(ref.ids) >= 3
    assert got.token_ids == ref.ids
