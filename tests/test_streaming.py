"""Streaming engine: incremental encoder, prefix reuse, append-only commits, exact finals, budget, cuts."""

from __future__ import annotations

import numpy as np
import pytest

from qasr.engine.commit import CommitOptions, CommitTracker, TextOfTokens
from qasr.engine.output import complete_utf8_prefix
from qasr.engine.features import log_mel_features
from qasr.engine.incremental_encoder import IncrementalEncoder
from qasr.engine.streaming import FinalEvent, PartialEvent, StreamingOptions, StreamingSession
from qasr.engine.transcribe import TranscribeOptions, Transcriber
from tests.audio_samples import make_test_audio

RATE = 16000


@pytest.fixture(scope="module")
def engines(tiny_bundle):
    cache: dict[str | None, Transcriber] = {}

    def get(language: str | None = None, context: str = "") -> Transcriber:
        key = (language, context)
        if key not in cache:
            cache[key] = Transcriber(tiny_bundle, TranscribeOptions(language=language, context=context, threads=1))
        return cache[key]

    yield get
    for engine in cache.values():
        engine.close()


def stream(engine: Transcriber, audio: np.ndarray, step_s: float, options: StreamingOptions):
    session = StreamingSession(engine, options, utterance_id="u1")
    events = []
    n = max(1, int(step_s * RATE))
    for i in range(0, audio.shape[0], n):
        events.extend(session.feed(audio[i : i + n]))
    final = session.finish()
    return session, events, final


# --- commit policy (pure) ---------------------------------------------------------------------------


def test_commit_tracker_needs_agreement_and_keeps_rollback():
    tracker = CommitTracker(CommitOptions(agreement=2, rollback=2))
    assert tracker.update([1, 2, 3, 4, 5]) == []  # one hypothesis is not an agreement
    assert tracker.update([1, 2, 3, 9, 9, 9]) == [1, 2, 3]  # common prefix 3, rollback leaves 4
    assert tracker.update([1, 2, 7, 7, 7, 7]) == []  # contradicts committed: nothing new
    assert tracker.committed == [1, 2, 3]
    assert tracker.update([1, 2, 3, 4, 5, 6, 7]) == []  # agrees with committed, but not with previous
    assert tracker.update([1, 2, 3, 4, 5, 6, 8]) == [4, 5]  # lcp 6, newest 2 of 7 held back
    assert tracker.committed == [1, 2, 3, 4, 5]


def test_complete_utf8_prefix_holds_back_split_characters():
    text = "né 你好 🎤".encode()
    for cut in range(len(text) + 1):
        prefix = complete_utf8_prefix(text[:cut])
        prefix.decode("utf-8")  # never raises
        assert text.startswith(prefix) and cut - len(prefix) < 4


def test_text_of_tokens_hides_unfinished_header():
    table = {1: b"language", 2: b" English", 3: b"<asr_text>", 4: b"hi", 5: b" th", 6: b"\xe4\xbd", 7: b"\xa0"}
    auto = TextOfTokens(table.__getitem__, asr_text_id=3, forced_language=False)
    assert auto.text([1]) == "" and auto.text([1, 2]) == ""
    assert auto.text([1, 2, 3, 4, 5]) == "hi th"
    assert auto.text([1, 2, 3, 4, 6], complete_only=True) == "hi"
    assert auto.text([1, 2, 3, 4, 6, 7], complete_only=True) == "hi你"
    forced = TextOfTokens(table.__getitem__, asr_text_id=3, forced_language=True)
    assert forced.text([4, 5]) == "hi th"


# --- incremental encoder -----------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.7, 5.3, 8.0, 13.6, 17.25])
def test_exact_embeddings_equal_offline_encoder(engines, seconds):
    engine = engines()
    audio = make_test_audio(seconds, seed=int(seconds * 100))
    inc = IncrementalEncoder(engine.encoder, engine.feature_params)
    rng = np.random.default_rng(0)
    pos = 0
    while pos < audio.shape[0]:  # irregular piece sizes
        step = int(rng.integers(100, 9000))
        inc.push(audio[pos : pos + step])
        pos += step
    exact, kept = inc.exact_embeddings()
    padded = audio if audio.shape[0] >= RATE // 2 else np.pad(audio, (0, RATE // 2 - audio.shape[0]))
    offline = engine.encode(padded)
    assert exact.shape == offline.shape
    np.testing.assert_allclose(exact, offline, atol=1e-5, rtol=0)
    assert kept <= len(inc.finished_windows)


