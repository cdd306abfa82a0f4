"""The transcription pipeline: an encoder worker and a decoder worker joined by bounded queues.

    segmenter thread ──(begin/audio/end/cancel, bounded queue: blocks, never drops)──► encoder worker
    encoder worker   ──(per-utterance flags: "partial", "prepare", "final" wanted)──► decoder worker
    decoder worker   ──(events: partial / final / cancelled / error)───────────────► emit callback

The encoder worker consumes an utterance's audio while the person speaks (``stream.encode``). The
decoder worker works on the oldest utterance first: a requested final always runs (finals are never
dropped, and come out in utterance order); partials are a flag, not a queue, so when decoding falls
behind the intermediate partials are skipped and only the newest state is decoded.

Pauses: ``pause(utterance)`` (the segmenter's ``SpeechPause``: the utterance's audio is complete unless
speech resumes) asks the decoder to prepare the final now (``stream.prepare_final``), before any partial
and never before a final already wanted. When the end is confirmed with no audio in between,
``decode_final`` returns the prepared final at no cost (the event says ``prepared: true``); when speech
resumes, the utterance simply goes on and its final is computed at the end. A failed prepare is logged
and changes nothing else.

An engine plugs in through ``EngineBackend.open_stream(options) -> UtteranceStream``:
``StreamingBackend`` (engine/streaming.py: partials while speaking, exact finals) is the default;
``WholeUtteranceBackend`` runs the offline ``Transcriber`` once per utterance (final only), used when
``engine.streaming = false``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

log = logging.getLogger("qasr.workers")

SAMPLE_RATE = 16000


@dataclass
class Partial:
    committed: str  # text that will not change any more (append-only across partials)
    tentative: str  # text that may still change
    timings: dict[str, float] = field(default_factory=dict)  # the engine step that produced it


@dataclass
class Final:
    text: str
    language: str
    token_ids: list[int]
    audio_s: float
    elapsed_s: float
    extra: dict[str, Any] = field(default_factory=dict)


class UtteranceStream(Protocol):
    """One utterance inside the engine. ``encode*`` run on the encoder worker, ``decode*`` on the
    decoder worker, possibly at the same time: an implementation guards its own shared state."""

    def encode(self, pcm: np.ndarray) -> None: ...
    def finish_encoding(self) -> None: ...
    def decode_partial(self) -> Partial | None: ...
    def prepare_final(self) -> None:
        """Compute the final of the audio so far; ``decode_final`` returns it if no audio came since."""
        ...
    def decode_final(self) -> Final: ...
    def interrupt(self) -> None:
        """Stop the partial decode in flight, if any (any thread, no lock): a pause or end needs the decoder."""
        ...
    def close(self) -> None: ...


class EngineBackend(Protocol):
    def open_stream(self, options: dict[str, Any]) -> UtteranceStream:
        """options: per-utterance engine settings (``language``, ``context``; None = the daemon's)."""
        ...


# ---------------------------------------------------------------- interim backend (offline Transcriber)

class WholeUtteranceStream:
    """INTERIM: keeps the audio; the final is one offline transcription of the whole utterance."""

    def __init__(self, transcribe: Callable[[np.ndarray, dict[str, Any]], Any], options: dict[str, Any]) -> None:
        self._transcribe = transcribe
        self._options = options
        self._chunks: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._prepared: tuple[int, Final] | None = None  # (samples it covers, the final)

    def encode(self, pcm: np.ndarray) -> None:
        with self._lock:
            self._chunks.append(np.asarray(pcm, dtype=np.float32).reshape(-1))

    def finish_encoding(self) -> None:
        pass

    def decode_partial(self) -> Partial | None:
        return None  # the offline path has no partials

    def audio(self) -> np.ndarray:
        with self._lock:
            return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    def prepare_final(self) -> None:
        audio = self.audio()
        self._prepared = (audio.size, self._final_of(audio))

    def interrupt(self) -> None:
        pass  # no partial decodes

    def decode_final(self) -> Final:
        audio = self.audio()
        prepared = self._prepared
        if prepared is not None and prepared[0] == audio.size:
            # Audio is only ever appended, so the same length is the same audio: the offline result of
            # the prepare is exactly what transcribing it now would give.
            final = prepared[1]
            final.extra["prepared"] = True
            return final
        return self._final_of(audio)

    def _final_of(self, audio: np.ndarray) -> Final:
        if audio.size == 0:
            return Final(text="", language="", token_ids=[], audio_s=0.0, elapsed_s=0.0,
                         extra={"prepared": False})
        result = self._transcribe(audio, self._options)
        return Final(
            text=result.text, language=result.language, token_ids=list(result.token_ids),
            audio_s=float(result.audio_s), elapsed_s=float(result.elapsed_s),
            extra={"rtf": float(result.rtf), "final_ms": round(float(result.elapsed_s) * 1000.0, 1),
                   "prepared": False},
        )

    def close(self) -> None:
        with self._lock:
            self._chunks.clear()
            self._prepared = None


class WholeUtteranceBackend:
    """INTERIM backend over ``qasr.engine.transcribe.Transcriber``: ``transcribe(audio, options)`` gets
    the whole utterance and returns a TranscriptionResult."""

    def __init__(self, transcribe: Callable[[np.ndarray, dict[str, Any]], Any]) -> None:
        self._transcribe = transcribe

    def open_stream(self, options: dict[str, Any]) -> WholeUtteranceStream:
        return WholeUtteranceStream(self._transcribe, options)


# ---------------------------------------------------------------- streaming backend

class StreamingUtteranceStream:
    """One utterance on ``qasr.engine.streaming.StreamingSession``.

    The session owns the engine's single decoder (creating one resets its cache), so it is created
    lazily on the decoder worker by the first ``decode_*`` call: the pipeline only decodes the oldest
    utterance, so the previous utterance's final is out by then. Until then ``encode`` buffers the
    audio; afterwards it runs the encoder front-end/back-end (``session.encoder.push``) on the encoder
    worker. A lock serialises the two workers on the session.
    """

    def __init__(self, make_session: Callable[[], Any]) -> None:
        self._make_session = make_session
        self._session = None
        self._pending: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._closed = False

    def _activate(self):  # decoder worker, lock held
        if self._session is None:
            self._session = self._make_session()
            for pcm in self._pending:
                self._push(pcm)
            self._pending.clear()
        return self._session

    def _push(self, pcm: np.ndarray) -> None:
        started = time.perf_counter()
        self._session.encoder.push(pcm)
        self._session.compute_s += time.perf_counter() - started  # encoder time counts against the budget

    def encode(self, pcm: np.ndarray) -> None:
        with self._lock:
            if self._closed:
                return
            if self._session is None:
                self._pending.append(np.asarray(pcm, dtype=np.float32).reshape(-1))
            else:
                self._push(pcm)

    def finish_encoding(self) -> None:
        pass

    def decode_partial(self) -> Partial | None:
        with self._lock:
            if self._closed:
                return None
            session = self._activate()
            # feed() with no new audio runs a decoding step only when the cadence says one is due.
            for event in session.feed(np.zeros(0, np.float32)):
                if event.type == "partial":
                    t = event.timings
                    return Partial(committed=event.committed, tentative=event.tentative, timings={
                        "encoder_ms": round(t.encoder_ms, 1), "prefill_ms": round(t.prefill_ms, 1),
                        "decode_ms": round(t.decode_ms, 1), "step_ms": round(t.total_ms, 1),
                        "draft_tokens": t.draft_tokens, "accepted_tokens": t.accepted_tokens})
            return None

    def interrupt(self) -> None:
        session = self._session  # deliberately without the lock: the decoder worker holds it mid-step
        if session is not None:
            session.interrupt()

    def prepare_final(self) -> None:
        with self._lock:
            if self._closed:
                return
            # finish() returns it unless audio reaches the session after this (encode() pushes it)
            self._activate().prepare_final()

    def decode_final(self) -> Final:
        with self._lock:
            session = self._activate()
            final = session.finish()
            t = final.timings  # a prepared final's are those of its computation at the pause
            return Final(
                text=final.text, language=final.language, token_ids=list(final.token_ids),
                audio_s=float(final.audio_end_s - final.audio_start_s), elapsed_s=session.compute_s,
                extra={"stop_reason": final.stop_reason, "final_ms": round(t.total_ms, 1),
                       "prepared": bool(final.prepared),
                       "partial_steps": session.steps, "skipped_steps": session.skipped},
            )

    def close(self) -> None:
        with self._lock:
            if self._session is not None and not self._closed:
                self._session.cancel()  # only an active (the oldest) session holds the decoder
            self._closed = True
            self._pending.clear()


class StreamingBackend:
    """Partials while the person speaks, and finals equal to offline transcription (engine/streaming.py)."""

    def __init__(self, make_session: Callable[[dict[str, Any]], Any]) -> None:
        self._make_session = make_session  # options -> StreamingSession (called on the decoder worker)

    def open_stream(self, options: dict[str, Any]) -> StreamingUtteranceStream:
        return StreamingUtteranceStream(lambda: self._make_session(options))


# ---------------------------------------------------------------- pipeline

@dataclass
class _Utterance:
    id: int
    source: str
    stream: UtteranceStream
    audio_start: float  # seconds on the source's clock where the utterance begins
    started: float
    ended: float | None = None  # monotonic time the audio ended (latency is measured from here)
    audio_s: float = 0.0
    partial_wanted: bool = False
    prepare_wanted: bool = False  # the speaker paused: compute the final ahead (pause())
    final_wanted: bool = False
    cancelled: bool = False
    last_partial: Partial | None = None
    prepares: int = 0  # finals prepared at pauses (the last one is used if no audio followed it)
    seq: int = 0  # events sent for this utterance


_STOP = object()


class Pipeline:
    """Utterances in, events out. ``emit(event)`` is called on the decoder worker thread."""

    def __init__(self, backend: EngineBackend, emit: Callable[[dict[str, Any]], None],
                 max_queued_blocks: int = 1000,
                 on_audio: Callable[[int, np.ndarray], None] | None = None) -> None:
        self._backend = backend
        self._emit = emit
        self._on_audio = on_audio
        self._inbox: queue.Queue = queue.Queue(maxsize=max_queued_blocks)
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._active: dict[int, _Utterance] = {}  # insertion order = utterance order
        self._decoding: int | None = None
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._encoder_loop, name="encoder", daemon=True),
            threading.Thread(target=self._decoder_loop, name="decoder", daemon=True),
        ]
        self.utterances_done = 0
        self.last_latency_ms: float | None = None
        self.last_final: dict[str, Any] | None = None

    # -- control (any thread) ------------------------------------------------------------------
    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def begin(self, source: str = "mic", options: dict[str, Any] | None = None, audio_start: float = 0.0) -> int:
        utterance_id = next(self._ids)
        self._inbox.put(("begin", utterance_id, (source, dict(options or {}), float(audio_start))))
        return utterance_id

    def audio(self, utterance_id: int, pcm: np.ndarray, t_s: float | None = None, partial: bool = True) -> None:
        """Append audio; `t_s` (its start on the source clock) of the first piece fixes the utterance's
        audio_start (a VAD's pre-roll starts before the speech onset given to `begin`). `partial=False`
        (e.g. the VAD hears silence: the utterance is probably ending) asks for no partial step, so the
        decoder is free when the final is due."""
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        self._inbox.put(("audio", utterance_id, (pcm, t_s, partial)))

    def pause(self, utterance_id: int) -> None:
        """The speaker paused: the audio given so far may be the whole utterance. The decoder prepares
        its final now (before partials), so that ``end()`` without more audio finds it done."""
        self._interrupt_partial(utterance_id)
        self._inbox.put(("pause", utterance_id, None))

    def end(self, utterance_id: int) -> None:
        self._interrupt_partial(utterance_id)
        self._inbox.put(("end", utterance_id, time.monotonic()))

    def _interrupt_partial(self, utterance_id: int) -> None:
        """A partial step of this utterance in flight is now wasted work that delays its final: stop it."""
        with self._cond:
            utt = self._active.get(utterance_id)
            decoding = self._decoding == utterance_id
        if utt is not None and decoding:
            try:
                utt.stream.interrupt()
            except Exception:  # an engine without interrupt support just finishes the step
                log.debug("interrupt failed", exc_info=True)

    def cancel(self, utterance_id: int) -> None:
        self._inbox.put(("cancel", utterance_id, None))

    def busy(self) -> bool:
        """True while some utterance's final is still being produced."""
        with self._cond:
            return any(u.final_wanted for u in self._active.values()) or not self._inbox.empty()

    def pending(self) -> int:
        with self._cond:
            return len(self._active)

    def drain(self, timeout_s: float) -> bool:
        """Wait until every queued utterance has its final (or was cancelled). True if it did."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._inbox.unfinished_tasks == 0:
                with self._cond:
                    if not any(u.final_wanted or u.ended is not None for u in self._active.values()):
                        return True
                    self._cond.wait(0.05)
                    continue
            time.sleep(0.02)
        return False

    def stop(self, timeout_s: float = 5.0) -> None:
        self._inbox.put(_STOP)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=timeout_s)

    # -- encoder worker ------------------------------------------------------------------------
    def _encoder_loop(self) -> None:
        streams: dict[int, _Utterance] = {}
        while True:
            item = self._inbox.get()
            try:
                if item is _STOP:
                    return
                kind, utterance_id, arg = item
                if kind == "begin":
                    source, options, audio_start = arg
                    utt = _Utterance(utterance_id, source, self._backend.open_stream(options), audio_start,
                                     time.monotonic())
                    streams[utterance_id] = utt
                    with self._cond:
                        self._active[utterance_id] = utt
                    self._emit({"type": "utterance_start", "utterance_id": utterance_id, "source": source})
                    continue
                utt = streams.get(utterance_id)
                if utt is None:
                    continue
                if kind == "audio":
                    pcm, t_s, partial = arg
                    if t_s is not None and utt.audio_s == 0.0:
                        utt.audio_start = float(t_s)
                    if self._on_audio is not None:
                        self._on_audio(utterance_id, pcm)
                    utt.stream.encode(pcm)
                    utt.audio_s += pcm.size / SAMPLE_RATE
                    if partial:
                        with self._cond:
                            utt.partial_wanted = True
                            self._cond.notify_all()
                elif kind == "pause":
                    with self._cond:  # after the audio before it: the prepare covers all of it
                        utt.prepare_wanted = True
                        self._cond.notify_all()
                elif kind == "end":
                    utt.stream.finish_encoding()
                    del streams[utterance_id]
                    with self._cond:
                        utt.ended = arg
                        utt.final_wanted = True
                        self._cond.notify_all()
                elif kind == "cancel":
                    del streams[utterance_id]
                    with self._cond:
                        utt.cancelled = True
                        if self._decoding != utterance_id:
                            self._active.pop(utterance_id, None)
                            utt.stream.close()
                        self._cond.notify_all()
                    self._emit({"type": "cancelled", "utterance_id": utterance_id, "source": utt.source})
            except Exception:
                log.exception("encoder worker: %s failed", item[0] if isinstance(item, tuple) else item)
            finally:
                self._inbox.task_done()

    # -- decoder worker ------------------------------------------------------------------------
    def _next_job(self) -> tuple[_Utterance, str] | None:
        for utt in self._active.values():  # oldest first
            if utt.final_wanted:
                utt.prepare_wanted = False  # the final itself is due: nothing to prepare
                return utt, "final"
            if utt.prepare_wanted and utt.ended is None:
                utt.prepare_wanted = False
                utt.partial_wanted = False  # the prepared final covers the same audio
                return utt, "prepare"
            if utt.partial_wanted and utt.ended is None:
                utt.partial_wanted = False  # any later audio raises it again: skipped partials coalesce
                return utt, "partial"
            if utt.ended is None:
                break  # a newer utterance waits until this one's final is out
        return None

    def _decoder_loop(self) -> None:
        while True:
            with self._cond:
                job = self._next_job()
                while job is None and not self._stopping:
                    self._cond.wait()
                    job = self._next_job()
                if job is None:
                    return
                utt, kind = job
                self._decoding = utt.id
            try:
                if kind == "final":
                    self._run_final(utt)
                elif kind == "prepare":
                    self._run_prepare(utt)
                else:
                    self._run_partial(utt)
            except Exception as exc:
                log.exception("decoder worker: %s of utterance %d failed%s", kind, utt.id,
                              "; its final is computed at the end" if kind == "prepare" else "")
                if kind == "final":
                    self._emit({"type": "error", "utterance_id": utt.id, "source": utt.source,
                                "message": f"transcription failed: {exc}"})
                    self._finish(utt)
            finally:
                with self._cond:
                    self._decoding = None
                    if utt.cancelled:
                        self._active.pop(utt.id, None)
                        utt.stream.close()
                    self._cond.notify_all()

    def _run_partial(self, utt: _Utterance) -> None:
        partial = utt.stream.decode_partial()
        if partial is None or utt.cancelled:
            return
        if utt.last_partial and (partial.committed, partial.tentative) == (
            utt.last_partial.committed, utt.last_partial.tentative
        ):
            return
        utt.last_partial = partial
        self._emit({"type": "partial", "utterance_id": utt.id, "source": utt.source, "seq": utt.seq,
                    "committed": partial.committed, "tentative": partial.tentative, "timings": partial.timings,
                    "audio_start": utt.audio_start, "audio_end": utt.audio_start + utt.audio_s})
        utt.seq += 1

    def _run_prepare(self, utt: _Utterance) -> None:
        prepare = getattr(utt.stream, "prepare_final", None)  # optional for third-party streams
        if prepare is not None and not utt.cancelled:
            prepare()
            utt.prepares += 1

    def _run_final(self, utt: _Utterance) -> None:
        final = utt.stream.decode_final()
        if utt.cancelled:
            return
        done = time.monotonic()
        latency_ms = (done - utt.ended) * 1000.0 if utt.ended is not None else None
        event = {
            "type": "final", "utterance_id": utt.id, "source": utt.source, "seq": utt.seq, "text": final.text,
            "language": final.language, "token_ids": final.token_ids, "audio_s": round(utt.audio_s, 3),
            "audio_start": utt.audio_start, "audio_end": utt.audio_start + utt.audio_s,
            "elapsed_s": round(final.elapsed_s, 3),
            "latency_ms": round(latency_ms, 1) if latency_ms is not None else None, "prepares": utt.prepares,
            **final.extra,
        }
        self.utterances_done += 1
        self.last_latency_ms = event["latency_ms"]
        self.last_final = event
        self._emit(event)
        self._finish(utt)  # only now may drain() see the utterance as done

    def _finish(self, utt: _Utterance) -> None:
        with self._cond:
            self._active.pop(utt.id, None)
            utt.final_wanted = False
        utt.stream.close()
