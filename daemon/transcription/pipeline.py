"""The transcription pipeline: an encoder worker and a decoder worker joined by bounded queues.

    feed (any thread) ──(begin/audio/pause/end/cancel, bounded queue: blocks, never drops)──► encoder worker
    encoder worker    ──(per-utterance flags: "partial", "prepare", "final" wanted)──────────► decoder worker
    decoder worker    ──(the engine's PartialEvent / FinalEvent, UtteranceCancelled / Failed)──► emit(source, event)

``emit`` hands the event over and returns (``route_dispatch.RouteDispatcher``: the source's route runs on a
thread of its own); with ``delivery`` (the dispatcher), ``busy()`` holds until a final's route has it and
``drain()`` until the routes took every event.

The encoder worker consumes an utterance's audio while the person speaks (``stream.encode``). The
decoder worker works on the oldest utterance first: a requested final always runs (finals are never
dropped, and come out in utterance order); partials are a flag, not a queue, so when decoding falls
behind the intermediate partials are skipped and only the newest state is decoded.
Lanes (``source.lane``), served in this order: ``DICTATION`` (the microphone, WebSocket and Wyoming
audio), ``LIVE`` (system audio captions) and ``BACKGROUND`` (OpenAI requests). A lower lane
runs only when no higher lane has work for the decoder; while a dictation utterance is being spoken a
lower lane's work waits at most ``HOLD_S[lane]`` (a final once started is never stopped; LIVE partial
steps do not wait: one in flight is interrupted when a dictation utterance pauses or ends).

Pauses: ``pause(utterance)`` (the speaker paused: the utterance's audio is complete unless speech
resumes) asks the decoder to prepare the final now (``stream.prepare_final``), before any partial and
never before a final already wanted. When the end is confirmed with no audio in between,
``decode_final`` returns the prepared final at no cost (``prepared``); when speech resumes, the
utterance goes on and its final is computed at the end. A failed prepare is logged and changes nothing.

Events are the engine's own (``qasr.engine.streaming``) with the pipeline's numbering: ``seq`` counts
the events sent for the utterance and the final's ``timings.latency_ms`` runs from ``end()`` to emit.

Continuation: the model's text of the last ``KEPT_FINAL_TEXTS`` finals is kept (``final_text``), so an
utterance that continues speech cut at max length gets it as context when its session opens (the decoder
serves utterances in order: the previous final is out by then).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import numpy as np

from qasr.engine.audio_constants import SAMPLE_RATE
from qasr.daemon.transcription.engine_streams import EngineBackend, StreamOptions, UtteranceStream
from qasr.daemon.transcription.routes import (
    BACKGROUND, DICTATION, LIVE, PipelineEvent, Source, UtteranceCancelled, UtteranceFailed,
)

log = logging.getLogger("qasr.pipeline")


# how long a lane's final/prepare waits at most for a dictation utterance being spoken
HOLD_S = {LIVE: 2.0, BACKGROUND: 5.0}
BACKGROUND_HOLD_S = HOLD_S[BACKGROUND]


Emit = Callable[[Source, PipelineEvent], None]


class Delivery(Protocol):
    """What ``emit`` handed over, as far as its routes got (``route_dispatch.RouteDispatcher``)."""

    def wait_idle(self, timeout_s: float) -> bool: ...

    def delivering_final(self) -> bool: ...

KEPT_FINAL_TEXTS = 8  # finals remembered as context for an utterance that continues cut speech


@dataclass
class _Utterance:
    id: str
    source: Source
    options: StreamOptions
    lane: int = DICTATION  # DICTATION, LIVE or BACKGROUND
    held_since: float | None = None  # when a lower lane's job was first held back for a dictation utterance
    stream: UtteranceStream | None = None  # opened with the first audio, whose time fixes audio_start
    ended: float | None = None  # monotonic time the audio ended (latency is measured from here)
    audio_s: float = 0.0
    partial_wanted: bool = False
    stop_partial: bool = False  # the partial step running now must yield to a final (set under the lock)
    prepare_wanted: bool = False  # the speaker paused: compute the final ahead (pause())
    final_wanted: bool = False
    cancelled: bool = False
    last_partial: tuple[str, str] | None = None
    prepares: int = 0  # finals prepared at pauses (the last one is used if no audio followed it)
    seq: int = 0  # events sent for this utterance


_STOP = object()


class Pipeline:
    """Utterances in, events out. ``emit(source, event)`` is called on the worker threads and must not block."""

    def __init__(self, backend: EngineBackend, emit: Emit, max_queued_blocks: int = 1000,
                 on_audio: Callable[[str, np.ndarray, str], None] | None = None,
                 delivery: Delivery | None = None) -> None:
        self._backend = backend
        self._emit = emit
        self._delivery = delivery
        self._final_texts: dict[str, str] = {}
        self._on_audio = on_audio
        self._inbox: queue.Queue = queue.Queue(maxsize=max_queued_blocks)
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._active: dict[str, _Utterance] = {}  # insertion order = utterance order
        self._decoding: str | None = None
        self._ending: set[str] = set()  # end() called, "end" not yet taken by the encoder worker: no partials
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._encoder_loop, name="encoder", daemon=True),
            threading.Thread(target=self._decoder_loop, name="decoder", daemon=True),
        ]
        self.utterances_done = 0
        self.last_latency_ms: float | None = None

    # -- control (any thread) ------------------------------------------------------------------
    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def begin(self, source: Source, audio_start: float = 0.0, language: str | None = None,
              context: str | None = None, continues: str | None = None) -> str:
        """A new utterance of ``source`` (its lane: BACKGROUND is served only when no other utterance has
        work, so live dictation never waits for a queued job; LIVE after dictation, before background
        jobs); returns its id. ``continues``: the utterance whose cut speech this one goes on."""
        utterance_id = str(next(self._ids))
        options = StreamOptions(utterance_id, float(audio_start), language, context, continues)
        self._inbox.put(("begin", utterance_id, (source, options, source.lane)))
        return utterance_id

    def final_text(self, utterance_id: str | None) -> str:
        """The model's text of a recent final (context for the utterance that continues it)."""
        return self._final_texts.get(utterance_id or "", "")

    def audio(self, utterance_id: str, pcm: np.ndarray, t_s: float | None = None, partial: bool = True) -> None:
        """Append audio; `t_s` (its start on the source clock) of the first piece fixes the utterance's
        audio_start (a VAD's pre-roll starts before the speech onset given to `begin`). `partial=False`
        (e.g. the VAD hears silence: the utterance is probably ending) asks for no partial step, so the
        decoder is free when the final is due."""
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        self._inbox.put(("audio", utterance_id, (pcm, t_s, partial)))

    def pause(self, utterance_id: str) -> None:
        """The speaker paused: the audio given so far may be the whole utterance. The decoder prepares
        its final now (before partials), so that ``end()`` without more audio finds it done."""
        self._interrupt_partial(utterance_id)
        self._inbox.put(("pause", utterance_id, None))

    def end(self, utterance_id: str) -> None:
        with self._cond:  # the audio still queued before the end asks for no partial: the final is next
            self._ending.add(utterance_id)
        self._interrupt_partial(utterance_id)
        self._inbox.put(("end", utterance_id, time.monotonic()))

    def cancel(self, utterance_id: str) -> None:
        self._inbox.put(("cancel", utterance_id, None))

    def _interrupt_partial(self, utterance_id: str) -> None:
        """A partial step of this utterance, or of a lower lane's, in flight now delays this final: stop it."""
        with self._cond:
            utt = self._active.get(utterance_id)
            running = self._active.get(self._decoding) if self._decoding is not None else None
            if running is None or running.stream is None:
                return
            if running is not utt and (utt is None or running.lane <= utt.lane):
                return
            # also stops a step that has not reached its decodes yet (the engine's interrupt then misses it)
            running.stop_partial = True
        try:
            running.stream.interrupt()
        except Exception:  # an engine without interrupt support just finishes the step
            log.debug("interrupt failed", exc_info=True)

    def busy(self) -> bool:
        """True while some utterance's final is still being produced or delivered."""
        with self._cond:
            if any(u.final_wanted for u in self._active.values()) or not self._inbox.empty():
                return True
        return self._delivery is not None and self._delivery.delivering_final()

    def pending(self) -> int:
        with self._cond:
            return len(self._active)

    def drain(self, timeout_s: float) -> bool:
        """Wait until every queued utterance has its final (or was cancelled) and its route has it. True if so."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._inbox.unfinished_tasks == 0:
                with self._cond:
                    done = not any(u.final_wanted or u.ended is not None for u in self._active.values())
                if done:
                    return self._delivery is None or self._delivery.wait_idle(max(0.0, deadline - time.monotonic()))
                with self._cond:
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
        utterances: dict[str, _Utterance] = {}
        while True:
            item = self._inbox.get()
            try:
                if item is _STOP:
                    return
                kind, utterance_id, arg = item
                if kind == "begin":
                    source, options, lane = arg
                    utt = _Utterance(utterance_id, source, options, lane)
                    utterances[utterance_id] = utt
                    with self._cond:
                        self._active[utterance_id] = utt
                    continue
                utt = utterances.get(utterance_id)
                if utt is None:
                    with self._cond:
                        self._ending.discard(utterance_id)
                    continue
                if kind == "audio":
                    self._encode(utt, *arg)
                elif kind == "pause":
                    self._open_stream(utt)
                    with self._cond:  # after the audio before it: the prepare covers all of it
                        utt.prepare_wanted = True
                        self._cond.notify_all()
                elif kind == "end":
                    self._open_stream(utt)
                    del utterances[utterance_id]
                    with self._cond:
                        self._ending.discard(utterance_id)
                        utt.ended = arg
                        utt.final_wanted = True
                        self._cond.notify_all()
                elif kind == "cancel":
                    del utterances[utterance_id]
                    with self._cond:
                        self._ending.discard(utterance_id)
                        utt.cancelled = True
                        if self._decoding != utterance_id:
                            self._active.pop(utterance_id, None)
                            self._close(utt)
                        self._cond.notify_all()
                    self._emit(utt.source, UtteranceCancelled(utterance_id))
            except Exception:
                log.exception("encoder worker: %s failed", item[0] if isinstance(item, tuple) else item)
            finally:
                self._inbox.task_done()

    def _open_stream(self, utt: _Utterance, t_s: float | None = None) -> UtteranceStream:
        if utt.stream is None:
            if t_s is not None:
                utt.options = replace(utt.options, audio_start=float(t_s))
            utt.stream = self._backend.open_stream(utt.options)
        return utt.stream

    def _encode(self, utt: _Utterance, pcm: np.ndarray, t_s: float | None, partial: bool) -> None:
        stream = self._open_stream(utt, t_s)
        if self._on_audio is not None:
            self._on_audio(utt.id, pcm, utt.source.name)
        stream.encode(pcm)
        utt.audio_s += pcm.size / SAMPLE_RATE
        if partial:
            with self._cond:
                utt.partial_wanted = True
                self._cond.notify_all()

    @staticmethod
    def _close(utt: _Utterance) -> None:
        if utt.stream is not None:
            utt.stream.close()

    # -- decoder worker ------------------------------------------------------------------------
    def _next_job(self) -> tuple[_Utterance, str] | None:
        """The highest lane with work first; within a lane, the oldest utterance first. While a dictation
        utterance is still being spoken, a lower lane's final or prepare does not start (once started it
        is never stopped, and would delay the coming dictation final) until it has waited HOLD_S[lane];
        a live partial step may start: it is interrupted when the dictation utterance pauses or ends."""
        for lane in (DICTATION, LIVE, BACKGROUND):
            job = self._next_of(lane)
            if job is not None and not self._held(*job):
                return job
        return None

    def _held(self, utt: _Utterance, kind: str) -> bool:
        if utt.lane == DICTATION or (utt.lane == LIVE and kind == "partial") or not self._dictation_open():
            return False
        now = time.monotonic()
        if utt.held_since is None:
            utt.held_since = now
        if now - utt.held_since >= HOLD_S[utt.lane]:
            return False
        if kind == "partial":
            utt.partial_wanted = True  # taken back: asked again once it may run
        elif kind == "prepare":
            utt.prepare_wanted = True
        return True

    def _dictation_open(self) -> bool:
        return any(u.lane == DICTATION and u.ended is None and not u.cancelled for u in self._active.values())

    def _next_of(self, lane: int) -> tuple[_Utterance, str] | None:
        for utt in self._active.values():  # oldest first
            if utt.lane != lane:
                continue
            if utt.final_wanted:
                utt.prepare_wanted = False  # the final itself is due: nothing to prepare
                return utt, "final"
            if utt.prepare_wanted and utt.ended is None:
                utt.prepare_wanted = False
                utt.partial_wanted = False  # the prepared final covers the same audio
                return utt, "prepare"
            if utt.partial_wanted and utt.ended is None and utt.id not in self._ending:
                utt.partial_wanted = False  # any later audio raises it again: skipped partials coalesce
                utt.stop_partial = False
                return utt, "partial"
            if utt.ended is None:
                break  # a newer utterance waits until this one's final is out
        return None

    def _decoder_loop(self) -> None:
        while True:
            with self._cond:
                job = self._next_job()
                while job is None and not self._stopping:
                    held = any(u.held_since is not None for u in self._active.values())
                    self._cond.wait(HOLD_S[LIVE] / 4 if held else None)  # a held job falls due
                    job = self._next_job()
                if job is None:
                    return
                utt, kind = job
                self._decoding = utt.id
            try:
                if kind == "final":
                    self._run_final(utt)
                elif kind == "prepare":
                    if not utt.cancelled:
                        utt.stream.prepare_final()
                        utt.prepares += 1
                else:
                    self._run_partial(utt)
            except Exception as exc:
                log.exception("decoder worker: %s of utterance %s failed%s", kind, utt.id,
                              "; its final is computed at the end" if kind == "prepare" else "")
                if kind == "final":
                    self._emit(utt.source, UtteranceFailed(utt.id, f"transcription failed: {exc}"))
                    self._finish(utt)
            finally:
                with self._cond:
                    self._decoding = None
                    if utt.cancelled:
                        self._active.pop(utt.id, None)
                        self._close(utt)
                    self._cond.notify_all()

    def _run_partial(self, utt: _Utterance) -> None:
        partial = utt.stream.decode_partial(lambda: utt.stop_partial)
        if partial is None or utt.cancelled:
            return
        if utt.last_partial == (partial.committed, partial.tentative):
            return
        utt.last_partial = (partial.committed, partial.tentative)
        self._emit(utt.source, replace(partial, seq=utt.seq))
        utt.seq += 1

    def _run_final(self, utt: _Utterance) -> None:
        started = time.monotonic()
        final = utt.stream.decode_final()
        if utt.cancelled:
            return
        latency_ms = wait_ms = None
        if utt.ended is not None:
            latency_ms = round((time.monotonic() - utt.ended) * 1000.0, 1)
            wait_ms = round((started - utt.ended) * 1000.0, 1)
        final = replace(final, seq=utt.seq, prepares=utt.prepares,
                        timings=replace(final.timings, latency_ms=latency_ms, wait_ms=wait_ms))
        self.utterances_done += 1
        self.last_latency_ms = latency_ms
        self._final_texts[utt.id] = final.text
        while len(self._final_texts) > KEPT_FINAL_TEXTS:
            self._final_texts.pop(next(iter(self._final_texts)))
        self._emit(utt.source, final)
        self._finish(utt)  # only now may drain() see the utterance as done

    def _finish(self, utt: _Utterance) -> None:
        with self._cond:
            self._active.pop(utt.id, None)
            utt.final_wanted = False
        self._close(utt)
