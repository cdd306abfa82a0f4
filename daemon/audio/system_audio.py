"""System audio as an utterance source: monitor capture → its own VAD segmenter → ``UtteranceFeed``
(source ``system``, the pipeline's ``LIVE`` lane) on the ``system-audio`` thread.

What the computer plays is captioned, never typed: its source's route (``system_source.py``) broadcasts
the results. The segmenter always runs in vad mode
(there is no key to hold for someone else's voice); dictation's ptt/toggle mode does not apply.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from qasr.daemon.audio.capture import CaptureOptions
from qasr.daemon.audio.monitor_capture import MonitorCapture
from qasr.daemon.audio.segmenter import Segmenter, SegmenterOptions
from qasr.daemon.audio.source_clock import SourceClock
from qasr.daemon.transcription.pipeline import Pipeline
from qasr.daemon.transcription.routes import SYSTEM, Source
from qasr.daemon.transcription.utterance_feed import UtteranceFeed

log = logging.getLogger("qasr.system_audio")

SOURCE = SYSTEM  # its name and kind


class SystemAudio:
    def __init__(self, capture_options: CaptureOptions, segmenter_options: SegmenterOptions, pipeline: Pipeline,
                 source: Source, on_capture_state: Callable[[str, str], None]) -> None:
        self.capture = MonitorCapture(capture_options, on_state=on_capture_state)
        self.feed = UtteranceFeed(pipeline, source, Segmenter(segmenter_options))
        self.clock = SourceClock()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def monitor(self) -> str | None:
        device = self.capture.device
        return device.get("name") if isinstance(device, dict) else None

    def start(self) -> None:
        """Start recording (``NoMonitorError`` unless the capture waits for a device) and the thread."""
        self.capture.start()
        self._thread = threading.Thread(target=self._loop, name="system-audio", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            pcm = self.capture.read(timeout=0.5)
            if pcm is None:
                continue
            with self.lock:
                self.feed.process(pcm)
                self.clock.mark(self.feed.segmenter.t_s)

    def stop(self) -> None:
        """Stop recording; an utterance in flight ends where it is (its final still comes)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.capture.stop()
        except Exception:
            log.exception("closing the system audio capture failed")
        with self.lock:
            self.feed.finish()

    def status(self) -> dict:
        return {"state": self.capture.state, "monitor": self.monitor, "message": self.capture.state_message,
                "sink_switches": self.capture.sink_switches, "recording": self.feed.in_utterance}
