"""Audio from one source → utterances in the pipeline: the one path the microphone and streamed audio share.

A source's PCM goes through a ``Segmenter`` (or, without one, the whole stream is one utterance) and
its events become pipeline calls:

    SpeechStart → begin (speech cut at max length continues in a new utterance that gets the previous
                  one's text as context; the decoder serves utterances in order)
    SpeechAudio → audio, asking for a partial step only while the voice is on (after PARTIAL_PAUSE_S of
                  silence the decoder is kept free for the final that probably comes)
    SpeechPause → pause (the final is prepared during the VAD's hangover)
    SpeechEnd   → end            Cancelled → cancel            VadState → on_vad
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from qasr.daemon.audio.segment_events import (
    Cancelled, SegmentEvent, SpeechAudio, SpeechEnd, SpeechPause, SpeechStart, VadState,
)
from qasr.daemon.audio.segmenter import Segmenter
from qasr.daemon.transcription.pipeline import Pipeline
from qasr.daemon.transcription.routes import Source

# Silence (s) after which partial steps pause until the voice resumes: a running step would delay the final.
PARTIAL_PAUSE_S = 0.25


class UtteranceFeed:
    """Not thread-safe: one caller at a time (the microphone holds its lock; a WebSocket stream is one task).

    ``on_begin(utterance_id)`` and ``on_end(utterance_id, ended, more_follows)`` let the caller track
    its utterances (``ended`` False: cancelled; ``more_follows``: speech cut at max length goes on).
    ``partials`` False: no partial steps at all (a request that wants only the final). The ``source``
    (its route, its decoder lane) is every utterance's."""

    def __init__(self, pipeline: Pipeline, source: Source, segmenter: Segmenter | None = None,
                 language: str | None = None, context: str | None = None,
                 on_vad: Callable[[VadState], None] | None = None,
                 on_begin: Callable[[str], None] | None = None,
                 on_end: Callable[[str, bool, bool], None] | None = None,
                 partials: bool = True) -> None:
        self.pipeline = pipeline
        self.source = source
        self.segmenter = segmenter
        self.language = language
        self.context = context
        self._on_vad = on_vad
        self._on_begin = on_begin
        self._on_end = on_end
        self.partials = partials
        # (language, context) -> (language, context) at each utterance start (the mic: per-application profiles)
        self.choose: Callable[[str | None, str | None], tuple[str | None, str | None]] | None = None
        self._open: dict[int, str] = {}  # segmenter utterance id -> pipeline utterance id
        self._last: str | None = None  # the newest utterance: context for one that continues it
        self.current: str | None = None  # the open utterance, if any
        if segmenter is None:
            self._begin(0, 0.0, continued=False)

    @property
    def in_utterance(self) -> bool:
        return bool(self._open)

    def process(self, pcm: np.ndarray) -> None:
        if self.segmenter is None:
            if pcm.size and self.current is not None:
                self.pipeline.audio(self.current, pcm, partial=self.partials)
            return
        self.handle(self.segmenter.process(pcm))

    def finish(self) -> None:
        """End of the source: the utterance in flight is ended where it is."""
        if self.segmenter is not None:
            self.handle(self.segmenter.finish())
        elif self.current is not None:
            self._end(0, ended=True, more_follows=False)

    def cancel(self) -> None:
        if self.segmenter is not None:
            self.handle(self.segmenter.cancel())
        elif self.current is not None:
            self._end(0, ended=False, more_follows=False)

    def handle(self, events: list[SegmentEvent]) -> None:
        for event in events:
            if isinstance(event, VadState):
                if self._on_vad is not None:
                    self._on_vad(event)
            elif isinstance(event, SpeechStart):
                self._begin(event.utterance_id, event.t_s, event.continued)
            elif event.utterance_id not in self._open:
                continue
            elif isinstance(event, SpeechAudio):
                partial = self.partials and (self.segmenter is None or self.segmenter.silence_s < PARTIAL_PAUSE_S)
                self.pipeline.audio(self._open[event.utterance_id], event.pcm, event.t_s, partial=partial)
            elif isinstance(event, SpeechPause):
                self.pipeline.pause(self._open[event.utterance_id])
            elif isinstance(event, SpeechEnd):
                self._end(event.utterance_id, ended=True, more_follows=event.reason == "max_length")
            elif isinstance(event, Cancelled):
                self._end(event.utterance_id, ended=False, more_follows=False)

    def _begin(self, segment_id: int, t_s: float, continued: bool) -> None:
        language, context = self.language, self.context
        if self.choose is not None:
            language, context = self.choose(language, context)
        utterance = self.pipeline.begin(self.source, audio_start=t_s, language=language, context=context,
                                        continues=self._last if continued else None)
        self._open[segment_id] = self._last = self.current = utterance
        if self._on_begin is not None:
            self._on_begin(utterance)

    def _end(self, segment_id: int, ended: bool, more_follows: bool) -> None:
        utterance = self._open.pop(segment_id)
        (self.pipeline.end if ended else self.pipeline.cancel)(utterance)
        if self.current == utterance:
            self.current = None
        if self._on_end is not None:
            self._on_end(utterance, ended, more_follows)
