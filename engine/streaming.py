"""Streaming transcription of one utterance: PCM in pieces of any size in, partial and final events out.

    engine = Transcriber(bundle_dir)                       # loads the model once
    session = StreamingSession(engine, StreamingOptions(language=None), utterance_id="u1")
    for pcm in microphone_pieces:
        for event in session.feed(pcm):                    # PartialEvent now and then
            show(event.committed, event.tentative)
    final = session.finish()                               # FinalEvent, tokens equal offline transcribe

How a step works (see docs/architecture.md, "Streaming"):
1. `IncrementalEncoder` keeps the front-end output of finished 1 s chunks and the back-end output of
   finished 8 s windows; only the open window is encoded again.
2. The decoder's KV cache keeps the prompt head and the audio of finished windows across steps; each
   step trims the cache after them and feeds the open window's new positions, the prompt tail and the
   previous hypothesis as a draft in ONE batch (the committed part kept in the cache, see
   `_park_committed`), keeps the draft up to the first token greedy decoding disagrees with, and
   continues greedily from there (a few tokens per step).
3. `CommitTracker` commits the tokens the last two hypotheses agree on, minus the newest few.
4. The final re-encodes exactly (global log-mel maximum), verifies the last hypothesis as a draft and
   continues greedily, applying the same stop, cap and loop rules as offline `transcribe`, so its token
   ids are the offline ones. `prepare_final()` computes it ahead at a pause; `interrupt()` (any thread)
   stops a partial step in flight so that the final need not wait for it.
The cadence of steps adapts so that measured compute stays under `rtf_budget` of the audio time;
a step that is not due is skipped, never queued. Nothing carries over between utterances.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from qasr.engine import output as out
from qasr.engine.commit import CommitOptions, CommitTracker, TextOfTokens
from qasr.engine.decoder import DecodeInterrupted
from qasr.engine.events import FinalEvent, FinalTimings, PartialEvent, StepTimings
from qasr.engine.greedy import Hypothesis, Prefill, TokenRules, decode_greedy
from qasr.engine.incremental_encoder import IncrementalEncoder
from qasr.engine.prompt import build_prompt, resolve_language
from qasr.engine.segmentation import SegmentationOptions, cut_points, is_silent
from qasr.engine.transcribe import Transcriber


# Characters of the previous final given as context to the utterance that continues speech cut at max length.
CONTINUATION_CONTEXT_CHARS = 300


@dataclass(frozen=True)
class StreamingOptions:
    language: str | None = None
    context: str = ""
    first_step_s: float = 0.3  # audio before the first partial (its step then ends ≤ 0.5 s after the start)
    step_s: float = 0.5  # least audio between partials
    rtf_budget: float = 0.5  # sustained compute / audio time the cadence aims under
    max_new_tokens_per_step: int = 4  # beyond the accepted draft, per partial step (~22 ms each at 0.6B;
    # speech adds ~3 tokens a second, so a 1 s cadence needs about 3)
    max_new_tokens: int | None = None  # final: as offline --max-new-tokens
    max_utterance_s: float = 30.0  # longer speech is cut at a quiet point into a new utterance
    cut_search_s: float = 5.0  # how far back from the limit to look for the quiet point
    min_audio_s: float = 0.5  # as offline: shorter finals are zero-padded
    # Partials keep the open window's audio already in the decoder cache and append only the new
    # positions (their embeddings are recomputed with the whole open window, the earlier ones are kept
    # as they were). That costs ~13 audio positions per second of speech instead of the whole open window
    # (up to 104) per step. Finished windows and the final always use exact embeddings.
    reuse_open_audio: bool = True
    commit: CommitOptions = CommitOptions()


class StreamingSession:
    """One utterance. Not thread-safe: one caller at a time (the daemon's workers hold a lock)."""

    PARK_MIN_TOKENS = 6  # committed tokens kept in the cache across a partial step (see _park_committed)

    def __init__(
        self,
        engine: Transcriber,
        options: StreamingOptions = StreamingOptions(),
        utterance_id: str = "u0",
        start_s: float = 0.0,
        encoder_guard: contextlib.AbstractContextManager | None = None,
    ):
        # `encoder_guard` (a re-entrant lock) lets another thread push() while a step decodes: the encoder
        # is read only under it, and a step decodes from what it read (the finished windows and the open
        # window as they were), so audio arriving meanwhile never waits for the decoder.
        self._guard = encoder_guard or contextlib.nullcontext()
        self.engine = engine
        self.options = options
        self.utterance_id = utterance_id
        self.start_s = start_s
        manifest = engine.bundle.manifest
        self.language = resolve_language(options.language, manifest.languages)
        self.encoder = IncrementalEncoder(engine.encoder, engine.feature_params, options.min_audio_s)
        self.decoder = engine.decoder
        self.stop_ids = frozenset(manifest.stop_token_ids)
        self.text_of = TextOfTokens(self.decoder.vocab.speech_bytes, manifest.tokens["asr_text"], self.language is not None)
        self.commits = CommitTracker(options.commit)
        self.seq = 0
        self.compute_s = 0.0  # every step's compute, for the budget
        self.steps = 0
        self.skipped = 0
        self.interrupted = 0  # partial steps stopped by interrupt()
        self._hyp = Hypothesis()
        self._last_step_audio_s = 0.0
        self._step_cost_s = 0.0  # running average of a partial step's compute
        self.steps_compute_s = 0.0  # compute_s spent in partial steps (the rest is not optional)
        self._sync_s_per_position = 0.006  # measured cost of putting finished-window audio into the cache
        self._kv_audio_windows = 0  # finished windows whose embeddings sit in the KV cache
        self._windows: list[np.ndarray] = []  # the encoder's finished windows as the last step read them
        self._changed_from = 1 << 30  # ... and the first of them it recomputed since the cache took them
        self._kv_open_audio = 0  # open-window audio positions after them (reuse_open_audio)
        self._head_len = 0
        self._finished = False
        self._prepared: tuple[int, FinalEvent] | None = None  # (n_samples it covers, the final)
        self._kv_text: tuple[int, list[int]] | None = None  # (position, hypothesis tokens cached there)
        self.next_session: StreamingSession | None = None
        head = build_prompt(self.decoder.vocab.tokenize, 0, options.context, self.language)
        self._before_ids, self._after_ids = head.before_ids, head.after_ids
        self.decoder.cache.owner = None  # a new utterance: nothing in the cache is this session's yet
        self._claim_decoder()

    # --- public API -----------------------------------------------------------------------------

    @property
    def audio_s(self) -> float:
        return self.encoder.audio_s

    @property
    def committed_text(self) -> str:
        return self.text_of.text(self.commits.committed, complete_only=True)

    def push(self, pcm: np.ndarray) -> None:
        """Add audio to the encoder without a decoding step (its time counts against the budget). For a
        caller that encodes on one thread and decodes on another: `feed(empty)` later steps when due."""
        if self._finished:
            raise RuntimeError("push() after finish() or cancel()")
        with self._guard:
            t0 = time.perf_counter()
            self.encoder.push(pcm)
            self.compute_s += time.perf_counter() - t0

    def feed(self, pcm: np.ndarray, should_stop: Callable[[], bool] | None = None) -> list[PartialEvent | FinalEvent]:
        """Add audio; returns the events it caused (a partial when one is due, a final on a length cut).
        `should_stop`: the step gives up (no partial) once it says True, as after `interrupt()`."""
        self.push(pcm)
        events: list[PartialEvent | FinalEvent] = []
        if self.audio_s >= self.options.max_utterance_s:
            with self._guard:
                events.append(self._cut_at_quiet_point())
            return events
        with self._guard:
            due = self._step_due()
            if not due:
                self._read_windows()
        if due:
            event = self.step(should_stop)
            if event is not None:
                events.append(event)
        elif self._pending_positions() > 0:
            # A finished window enters the cache as soon as it exists, not at the next due step: the final
            # needs it there, and a key released soon after the window would otherwise wait for it.
            self._claim_decoder()
            self._sync_pending_windows()
        return events

    def step(self, should_stop: Callable[[], bool] | None = None) -> PartialEvent | None:
        """Decode a hypothesis for the audio so far and return a partial (None while silent or stopped)."""
        if should_stop is not None and should_stop():
            self.interrupted += 1
            return None
        t0 = time.perf_counter()
        with self._guard:
            audio_s = self._last_step_audio_s = self.audio_s
            silent = self.encoder.n_samples == 0 or is_silent(self.encoder.audio, self.engine.feature_params.sample_rate)
            self._read_windows()
            open_embeds = None if silent else self.encoder.open_window()
        encoder_s = time.perf_counter() - t0
        self._claim_decoder()
        # Finished windows (exact, never recomputed) enter the cache first; that work is not the step's
        # own and is accounted apart so it does not stretch the cadence (see _step_due).
        sync_s = self._sync_pending_windows()
        if open_embeds is None:
            return None
        timings = StepTimings(encoder_ms=encoder_s * 1000.0)
        t1 = time.perf_counter()
        t0 = t1 - encoder_s  # the step's own time: its encoder read and its decodes, not the windows' sync
        try:
            with self.decoder.interruptible_decodes():
                if should_stop is not None and should_stop():  # an interrupt() before decodes could see it
                    raise DecodeInterrupted("stopped before decoding")
                # Committed tokens are not verified again in partials (their text never changes anyway;
                # the final verifies everything): logits only where the hypothesis may still change.
                committed = self.commits.committed
                trusted = len(committed) if self._hyp.ids[: len(committed)] == committed else 0
                parked = self._park_committed(trusted)
                self._sync_audio_into_kv(open_embeds)
                if parked:
                    self.decoder.feed_tokens(self._after_ids, want_logits=False)
                    parked = self.decoder.cache.unpark()
                timings.prefill_ms = (time.perf_counter() - t1) * 1000.0
                cap = out.new_token_cap(audio_s, self.options.max_new_tokens)
                hyp = self._decode(self._hyp.ids, cap, self.options.max_new_tokens_per_step, timings, trusted,
                                   parked)
        except DecodeInterrupted:
            # Back to the audio the cache holds for sure; the previous hypothesis stays the draft.
            self.decoder.cache.drop_parked()
            self._kv_text = None
            self._drop_open_audio()
            self._count_step(time.perf_counter() - t0)
            self.interrupted += 1
            return None
        self._hyp = hyp
        elapsed = time.perf_counter() - t0
        timings.step_ms = (elapsed + sync_s) * 1000.0
        timings.sync_ms = sync_s * 1000.0
        self._count_step(elapsed)
        self._step_cost_s = elapsed if self.steps == 0 else 0.5 * (self._step_cost_s + elapsed)
        self.steps += 1
        visible = hyp.ids if hyp.cut is None else hyp.ids[: hyp.cut]
        self.commits.update(visible)
        committed = self.committed_text
        full = self.text_of.text(visible, complete_only=True)
        # A hypothesis that contradicts the committed text shows no tentative text until it agrees again.
        tentative = full[len(committed) :] if full.startswith(committed) else ""
        self.seq += 1
        return PartialEvent(
            utterance_id=self.utterance_id,
            seq=self.seq,
            committed=committed,
            tentative=tentative,
            audio_start_s=self.start_s,
            audio_end_s=self.start_s + audio_s,
            timings=timings,
        )

    def _count_step(self, elapsed: float) -> None:
        with self._guard:
            self.compute_s += elapsed
            self.steps_compute_s += elapsed

    def _read_windows(self) -> None:
        """Take the encoder's finished windows (and which of them it recomputed) for the decoder side."""
        self._windows = self.encoder.finished_windows
        self._changed_from = min(self._changed_from, self.encoder.changed_from_window)
        self.encoder.changed_from_window = 1 << 30

    def prepare_final(self) -> FinalEvent:
        """Compute the final for the audio so far now, without ending the utterance.

        For a pause that may be the end of speech (the daemon calls it once the VAD has the trailing
        silence it keeps): `finish()` then returns this final at no cost if no audio arrived in
        between. More audio simply continues the utterance from the exact state this left.
        """
        if self._finished:
            raise RuntimeError("prepare_final() after finish() or cancel()")
        with self._guard:  # audio pushed meanwhile waits: the final must cover exactly what it counts
            final = self._exact_final()
            self._prepared = (self.encoder.n_samples, final)
        return final

    def finish(self) -> FinalEvent:
        """End of speech: the exact final (token ids equal offline `transcribe` of the same audio)."""
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        prepared = self._prepared
        with self._guard:
            if prepared is not None and prepared[0] == self.encoder.n_samples:
                final = prepared[1]
                final.prepared = True
            else:
                final = self._exact_final()
        self.seq += 1
        final.seq = self.seq
        self._release_decoder()
        return final

    def _exact_final(self) -> FinalEvent:
        self._claim_decoder()
        t0 = time.perf_counter()
        timings = FinalTimings()
        audio = self.encoder.audio
        rate = self.engine.feature_params.sample_rate
        committed = self.committed_text
        if audio.size == 0 or is_silent(audio, rate):
            timings.final_ms = (time.perf_counter() - t0) * 1000.0
            timings.compute_ms = self.compute_s * 1000.0
            return self._final([], "empty" if audio.size == 0 else "silence", None, committed, timings)
        embeds, kept = self.encoder.exact_embeddings()
        self._read_windows()
        t1 = time.perf_counter()
        timings.encoder_ms = (t1 - t0) * 1000.0
        n_audio = max(self.encoder.n_samples, self.encoder.min_samples) / rate
        cap = out.new_token_cap(n_audio, self.options.max_new_tokens)
        window = self.engine.bundle.manifest.audio.window_tokens
        kept = min(kept, self._kv_audio_windows, self._changed_from)
        self.decoder.cache.truncate(self._head_len + kept * window)  # the new audio goes in with the tail (_decode)
        self._kv_audio_windows, self._kv_open_audio = kept, 0
        if (self.options.reuse_open_audio and kept == len(self.encoder.finished_windows)
                and self.encoder.n_samples >= self.encoder.min_samples):
            # the cache now holds the exact open window: later partial steps append after it
            self._kv_open_audio = embeds.shape[0] - kept * window
        timings.prefill_ms = (time.perf_counter() - t1) * 1000.0
        hyp = self._decode(self._hyp.ids, cap, None, timings, audio=embeds[kept * window :])
        self._hyp = hyp
        timings.final_ms = (time.perf_counter() - t0) * 1000.0
        self.compute_s += timings.final_ms / 1000.0
        timings.compute_ms = self.compute_s * 1000.0
        return self._final(hyp.ids, hyp.stop_reason, hyp.cut, committed, timings)

    def interrupt(self) -> None:
        """Stop the partial step in flight, if any, so that a final can start now (callable from another
        thread; finals and prepared finals are never interrupted). The step returns no partial."""
        self.decoder.interrupt()

    def cancel(self) -> None:
        """Discard the utterance; the decoder cache is cleared so nothing leaks into the next one."""
        self._finished = True
        self._release_decoder()

    def _claim_decoder(self) -> None:
        """The decoder is shared: if another session used it since (a daemon may serve a newer utterance
        first), put this one's prompt head back; audio and text re-enter at the next step or final, exactly."""
        if self.decoder.cache.owner is self:
            return
        self.decoder.cache.reset()
        self.decoder.feed_tokens(self._before_ids, want_logits=False)
        self._head_len = self.decoder.cache.n_past
        self._kv_audio_windows, self._kv_open_audio, self._kv_text = 0, 0, None
        self.decoder.cache.owner = self

    def _release_decoder(self) -> None:
        """The utterance is over: clear the cache if it is this session's (never another session's)."""
        if self.decoder.cache.owner is self:
            self.decoder.cache.reset()  # and it belongs to no session

    # --- budget ---------------------------------------------------------------------------------

    def _step_due(self) -> bool:
        o = self.options
        if self.steps == 0 and self._last_step_audio_s == 0.0:
            return self.audio_s >= o.first_step_s
        since = self.audio_s - self._last_step_audio_s
        # Partial steps get the share of the budget that the other work leaves (encoder pushes, finished
        # windows entering the cache, prepared finals), as measured so far in this utterance, less 10 %
        # headroom so that the running total stays under the budget and seldom blocks a step.
        other_rate = (self.compute_s - self.steps_compute_s) / max(self.audio_s, 1e-6)
        share = max(0.9 * o.rtf_budget - other_rate, 0.25 * o.rtf_budget, 1e-6)
        interval = max(o.step_s, self._step_cost_s / share)
        # A step that first puts finished windows into the cache starts earlier by what that costs, so
        # the partial after it still comes on time.
        interval = max(0.1, interval - self._pending_positions() * self._sync_s_per_position)
        overspent = self.compute_s > o.rtf_budget * self.audio_s
        due = since >= interval and not overspent
        if since >= o.step_s and not due:
            self.skipped += 1
        return due

    # --- decoding -------------------------------------------------------------------------------

    def _pending_positions(self) -> int:
        """Audio positions of finished windows that are not (or no longer) in the decoder cache."""
        synced = min(self._kv_audio_windows, self._changed_from)
        return (len(self._windows) - synced) * self.engine.bundle.manifest.audio.window_tokens

    def _sync_pending_windows(self) -> float:
        """Sync finished windows into the cache now; returns the seconds it took (also added to compute_s)."""
        positions = self._pending_positions()
        if positions <= 0:
            return 0.0
        self._kv_text = None  # everything after the synced windows leaves the cache
        t0 = time.perf_counter()
        self._sync_finished_windows()
        elapsed = time.perf_counter() - t0
        self.compute_s += elapsed
        self._sync_s_per_position = 0.5 * (self._sync_s_per_position + elapsed / positions)
        return elapsed

    def _sync_finished_windows(self) -> None:
        """Put every finished window into the cache (exact; their positions never change again)."""
        window = self.engine.bundle.manifest.audio.window_tokens
        # windows the encoder recomputed (a new log-mel maximum) leave the cache too
        if self._changed_from < self._kv_audio_windows:
            self._kv_audio_windows = self._changed_from
            self._kv_open_audio = 0
        self._changed_from = 1 << 30
        new_windows = self._windows[self._kv_audio_windows :]
        if new_windows:
            self._kv_open_audio = 0  # stale open-window audio gives way to the exact finished window
        self.decoder.cache.truncate(self._head_len + self._kv_audio_windows * window + self._kv_open_audio)
        for embeds in new_windows:
            self.decoder.feed_embeddings(embeds)
            self._kv_audio_windows += 1

    def _drop_open_audio(self) -> None:
        """Keep only the prompt head and the finished windows in the cache."""
        self._kv_open_audio = 0
        self.decoder.cache.truncate(self._head_len + self._kv_audio_windows * self.engine.bundle.manifest.audio.window_tokens)

    def _sync_audio_into_kv(self, open_embeds: np.ndarray) -> None:
        """Trim the cache after the audio it keeps, append newly finished windows, then the open window
        (all of it, or with `reuse_open_audio` only the positions the cache does not hold yet)."""
        self._sync_finished_windows()
        if not self.options.reuse_open_audio or open_embeds.shape[0] < self._kv_open_audio:
            self._drop_open_audio()
        self.decoder.feed_embeddings(open_embeds[self._kv_open_audio :])
        self._kv_open_audio = open_embeds.shape[0] if self.options.reuse_open_audio else 0

    def _decode(self, draft: list[int], cap: int, max_beyond_draft: int | None, timings: StepTimings | FinalTimings,
                trusted: int = 0, parked: int = 0, audio: np.ndarray | None = None) -> Hypothesis:
        """Prompt tail + draft verification + greedy continuation, with offline's stop/cap/loop rules
        (greedy.decode_greedy). `parked`, `trusted`: see greedy.Prefill. `audio`: embeddings that go in
        first, in the same decode as the tail and the draft (the final's new audio: one weight pass)."""
        rules = TokenRules(cap, self.stop_ids, self.engine.options.loop_guard)
        prefill = Prefill(tail=self._after_ids, audio=audio, parked=parked, trusted=trusted)
        hyp = decode_greedy(self.decoder, prefill, rules, draft, max_beyond_draft)
        timings.draft_tokens, timings.accepted_tokens = hyp.draft_tokens, hyp.accepted_tokens
        timings.prefill_ms += hyp.prefill_ms
        timings.decode_ms += hyp.decode_ms
        self._kv_text = (hyp.base, hyp.ids[: self.decoder.cache.n_past - hyp.base])  # hypothesis tokens in the cache
        return hyp

    def _park_committed(self, trusted: int) -> int:
        """Keep the committed text's cache entries across the step: set them aside while new audio and the
        prompt tail go in, then put them back after (KvCache.park/unpark). They were computed before the
        newest audio, which partials accept; without this every step would re-feed the whole committed
        text, so a step's cost would grow with the utterance. `trusted`: the draft's leading tokens that
        are the committed text (0 when the draft contradicts it). Returns how many tokens were set aside
        (the last committed token is fed again: its logits predict what follows)."""
        if self._kv_text is None or self._pending_positions() > 0:
            return 0
        base, cached = self._kv_text
        n = trusted - 1
        # worth it beyond a few tokens: the prompt tail then needs a decode call of its own (~20 ms)
        if n < self.PARK_MIN_TOKENS or cached[:n] != self._hyp.ids[:n]:
            return 0
        self.decoder.cache.park(base, base + n)
        return n

    # --- ends -----------------------------------------------------------------------------------

    def _final(self, ids, reason, cut, committed, timings, was_cut: bool = False) -> FinalEvent:
        visible = ids if cut is None else ids[:cut]
        parsed = out.transcript_of_ids(visible, self.decoder.vocab.speech_bytes, self.text_of.asr_text_id, self.language)
        return FinalEvent(
            utterance_id=self.utterance_id,
            seq=self.seq,
            text=parsed.text,
            language=parsed.language or (self.language or ""),
            token_ids=list(ids),
            audio_start_s=self.start_s,
            audio_end_s=self.start_s + self.audio_s,
            stop_reason=reason,
            committed=committed,
            timings=timings,
            cut=was_cut,
        )

    def _cut_at_quiet_point(self) -> FinalEvent:
        """Max length reached: finish the audio up to the quietest point and start a new utterance
        (carrying the rest of the audio, with this utterance's text as context)."""
        audio = self.encoder.audio.copy()
        rate = self.engine.feature_params.sample_rate
        # the offline splitter's rule: the quietest 100 ms in the last cut_search_s seconds
        quiet = SegmentationOptions(max_piece_s=(audio.shape[0] - 1) / rate, search_s=self.options.cut_search_s,
                                    window_ms=100.0, sample_rate=rate)
        boundary = cut_points(audio, quiet)[0].end
        head, rest = audio[:boundary], audio[boundary:]
        # Re-run this utterance on the head only, then hand the rest to a continuation session.
        self.encoder = IncrementalEncoder(self.engine.encoder, self.engine.feature_params, self.options.min_audio_s)
        self._kv_audio_windows, self._kv_open_audio = 0, 0
        self._prepared = None
        self._kv_text = None
        self.encoder.push(head)
        final = self.finish()
        final.cut = True
        context = (self.options.context + " " + final.text).strip()[-CONTINUATION_CONTEXT_CHARS:]
        cont_options = StreamingOptions(**{**self.options.__dict__, "context": context})
        self.next_session = StreamingSession(
            self.engine, cont_options, utterance_id=f"{self.utterance_id}+", start_s=self.start_s + boundary / rate
        )
        self.next_session.feed(rest)
        return final
