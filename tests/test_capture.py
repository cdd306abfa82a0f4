"""Capture: soxr streaming resampler, device resolution, ring buffer accounting, and real capture from a
private PulseAudio server whose null-sink monitor is the microphone (speech played with paplay)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from qasr.daemon.audio.capture import AudioCapture, CaptureOptions
from qasr.daemon.audio.devices import (NO_INPUT_MESSAGE, AudioDeviceError, NoInputDeviceError, list_input_devices,
                                       resolve_input_device)
from qasr.daemon.audio.resample import StreamResampler, to_mono_float32
from qasr.daemon.audio.segmenter import Segmenter, SpeechAudio, SpeechEnd, SpeechStart
from tests.fixtures.desktop import play_into_mic
from tests.harness.pulse import no_pulse_env
from tests.harness.speech import espeak_wav, load_wav

SR = 16000
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


# ---------------------------------------------------------------------- resampler

def _dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("in_rate", [44100, 48000, 8000, 16000])
def test_resampler_streams_any_rate_and_channels_to_16k_mono(in_rate):
    seconds = 2.0
    t = np.arange(int(seconds * in_rate)) / in_rate
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.5 * np.sin(2 * np.pi * 440 * t + 0.3)
    stereo = np.stack([left, right], axis=1).astype(np.float32)
    rs = StreamResampler(in_rate, 2)
    rng = np.random.default_rng(0)
    out, i = [], 0
    while i < len(stereo):  # irregular device block sizes
        n = int(rng.integers(64, 4096))
        out.append(rs.process(stereo[i:i + n]))
        i += n
    out.append(rs.flush())
    y = np.concatenate(out)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - seconds * SR) <= 2
    assert abs(_dominant_hz(y[2000:-2000], SR) - 440) < 2
    # streamed output equals resampling the whole downmixed signal at once
    whole = StreamResampler(in_rate, 1)
    mono = stereo.mean(axis=1)
    y1 = np.concatenate([whole.process(mono), whole.flush()])
    np.testing.assert_allclose(y, y1, atol=1e-5)


def test_resampler_removes_content_above_8k():
    t = np.arange(48000) / 48000
    tone = (0.5 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32)  # would alias to 4 kHz if decimated
    rs = StreamResampler(48000, 1)
    y = np.concatenate([rs.process(tone), rs.flush()])
    assert np.sqrt(np.mean(y[500:-500] ** 2)) < 0.01


def test_int16_and_mono_blocks_are_converted():
    block = np.array([[16384, -16384], [32767, 32767]], dtype=np.int16)
    np.testing.assert_allclose(to_mono_float32(block), [0.0, 32767 / 32768], atol=1e-6)
    np.testing.assert_array_equal(to_mono_float32(np.ones((5, 1), np.float32)), np.ones(5, np.float32))


# ---------------------------------------------------------------------- device resolution

DEVICES = [
    {"index": 0, "name": "HDA Intel PCH: ALC257 Analog (hw:0,0)", "hostapi": "ALSA", "channels": 2,
     "default_samplerate": 44100.0, "is_default": False},
    {"index": 3, "name": "USB Audio Mic: Audio (hw:2,0)", "hostapi": "ALSA", "channels": 1,
     "default_samplerate": 48000.0, "is_default": False},
    {"index": 5, "name": "pulse", "hostapi": "ALSA", "channels": 32, "default_samplerate": 44100.0,
     "is_default": False},
    {"index": 6, "name": "default", "hostapi": "ALSA", "channels": 32, "default_samplerate": 44100.0,
     "is_default": True},
]


def test_device_resolution_by_default_index_and_name():
    assert resolve_input_device(None, DEVICES)["index"] == 6
    assert resolve_input_device("", DEVICES)["index"] == 6
    assert resolve_input_device(3, DEVICES)["index"] == 3
    assert resolve_input_device("5", DEVICES)["index"] == 5
    assert resolve_input_device("usb", DEVICES)["index"] == 3
    assert resolve_input_device("PULSE", DEVICES)["index"] == 5
    assert resolve_input_device("Default", DEVICES)["index"] == 6  # exact name beats substring "hw:..."
    no_default = [dict(d, is_default=False) for d in DEVICES]
    assert resolve_input_device(None, no_default)["index"] == 0


def test_device_resolution_errors_say_what_to_do():
    with pytest.raises(NoInputDeviceError) as exc:
        resolve_input_device(None, [])
    assert str(exc.value) == NO_INPUT_MESSAGE
    with pytest.raises(AudioDeviceError, match="no audio input device matches 'bluetooth'.*qasr-daemon devices"):
        resolve_input_device("bluetooth", DEVICES)
    with pytest.raises(AudioDeviceError, match="index 4 does not exist"):
        resolve_input_device(4, DEVICES)
    with pytest.raises(AudioDeviceError, match="matches several inputs"):
        resolve_input_device("hw:", DEVICES)


# ---------------------------------------------------------------------- ring buffer accounting

def test_ring_keeps_order_and_counts_what_a_slow_consumer_lost():
    cap = AudioCapture(CaptureOptions(ring_s=1.0, preroll_s=0.25))
    ring = cap._ring  # written as the audio callback does; no stream needed
    assert ring.capacity == int(1.25 * SR)
    source = np.arange(500_000, dtype=np.float32)
    pos = 0
    delivered = []
    rng = np.random.default_rng(1)
    for step in range(300):
        n = int(rng.integers(100, 1500))
        ring.write(source[pos:pos + n])
        pos += n
        if step % 40 == 39:  # a consumer that sometimes stalls for a long time
            while (got := cap.read(timeout=0, max_samples=int(rng.integers(200, 5000)))) is not None:
                delivered.append(got)
        assert cap.frames_captured == cap.frames_delivered + cap.frames_dropped + cap.pending
    while (got := cap.read(timeout=0)) is not None:
        delivered.append(got)
    out = np.concatenate(delivered)
    assert cap.frames_captured == pos == cap.frames_delivered + cap.frames_dropped
    assert cap.overruns > 0 and cap.frames_dropped > 0
    # what was delivered is in order and exactly the source (gaps only where drops were counted)
    assert np.all(np.diff(out) >= 1)
    np.testing.assert_array_equal(out, source[out.astype(np.int64)])
    assert len(out) == cap.frames_delivered
    np.testing.assert_array_equal(cap.preroll(), source[pos - int(0.25 * SR):pos])


def test_read_times_out_without_audio():
    cap = AudioCapture(CaptureOptions())
    t0 = time.monotonic()
    assert cap.read(timeout=0.2) is None
    assert 0.15 <= time.monotonic() - t0 < 2.0


# ---------------------------------------------------------------------- real capture (PulseAudio null sink)

def _wait_state(cap: AudioCapture, state: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cap.state == state:
            return True
        time.sleep(0.05)
    return cap.state == state


def _drain(cap: AudioCapture) -> np.ndarray:
    parts = []
    while (got := cap.read(timeout=0.05)) is not None:
        parts.append(got)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _best_alignment(recorded: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """Pearson r of ``reference`` against ``recorded`` at the lag of maximal cross-correlation."""
    n = len(recorded) + len(reference)
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(recorded, size) * np.conj(np.fft.rfft(reference, size)), size)
    lag = int(np.argmax(xc[:len(recorded)]))
    seg = recorded[lag:lag + len(reference)]
    ref = reference[:len(seg)]
    return float(np.corrcoef(seg, ref)[0, 1]), lag


@pytest.fixture(scope="module")
def phrase_wav():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    return espeak_wav("please open the settings window and check the microphone level")


@pytest.mark.system
def test_devices_are_listed(pulse_server):
    devices = list_input_devices()
    names = [d["name"] for d in devices]
    assert "pulse" in names and "default" in names
    assert sum(d["is_default"] for d in devices) == 1
    assert all(d["channels"] > 0 and d["default_samplerate"] > 0 for d in devices)


@pytest.mark.system
def test_captured_speech_matches_what_was_played(pulse_server, phrase_wav):
    """Capture → segmenter as the daemon wires them: every delivered sample reaches the segmenter,
    the recording correlates with what was played, and the segmenter finds the one phrase."""
    states = []
    cap = AudioCapture(CaptureOptions(device="pulse", preroll_s=0.5),
                       on_state=lambda state, message: states.append(state))
    seg = Segmenter()
    recorded, events = [], []

    def consume(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pcm = cap.read(timeout=0.05)
            if pcm is not None:
                recorded.append(pcm)
                events.extend(seg.process(pcm))

    cap.start()
    try:
        assert cap.device["name"] == "pulse"
        assert _wait_state(cap, "running", 10), cap.stats()
        consume(0.5)
        player = play_into_mic(phrase_wav, wait=False)
        while player.poll() is None:
            consume(0.1)
        consume(1.5)  # the hangover ends the utterance
        preroll = cap.preroll()
    finally:
        cap.stop()
    while (pcm := cap.read(timeout=0)) is not None:
        recorded.append(pcm)
        events.extend(seg.process(pcm))
    recorded = np.concatenate(recorded)
    assert states[0] == "starting" and "running" in states and states[-1] == "stopped"
    # nothing lost between the device, the ring and the segmenter
    assert cap.frames_dropped == 0 and cap.callback_errors == 0 and cap.pending == 0
    assert cap.frames_captured == cap.frames_delivered == len(recorded) == seg.samples_in
    assert seg.samples_in == seg.samples_emitted + seg.samples_discarded + seg.samples_buffered

    reference = load_wav(phrase_wav)
    r, lag = _best_alignment(recorded, reference)
    assert r > 0.95, (r, lag)
    assert len(preroll) == int(0.5 * SR)
    np.testing.assert_array_equal(preroll, recorded[-len(preroll):])

    starts = [e for e in events if isinstance(e, SpeechStart)]
    ends = [e for e in events if isinstance(e, SpeechEnd)]
    assert len(starts) == 1 and len(ends) == 1 and ends[0].reason == "silence"
    speech = np.flatnonzero(np.abs(reference) > 0.01)
    assert abs(starts[0].t_s - (lag + speech[0]) / SR) < 0.15
    assert abs(ends[0].last_voice_s - (lag + speech[-1]) / SR) < 0.3
    utterance = np.concatenate([e.pcm for e in events if isinstance(e, SpeechAudio)])
    r_utt, _ = _best_alignment(utterance, reference[speech[0]:speech[-1]])
    assert r_utt > 0.95


@pytest.mark.system
def test_device_by_index(pulse_server):
    pulse = next(d for d in list_input_devices() if d["name"] == "pulse")
    cap = AudioCapture(CaptureOptions(device=str(pulse["index"]), block_ms=50))
    cap.start()
    try:
        assert cap.device["index"] == pulse["index"]
        assert cap.device["samplerate"] == pulse["default_samplerate"] and cap.device["channels_open"] == 1
        assert _wait_state(cap, "running", 10)
        first = cap.read(timeout=2.0)
        assert first is not None and first.dtype == np.float32
    finally:
        cap.stop()


@pytest.mark.system
def test_a_reader_can_wait_for_several_blocks_at_once(pulse_server):
    """read(min_samples=...) (the idle microphone's read): the reader is woken once that much audio is there,
    not at every block; at the timeout it gets whatever came; nothing is lost or reordered."""
    cap = AudioCapture(CaptureOptions(block_ms=50))
    cap.start()
    try:
        assert _wait_state(cap, "running", 10)
        _drain(cap)
        before = cap.frames_delivered
        block = int(0.05 * SR)
        got, wakes, t0 = [], 0, time.monotonic()
        while time.monotonic() - t0 < 1.5:
            pcm = cap.read(timeout=2.0, min_samples=3 * block)
            assert pcm is not None and len(pcm) >= 3 * block - 5, len(pcm)  # the resampler's edge: ±a few
            got.append(pcm)
            wakes += 1
        assert wakes <= 1.5 / 0.15 + 2  # one wake per three 50 ms blocks, not one per block
        partial = cap.read(timeout=0.06, min_samples=100 * block)  # the timeout comes first: what is there
        assert partial is not None and 0 < len(partial) < 100 * block
        got.append(partial)
        got.append(_drain(cap))
        assert sum(map(len, got)) == cap.frames_delivered - before and cap.frames_dropped == 0
    finally:
        cap.stop()


@pytest.mark.system
def test_unknown_device_name_is_a_clear_error(pulse_server):
    cap = AudioCapture(CaptureOptions(device="no-such-microphone"))
    with pytest.raises(AudioDeviceError, match="no audio input device matches 'no-such-microphone'"):
        cap.start()
    assert cap.state == "stopped"


@pytest.mark.system
def test_lost_device_is_retried_until_it_comes_back(pulse_server, phrase_wav):
    states = []
    cap = AudioCapture(CaptureOptions(retry_initial_s=0.2, retry_max_s=1.0),
                       on_state=lambda state, message: states.append((state, message)))
    cap.start()
    try:
        assert _wait_state(cap, "running", 10)
        pulse_server.kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and cap.state == "running":
            time.sleep(0.05)
        assert cap.state in ("retrying", "no-device"), cap.stats()
        time.sleep(1.5)
        assert cap.state in ("retrying", "no-device")
        pulse_server.start()
        assert _wait_state(cap, "running", 15), (cap.stats(), states[-3:])
        _drain(cap)
        before = cap.frames_captured
        play_into_mic(phrase_wav)
        time.sleep(0.5)
        recorded = _drain(cap)
    finally:
        cap.stop()
    seen = [s for s, _ in states]
    lost_at = seen.index("retrying")
    assert "running" in seen[:lost_at] and "running" in seen[lost_at:]
    assert any(s == "no-device" for s in seen[lost_at:])  # while the server was down
    assert cap.reopen_count >= 1 and cap.frames_captured > before
    r, _ = _best_alignment(recorded, load_wav(phrase_wav))
    assert r > 0.95


@pytest.mark.system
def test_wait_for_device_starts_without_a_device_and_picks_it_up(pulse_server):
    pulse_server.kill()
    cap = AudioCapture(CaptureOptions(wait_for_device=True, retry_initial_s=0.2, retry_max_s=0.5))
    try:
        cap.start()  # no raise: the daemon keeps running and says why it hears nothing
        assert cap.state == "no-device"
        assert "no audio input device found" in cap.state_message
    finally:
        pulse_server.start()
    try:
        assert _wait_state(cap, "running", 15), cap.stats()
    finally:
        cap.stop()


NO_SERVER_SCRIPT = textwrap.dedent("""
    import sys
    from qasr.daemon.audio.capture import AudioCapture, CaptureOptions
    from qasr.daemon.audio.devices import NoInputDeviceError, list_input_devices
    print("devices", len(list_input_devices()))
    try:
        AudioCapture(CaptureOptions()).start()
    except NoInputDeviceError as exc:
        print("error", exc)
        sys.exit(3)
    sys.exit(0)
""")


@pytest.mark.skipif(bool(glob.glob("/dev/snd/pcmC*c")), reason="this machine has ALSA capture hardware")
def test_no_sound_server_gives_no_input_device_error(tmp_path):
    env = dict(os.environ, **no_pulse_env(tmp_path), HOME=str(tmp_path), XDG_RUNTIME_DIR=str(tmp_path),
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    proc = subprocess.run([sys.executable, "-c", NO_SERVER_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "devices 0" in proc.stdout
    assert f"error {NO_INPUT_MESSAGE}" in proc.stdout


# ---------------------------------------------------------------------- the desktop fixtures themselves

@needs_espeak
def test_espeak_wav_is_16k_mono_speech():
    import soundfile

    path = espeak_wav("testing one two three")
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    pcm = load_wav(path)
    assert 0.8 < len(pcm) / SR < 4.0 and np.abs(pcm).max() > 0.1
    assert espeak_wav("testing one two three") == path  # cached


@pytest.mark.system
def test_xvfb_display_is_usable(xvfb_display):
    assert os.environ["DISPLAY"] == xvfb_display
    out = subprocess.run(["xdpyinfo"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "1280x800 pixels" in out.stdout


def test_capture_options_follow_the_settings_file():
    from qasr.config.settings import AudioSettings, Settings
    from qasr.daemon.component_options import capture_options

    def options(**audio):
        return capture_options(Settings(audio=AudioSettings(**audio)))

    opts = options()
    assert opts.device is None and opts.ring_s == AudioSettings().queue_s
    assert options(device=" usb ", preroll_s=2.0).device == "usb"
    assert options(preroll_s=2.0).preroll_s == 2.0
