"""System audio capture: the monitor of the default output (PulseAudio, or PipeWire's pulse server).

``parec`` records ``<default sink>.monitor`` as 16 kHz mono float32 (the server down-mixes and resamples)
into the same ring buffer, states and counters as the microphone's ``AudioCapture`` (this is a subclass:
only opening, closing and watching the stream differ). ``pactl subscribe`` reports server changes; when
the default sink is another one, the stream is reopened on the new sink's monitor. Nothing polls: with
nothing playing, a suspended sink's monitor sends nothing and the source simply waits (no stall timeout).

Needs ``parec`` and ``pactl`` (Debian/Ubuntu: pulseaudio-utils; they talk to pipewire-pulse too).
Without them, or without a sound server, ``start()`` raises ``NoMonitorError`` (one line) unless
``wait_for_device`` is set, in which case the source stays in ``no-device`` and retries with back-off.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time

import numpy as np

from qasr.daemon.audio.capture import AudioCapture
from qasr.daemon.audio.devices import NoInputDeviceError
from qasr.engine.audio_constants import SAMPLE_RATE

log = logging.getLogger("qasr.system_audio")

READ_BYTES = 4 * SAMPLE_RATE // 20  # 50 ms of float32 per read at most
PAREC_LATENCY_MS = 60
PACTL_TIMEOUT_S = 5.0


class NoMonitorError(NoInputDeviceError):
    """No output to capture: no sound server, no sink, or no parec/pactl."""


def _env() -> dict[str, str]:
    return dict(os.environ, LC_ALL="C")  # pactl's field names in English


def default_sink() -> str:
    """The sound server's default sink (NoMonitorError when there is no server or no sink)."""
    if shutil.which("pactl") is None or shutil.which("parec") is None:
        raise NoMonitorError("parec and pactl are missing (install pulseaudio-utils)")
    try:
        info = subprocess.run(["pactl", "info"], capture_output=True, text=True, env=_env(),
                              timeout=PACTL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise NoMonitorError(f"pactl failed ({exc})") from exc
    if info.returncode != 0:
        why = (info.stderr.strip().splitlines() or ["no sound server"])[-1]
        raise NoMonitorError(f"no sound server to capture from ({why}; is PulseAudio/PipeWire running?)")
    for line in info.stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Default Sink" and value.strip() and value.strip() != "@DEFAULT_SINK@":
            return value.strip()
    raise NoMonitorError("the sound server has no output (default sink) to capture")


class MonitorCapture(AudioCapture):
    """``AudioCapture`` over ``parec --device=<default sink>.monitor``; follows the default sink."""

    def __init__(self, options, on_state=None) -> None:
        super().__init__(options, on_state)
        self._parec: subprocess.Popen | None = None
        self._watcher: subprocess.Popen | None = None
        self._sink_changed = threading.Event()
        self.sink: str | None = None
        self.sink_switches = 0

    # -- the stream -----------------------------------------------------------------------------
    def _open_stream(self, refresh: bool) -> None:
        sink = default_sink()
        monitor = f"{sink}.monitor"
        self._generation += 1
        generation = self._generation
        try:
            parec = subprocess.Popen(
                ["parec", f"--device={monitor}", "--format=float32le", f"--rate={SAMPLE_RATE}", "--channels=1",
                 "--raw", f"--latency-msec={PAREC_LATENCY_MS}", "--client-name=qasr",
                 "--stream-name=system audio captions"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_env())
        except OSError as exc:
            raise NoMonitorError(f"cannot start parec: {exc}") from exc
        self._parec = self._stream = parec
        self._sink_changed.clear()
        self._start_watcher(sink)
        # "running" once parec records: a suspended (idle) sink's monitor may send nothing for hours
        self._opened_at = time.monotonic()
        self._last_callback = self._opened_at + 1e-3
        threading.Thread(target=self._pump, args=(parec, generation), name="qasr-parec", daemon=True).start()
        if self.sink is not None and sink != self.sink:
            self.sink_switches += 1
        self.sink = sink
        self.device = {"name": monitor, "samplerate": float(SAMPLE_RATE), "channels_open": 1}
        log.info("system audio: recording %s", monitor)

    def _pump(self, parec: subprocess.Popen, generation: int) -> None:
        """parec's stdout → the ring (this thread stands in for the PortAudio callback)."""
        fd = parec.stdout.fileno()
        rest = b""
        while generation == self._generation:
            try:
                data = os.read(fd, READ_BYTES)
            except OSError:
                break
            if not data:
                break
            data = rest + data
            usable = len(data) - len(data) % 4
            rest = data[usable:]
            if usable and generation == self._generation:
                pcm = np.frombuffer(data[:usable], dtype="<f4")
                self.device_frames += pcm.size
                self._ring.write(pcm)
                self._last_callback = time.monotonic()
                self._data_ready.set()
        self._finished_generation = generation
        self._wake.set()

    def _start_watcher(self, sink: str) -> None:
        self._stop_watcher()
        try:
            watcher = subprocess.Popen(["pactl", "subscribe"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       stdin=subprocess.DEVNULL, env=_env(), text=True)
        except OSError as exc:
            log.warning("system audio: cannot follow the default output (%s)", exc)
            return
        self._watcher = watcher
        threading.Thread(target=self._watch, args=(watcher, sink), name="qasr-pactl", daemon=True).start()

    def _watch(self, watcher: subprocess.Popen, sink: str) -> None:
        """Server changes → is the default sink another one now? (Its monitor is then reopened.)"""
        for line in watcher.stdout:
            if "on server" not in line and "on sink " not in line:
                continue
            try:
                now = default_sink()
            except NoInputDeviceError:
                return  # the server went away: parec ends too and the supervisor reopens
            if now != sink:
                log.info("system audio: the default output changed from %s to %s", sink, now)
                self._sink_changed.set()
                self._wake.set()
                return

    def _stop_watcher(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            _end(watcher)

    def _close_stream(self) -> None:
        parec, self._parec, self._stream = self._parec, None, None
        self._generation += 1
        self._stop_watcher()
        if parec is not None:
            _end(parec)

    def _stream_problem(self) -> str | None:
        parec = self._parec
        if parec is None:
            return "no stream"
        if self._sink_changed.is_set():
            return "the default output changed"
        if self._finished_generation == self._generation or parec.poll() is not None:
            err = parec.stderr.read().decode(errors="replace").strip() if parec.poll() is not None else ""
            return f"parec ended{': ' + err.splitlines()[-1] if err else ''}"
        return None  # no stall timeout: a monitor is silent (or sends nothing) while nothing plays

    def _set_state(self, state: str, message: str) -> None:
        if state == "running" and self.device is not None:
            message = f"capturing system audio from {self.device['name']}"
        super()._set_state(state, message)


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=3)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
