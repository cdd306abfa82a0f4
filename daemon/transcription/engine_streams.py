"""How the pipeline drives the engine for one utterance: ``open_stream(options) -> UtteranceStream``.

``StreamingBackend`` (engine/streaming.py: partials while the person speaks, exact finals) is the
default; ``WholeUtteranceBackend`` runs the offline ``Transcriber`` once per utterance (final only), for
``engine.streaming = false``. Streams return the engine's own ``PartialEvent``/``FinalEvent``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from qasr.engine.events import FinalEvent, FinalTimings, PartialEvent
from qasr.engine.streaming import StreamingSession


@dataclass(frozen=True)
class StreamOptions:
    """Per-utterance engine settings; None = the daemon's own."""

    utterance_id: str
    audio_start: float = 0.0  # seconds on the source's clock where the utterance's audio begins
    language: str | None = None
    context: str | None = None
    continues: str | None = None  # the utterance whose speech this one continues (cut at max length)


class UtteranceStream(Protocol):
    """One utterance inside the engine. ``encode`` runs on the encoder worker, ``decode_*`` on the
    decoder worker, possibly at the same time: an implementation guards its own shared state."""

    def encode(self, pcm: np.ndarray) -> None: ...

    def decode_partial(self, should_stop: Callable[[], bool] = lambda: False) -> PartialEvent | None:
        """A partial when one is due; None when not, or once ``should_stop()`` says the step must yield."""

    def prepare_final(self) -> None:
        """Compute the final of the audio so far; ``decode_final`` returns it if no audio came since."""

    def decode_final(self) -> FinalEvent: ...

    def interrupt(self) -> None:
        """Stop the partial decode in flight, if any (any thread, no lock): a pause or end needs the decoder."""

    def close(self) -> None: ...


class EngineBackend(Protocol):
    def open_stream(self, options: StreamOptions) -> UtteranceStream: ...


# ---------------------------------------------------------------- offline Transcriber, one call per utterance

