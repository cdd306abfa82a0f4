"""Microphone capture: one always-open PortAudio input stream → 16 kHz mono float32 ring buffer.

The stream opens in ``start()`` and stays open (the first 0.4–1.9 s after opening a stream arrive late
or are lost, so it is never opened on a key press). The PortAudio callback only downmixes, resamples
(soxr, streaming) and copies into a preallocated ring; it takes no lock and never waits. The app's
consumer thread pulls with ``read()``::

    cap = AudioCapture(CaptureOptions(device="usb"), on_state=lambda state, msg: ...)
    cap.start()                       # raises NoInputDeviceError / AudioDeviceError (DeviceOpenError)
    while running:
        pcm = cap.read(timeout=0.5)   # float32 [n] at 16 kHz, in order, or None on timeout/stop
        ...
    cap.preroll()                     # the last ``preroll_s`` seconds written (independent of reads)
    cap.stop()

Device: ``None``/``""`` = the default input, an int or digit string = PortAudio index, anything else a
case-insensitive substring of the device name (an exact name wins; several matches is an error).

Errors (all ``QasrError``, one line saying what to do): ``NoInputDeviceError`` (no input device at
all, or PortAudio missing), ``AudioDeviceError`` (the configured name/index matches nothing or several
devices), ``DeviceOpenError(AudioDeviceError)`` (PortAudio refused to open/start the stream).
``start()`` raises them; with ``wait_for_device=True`` it instead enters ``no-device`` and keeps trying.

States (``cap.state``; ``on_state(state, message)`` is called from ``start()``'s thread or the
supervisor thread, never from the audio callback): ``starting`` (opened, waiting for the first block),
``running``, ``retrying`` (the stream failed, finished, or delivered nothing for ``stall_timeout_s``
— ``first_audio_timeout_s`` right after opening; it is reopened with exponential back-off from
``retry_initial_s`` to ``retry_max_s``, PortAudio's device list is re-read first), ``no-device``
(the device is gone; still retrying), ``stopped``. A stream that hangs inside PortAudio/ALSA on close
would block the supervisor thread (not seen with PulseAudio being killed). While the device is lost no samples are produced:
the stream simply resumes later (a gap in time, not silence).

Counters (16 kHz samples unless named ``device_*``): ``frames_captured`` (written into the ring),
``frames_delivered`` (returned by ``read()``), ``frames_dropped`` (overwritten before being read:
the consumer was more than ``ring_s`` behind), ``overruns`` (how many times that happened),
``device_overflows`` (PortAudio reported input overflow), ``device_frames``, ``callback_errors``.
Always ``frames_captured == frames_delivered + frames_dropped + pending``.

``list_input_devices()`` feeds ``qasr-daemon devices``. PortAudio enumerates devices once at
initialisation; ``refresh_devices()`` re-initialises it (only while no stream of this module is open)
so a sound server started later, or restarted, is seen.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from qasr.daemon.audio.devices import (
    PORTAUDIO, AudioDeviceError, DeviceOpenError, NoInputDeviceError, refresh_devices, resolve_input_device,
    sounddevice_module,
)
from qasr.daemon.audio.resample import StreamResampler
from qasr.engine.audio_constants import SAMPLE_RATE

log = logging.getLogger("qasr.capture")

STATES = ("starting", "running", "retrying", "no-device", "stopped")
SUPERVISE_S = 0.5  # how often a running stream is checked for a stall (stall_timeout_s is 3 s)


@dataclass(frozen=True)
class CaptureOptions:
    device: str | int | None = None
    block_ms: int = 30  # PortAudio block size
    preroll_s: float = 1.0  # what preroll() returns
    ring_s: float = 30.0  # how far the consumer may fall behind before audio is dropped
    samplerate: float | None = None  # device rate to open at; None = the device's default rate
    channels: int | None = None  # None = mono if the device allows, else all its channels
    latency: str | float = "high"  # PortAudio suggested latency: "low", "high" or seconds
    stall_timeout_s: float = 3.0  # no audio for this long from a running stream → treated as lost
    first_audio_timeout_s: float = 8.0  # the same for a freshly opened stream (the first block comes late)
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    wait_for_device: bool = False  # start() without a device: False = raise, True = state no-device and retry

    def __post_init__(self) -> None:
        if not 5 <= self.block_ms <= 500:
            raise ValueError(f"block_ms must be 5..500, got {self.block_ms}")
        if self.preroll_s < 0 or self.ring_s <= 0:
            raise ValueError("preroll_s must be >= 0 and ring_s > 0")


# ---------------------------------------------------------------------- ring buffer

class _Ring:
    """Single producer (audio callback), single consumer. Positions only grow; the writer never
    waits, and a reader that was overtaken drops what was overwritten and counts it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.buf = np.zeros(self.capacity, dtype=np.float32)
        self.write_pos = 0
        self.read_pos = 0

    def write(self, data: np.ndarray) -> None:
        n = len(data)
        if n == 0:
            return
        if n > self.capacity:  # keep the newest; the skipped samples count as written-then-dropped
            self.write_pos += n - self.capacity
            data = data[-self.capacity:]
            n = self.capacity
        start = self.write_pos % self.capacity
        first = min(n, self.capacity - start)
        self.buf[start:start + first] = data[:first]
        if first < n:
            self.buf[:n - first] = data[first:]
        self.write_pos += n  # published after the copy

    def copy_range(self, begin: int, end: int) -> np.ndarray:
        n = end - begin
        out = np.empty(n, dtype=np.float32)
        start = begin % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self.buf[start:start + first]
        if first < n:
            out[first:] = self.buf[:n - first]
        return out


