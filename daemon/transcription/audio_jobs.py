"""A requester's audio → utterances in the pipeline → its results: an uploaded file (OpenAI), a Wyoming
request, a ``qasr.v1`` WebSocket audio stream.

The job is its own source (``TranscriptionService.source``): its audio goes through the same
``UtteranceFeed`` and ``Pipeline`` as every other source, and its source's route hands each result back
to it (``_result``, on the route's thread).

    job = AudioJob(service, OPENAI, "openai:7", language=None, context=None)
    job.transcribe_audio(pcm)                 # pieces ≤ 30 s cut where offline `transcribe` cuts them
    result = job.wait(timeout_s)              # finals in order, or the error

    job = AudioJob(service, WYOMING, "wyoming:3", on_message=send)   # partials/finals as they come
    job.open_audio(); job.feed(pcm) ...; job.finish(); job.wait(...)
    job.open_audio(segmenter=vad)            # utterances where the segmenter cuts (WebSocket streams)

A file is cut exactly as ``Transcriber.transcribe`` cuts it (``engine.segmentation.cut_points`` on the
same normalised waveform), and each piece is one utterance with the same language and context, so each
final's tokens equal the offline transcription's piece by piece.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from qasr.daemon.audio.segmenter import Segmenter
from qasr.daemon.transcription.utterance_feed import UtteranceFeed
from qasr.engine.audio_constants import SAMPLE_RATE
from qasr.engine.segmentation import SegmentationOptions, cut_points
from qasr.engine.transcribe import TranscribeOptions, normalize_waveform

if TYPE_CHECKING:
    from qasr.daemon.transcription.service import TranscriptionService

log = logging.getLogger("qasr.jobs")

FEED_BLOCK_S = 1.0  # a file goes to the encoder in blocks this long, so microphone audio interleaves
MAX_PIECE_S = TranscribeOptions.max_piece_s  # pieces as the offline Transcriber cuts them


@dataclass
class JobResult:
    finals: list[dict] = field(default_factory=list)  # qasr.v1 final messages, in utterance order
    pieces: list[tuple[float, float]] = field(default_factory=list)  # each final's span in the job's audio (s)
    error: str | None = None
    cancelled: bool = False


class AudioJob:
    """One request's audio. Not thread-safe for feeding (one caller); results arrive on its route's thread.

    ``on_message(message)`` (that thread, or the aligner's for a final with words) sees every
    ``partial``/``final``/``error`` message of the job."""

    def __init__(self, service: TranscriptionService, kind: str, name: str, language: str | None = None,
                 context: str | None = None, partials: bool = True,
                 on_message: Callable[[dict], None] | None = None) -> None:
        self.service = service
        self.source = service.source(kind, name, self._result)
        self.language = language
        self.context = context
        self.partials = partials
        self._on_message = on_message
        self._cond = threading.Condition()
        self._order: list[str] = []  # utterance ids in the order they began
        self._open: set[str] = set()
        self._finals: dict[str, dict] = {}
        self._spans: dict[str, tuple[float, float]] = {}
        self._error: str | None = None
        self._cancelled = False
        self._feed: UtteranceFeed | None = None
        self._offset = 0.0  # where the open utterance starts in the job's audio
        self._fed = 0  # samples given to the open utterance

    # -- whole audio (files) -------------------------------------------------------------------
    def transcribe_audio(self, audio: np.ndarray) -> None:
        """Queue all of ``audio`` (16 kHz mono float32): one utterance per piece offline would decode."""
        audio = normalize_waveform(audio)
        for piece in cut_points(audio, SegmentationOptions(max_piece_s=MAX_PIECE_S, sample_rate=SAMPLE_RATE)):
            if self._cancelled:
                return
            self.open_audio(piece.start / SAMPLE_RATE)
            block = int(FEED_BLOCK_S * SAMPLE_RATE)
            for start in range(piece.start, piece.end, block):
                self.feed(audio[start:min(start + block, piece.end)])
            self.finish()

    # -- audio as it comes -----------------------------------------------------------------------
    def open_audio(self, offset_s: float = 0.0, segmenter: Segmenter | None = None) -> None:
        """One utterance from here to ``finish()``; with ``segmenter``, one per stretch of speech it finds."""
        if self._feed is not None:
            raise RuntimeError("audio of this job is still open")
        self._offset, self._fed = offset_s, 0
        self._feed = self.service.feed(self.source, segmenter, language=self.language, context=self.context,
                                       on_begin=self._began, partials=self.partials)

    @property
    def audio_open(self) -> bool:
        return self._feed is not None

    @property
    def fed_s(self) -> float:
        return self._fed / SAMPLE_RATE

    def feed(self, pcm: np.ndarray) -> None:
        if self._feed is None:
            raise RuntimeError("no open audio")
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        self._fed += pcm.size
        self._feed.process(pcm)

    def finish(self) -> None:
        """End the open audio: the final of its last utterance follows."""
        feed, self._feed = self._feed, None
        if feed is not None:
            uid = feed.current
            if uid is not None:
                self._spans[uid] = (self._offset, self._offset + self._fed / SAMPLE_RATE)
            feed.finish()

    def cancel(self) -> None:
        """Stop queueing audio and drop the open utterance (utterances already ended still finish)."""
        self._cancelled = True
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.cancel()

    # -- results -------------------------------------------------------------------------------
    def _began(self, utterance_id: str) -> None:
        with self._cond:
            self._order.append(utterance_id)
            self._open.add(utterance_id)

    def _result(self, utterance_id: str, message: dict | None, outcome: str | None) -> None:
        if message is not None and self._on_message is not None:
            try:
                self._on_message(message)
            except Exception:
                log.exception("%s: delivering a result failed", self.source.name)
        if outcome is None:
            return
        with self._cond:
            self._open.discard(utterance_id)
            if outcome == "final" and message is not None:
                self._finals[utterance_id] = message
            elif outcome == "error" and self._error is None:
                self._error = (message or {}).get("message") or "transcription failed"
            self._cond.notify_all()

    def done(self) -> bool:
        with self._cond:
            return not self._open and self._feed is None

    def wait(self, timeout_s: float | None = None) -> JobResult | None:
        """Wait until every utterance of the job has its outcome; None on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._open, timeout=timeout_s):
                return None
            ids = [uid for uid in self._order if uid in self._finals]
            return JobResult([self._finals[uid] for uid in ids],
                             [self._spans.get(uid, (0.0, 0.0)) for uid in ids], self._error, self._cancelled)
