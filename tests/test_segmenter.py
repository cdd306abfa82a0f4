"""VAD segmenter: utterance boundaries on espeak-ng and synthetic speech, ptt/toggle, max length, cancel,
pauses (SpeechPause: the kept tail emitted early, the utterance's audio unchanged), and exact sample
accounting (every input sample is emitted, discarded or still buffered)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from qasr.daemon.audio.segmenter import (FRAME_SAMPLES, SAMPLE_RATE, Cancelled, Segmenter, SegmenterOptions,
                                   SpeechAudio, SpeechEnd, SpeechPause, SpeechStart, VadState)
from tests.fixtures.desktop import espeak_wav, load_wav, with_silence

SR = SAMPLE_RATE
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


# ---------------------------------------------------------------------- helpers

def voiced_burst(seconds: float, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """Speech-like synthetic audio: a glottal-ish pulse train with a slow syllable envelope."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    saw = ((t * f0) % 1.0) * 2 - 1
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t) ** 2
    return (0.3 * saw * envelope + 0.003 * rng.standard_normal(n)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def speech_bounds(pcm: np.ndarray, threshold: float = 0.01) -> tuple[float, float]:
    idx = np.flatnonzero(np.abs(pcm) > threshold)
    return idx[0] / SR, (idx[-1] + 1) / SR


def feed(seg: Segmenter, signal: np.ndarray, seed: int = 0, max_block: int = 1500,
         check_accounting: bool = True) -> list:
    """Feed in random block sizes, checking the accounting invariant after every call."""
    rng = np.random.default_rng(seed)
    events: list = []
    i = 0
    while i < len(signal):
        n = int(rng.integers(1, max_block))
        events += seg.process(signal[i:i + n])
        i += n
        if check_accounting:
            assert seg.samples_in == seg.samples_emitted + seg.samples_discarded + seg.samples_buffered
    return events


class Utterance:
    def __init__(self, start: SpeechStart) -> None:
        self.start = start
        self.audio: list[SpeechAudio] = []
        self.pauses: list[tuple[SpeechPause, int]] = []  # each pause and the samples of audio before it
        self.end: SpeechEnd | Cancelled | None = None

    @property
    def pcm(self) -> np.ndarray:
        return np.concatenate([a.pcm for a in self.audio]) if self.audio else np.zeros(0, np.float32)

    @property
    def audio_start(self) -> float:
        return self.audio[0].t_s

    @property
    def audio_end(self) -> float:
        return self.audio[-1].t_s + len(self.audio[-1].pcm) / SR


def utterances(events: list) -> list[Utterance]:
    """Group events by utterance and check their order and contiguity."""
    out: dict[int, Utterance] = {}
    open_id = None
    for e in events:
        if isinstance(e, SpeechStart):
            assert open_id is None, "an utterance started before the previous one ended"
            out[e.utterance_id] = Utterance(e)
            open_id = e.utterance_id
        elif isinstance(e, SpeechAudio):
            assert e.utterance_id == open_id
            u = out[e.utterance_id]
            if u.audio:  # contiguous: each chunk starts where the previous one ended
                assert e.t_s * SR == pytest.approx(u.audio_end * SR, abs=1e-6)
            u.audio.append(e)
        elif isinstance(e, SpeechPause):
            assert e.utterance_id == open_id
            u = out[e.utterance_id]
            assert u.audio and e.t_s == pytest.approx(u.audio_end, abs=1e-9)  # the end of the audio so far
            u.pauses.append((e, len(u.pcm)))
        elif isinstance(e, (SpeechEnd, Cancelled)):
            assert e.utterance_id == open_id
            out[e.utterance_id].end = e
            open_id = None
    return list(out.values())


def assert_audio_is_input(u: Utterance, signal: np.ndarray) -> None:
    """The utterance's audio is exactly the input slice at its time stamps."""
    begin = int(round(u.audio_start * SR))
    pcm = u.pcm
    np.testing.assert_array_equal(pcm, signal[begin:begin + len(pcm)])


@pytest.fixture(scope="module")
def fox() -> np.ndarray:
    return load_wav(espeak_wav("the quick brown fox jumps over the lazy dog"))


@pytest.fixture(scope="module")
def hello() -> np.ndarray:
    return load_wav(espeak_wav("hello there, how are you today"))


# ---------------------------------------------------------------------- vad mode, espeak-ng speech

@needs_espeak
def test_one_phrase_with_silence_each_side_gives_one_utterance(fox):
    opts = SegmenterOptions()
    signal = with_silence(fox, 1.0, 1.0)
    true_start, true_end = speech_bounds(signal)
    seg = Segmenter(opts)
    events = feed(seg, signal) + seg.finish()
    utts = utterances(events)
    assert len(utts) == 1
    u = utts[0]
    assert isinstance(u.end, SpeechEnd) and u.end.reason == "silence"
    assert abs(u.start.t_s - true_start) < 0.12
    assert abs(u.end.last_voice_s - true_end) < 0.25
    # pre-roll before the first voiced frame, the tail after the last one
    assert u.audio_start == pytest.approx(max(0.0, u.start.t_s - 0.51), abs=1e-6)
    assert u.end.t_s == pytest.approx(u.audio_end)
    assert u.end.t_s - u.end.last_voice_s == pytest.approx(0.3, abs=0.031)
    assert u.audio_start <= true_start and u.audio_end >= true_end
    assert_audio_is_input(u, signal)
    speaking = [e.speaking for e in events if isinstance(e, VadState)]
    assert speaking == [True, False]


@needs_espeak
def test_two_phrases_separated_by_a_pause_give_two_utterances(fox, hello):
    signal = np.concatenate([silence(1.0), fox, silence(1.5), hello, silence(1.0)])
    first_end = (SR * 1.0 + len(fox)) / SR
    second_start = first_end + 1.5
    seg = Segmenter()
    events = feed(seg, signal, seed=3) + seg.finish()
    utts = utterances(events)
    assert [u.start.utterance_id for u in utts] == [1, 2]
    assert all(isinstance(u.end, SpeechEnd) and u.end.reason == "silence" for u in utts)
    assert utts[0].audio_end < second_start
    assert utts[0].audio_end <= utts[1].audio_start  # the second pre-roll never repeats audio
    assert abs(utts[1].start.t_s - (second_start + speech_bounds(hello)[0])) < 0.12
    for u in utts:
        assert_audio_is_input(u, signal)


@needs_espeak
def test_mandarin_phrase_is_one_utterance():
    zh = load_wav(espeak_wav("今天天气很好，我们去公园散步吧", voice="cmn"))
    seg = Segmenter()
    utts = utterances(feed(seg, with_silence(zh, 1.0, 1.0)) + seg.finish())
    assert len(utts) == 1 and isinstance(utts[0].end, SpeechEnd)


def test_silence_and_quiet_noise_give_no_utterance():
    rng = np.random.default_rng(5)
    signal = np.concatenate([silence(2.0), (0.005 * rng.standard_normal(3 * SR)).astype(np.float32)])
    seg = Segmenter()
    events = feed(seg, signal)
    assert events == []
    assert seg.samples_emitted == 0
    assert seg.samples_buffered <= 17 * FRAME_SAMPLES + FRAME_SAMPLES  # only the pre-roll is held


def test_short_voice_is_cancelled_as_too_short():
    signal = np.concatenate([silence(1.0), voiced_burst(0.4), silence(1.5)])
    seg = Segmenter(SegmenterOptions(min_utterance_ms=1000))
    utts = utterances(feed(seg, signal))
    assert len(utts) == 1
    assert utts[0].end == Cancelled(utts[0].start.utterance_id, "too_short")
    assert utts[0].pauses == []  # no final is prepared for what will be cancelled


# ---------------------------------------------------------------------- exact accounting

@pytest.mark.parametrize("mode", ["vad", "ptt"])
def test_every_sample_is_emitted_discarded_or_buffered(mode):
    rng = np.random.default_rng(11)
    parts = []
    for i in range(6):
        parts += [silence(float(rng.uniform(0.2, 2.0))), voiced_burst(float(rng.uniform(0.3, 2.5)), seed=i)]
    parts.append(silence(0.7))
    signal = np.concatenate(parts)
    opts = SegmenterOptions(mode=mode, max_utterance_s=1.7, preroll_ms=400, hangover_ms=450, tail_ms=200)
    seg = Segmenter(opts)
    events: list = []
    i = 0
    presses = 0
    while i < len(signal):
        n = int(rng.integers(1, 2500))
        events += seg.process(signal[i:i + n])
        i += n
        if mode == "ptt" and rng.random() < 0.08:  # press/release at random points, cancel sometimes
            action = rng.choice(["start", "stop", "cancel"], p=[0.5, 0.4, 0.1])
            events += {"start": seg.start_utterance, "stop": seg.stop_utterance, "cancel": seg.cancel}[action]()
            presses += action == "start"
        assert seg.samples_in == seg.samples_emitted + seg.samples_discarded + seg.samples_buffered
    tail_buffered = seg.samples_buffered
    events += seg.finish()
    assert seg.samples_in == len(signal)
    assert seg.samples_in == seg.samples_emitted + seg.samples_discarded + seg.samples_buffered
    assert seg.samples_buffered == 0 and tail_buffered > 0

    audio = [e for e in events if isinstance(e, SpeechAudio)]
    assert sum(len(a.pcm) for a in audio) == seg.samples_emitted
    # emitted ranges are exactly the input there and never overlap
    covered = np.zeros(len(signal), dtype=np.int32)
    for a in audio:
        begin = int(round(a.t_s * SR))
        np.testing.assert_array_equal(a.pcm, signal[begin:begin + len(a.pcm)])
        covered[begin:begin + len(a.pcm)] += 1
    assert covered.max() == 1
    utts = utterances(events)
    assert len(utts) >= 3
    assert all(u.end is not None for u in utts)
    if mode == "vad":
        assert any(isinstance(u.end, SpeechEnd) and u.end.reason == "max_length" for u in utts)
    else:
        assert presses >= 2


# ---------------------------------------------------------------------- ptt / toggle

@needs_espeak
def test_ptt_utterance_spans_press_to_release_with_preroll(fox):
    opts = SegmenterOptions(mode="ptt", preroll_ms=300, release_tail_ms=240, tail_ms=300)
    seg = Segmenter(opts)
    lead = np.concatenate([silence(1.2), fox[:int(0.3 * SR)]])  # the speaker starts just before the press
    events = feed(seg, lead)
    assert not [e for e in events if not isinstance(e, VadState)]  # nothing happens before the press
    press_t = seg.t_s
    events += seg.start_utterance()
    events += feed(seg, fox[int(0.3 * SR):int(2.0 * SR)], seed=1)
    release_t = seg.t_s  # released while the last word is still being said
    assert seg.in_utterance and not seg.ending
    events += seg.stop_utterance()
    assert seg.in_utterance and seg.ending  # released: only the release tail is still taken
    events += feed(seg, fox[int(2.0 * SR):], seed=2)
    events += feed(seg, silence(1.5), seed=4)
    assert not seg.in_utterance and not seg.ending
    utts = utterances(events)
    assert len(utts) == 1
    u = utts[0]
    assert u.start.t_s == pytest.approx(press_t)
    assert isinstance(u.end, SpeechEnd) and u.end.reason == "stop"
    # pre-roll reaches back before the press, to the speech that was already under way
    assert u.audio_start <= 1.2 + speech_bounds(fox)[0] + 0.03
    assert press_t - u.audio_start <= 0.3 + 1e-6
    # the release tail: audio still in flight after the release is taken, then it ends
    assert release_t + 0.24 <= u.audio_end <= release_t + 0.24 + 0.03
    signal = np.concatenate([lead, fox[int(0.3 * SR):], silence(1.5)])
    assert_audio_is_input(u, signal)


@needs_espeak
def test_ptt_trims_leading_silence_beyond_preroll(hello):
    seg = Segmenter(SegmenterOptions(mode="ptt", preroll_ms=300))
    events = feed(seg, silence(0.5))
    events += seg.start_utterance()
    signal_after_press = np.concatenate([silence(3.0), hello, silence(2.0)])
    events += feed(seg, signal_after_press)
    events += seg.stop_utterance() + seg.finish()
    (u,) = utterances(events)
    onset = 0.5 + 3.0 + speech_bounds(hello)[0]
    assert onset - 0.33 - 0.03 <= u.audio_start <= onset
    assert u.end.reason == "stop"
    assert u.audio_end - u.end.last_voice_s <= 0.3 + 1e-6  # trailing silence trimmed to the tail


def test_ptt_without_speech_is_cancelled():
    seg = Segmenter(SegmenterOptions(mode="ptt"))
    events = seg.start_utterance() + feed(seg, silence(2.0)) + seg.stop_utterance() + feed(seg, silence(0.5))
    (u,) = utterances(events)
    assert u.audio == [] and u.end == Cancelled(u.start.utterance_id, "no_speech")
    assert seg.samples_emitted == 0


def test_toggle_starts_and_stops():
    seg = Segmenter(SegmenterOptions(mode="toggle", release_tail_ms=0))
    events = feed(seg, silence(0.5)) + seg.toggle()
    events += feed(seg, voiced_burst(1.0)) + feed(seg, silence(0.3))
    events += seg.toggle() + feed(seg, silence(1.0))  # silence does not start anything in toggle mode
    events += seg.toggle() + feed(seg, voiced_burst(0.6, seed=2)) + seg.toggle()
    utts = utterances(events)
    assert [type(u.end) for u in utts] == [SpeechEnd, SpeechEnd]
    assert [u.end.reason for u in utts] == ["stop", "stop"]
    assert utts[0].audio_end <= utts[1].audio_start


# ---------------------------------------------------------------------- pauses (SpeechPause)

def expected_audio(u: Utterance, signal: np.ndarray, tail_ms: int) -> np.ndarray:
    """What the segmenter gave before pauses existed: the input from the utterance's first sample to the
    end of its last voiced frame plus the kept tail (``tail_ms`` rounded up to whole frames)."""
    begin = int(round(u.audio_start * SR))
    tail = -(-tail_ms // 30) * FRAME_SAMPLES
    return signal[begin:int(round(u.end.last_voice_s * SR)) + tail]


def kinds(events: list) -> list[str]:
    """Event types in order, consecutive SpeechAudio merged, VadState left out."""
    out: list[str] = []
    for e in events:
        name = type(e).__name__
        if name != "VadState" and not (name == "SpeechAudio" and out and out[-1] == name):
            out.append(name)
    return out


def test_pause_emits_the_tail_at_once_and_the_end_adds_no_audio():
    opts = SegmenterOptions(tail_ms=300, hangover_ms=600)
    signal = np.concatenate([silence(0.6), voiced_burst(1.2), silence(1.5)])
    seg = Segmenter(opts)
    events, arrived = [], []  # arrived: the stream time at which each event came out
    for i in range(0, len(signal), FRAME_SAMPLES):  # frame by frame, as a microphone delivers it
        for e in seg.process(signal[i:i + FRAME_SAMPLES]):
            events.append(e)
            arrived.append(seg.t_s)
        assert seg.samples_in == seg.samples_emitted + seg.samples_discarded + seg.samples_buffered
    events += seg.finish()
    assert kinds(events) == ["SpeechStart", "SpeechAudio", "SpeechPause", "SpeechEnd"]
    (u,) = utterances(events)
    (pause, before), = u.pauses
    end_at = arrived[events.index(u.end)]
    # the pause comes the moment the silence reaches the tail, the end after the whole hangover
    assert pause.t_s == pytest.approx(u.end.last_voice_s + 0.3, abs=1e-9)
    assert arrived[events.index(pause)] == pytest.approx(pause.t_s, abs=1e-9)
    assert end_at == pytest.approx(u.end.last_voice_s + 0.6, abs=1e-9)
    assert 1.8 <= u.end.last_voice_s <= 2.0  # the burst's end (webrtcvad hears a little past it)
    # nothing after the pause: the end is exactly where the pause said, the audio is what it was before
    assert before == len(u.pcm) and u.end.reason == "silence" and u.end.t_s == pause.t_s
    assert not [e for e in events[events.index(pause):] if isinstance(e, SpeechAudio)]
    np.testing.assert_array_equal(u.pcm, expected_audio(u, signal, 300))
    assert_audio_is_input(u, signal)


def test_speech_resuming_after_a_pause_emits_the_held_silence_and_pauses_again():
    opts = SegmenterOptions(tail_ms=300, hangover_ms=600)
    signal = np.concatenate([silence(0.6), voiced_burst(1.2), silence(0.5), voiced_burst(0.9, seed=4),
                             silence(1.5)])
    seg = Segmenter(opts)
    events = feed(seg, signal, seed=5) + seg.finish()
    assert kinds(events) == ["SpeechStart", "SpeechAudio", "SpeechPause", "SpeechAudio", "SpeechPause", "SpeechEnd"]
    (u,) = utterances(events)
    (first, before_first), (second, before_second) = u.pauses
    assert 1.8 + 0.3 <= first.t_s <= 1.8 + 0.5  # the first burst's last voiced frame + the tail
    assert before_first < before_second == len(u.pcm)  # the whole pause and the new speech came in between
    assert second.t_s == u.end.t_s and u.end.reason == "silence"
    assert 0.6 + 1.2 + 0.5 + 0.9 <= u.end.last_voice_s <= 0.6 + 1.2 + 0.5 + 0.9 + 0.2
    np.testing.assert_array_equal(u.pcm, expected_audio(u, signal, 300))  # one utterance, no gap
    assert_audio_is_input(u, signal)


@pytest.mark.parametrize("tail_ms", [0, 30, 100, 450])
def test_tail_lengths_pause_after_the_tail_and_keep_the_same_audio(tail_ms):
    opts = SegmenterOptions(tail_ms=tail_ms, hangover_ms=600)
    signal = np.concatenate([silence(0.5), voiced_burst(1.0, seed=2), silence(1.2)])
    seg = Segmenter(opts)
    events = feed(seg, signal, seed=tail_ms) + seg.finish()
    (u,) = utterances(events)
    assert len(u.pauses) == 1 and u.pauses[0][1] == len(u.pcm)
    assert u.pauses[0][0].t_s == u.end.t_s
    assert u.end.t_s - u.end.last_voice_s == pytest.approx(-(-tail_ms // 30) * 0.03, abs=1e-6)
    np.testing.assert_array_equal(u.pcm, expected_audio(u, signal, tail_ms))


def test_max_length_in_a_pause_ends_where_the_pause_did():
    # the cap falls after the tail was emitted and before the hangover: the utterance ends at the pause
    opts = SegmenterOptions(preroll_ms=0, max_utterance_s=2.0, tail_ms=300, hangover_ms=600)
    signal = np.concatenate([silence(0.51), voiced_burst(1.5), silence(0.6), voiced_burst(1.0, seed=3),
                             silence(1.5)])
    seg = Segmenter(opts)
    utts = utterances(feed(seg, signal, seed=6) + seg.finish())
    assert [u.end.reason for u in utts] == ["max_length", "silence"]
    first = utts[0]
    assert len(first.pauses) == 1 and first.pauses[0][1] == len(first.pcm)
    assert first.end.t_s == first.pauses[0][0].t_s
    np.testing.assert_array_equal(first.pcm, expected_audio(first, signal, 300))
    assert not utts[1].start.continued  # the resumed voice starts anew through the onset


def test_ptt_release_after_a_pause_adds_no_audio_after_it():
    opts = SegmenterOptions(mode="ptt", tail_ms=300, release_tail_ms=100)
    seg = Segmenter(opts)
    events = feed(seg, silence(0.3)) + seg.start_utterance()
    after_press = np.concatenate([voiced_burst(1.2), silence(0.8)])
    events += feed(seg, after_press, seed=7)
    assert kinds(events)[-1] == "SpeechPause"
    events += seg.stop_utterance()
    events += feed(seg, silence(0.5), seed=8)  # the release tail (silence) is trimmed
    assert kinds(events) == ["SpeechStart", "SpeechAudio", "SpeechPause", "SpeechEnd"]
    (u,) = utterances(events)
    assert u.end.reason == "stop" and u.end.t_s == u.pauses[0][0].t_s
    signal = np.concatenate([silence(0.3), after_press, silence(0.5)])
    np.testing.assert_array_equal(u.pcm, expected_audio(u, signal, 300))
    assert_audio_is_input(u, signal)


def test_ptt_release_before_the_tail_ends_without_a_pause():
    opts = SegmenterOptions(mode="ptt", tail_ms=300, release_tail_ms=90)
    seg = Segmenter(opts)
    events = seg.start_utterance() + feed(seg, np.concatenate([voiced_burst(1.2), silence(0.06)]))
    events += seg.stop_utterance() + feed(seg, silence(0.5), seed=9)
    (u,) = utterances(events)
    assert u.pauses == [] and u.end.reason == "stop"
    assert u.end.t_s - u.end.last_voice_s < 0.3  # the release came first: less silence than the tail


def test_ptt_release_after_the_speech_ends_closes_after_the_release_tail_only():
    """The voice hold costs nothing when the key is released after the last word (the usual case)."""
    seg = Segmenter(SegmenterOptions(mode="ptt", tail_ms=300, release_tail_ms=90, release_voice_ms=300))
    events = seg.start_utterance() + feed(seg, np.concatenate([voiced_burst(1.2), silence(0.12)]))
    events += seg.stop_utterance()
    after = 0
    while "SpeechEnd" not in kinds(events):  # silence in frame-sized blocks until the utterance ends
        events += seg.process(silence(FRAME_SAMPLES / SR))
        after += FRAME_SAMPLES
    (u,) = utterances(events)
    assert u.end.reason == "stop"
    assert after <= 90 * SR // 1000 + FRAME_SAMPLES


def test_ptt_release_mid_word_records_on_while_the_voice_goes_on():
    seg = Segmenter(SegmenterOptions(mode="ptt", tail_ms=300, release_tail_ms=90, release_voice_ms=300))
    events = seg.start_utterance() + feed(seg, voiced_burst(1.0))
    stopped_at = seg.samples_in
    events += seg.stop_utterance() + feed(seg, np.concatenate([voiced_burst(0.2, seed=4), silence(0.5)]), seed=9)
    (u,) = utterances(events)
    assert u.end.reason == "stop"
    assert u.end.last_voice_s * SR - stopped_at >= 0.15 * SR  # the word after the release is kept
    assert u.end.t_s * SR - stopped_at <= (90 + 300) * SR // 1000 + FRAME_SAMPLES  # never beyond the hold
    held = Segmenter(SegmenterOptions(mode="ptt", tail_ms=300, release_tail_ms=90, release_voice_ms=300))
    events = held.start_utterance() + feed(held, voiced_burst(1.0)) + held.stop_utterance()
    events += feed(held, voiced_burst(1.0, seed=4))  # talking on and on: the hold ends it
    (u,) = utterances(events)
    assert u.end.reason == "stop" and u.end.t_s <= 1.0 + (90 + 300 + 30) / 1000


def test_ptt_speech_after_a_pause_continues_the_utterance():
    opts = SegmenterOptions(mode="ptt", tail_ms=300, release_tail_ms=0)
    seg = Segmenter(opts)
    signal = np.concatenate([voiced_burst(0.9), silence(1.0), voiced_burst(0.6, seed=5), silence(0.1)])
    events = seg.start_utterance() + feed(seg, signal, seed=10) + seg.stop_utterance()
    (u,) = utterances(events)
    assert len(u.pauses) == 1 and u.pauses[0][1] < len(u.pcm)
    assert u.end.reason == "stop"
    np.testing.assert_array_equal(u.pcm, signal[:len(u.pcm)])  # the whole pause is kept, as before
    assert len(u.pcm) == len(signal) - len(signal) % FRAME_SAMPLES  # everything up to the stop (tail ≥ 0.1 s)


# ---------------------------------------------------------------------- max length, cancel

def test_max_length_cuts_and_continues_without_a_gap():
    signal = np.concatenate([silence(0.8), voiced_burst(4.6), silence(1.5)])
    seg = Segmenter(SegmenterOptions(max_utterance_s=2.0))
    utts = utterances(feed(seg, signal))
    assert len(utts) == 3
    assert [u.end.reason for u in utts] == ["max_length", "max_length", "silence"]
    assert [u.start.continued for u in utts] == [False, True, True]
    for u in utts:
        assert len(u.pcm) <= 2.0 * SR
        assert_audio_is_input(u, signal)
    for a, b in zip(utts, utts[1:]):
        assert b.audio_start == pytest.approx(a.audio_end)  # no sample lost at a cut


def test_ptt_max_length_keeps_going_while_the_key_is_held():
    seg = Segmenter(SegmenterOptions(mode="ptt", max_utterance_s=1.0, release_tail_ms=0))
    events = seg.start_utterance() + feed(seg, voiced_burst(2.5)) + seg.stop_utterance()
    utts = utterances(events)
    assert [u.end.reason for u in utts] == ["max_length", "max_length", "stop"]
    assert sum(len(u.pcm) for u in utts) == seg.samples_emitted


def test_cancel_drops_the_utterance_and_waits_for_silence():
    seg = Segmenter()
    events = feed(seg, np.concatenate([silence(0.5), voiced_burst(1.0)]))
    assert seg.in_utterance
    cancelled_id = seg.utterance_id
    events += seg.cancel()
    events += feed(seg, voiced_burst(1.0, seed=1))  # the same speech goes on: no new utterance
    assert not seg.in_utterance
    events += feed(seg, np.concatenate([silence(1.0), voiced_burst(0.8, seed=2), silence(1.0)]))
    utts = utterances(events)
    assert utts[0].end == Cancelled(cancelled_id, "cancel")
    assert len(utts) == 2 and isinstance(utts[1].end, SpeechEnd)
    assert utts[1].audio_start >= 2.5  # after the silence, not the cancelled speech
    assert seg.samples_in == seg.samples_emitted + seg.samples_discarded + seg.samples_buffered


def test_vad_stop_while_speaking_ends_now_and_the_ongoing_voice_starts_a_new_utterance():
    seg = Segmenter()
    signal = np.concatenate([silence(0.5), voiced_burst(1.5), silence(1.0)])
    events = feed(seg, signal[:SR])
    events += seg.stop_utterance()
    events += feed(seg, signal[SR:], seed=1) + seg.finish()
    first, second = utterances(events)
    assert first.end.reason == "stop" and second.end.reason == "silence"
    assert second.audio_start == pytest.approx(first.audio_end, abs=0.031)  # the voice went on
    for u in (first, second):
        assert_audio_is_input(u, signal)


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError):
        SegmenterOptions(mode="always")
    with pytest.raises(ValueError):
        SegmenterOptions(aggressiveness=4)
    with pytest.raises(ValueError):
        SegmenterOptions(hangover_ms=-1)


def test_options_follow_the_settings_file():
    from qasr.config.settings import Settings
    from qasr.daemon.component_options import segmenter_options

    settings = Settings()
    opts = segmenter_options(settings)
    assert (opts.mode, opts.aggressiveness, opts.onset_ms, opts.hangover_ms, opts.preroll_ms) == (
        settings.vad.mode, settings.vad.aggressiveness, settings.vad.onset_ms, settings.vad.hangover_ms,
        settings.vad.preroll_ms)
    assert opts.max_utterance_s == settings.engine.max_utterance_s
    # the hotkey's release tail is the segmenter's voice hold; the hotkey itself stops at once
    assert opts.release_voice_ms == round(settings.hotkey.release_tail_s * 1000) > 0
    from qasr.daemon.component_options import hotkey_options

    assert hotkey_options(settings).release_tail_s == 0.0