class WholeUtteranceStream:
    """Keeps the audio; the final is one offline transcription of the whole utterance."""

    def __init__(self, transcribe: Callable[[np.ndarray, StreamOptions], object], options: StreamOptions) -> None:
        self._transcribe = transcribe
        self._options = options
        self._chunks: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._prepared: tuple[int, FinalEvent] | None = None  # (samples it covers, the final)

    def encode(self, pcm: np.ndarray) -> None:
        with self._lock:
            self._chunks.append(np.asarray(pcm, dtype=np.float32).reshape(-1))

    def decode_partial(self, should_stop: Callable[[], bool] = lambda: False) -> PartialEvent | None:
        return None  # the offline path has no partials

    def audio(self) -> np.ndarray:
        with self._lock:
            return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    def prepare_final(self) -> None:
        audio = self.audio()
        self._prepared = (audio.size, self._final_of(audio))

    def interrupt(self) -> None:
        pass  # no partial decodes

    def decode_final(self) -> FinalEvent:
        audio = self.audio()
        prepared = self._prepared
        if prepared is not None and prepared[0] == audio.size:
            # Audio is only ever appended, so the same length is the same audio: the offline result of
            # the prepare is exactly what transcribing it now would give.
            prepared[1].prepared = True
            return prepared[1]
        return self._final_of(audio)

    def _final_of(self, audio: np.ndarray) -> FinalEvent:
        o = self._options
        if audio.size == 0:
            return FinalEvent(o.utterance_id, 0, "", "", [], o.audio_start, o.audio_start, "empty", "",
                              FinalTimings())
        result = self._transcribe(audio, o)
        elapsed_ms = float(result.elapsed_s) * 1000.0
        return FinalEvent(
            utterance_id=o.utterance_id, seq=0, text=result.text, language=result.language,
            token_ids=list(result.token_ids), audio_start_s=o.audio_start,
            audio_end_s=o.audio_start + float(result.audio_s), stop_reason=_stop_reason(result), committed="",
            timings=FinalTimings(encoder_ms=result.encoder_ms, prefill_ms=result.prefill_ms,
                                 decode_ms=result.decode_ms, final_ms=elapsed_ms, compute_ms=elapsed_ms),
        )

    def close(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._prepared = None


def _stop_reason(result) -> str:
    reasons = [s.stop_reason for s in getattr(result, "segments", []) if getattr(s, "stop_reason", "")]
    return reasons[-1] if reasons else "stop"


class WholeUtteranceBackend:
    """``transcribe(audio, options)`` gets the whole utterance and returns a TranscriptionResult."""

    def __init__(self, transcribe: Callable[[np.ndarray, StreamOptions], object]) -> None:
        self._transcribe = transcribe

    def open_stream(self, options: StreamOptions) -> WholeUtteranceStream:
        return WholeUtteranceStream(self._transcribe, options)


# ---------------------------------------------------------------- streaming session

class StreamingUtteranceStream:
    """One utterance on ``StreamingSession``.

    Sessions share the engine's single decoder; a session that gets it back after another one used it
    rebuilds its cache (``StreamingSession._claim_decoder``), so the pipeline may serve a newer utterance
    first. The session is created lazily on the decoder worker by the first ``decode_*`` call; until
    then ``encode`` buffers the audio, afterwards it pushes it into the session's encoder on the encoder
    worker. The stream's lock is the session's encoder guard: a partial step holds it only while it reads
    the encoder, so audio keeps being encoded while the step decodes (no backlog when the key is released).
    A lock per backend keeps a ``close`` from another thread off the decoder while a decode runs.
    """

    def __init__(self, make_session: Callable[[threading.RLock], StreamingSession],
                 decoder_lock: threading.Lock) -> None:
        self._make_session = make_session
        self._decoder_lock = decoder_lock  # every stream of the backend: one decoder, one user at a time
        self._session: StreamingSession | None = None
        self._pending: list[np.ndarray] = []
        self._lock = threading.RLock()
        self._closed = False

    def _activate(self) -> StreamingSession:  # decoder worker, lock held
        if self._session is None:
            self._session = self._make_session(self._lock)
            for pcm in self._pending:
                self._session.push(pcm)
            self._pending.clear()
        return self._session

    def encode(self, pcm: np.ndarray) -> None:
        with self._lock:
            if self._closed:
                return
            if self._session is None:
                self._pending.append(np.asarray(pcm, dtype=np.float32).reshape(-1))
            else:
                self._session.push(pcm)

    def decode_partial(self, should_stop: Callable[[], bool] = lambda: False) -> PartialEvent | None:
        with self._decoder_lock:
            with self._lock:
                if self._closed:
                    return None
                session = self._activate()
            # feed() with no new audio runs a decoding step only when the cadence says one is due.
            for event in session.feed(np.zeros(0, np.float32), should_stop):
                if isinstance(event, PartialEvent):
                    return event
            return None

    def interrupt(self) -> None:
        session = self._session  # deliberately without the lock: the decoder worker holds it mid-step
        if session is not None:
            session.interrupt()

    def prepare_final(self) -> None:
        with self._decoder_lock, self._lock:
            if not self._closed:
                # finish() returns it unless audio reaches the session after this (encode() pushes it)
                self._activate().prepare_final()

    def decode_final(self) -> FinalEvent:
        with self._decoder_lock, self._lock:
            return self._activate().finish()

    def close(self) -> None:  # any thread
        with self._decoder_lock, self._lock:
            if self._session is not None and not self._closed:
                self._session.cancel()  # clears the decoder only if this session holds it
            self._closed = True
            self._pending.clear()


class StreamingBackend:
    """Partials while the person speaks, and finals equal to offline transcription."""

    def __init__(self, make_session: Callable[[StreamOptions, threading.RLock], StreamingSession]) -> None:
        self._make_session = make_session  # (options, encoder guard), called on the decoder worker
        self._decoder_lock = threading.Lock()

    def open_stream(self, options: StreamOptions) -> StreamingUtteranceStream:
        return StreamingUtteranceStream(lambda guard: self._make_session(options, guard), self._decoder_lock)