# ---------------------------------------------------------------------- capture

class AudioCapture:
    def __init__(self, options: CaptureOptions | None = None,
                 on_state: Callable[[str, str], None] | None = None) -> None:
        self.options = options or CaptureOptions()
        self._on_state = on_state
        ring_s = max(self.options.ring_s, self.options.preroll_s + 1.0)
        self._ring = _Ring(int(ring_s * SAMPLE_RATE))
        self._data_ready = threading.Event()
        self._wake_at = 1  # the callback wakes the reader once this many samples wait (read's min_samples)
        self._stop = threading.Event()
        self._wake = threading.Event()  # supervisor: something happened (finished callback, stop)
        self._state_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._stream = None
        self._resampler: StreamResampler | None = None
        self._generation = 0  # which stream the callbacks belong to
        self._finished_generation = -1
        self._opened_at = 0.0
        self._last_callback = 0.0
        self._supervisor: threading.Thread | None = None
        self.state = "stopped"
        self.state_message = ""
        self.device: dict[str, Any] | None = None  # the device in use: list_input_devices() entry + rate/channels
        self._dropped = 0
        self.overruns = 0
        self.frames_delivered = 0
        self.device_overflows = 0
        self.device_frames = 0
        self.callback_errors = 0
        self.reopen_count = 0

    # ------------------------------------------------------------------ public

    @property
    def frames_captured(self) -> int:
        return self._ring.write_pos

    @property
    def frames_dropped(self) -> int:
        """Samples lost to a slow consumer, including those overwritten and not yet noticed by read()."""
        ring = self._ring
        return self._dropped + max(0, ring.write_pos - ring.read_pos - ring.capacity)

    @property
    def pending(self) -> int:
        """Samples written but neither read nor dropped yet (at most the ring's capacity)."""
        return min(self._ring.write_pos - self._ring.read_pos, self._ring.capacity)

    def start(self) -> None:
        """Open the input stream now and keep it open; a lost device is reopened in the background."""
        if self._supervisor is not None:
            return
        self._stop.clear()
        self._set_state("starting", "opening audio input")
        try:
            self._open_stream(refresh=True)
        except (NoInputDeviceError, AudioDeviceError) as exc:
            if not self.options.wait_for_device:
                self._set_state("stopped", str(exc))
                raise
            self._set_state("no-device", str(exc))
        self._supervisor = threading.Thread(target=self._supervise, name="qasr-capture", daemon=True)
        self._supervisor.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._data_ready.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=10)
            self._supervisor = None
        self._close_stream()
        self._set_state("stopped", "capture stopped")

    def read(self, timeout: float | None = None, max_samples: int | None = None,
             min_samples: int = 1) -> np.ndarray | None:
        """The next samples (16 kHz mono float32) in order; None after ``timeout`` seconds or when stopped.

        ``min_samples``: wait until that many are there (the callback wakes the reader only then), so a
        reader that can take audio in bigger pieces wakes less often; at the timeout, whatever is there."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._read_lock:
            while True:
                if self.pending >= min_samples:
                    got = self._take(max_samples)
                    if got is not None:
                        return got
                if self._stop.is_set():
                    return None
                self._wake_at = min_samples
                self._data_ready.clear()
                if self.pending >= min_samples:
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return self._take(max_samples)
                self._data_ready.wait(remaining)

    def preroll(self, seconds: float | None = None) -> np.ndarray:
        """The most recent ``seconds`` (default ``preroll_s``) of audio, whether read or not."""
        want = int(round((self.options.preroll_s if seconds is None else seconds) * SAMPLE_RATE))
        end = self._ring.write_pos
        begin = max(0, end - min(want, self._ring.capacity))
        out = self._ring.copy_range(begin, end)
        if self._ring.write_pos - begin > self._ring.capacity:  # overwritten while copying
            cut = self._ring.write_pos - begin - self._ring.capacity
            out = out[cut:]
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "state": self.state, "message": self.state_message,
            "device": None if self.device is None else self.device.get("name"),
            "frames_captured": self.frames_captured, "frames_delivered": self.frames_delivered,
            "frames_dropped": self.frames_dropped, "overruns": self.overruns,
            "device_overflows": self.device_overflows, "callback_errors": self.callback_errors,
            "reopen_count": self.reopen_count,
        }

    # ------------------------------------------------------------------ consumer side

    def _take(self, max_samples: int | None) -> np.ndarray | None:
        ring = self._ring
        end = ring.write_pos
        begin = ring.read_pos
        if end - begin > ring.capacity:
            self._drop(end - begin - ring.capacity)
            begin = ring.read_pos
        if end <= begin:
            return None
        if max_samples is not None:
            end = min(end, begin + max_samples)
        out = ring.copy_range(begin, end)
        overwritten = ring.write_pos - begin - ring.capacity  # the writer lapped us during the copy
        if overwritten > 0:
            self._drop(min(overwritten, end - begin))
            out = out[min(overwritten, len(out)):]
            if not len(out):
                return None
        ring.read_pos = end
        self.frames_delivered += len(out)
        return out

    def _drop(self, n: int) -> None:
        self._ring.read_pos += n
        self._dropped += n
        self.overruns += 1
        log.warning("audio consumer fell behind: dropped %.2f s of audio", n / SAMPLE_RATE)

    # ------------------------------------------------------------------ audio callback (PortAudio thread)

    def _make_callback(self, generation: int, resampler: StreamResampler):
        ring = self._ring
        ready = self._data_ready

        def callback(indata, frames, time_info, status) -> None:
            try:
                if status.input_overflow:
                    self.device_overflows += 1
                self.device_frames += frames
                ring.write(resampler.process(indata))
                self._last_callback = time.monotonic()
                if ring.write_pos - ring.read_pos >= self._wake_at:
                    ready.set()
            except Exception:  # an exception would abort the stream; count it instead
                self.callback_errors += 1

        def finished() -> None:
            self._finished_generation = generation
            self._wake.set()

        return callback, finished

    # ------------------------------------------------------------------ stream management

    def _open_stream(self, refresh: bool) -> None:
        with PORTAUDIO.lock:
            sd = sounddevice_module()
            if refresh:
                refresh_devices()
            device = resolve_input_device(self.options.device)
            rate = float(self.options.samplerate or device["default_samplerate"] or SAMPLE_RATE)
            channels = self._pick_channels(sd, device, rate)
            resampler = StreamResampler(rate, channels)
            self._generation += 1
            callback, finished = self._make_callback(self._generation, resampler)
            stream = None
            try:
                stream = sd.InputStream(
                    device=device["index"], samplerate=rate, channels=channels, dtype="float32",
                    blocksize=max(1, int(round(rate * self.options.block_ms / 1000))),
                    latency=self.options.latency, callback=callback, finished_callback=finished)
                self._opened_at = self._last_callback = time.monotonic()
                stream.start()
            except Exception as exc:  # sd.PortAudioError, or ValueError from bad settings
                if stream is not None:
                    stream.close(ignore_errors=True)
                raise DeviceOpenError(f"cannot open audio input {device['name']!r}: {exc}; "
                                      "check audio.device (`qasr-daemon devices`)") from exc
            self._stream = stream
            self._resampler = resampler
            PORTAUDIO.open_streams += 1
            self.device = dict(device, samplerate=rate, channels_open=channels)
        log.info("audio input open: %s (%d Hz, %d ch)", device["name"], rate, channels)

    def _pick_channels(self, sd, device: dict[str, Any], rate: float) -> int:
        if self.options.channels:
            return int(self.options.channels)
        for channels in dict.fromkeys((1, min(2, device["channels"]), device["channels"])):
            try:
                sd.check_input_settings(device=device["index"], channels=channels,
                                        dtype="float32", samplerate=rate)
                return channels
            except Exception:
                continue
        return 1

    def _close_stream(self) -> None:
        with PORTAUDIO.lock:
            stream, self._stream = self._stream, None
            if stream is None:
                return
            self._generation += 1  # late callbacks of the old stream are ignored from here on
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception as exc:
                log.debug("closing audio stream: %s", exc)
            PORTAUDIO.open_streams -= 1

    def _stream_problem(self) -> str | None:
        stream = self._stream
        if stream is None:
            return "no stream"
        if self._finished_generation == self._generation:
            return "the audio stream ended"
        try:
            active = stream.active
        except Exception as exc:
            return f"the audio stream failed: {exc}"
        if not active:
            return "the audio stream stopped"
        now = time.monotonic()
        waiting_first = self._last_callback <= self._opened_at
        limit = self.options.first_audio_timeout_s if waiting_first else self.options.stall_timeout_s
        if now - self._last_callback > limit:
            return f"no audio for {now - self._last_callback:.1f} s"
        return None

    def _supervise(self) -> None:
        attempt = 0
        next_try = 0.0
        while not self._stop.is_set():
            if self._stream is not None:
                problem = self._stream_problem()
                if problem is None:
                    if self.state != "running" and self._last_callback > self._opened_at:
                        attempt = 0
                        self._set_state("running", f"capturing from {self.device['name']}")
                    self._wake.wait(SUPERVISE_S)  # a finished stream wakes it at once
                    self._wake.clear()
                    continue
                log.warning("audio input lost: %s", problem)
                self._close_stream()
                self._set_state("retrying", f"audio input lost ({problem}); reopening")
                next_try = time.monotonic() + self._backoff(attempt)
            now = time.monotonic()
            if now < next_try:
                self._stop.wait(min(0.1, next_try - now))
                continue
            try:
                self._open_stream(refresh=True)
                self.reopen_count += 1
                self._set_state("starting", f"reopened {self.device['name']}")
            except (NoInputDeviceError, AudioDeviceError) as exc:
                attempt += 1
                delay = self._backoff(attempt)
                state = "retrying" if isinstance(exc, DeviceOpenError) else "no-device"
                self._set_state(state, f"{exc} (retrying in {delay:.1f} s)")
                next_try = time.monotonic() + delay
            except Exception as exc:  # PortAudio re-initialisation failures and the like
                attempt += 1
                self._set_state("retrying", f"audio input error: {exc}")
                next_try = time.monotonic() + self._backoff(attempt)

    def _backoff(self, attempt: int) -> float:
        return min(self.options.retry_max_s, self.options.retry_initial_s * (2 ** attempt))

    def _set_state(self, state: str, message: str) -> None:
        with self._state_lock:
            if state == self.state and message == self.state_message:
                return
            self.state, self.state_message = state, message
        log.info("audio capture %s: %s", state, message)
        if self._on_state is not None:
            try:
                self._on_state(state, message)
            except Exception:
                log.exception("capture state callback failed")
