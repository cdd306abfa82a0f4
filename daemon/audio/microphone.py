"""The microphone as an utterance source: capture → segmenter → ``UtteranceFeed``, on its own ``audio`` thread.

The PortAudio stream opens at start-up and stays open (no warm-up later); ``AudioCapture`` reopens a
lost device itself. ``start``/``stop``/``toggle``/``cancel`` are push-to-talk and toggle controls;
in vad mode ``toggle`` pauses and resumes listening.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from qasr.daemon.audio.capture import AudioCapture, CaptureOptions
from qasr.daemon.audio.segment_events import VadState
from qasr.daemon.audio.segmenter import Segmenter, SegmenterOptions
from qasr.daemon.audio.source_clock import SourceClock
from qasr.daemon.transcription.pipeline import Pipeline
from qasr.daemon.transcription.routes import Source
from qasr.daemon.transcription.utterance_feed import UtteranceFeed
from qasr.engine.audio_constants import SAMPLE_RATE

log = logging.getLogger("qasr.microphone")

IDLE_BLOCKS = 1.5  # samples an idle read waits for, in capture blocks: two blocks (a block is never exact)


class Microphone:
    def __init__(self, capture_options: CaptureOptions, segmenter_options: SegmenterOptions, pipeline: Pipeline,
                 source: Source, on_capture_state: Callable[[str, str], None], on_failure: Callable[[str], None],
                 on_vad: Callable[[VadState], None], on_begin: Callable[[str], None],
                 on_end: Callable[[str, bool, bool], None], on_audio: Callable[[], None]) -> None:
        self.capture = AudioCapture(capture_options, on_state=on_capture_state)
        self._segmenter_options = segmenter_options
        self._on_failure = on_failure
        self._on_audio = on_audio  # an utterance began or ended: the daemon's state changed
        self.lock = threading.RLock()  # segmenter and feed
        self.feed = UtteranceFeed(pipeline, source, Segmenter(segmenter_options), on_vad=on_vad,
                                  on_begin=on_begin, on_end=on_end)
        self.clock = SourceClock()  # stream time → wall clock (the call transcript orders sources by it)
        self.paused = False
        self._pending_options: SegmenterOptions | None = None  # new settings, applied once no utterance is open
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def segmenter(self) -> Segmenter:
        return self.feed.segmenter

    @property
    def device_name(self) -> str | None:
        device = getattr(self.capture, "device", None)
        return device.get("name") if isinstance(device, dict) else None

    @property
    def recording(self) -> bool:
        return self.segmenter.in_utterance

    def start(self) -> None:
        """Open the device (raises QasrError when there is none) and start the audio thread."""
        self.capture.start()
        self._thread = threading.Thread(target=self._loop, name="audio", daemon=True)
        self._thread.start()

    def set_segmenter_options(self, options: SegmenterOptions) -> None:
        with self.lock:
            self._pending_options = options

    def _loop(self) -> None:
        # Between utterances the audio is taken two blocks at a time: half the wake-ups of an idle daemon,
        # for at most one block (60 ms) later speech onset (the pre-roll keeps the audio before it);
        # inside an utterance every block at once, so its end and the final are never later.
        idle_samples = int(IDLE_BLOCKS * self.capture.options.block_ms * SAMPLE_RATE / 1000)
        while not self._stop.is_set():
            try:
                idle = not self.segmenter.in_utterance
                pcm = self.capture.read(timeout=0.5, min_samples=idle_samples if idle else 1)
            except Exception as exc:
                log.exception("capture failed")
                with self.lock:
                    self.feed.finish()  # what was captured still gets transcribed
                self._on_failure(f"capture failed: {exc}")
                return
            if pcm is None:
                continue
            with self.lock:
                if self.paused:
                    continue
                was_recording = self.segmenter.in_utterance
                self.feed.process(pcm)
                recording = self.segmenter.in_utterance
                self.clock.mark(self.segmenter.t_s)
                if self._pending_options is not None and not recording:
                    self.feed.segmenter = Segmenter(self._pending_options)
                    self._pending_options = None
            if recording != was_recording:  # not every block: an idle daemon should sleep between them
                self._on_audio()

    # -- controls ------------------------------------------------------------------------------
    def start_utterance(self) -> dict:
        with self.lock:
            self.paused = False
            self.feed.handle(self.segmenter.start_utterance())
            return self._recording()

    def stop_utterance(self) -> dict:
        with self.lock:
            self.feed.handle(self.segmenter.stop_utterance())
            return self._recording()

    def toggle(self) -> dict:
        with self.lock:
            if self.segmenter.mode != "vad":
                self.feed.handle(self.segmenter.toggle())
                return self._recording()
            self.paused = not self.paused  # vad mode: toggle pauses / resumes listening
            if self.paused:
                self.feed.handle(self.segmenter.stop_utterance())
            return {"paused": self.paused}

    def _recording(self) -> dict:
        if self.segmenter.ending:  # stopped: only the release tail is still taken, then the final comes
            return {"recording": False, "ending": True}
        return {"recording": self.recording}

    def cancel(self) -> dict:
        with self.lock:
            cancelled = self.recording
            self.feed.cancel()
            return {"cancelled": cancelled}

    # -- shutdown ------------------------------------------------------------------------------
    def stop(self, finish_utterance: bool) -> None:
        """Stop the thread; with ``finish_utterance`` audio already captured goes into the utterance in
        flight, which then ends where it is."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if finish_utterance:
            with self.lock:
                while (pcm := self.capture.read(timeout=0)) is not None and self.segmenter.in_utterance:
                    self.feed.process(pcm)
                self.feed.finish()
        try:
            self.capture.stop()
        except Exception:
            log.exception("closing the capture failed")
