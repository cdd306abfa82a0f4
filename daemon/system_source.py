"""System audio and the call recorder as parts of the daemon (their commands: ``system_commands.py``).

The source is opened when ``[audio] system`` is on, when ``system-audio on`` asks, or for a call being
recorded, and closed when none of them wants it any more. No monitor to capture is one warning (the
source keeps retrying quietly; the microphone is untouched).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from qasr.config import paths
from qasr.daemon import component_options as opts
from qasr.daemon.audio.capture import CaptureOptions
from qasr.daemon.audio.source_clock import SourceClock
from qasr.daemon.audio.system_audio import SOURCE, SystemAudio
from qasr.daemon.results.call_transcript import CallRecorder
from qasr.daemon.results.requester_route import RequesterRoute
from qasr.daemon.transcription.routes import Source
from qasr.errors import QasrError

log = logging.getLogger("qasr.system_audio")

NO_SYSTEM_AUDIO = "no system audio captions"
SETTLE_S = 30.0  # record-call stop waits at most this long for finals (and their words) still on their way


class SystemSource:
    def __init__(self, parts: Any) -> None:
        self.parts = parts  # Components: settings, pipeline, results, aligner, publish, publish_warning
        self.source: SystemAudio | None = None
        self.recorder = CallRecorder(paths.transcripts_dir, self._clock_of)
        self._asked = False  # system-audio on (a session), beside [audio] system
        self._lock = threading.RLock()
        self._warned: str | None = None

    # -- wanted or not ---------------------------------------------------------------------------
    def _wanted(self) -> bool:
        return self.parts.settings.audio.system or self._asked or self.recorder.recording

    def update(self) -> None:
        """Open or close the source to match what is wanted now (start-up, reload, commands)."""
        with self._lock:
            if self._wanted() and self.source is None:
                self._open()
            elif not self._wanted() and self.source is not None:
                self._close()

    def _open(self) -> None:
        s = self.parts.settings
        capture = CaptureOptions(preroll_s=0.0, ring_s=s.audio.queue_s, wait_for_device=True)
        source = SystemAudio(capture, opts.segmenter_options(s, "vad"), self.parts.pipeline, self._source(),
                             self._on_state)
        source.start()  # waits for a monitor (state no-device) rather than failing
        self.source = source
        log.info("system audio captions on")

    def _source(self) -> Source:
        """Captions for every subscriber: its partials, finals and errors are broadcast as they are (each
        with ``"source": "system"``), never typed nor journaled; the call recorder taps the broadcast."""
        publish = self.parts.publish

        def broadcast(utterance_id: str, message: dict | None, outcome: str | None) -> None:
            if message is not None:
                publish(message)

        return Source.of(SOURCE, SOURCE, RequesterRoute(SOURCE, SOURCE, self.parts.results, broadcast))

    def _close(self) -> None:
        source, self.source = self.source, None
        source.stop()
        self._forget_warning()
        log.info("system audio captions off")

    def _forget_warning(self) -> None:
        if self._warned is not None:
            self.parts.warnings = [w for w in self.parts.warnings if w != self._warned]
            self._warned = None

    def _on_state(self, state: str, message: str) -> None:
        """One warning line while there is nothing to capture (status, log, subscribers), gone once there is."""
        if state == "no-device" and self._warned is None:
            self._warned = f"{NO_SYSTEM_AUDIO}: {message.split(' (retrying')[0]}; the microphone keeps working"
            self.parts._warn(self._warned)
            self.parts.publish_warning("system_audio", self._warned)
        elif state == "running":
            self._forget_warning()

    def _clock_of(self, source: str) -> SourceClock | None:
        owner = self.source if source == SOURCE else self.parts.microphone
        return getattr(owner, "clock", None)

    # -- the broadcast tap -------------------------------------------------------------------------
    def observe(self, message: dict) -> None:
        if self.recorder.recording:
            self.recorder.observe(message)

    # -- what the commands do (system_commands.py) -----------------------------------------------
    def ask(self, on: bool) -> dict[str, Any]:
        with self._lock:
            self._asked = on
            self.update()
        return self.status()

    def start_call(self) -> dict[str, Any]:
        result = self.recorder.start()
        self._want_words()
        self.update()
        return {**result, "system_audio": self.status()}

    def stop_call(self) -> dict[str, Any]:
        result = self.recorder.stop(self._settle)
        self.update()
        return result

    def _want_words(self) -> None:
        aligner = self.parts.aligner
        if aligner is not None and aligner.available and not aligner.loaded:
            aligner.preload()

    def _settle(self) -> None:
        """Finals of audio spoken before the stop: the pipeline's, then those waiting for their words."""
        pipeline = self.parts.pipeline
        if pipeline is not None:
            pipeline.drain(SETTLE_S)
        words = self.parts.results.words
        if words is not None:
            done = threading.Event()
            words.in_order(done.set)
            done.wait(SETTLE_S)

    def status(self) -> dict[str, Any]:
        source = self.source
        out = {"on": source is not None, "configured": self.parts.settings.audio.system, "asked": self._asked,
               "call": self.recorder.recording}
        if source is not None:
            out.update(source.status())
        return out

    def shutdown(self) -> None:
        if self.recorder.recording:
            try:
                self.recorder.stop(self._settle_briefly)
            except QasrError as exc:
                log.error("%s", exc)
        with self._lock:
            if self.source is not None:
                self._close()

    def _settle_briefly(self) -> None:
        if self.parts.pipeline is not None:
            self.parts.pipeline.drain(10.0)

