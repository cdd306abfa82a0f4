"""``[output] word_timestamps``: finals of dictation and WebSocket streams get ``words`` from the forced aligner.

    words = FinalWords(host, enabled=lambda: settings.output.word_timestamps)
    pipeline on_audio → words.collect(utterance_id, pcm, source)     (encoder worker: a copy of each block)
    a route, at a final → audio = words.take(utterance_id, source, audio_s)
                         words.attach(message, audio, send)          (send(message + words) on the aligner thread)
                         words.in_order(lambda: publish(other))      (later events never overtake a waiting final)

The audio is exactly what the engine got for the utterance (the pipeline's blocks, from the first), so
the words' times are seconds from the final's ``audio_start``. A final whose audio is not all here (word
timestamps turned on by a reload in mid-utterance, an utterance longer than MAX_AUDIO_S) goes out without
words, and so does one whose alignment fails (one log line). OpenAI requests align their own pieces
(``openai_bridge``) and Wyoming transcripts have no words, so only ``mic``, ``ws`` and ``system`` audio is
kept. ``enabled`` is true with ``[output] word_timestamps`` and while a call transcript is recorded.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np

from qasr.daemon.transcription.aligner_host import AlignerHost
from qasr.protocol import word_times
from qasr.engine.audio_constants import SAMPLE_RATE

log = logging.getLogger("qasr.words")

WORD_SOURCES = ("mic", "ws", "system")  # source kinds whose finals get words
MAX_AUDIO_S = 600.0  # a longer utterance (a WebSocket stream with segment "none") is not kept
MAX_OPEN = 32  # utterances whose audio is kept at once (ones never ended are dropped, oldest first)
SPAN_TOLERANCE_S = 0.001  # the kept audio must span the final's audio_start..audio_end to this


class FinalWords:
    def __init__(self, host: AlignerHost, enabled: Callable[[], bool]) -> None:
        self.host = host
        self.enabled = enabled
        self._lock = threading.Lock()
        self._audio: dict[str, list[np.ndarray] | None] = {}  # None: over MAX_AUDIO_S
        self._samples: dict[str, int] = {}

    @staticmethod
    def ordered(source: str) -> bool:
        """Events of this source keep their order behind finals waiting for words (the WebSocket's
        subscribers and streams); OpenAI and Wyoming results go to their own requests and never wait."""
        return source.partition(":")[0] in WORD_SOURCES

    def wanted(self, source: str) -> bool:
        return self.ordered(source) and self.host.available and bool(self.enabled())

    # -- encoder worker --------------------------------------------------------------------------
    def collect(self, utterance_id: str, pcm: np.ndarray, source: str) -> None:
        if not self.wanted(source):
            return
        with self._lock:
            chunks = self._audio.get(utterance_id, [])
            if utterance_id not in self._audio:
                while len(self._audio) >= MAX_OPEN:
                    oldest = next(iter(self._audio))
                    self._audio.pop(oldest)
                    self._samples.pop(oldest, None)
                self._audio[utterance_id] = chunks
            if chunks is None:
                return
            size = self._samples.get(utterance_id, 0) + pcm.size
            if size > MAX_AUDIO_S * SAMPLE_RATE:
                self._audio[utterance_id] = None  # too long to keep: its final goes out without words
                return
            self._samples[utterance_id] = size
            chunks.append(np.array(pcm, dtype=np.float32, copy=True).reshape(-1))

    def drop(self, utterance_id: str) -> None:
        with self._lock:
            self._audio.pop(utterance_id, None)
            self._samples.pop(utterance_id, None)

    # -- a route's thread, at a final ----------------------------------------------------------
    def take(self, utterance_id: str, source: str, audio_s: float) -> np.ndarray | None:
        """The utterance's audio if its final should get words (and all of it was kept), else None."""
        with self._lock:
            chunks = self._audio.pop(utterance_id, None)
            self._samples.pop(utterance_id, None)
        if not chunks or not self.wanted(source):
            return None
        if self.host.closing:  # the daemon is stopping: the final goes out at once, without words
            return None
        audio = np.concatenate(chunks)
        if abs(audio.size / SAMPLE_RATE - audio_s) > SPAN_TOLERANCE_S:
            log.info("final #%s goes out without words: only %.2f s of its %.2f s of audio were kept",
                     utterance_id, audio.size / SAMPLE_RATE, audio_s)
            return None
        return audio

    def attach(self, message: dict, audio: np.ndarray, send: Callable[[dict], None]) -> None:
        """Align on the aligner thread (after the jobs before it), then ``send`` the final with ``words``;
        without them when the alignment fails."""
        message = dict(message)  # the caller's dict was journaled and counted already; this one travels on

        def job(host: AlignerHost) -> None:
            out = self._with_words(host, message, audio)
            try:
                send(out)
            except Exception:
                log.exception("publishing final #%s failed", message.get("utterance_id"))

        self.host.submit(job)

    def in_order(self, fn: Callable[[], None]) -> None:
        self.host.in_order(fn)

    @staticmethod
    def _with_words(host: AlignerHost, message: dict, audio: np.ndarray) -> dict:
        text = message.get("text") or ""
        if not text.strip():
            message["words"] = []
            return message
        started = time.perf_counter()
        try:
            words = host.align(audio, text, message.get("language"))
        except Exception as exc:  # AlignError, WordSplitError, any QasrError; a bug too: the final still goes
            if host.available:  # (an aligner that did not load said so once already)
                log.warning("final #%s goes out without words: %s", message.get("utterance_id"),
                            str(exc) if _is_qasr_error(exc) else f"{type(exc).__name__}: {exc}")
            return message
        message["words"] = word_times(words)
        timings = dict(message.get("timings") or {})
        timings["align_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
        message["timings"] = timings
        return message


def _is_qasr_error(exc: BaseException) -> bool:
    from qasr.errors import QasrError

    return isinstance(exc, QasrError)