def test_streamed_encoder_output_equals_offline_when_loudest_moment_comes_first(engines):
    engine = engines()
    audio = make_test_audio(12.4, seed=7) * 0.5
    audio[3000:3400] += 0.9 * np.sin(np.arange(400) / 3.0).astype(np.float32)  # the clip's maximum, at 0.2 s
    inc = IncrementalEncoder(engine.encoder, engine.feature_params)
    for i in range(0, audio.shape[0], 4000):
        inc.push(audio[i : i + 4000])
    streamed = np.concatenate([*inc.finished_windows, inc.open_window()])
    offline = engine.encoder.encode(log_mel_features(audio, engine.feature_params))
    assert len(inc.finished_windows) == 1  # 12.4 s: one finished 8 s window, one open
    np.testing.assert_allclose(streamed, offline, atol=1e-4, rtol=0)


def test_front_end_runs_once_per_finished_chunk(engines):
    engine = engines()
    calls: list[int] = []
    real = engine.encoder.frontend_chunks

    def counting(chunks):
        calls.append(int(chunks.shape[0]))
        return real(chunks)

    engine.encoder.frontend_chunks = counting
    try:
        audio = make_test_audio(10.0, seed=3)
        session = StreamingSession(engine, StreamingOptions(rtf_budget=100.0), "u1")
        partials = []
        for i in range(0, audio.shape[0], RATE // 2):
            partials += [e for e in session.feed(audio[i : i + RATE // 2]) if isinstance(e, PartialEvent)]
        kv_windows_while_streaming = session._kv_audio_windows
        session.finish()
    finally:
        del engine.encoder.frontend_chunks
    # each finished chunk once, plus one tail chunk per partial step, plus the final's tail and any
    # chunk whose features the global log-mel maximum changed
    assert sum(calls) - 10 - len(partials) - 1 <= 10
    assert sum(calls[: len(calls) - 2]) <= 10 + len(partials)
    assert kv_windows_while_streaming == 1  # the finished 8 s window went into the KV cache once


# --- exact finals ----------------------------------------------------------------------------------


CASES = [
    (3.3, 0.25, None, ""),
    (6.1, 0.5, "English", ""),
    (11.7, 0.5, None, ""),
    (9.1, 1.0, "English", ""),
    (14.2, 0.25, None, "Names: Ada Lovelace, Grace Hopper"),
    (17.6, 1.0, "Chinese", ""),
]


@pytest.mark.parametrize("seconds,step_s,language,context", CASES)
def test_final_tokens_equal_offline_transcribe(engines, seconds, step_s, language, context):
    engine = engines(language, context)
    audio = make_test_audio(seconds, seed=int(seconds * 10))
    offline = engine.transcribe(audio)
    assert len(offline.token_ids) >= 3, "reference output too short to prove anything"
    _, events, final = stream(engine, audio, step_s, StreamingOptions(language=language, context=context, rtf_budget=100.0))
    assert isinstance(final, FinalEvent)
    assert final.token_ids == offline.token_ids
    assert final.text == offline.text
    assert final.language == offline.language
    assert any(isinstance(e, PartialEvent) for e in events)
    print(f"{seconds}s step {step_s}: draft {final.timings.draft_tokens} accepted {final.timings.accepted_tokens}")


def test_committed_text_is_append_only(engines):
    engine = engines("English")
    audio = make_test_audio(12.0, seed=42)
    _, events, final = stream(engine, audio, 0.25, StreamingOptions(language="English", rtf_budget=100.0))
    partials = [e for e in events if isinstance(e, PartialEvent)]
    assert len(partials) >= 10
    previous = ""
    for p in partials:
        assert p.committed.startswith(previous)
        previous = p.committed
    assert [p.seq for p in partials] == list(range(1, len(partials) + 1))
    assert final.committed == previous


def test_cancel_leaves_nothing_for_the_next_utterance(engines):
    engine = engines()
    first = StreamingSession(engine, StreamingOptions(rtf_budget=100.0), "a")
    first.feed(make_test_audio(4.0, seed=11))
    first.cancel()
    audio = make_test_audio(5.0, seed=12)
    _, _, final = stream(engine, audio, 0.5, StreamingOptions(rtf_budget=100.0))
    assert final.token_ids == engine.transcribe(audio).token_ids


def test_silence_gives_no_partials_and_an_empty_final(engines):
    engine = engines()
    _, events, final = stream(engine, np.zeros(3 * RATE, dtype=np.float32), 0.5, StreamingOptions(rtf_budget=100.0))
    assert events == []
    assert final.text == "" and final.token_ids == [] and final.stop_reason == "silence"


def test_budget_skips_partials_but_never_the_final(engines):
    engine = engines()
    audio = make_test_audio(10.0, seed=5)
    generous_session, generous, _ = stream(engine, audio, 0.25, StreamingOptions(rtf_budget=100.0))
    # A budget at which one step's compute needs ~2 s of audio: far fewer partials must follow.
    step_cost_s = float(np.median([e.timings.step_ms for e in generous])) / 1000.0
    budget = step_cost_s / 2.0
    tight_session, tight, final = stream(engine, audio, 0.25, StreamingOptions(rtf_budget=budget))
    assert len(tight) < len(generous)
    assert tight_session.skipped > 0
    assert final.token_ids == engine.transcribe(audio).token_ids
    # the optional work (partial steps) stays within the budget, at most one step over it; the encoder's
    # share is not optional and may alone exceed so tight a budget on a slow host
    step_cost = max((e.timings.step_ms for e in tight), default=0.0) / 1000.0
    assert tight_session.steps_compute_s <= budget * 10.0 + step_cost + 0.05


def test_long_speech_is_cut_into_utterances_with_context(engines):
    engine = engines()
    audio = make_test_audio(13.0, seed=9)
    session = StreamingSession(engine, StreamingOptions(max_utterance_s=6.0, cut_search_s=2.0, rtf_budget=100.0), "u7")
    finals: list[FinalEvent] = []
    current = session
    for i in range(0, audio.shape[0], 4000):
        for event in current.feed(audio[i : i + 4000]):
            if isinstance(event, FinalEvent):
                finals.append(event)
                current = current.next_session
    finals.append(current.finish())
    assert len(finals) >= 2 and all(f.cut for f in finals[:-1]) and not finals[-1].cut
    assert finals[0].audio_start_s == 0.0
    for a, b in zip(finals, finals[1:]):
        assert abs(a.audio_end_s - b.audio_start_s) < 1e-6  # spans tile the audio
        assert 4.0 <= a.audio_end_s - a.audio_start_s <= 6.0
    assert abs(finals[-1].audio_end_s - 13.0) < 1e-3
    assert len({f.utterance_id for f in finals}) == len(finals)


def test_a_late_loud_moment_is_absorbed_during_speech_not_at_the_final(engines):
    engine = engines()
    audio = make_test_audio(12.0, seed=31) * 0.3
    audio[int(10.5 * RATE) : int(10.5 * RATE) + 400] += 0.8 * np.sin(np.arange(400) / 3.0).astype(np.float32)
    session = StreamingSession(engine, StreamingOptions(rtf_budget=100.0), "u1")
    for i in range(0, audio.shape[0], RATE // 4):
        session.feed(audio[i : i + RATE // 4])
    # the new maximum at 10.5 s re-encoded the finished chunks then: the final keeps every finished window
    _, kept = session.encoder.exact_embeddings()
    assert kept == len(session.encoder.finished_windows) == 1
    final = session.finish()
    assert final.token_ids == engine.transcribe(audio).token_ids


@pytest.mark.parametrize("reuse", [True, False])
def test_open_window_audio_reuse_feeds_only_new_positions_and_keeps_finals_exact(engines, reuse):
    engine = engines("English")
    audio = make_test_audio(11.0, seed=77)
    fed: list[int] = []
    real = engine.decoder.feed_embeddings

    def counting(embeds, *args, **kwargs):
        fed.append(int(np.asarray(embeds).shape[0]))
        return real(embeds, *args, **kwargs)

    engine.decoder.feed_embeddings = counting
    try:
        session = StreamingSession(engine, StreamingOptions(language="English", rtf_budget=100.0,
                                                            reuse_open_audio=reuse), "u1")
        steps = 0
        for i in range(0, audio.shape[0], RATE // 2):
            steps += sum(isinstance(e, PartialEvent) for e in session.feed(audio[i : i + RATE // 2]))
        streamed_positions = sum(fed)
        final = session.finish()
    finally:
        del engine.decoder.feed_embeddings
    assert final.token_ids == engine.transcribe(audio).token_ids
    n_tokens = engine.encode(audio).shape[0]
    if reuse:  # every position once, plus the first window again when it finished exact
        assert streamed_positions <= n_tokens + 104
    else:  # the open window again at every step
        assert streamed_positions > n_tokens + 104 and steps >= 10


# --- prepared finals (speculative, at a pause) --------------------------------------------------------


@pytest.mark.parametrize("seconds", [2.7, 9.4])
def test_prepared_final_is_returned_by_finish_when_no_audio_follows(engines, seconds):
    engine = engines()
    audio = make_test_audio(seconds, seed=int(seconds * 13))
    session = StreamingSession(engine, StreamingOptions(rtf_budget=100.0), "u1")
    for i in range(0, audio.shape[0], RATE // 4):
        session.feed(audio[i : i + RATE // 4])
    prepared = session.prepare_final()
    compute_before = session.compute_s
    final = session.finish()
    assert final is prepared and final.prepared
    assert session.compute_s == compute_before  # finish() did no work
    offline = engine.transcribe(audio)
    assert final.token_ids == offline.token_ids and final.text == offline.text
    assert final.seq == session.seq and final.audio_end_s == pytest.approx(seconds, abs=1e-3)


@pytest.mark.parametrize("pause_at_s", [3.0, 8.5])
def test_speech_resuming_after_a_prepared_final_continues_exactly(engines, pause_at_s):
    engine = engines("English")
    audio = make_test_audio(11.3, seed=57)
    session = StreamingSession(engine, StreamingOptions(language="English", rtf_budget=100.0), "u1")
    pause = int(pause_at_s * RATE)
    partials = []
    for i in range(0, pause, RATE // 4):
        partials += [e for e in session.feed(audio[i : min(i + RATE // 4, pause)]) if isinstance(e, PartialEvent)]
    early = session.prepare_final()
    assert early.token_ids == engine.transcribe(audio[:pause]).token_ids
    for i in range(pause, audio.shape[0], RATE // 4):
        partials += [e for e in session.feed(audio[i : i + RATE // 4]) if isinstance(e, PartialEvent)]
    assert any(p.audio_end_s > pause_at_s for p in partials)  # partials go on after the pause
    previous = ""
    for p in partials:
        assert p.committed.startswith(previous)
        previous = p.committed
    final = session.finish()
    assert not final.prepared
    assert final.token_ids == engine.transcribe(audio).token_ids
    assert [p.seq for p in partials] + [final.seq] == list(range(1, len(partials) + 2))


def test_prepared_final_of_silence_is_empty_and_a_second_prepare_replaces_it(engines):
    engine = engines()
    session = StreamingSession(engine, StreamingOptions(rtf_budget=100.0), "u1")
    session.feed(np.zeros(RATE, dtype=np.float32))
    assert session.prepare_final().stop_reason == "silence"
    speech = make_test_audio(2.0, seed=3)
    session.feed(speech)
    second = session.prepare_final()
    final = session.finish()
    assert final is second
    assert final.token_ids == engine.transcribe(np.concatenate([np.zeros(RATE, np.float32), speech])).token_ids
    with pytest.raises(RuntimeError):
        session.prepare_final()


def test_interrupt_stops_the_partial_step_in_flight_and_the_final_stays_exact(engines):
    engine = engines()
    audio = make_test_audio(9.5, seed=21)
    session = StreamingSession(engine, StreamingOptions(rtf_budget=100.0), "u1")
    real = engine.decoder.feed_tokens_argmax

    def interrupted_verification(ids, **kwargs):
        session.interrupt()  # as the daemon does when the speaker pauses mid-step
        return real(ids, **kwargs)

    partials = []
    for i in range(0, audio.shape[0], RATE // 2):
        if i == 6 * RATE:
            engine.decoder.feed_tokens_argmax = interrupted_verification
        try:
            partials += [e for e in session.feed(audio[i : i + RATE // 2]) if isinstance(e, PartialEvent)]
        finally:
            engine.decoder.__dict__.pop("feed_tokens_argmax", None)
    assert session.interrupted == 1
    assert all(p.audio_end_s != pytest.approx(6.5) for p in partials)  # that step gave no partial
    assert any(p.audio_end_s > 6.5 for p in partials)  # later steps work
    final = session.finish()
    assert final.token_ids == engine.transcribe(audio).token_ids


def test_a_finished_window_enters_the_cache_without_waiting_for_a_step(engines):
    engine = engines()
    audio = make_test_audio(9.0, seed=24)
    session = StreamingSession(engine, StreamingOptions(first_step_s=1e9), "u1")  # no partial step ever due
    for i in range(0, audio.shape[0], RATE // 10):
        assert session.feed(audio[i : i + RATE // 10]) == []
    assert session.steps == 0 and session._kv_audio_windows == 1
    assert session.finish().token_ids == engine.transcribe(audio).token_ids


def test_a_step_told_to_stop_gives_no_partial_and_changes_nothing(engines):
    engine = engines()
    audio = make_test_audio(3.0, seed=23)
    stopped = StreamingSession(engine, StreamingOptions(rtf_budget=100.0), "u1")
    stopped.push(audio)
    assert stopped.step(should_stop=lambda: True) is None
    assert stopped.interrupted == 1
    partial = stopped.step()
    fresh = StreamingSession(engine, StreamingOptions(rtf_budget=100.0), "u2")
    fresh.push(audio)
    expected = fresh.step()
    assert (partial.committed, partial.tentative) == (expected.committed, expected.tentative)
    assert stopped.finish().token_ids == engine.transcribe(audio).token_ids


def test_partials_verify_only_what_is_not_committed(engines):
    engine = engines("English")
    audio = make_test_audio(12.0, seed=42)
    firsts: list[tuple[int, int]] = []
    real, real_final = engine.decoder.feed_tokens_argmax, engine.decoder.feed_embeddings_tokens_argmax

    def recording(ids, first=0):
        firsts.append((len(ids), first))
        return real(ids, first=first)

    def recording_final(embeds, ids, first=0):  # the final: its new audio, the tail and the draft in one decode
        firsts.append((len(ids), first))
        return real_final(embeds, ids, first=first)

    engine.decoder.feed_tokens_argmax = recording
    engine.decoder.feed_embeddings_tokens_argmax = recording_final
    try:
        session, events, final = stream(engine, audio, 0.25, StreamingOptions(language="English", rtf_budget=100.0))
    finally:
        del engine.decoder.feed_tokens_argmax, engine.decoder.feed_embeddings_tokens_argmax
    tail = len(session._after_ids)
    assert any(first > tail - 1 for _, first in firsts[:-1])  # some step trusted committed tokens
    assert firsts[-1][1] == tail - 1  # the final verifies every draft token
    assert final.token_ids == engine.transcribe(audio).token_ids


def test_partials_keep_the_committed_text_cached_instead_of_re_feeding_it(engines):
    engine = engines("English")
    audio = make_test_audio(12.0, seed=42)
    parks: list[int] = []
    fed_tokens: list[int] = []
    real_park, real_argmax = engine.decoder.cache.park, engine.decoder.feed_tokens_argmax

    def park(start, end):
        parks.append(end - start)
        return real_park(start, end)

    def argmax(ids, first=0):
        fed_tokens.append(len(ids))
        return real_argmax(ids, first=first)

    engine.decoder.cache.park, engine.decoder.feed_tokens_argmax = park, argmax
    try:
        session = StreamingSession(engine, StreamingOptions(language="English", rtf_budget=100.0), "u1")
        partials = []
        for i in range(0, audio.shape[0], RATE // 4):
            partials += [e for e in session.feed(audio[i : i + RATE // 4]) if isinstance(e, PartialEvent)]
        committed_tokens = len(session.commits.committed)
        final = session.finish()
    finally:
        engine.decoder.cache.__dict__.pop("park", None)
        engine.decoder.__dict__.pop("feed_tokens_argmax", None)
    print(f"committed {committed_tokens}, parked {parks}, verified {fed_tokens}")
    assert committed_tokens >= 4, "the test needs committed text to prove anything"
    assert parks and max(parks) >= committed_tokens - 1 - 3  # the committed text was set aside, not re-fed
    # steps that parked verified only the uncommitted rest: fewer tokens than the hypothesis
    assert min(fed_tokens[:-1]) < committed_tokens
    previous = ""
    for p in partials:
        assert p.committed.startswith(previous)
        previous = p.committed
    assert final.token_ids == engine.transcribe(audio).token_ids


def test_interrupts_from_another_thread_never_corrupt_the_cache_or_the_final(engines):
    import threading
    import time

    engine = engines()
    audio = make_test_audio(9.0, seed=88)
    session = StreamingSession(engine, StreamingOptions(rtf_budget=100.0), "u1")
    stop = threading.Event()

    def hammer():  # interrupts at random moments: inside steps, between them, during the prepare
        rng = np.random.default_rng(1)
        while not stop.is_set():
            session.interrupt()
            time.sleep(float(rng.uniform(0.0005, 0.004)))

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        for i in range(0, audio.shape[0], RATE // 4):
            session.feed(audio[i : i + RATE // 4])
        prepared = session.prepare_final()
        final = session.finish()
    finally:
        stop.set()
        thread.join()
    assert session.interrupted > 0  # the hammering did stop partial steps
    assert final is prepared  # ... but never a final: it is the offline result
    assert final.token_ids == engine.transcribe(audio).token_ids


def test_sessions_taking_turns_on_the_shared_decoder_keep_exact_finals(engines):
    """A daemon may serve a newer utterance while an older one is half decoded (dictation before a queued
    request): each session rebuilds its cache when it gets the decoder back, so both finals stay exact
    and neither is disturbed by the other's steps, end or cancel."""
    engine = engines()
    a_audio, b_audio, c_audio = make_test_audio(9.5, seed=21), make_test_audio(3.0, seed=22), make_test_audio(2.0, seed=23)
    options = StreamingOptions(rtf_budget=100.0)
    a = StreamingSession(engine, options, utterance_id="a")
    a_partials = []
    for i in range(0, 6 * RATE, RATE // 2):  # a: 6 s in, finished windows and partials in the cache
        a_partials += a.feed(a_audio[i : i + RATE // 2])
    b = StreamingSession(engine, options, utterance_id="b")  # b takes the decoder
    b_partials = []
    for i in range(0, b_audio.size, RATE // 2):
        b_partials += b.feed(b_audio[i : i + RATE // 2])
    for i in range(6 * RATE, 7 * RATE, RATE // 2):  # a steps again, while b is still open
        a_partials += a.feed(a_audio[i : i + RATE // 2])
    c = StreamingSession(engine, options, utterance_id="c")
    c.feed(c_audio[: RATE])
    c.cancel()  # a cancelled session that does not hold the decoder leaves the holder alone
    b_final = b.finish()
    a.feed(a_audio[7 * RATE :])
    a_final = a.finish()
    assert a_partials and b_partials
    assert b_final.token_ids == engine.transcribe(b_audio).token_ids
    assert a_final.token_ids == engine.transcribe(a_audio).token_ids
