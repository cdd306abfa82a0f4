"""Voice-activity segmentation of a 16 kHz mono stream into utterances (sans-I/O: no threads, no devices).

Feed audio in any block size; get events back::

    seg = Segmenter(SegmenterOptions(mode="vad"))
    for event in seg.process(pcm_float32_16k):      # also start_utterance()/stop_utterance()/toggle()/cancel()/finish()
        ...

Events, in stream order (times are stream seconds: samples given to ``process()`` so far / 16000):

- ``VadState(speaking, t_s)``  — the debounced voice state changed (every mode; for level meters / UI).
- ``SpeechStart(utterance_id, t_s, continued)`` — an utterance begins. ``t_s`` is the first voiced
  frame (vad mode) or the moment of ``start_utterance()`` (ptt/toggle). ``continued`` is True when it
  follows a ``max_length`` cut without a gap.
- ``SpeechAudio(utterance_id, pcm, t_s)`` — the utterance's audio in order, contiguous, starting with
  the pre-roll; ``t_s`` is the stream time of ``pcm[0]``. At most one per ``process()`` call per utterance,
  plus one per ``SpeechPause`` in that call (the audio before a pause comes out before it).
- ``SpeechPause(utterance_id, t_s)`` — the speaker paused: the silence after the last voiced frame reached
  the tail the utterance keeps (``tail_ms``), and that tail has just been emitted. ``t_s`` is the end of the
  emitted audio: the utterance's end if nothing more comes. From here either the end is confirmed
  (``SpeechEnd`` at exactly ``t_s``, no further audio: a final computed now is the utterance's final) or
  speech resumes (the held silence beyond the tail and the new speech follow as ``SpeechAudio``; a later
  pause sends ``SpeechPause`` again). vad mode: not sent while the voiced span is under
  ``min_utterance_ms`` (that utterance would be cancelled as too short).
- ``SpeechEnd(utterance_id, t_s, reason, last_voice_s)`` — ``reason`` is ``"silence"`` (vad hangover),
  ``"stop"`` (stop_utterance/toggle/finish) or ``"max_length"``; ``t_s`` is the end of the last
  SpeechAudio sample, ``last_voice_s`` the end of the last voiced frame.
- ``Cancelled(utterance_id, reason)`` — drop the utterance: ``"cancel"`` (cancel()), ``"too_short"``
  (voiced span under ``min_utterance_ms``) or ``"no_speech"`` (ptt/toggle with no voiced frame).

Modes. ``vad``: an utterance starts after ``onset_ms`` of consecutive voiced 30 ms frames (webrtcvad) and
carries ``preroll_ms`` of audio before the first voiced frame; it ends after ``hangover_ms`` of silence,
keeping ``tail_ms`` of that silence. ``ptt``/``toggle``: the utterance spans start → stop (plus
``release_tail_ms`` of audio after the stop request, for audio still in flight, and up to ``release_voice_ms``
more while the VAD still hears the voice: a key released mid-word); the VAD only trims
leading silence beyond ``preroll_ms`` before the first voiced frame and trailing silence beyond
``tail_ms`` after the last one (so a release during a pause adds no audio after the ``SpeechPause``
unless the voice comes back within the release tail). ``start_utterance()`` in vad mode does nothing; ``stop_utterance()``
ends the current utterance at once. After ``cancel()`` in vad mode, the segmenter waits for silence
before it listens again.

Max length: at ``max_utterance_s`` of utterance audio the utterance is cut (``SpeechEnd`` reason
``max_length``) wherever it is, mid-word included; if speech goes on (or the key is still held) a new
utterance with ``continued=True`` starts at the very next sample. In vad mode a cap that falls in a
pause (silence after the last voiced frame) ends the utterance like a silence end, and resumed speech starts a new
one through the normal onset. The streaming engine may choose
better cut points (low energy) itself; this cap is the hard limit.

Pauses change when the trailing tail is emitted, never which audio an utterance has: the tail
``_close`` keeps is emitted at the pause instead of at the end, so the utterance's audio is the same
samples in every outcome (end, resumed speech, max-length cut, stop, cancel).

No audio is lost: every sample given to ``process()`` is either emitted in a ``SpeechAudio``
(``samples_emitted``), dropped as silence/cancelled (``samples_discarded``), or still held
(``samples_buffered``: the partial frame, pre-roll, and held trailing silence — beyond the tail once
a ``SpeechPause`` was sent), so
``samples_in == samples_emitted + samples_discarded + samples_buffered`` after every call.
Audio in a cancelled utterance that was already emitted stays counted as emitted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import webrtcvad

from qasr.engine.audio_constants import SAMPLE_RATE
from qasr.daemon.audio.segment_events import (
    Cancelled, SegmentEvent, SpeechAudio, SpeechEnd, SpeechPause, SpeechStart, VadState,
)

FRAME_MS = 30
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
# a stop request's voice check: voice within this much before the release tail's end means "still talking"
# (webrtcvad marks a frame or two inside a word unvoiced; three frames of silence end a word)
RELEASE_VOICE_GAP = 3 * FRAME_SAMPLES
MODES = ("vad", "ptt", "toggle")


@dataclass(frozen=True)
class SegmenterOptions:
    mode: str = "vad"  # "vad" | "ptt" | "toggle"
    aggressiveness: int = 2  # webrtcvad 0 (least) … 3 (most aggressive about calling audio non-speech)
    onset_ms: int = 150  # consecutive voiced audio that starts speech
    hangover_ms: int = 600  # consecutive silence that ends speech
    preroll_ms: int = 500  # audio kept before the first voiced frame
    tail_ms: int = 300  # trailing silence kept after the last voiced frame
    release_tail_ms: int = 100  # ptt/toggle: audio still in flight after a stop request (capture latency ~40 ms + a block)
    # ptt/toggle: after the release tail, keep recording while a voiced frame came within RELEASE_VOICE_GAP_MS,
    # at most this long (the hotkey's release_tail_s): a stop after the speech ends costs no extra wait
    release_voice_ms: int = 0
    max_utterance_s: float = 30.0
    min_utterance_ms: int = 250  # voiced span below this → Cancelled("too_short") (vad mode)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"segmenter mode must be one of {MODES}, got {self.mode!r}")
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError(f"VAD aggressiveness must be 0..3, got {self.aggressiveness}")
        for name in ("onset_ms", "hangover_ms", "preroll_ms", "tail_ms", "release_tail_ms", "release_voice_ms",
                     "min_utterance_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_utterance_s * 1000 < 2 * FRAME_MS:
            raise ValueError("max_utterance_s must be at least 0.06")




@dataclass
class _Frame:
    start: int  # stream sample index of pcm[0]
    pcm: np.ndarray
    voiced: bool

    @property
    def end(self) -> int:
        return self.start + len(self.pcm)


@dataclass
class _Utterance:
    id: int
    has_speech: bool
    lead: deque = field(default_factory=deque)  # ptt/toggle: frames before the first voiced one
    pending: list = field(default_factory=list)  # silence after the last voiced frame, held back
    paused: bool = False  # the tail of the silence after the last voiced frame is emitted (SpeechPause)
    emitted: int = 0
    first_voice: int | None = None
    last_voice_end: int | None = None
    stop_at: int | None = None  # ptt/toggle: end once the stream reaches this sample

    @property
    def length(self) -> int:
        return self.emitted + (len(self.pending) + len(self.lead)) * FRAME_SAMPLES


def _ms_to_frames(ms: float) -> int:
    return int(-(-ms // FRAME_MS))  # ceil


class Segmenter:
    def __init__(self, options: SegmenterOptions | None = None) -> None:
        self.options = options or SegmenterOptions()
        self._vad = webrtcvad.Vad(self.options.aggressiveness)
        self._onset = max(1, _ms_to_frames(self.options.onset_ms))
        self._hangover = max(1, _ms_to_frames(self.options.hangover_ms))
        self._max_samples = int(round(self.options.max_utterance_s * SAMPLE_RATE))
        # the pre-roll and onset must fit in one utterance
        self._preroll = max(0, min(_ms_to_frames(self.options.preroll_ms),
                                   self._max_samples // FRAME_SAMPLES - self._onset - 1))
        self._tail = _ms_to_frames(self.options.tail_ms)
        self._min_voice = int(round(self.options.min_utterance_ms * SAMPLE_RATE / 1000))
        self._release_tail = int(round(self.options.release_tail_ms * SAMPLE_RATE / 1000))
        self._release_voice = int(round(self.options.release_voice_ms * SAMPLE_RATE / 1000))

        self._partial = np.zeros(0, dtype=np.float32)
        self._framed = 0  # samples cut into frames so far
        self._idle: deque[_Frame] = deque()  # frames outside an utterance still kept (pre-roll)
        self._voiced_run = 0
        self._silent_run = 0
        self._speaking = False
        self._suppress = False  # vad mode after cancel(): wait for silence
        self._utt: _Utterance | None = None
        self._next_id = 1

        self._events: list[SegmentEvent] = []
        self._chunk: list[np.ndarray] = []
        self._chunk_start = 0
        self._chunk_end = 0
        self._last_emitted_end = 0

        self.samples_in = 0
        self.samples_emitted = 0
        self.samples_discarded = 0

    # ------------------------------------------------------------------ public

    @property
    def mode(self) -> str:
        return self.options.mode

    @property
    def in_utterance(self) -> bool:
        return self._utt is not None

    @property
    def ending(self) -> bool:
        """Released (ptt/toggle): the open utterance only takes its release tail before it ends."""
        return self._utt is not None and self._utt.stop_at is not None

    @property
    def silence_s(self) -> float:
        """Seconds since the open utterance's last voiced frame (0 outside an utterance or before its voice)."""
        utt = self._utt
        if utt is None or utt.last_voice_end is None:
            return 0.0
        return max(0, self._framed - utt.last_voice_end) / SAMPLE_RATE

    @property
    def utterance_id(self) -> int | None:
        return None if self._utt is None else self._utt.id

    @property
    def speaking(self) -> bool:
        """The debounced VAD state (onset/hangover applied)."""
        return self._speaking

    @property
    def samples_buffered(self) -> int:
        frames = len(self._idle)
        if self._utt is not None:
            frames += len(self._utt.lead) + len(self._utt.pending)
        return len(self._partial) + frames * FRAME_SAMPLES

    @property
    def t_s(self) -> float:
        """Stream time: all samples given to process() so far."""
        return self.samples_in / SAMPLE_RATE

    def process(self, pcm: np.ndarray) -> list[SegmentEvent]:
        data = np.asarray(pcm, dtype=np.float32).reshape(-1)
        self.samples_in += len(data)
        if len(self._partial):
            data = np.concatenate([self._partial, data])
        n_full = len(data) // FRAME_SAMPLES
        for i in range(n_full):
            # copy: frames outlive the caller's buffer (pre-roll, held silence)
            pcm_frame = data[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES].copy()
            self._on_frame(pcm_frame)
        self._partial = data[n_full * FRAME_SAMPLES:].copy()
        return self._take_events()

    def start_utterance(self) -> list[SegmentEvent]:
        """ptt/toggle: begin an utterance now (with pre-roll). vad mode: no-op. Ignored if one is open."""
        if self.options.mode == "vad":
            return []
        if self._utt is not None:
            if self._utt.stop_at is not None:  # pressed again during the release tail: keep going
                self._utt.stop_at = None
            return []
        utt = self._open(t_s=self.t_s, has_speech=False)
        utt.lead.extend(self._idle)
        self._idle.clear()
        return self._take_events()

    def stop_utterance(self) -> list[SegmentEvent]:
        """End the open utterance: ptt/toggle after ``release_tail_ms`` more audio, vad mode at once."""
        if self._utt is None:
            return []
        if self.options.mode == "vad" or self._release_tail == 0:
            self._close("stop")
        elif self._utt.stop_at is None:
            self._utt.stop_at = self.samples_in + self._release_tail
        return self._take_events()

    def toggle(self) -> list[SegmentEvent]:
        if self._utt is not None and self._utt.stop_at is None:
            return self.stop_utterance()
        return self.start_utterance()

    def cancel(self) -> list[SegmentEvent]:
        """Drop the open utterance (``Cancelled``); its held audio is discarded."""
        utt = self._utt
        if utt is None:
            return []
        self._flush_chunk()
        self._discard_frames(utt.lead)
        self._discard_frames(utt.pending)
        self._utt = None
        self._events.append(Cancelled(utt.id, "cancel"))
        if self.options.mode == "vad":
            self._suppress = self._speaking
        return self._take_events()

    def finish(self) -> list[SegmentEvent]:
        """End of stream: close any utterance at once; the pre-roll and partial frame are discarded."""
        if self._utt is not None:
            self._close("stop")
        self._discard_frames(self._idle)
        self._idle.clear()
        self.samples_discarded += len(self._partial)
        self._partial = np.zeros(0, dtype=np.float32)
        return self._take_events()

    # ------------------------------------------------------------------ frames

    def _on_frame(self, pcm: np.ndarray) -> None:
        pcm16 = (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")
        voiced = self._vad.is_speech(pcm16.tobytes(), SAMPLE_RATE)
        frame = _Frame(self._framed, pcm, voiced)
        self._framed += FRAME_SAMPLES
        change = self._update_vad_state(frame)
        if change is not None and change.speaking:
            self._events.append(change)
        if self.options.mode == "vad":
            self._vad_mode_frame(frame)
        else:
            self._manual_mode_frame(frame)
        if change is not None and not change.speaking:
            self._flush_chunk()  # events stay in stream order: audio before the state change
            self._events.append(change)

    def _update_vad_state(self, frame: _Frame) -> VadState | None:
        if frame.voiced:
            self._voiced_run += 1
            self._silent_run = 0
        else:
            self._silent_run += 1
            self._voiced_run = 0
        if not self._speaking and self._voiced_run >= self._onset:
            self._speaking = True
            self._flush_chunk()
            return VadState(True, (frame.end - self._voiced_run * FRAME_SAMPLES) / SAMPLE_RATE)
        if self._speaking and self._silent_run >= self._hangover:
            self._speaking = False
            return VadState(False, frame.end / SAMPLE_RATE)
        return None

    def _vad_mode_frame(self, frame: _Frame) -> None:
        self._cut_if_full(frame)
        utt = self._utt
        if utt is None:
            if self._suppress and not self._speaking:
                self._suppress = False
            self._idle.append(frame)
            # keep the pre-roll plus the current voiced run (the onset candidate)
            while len(self._idle) > self._preroll + self._voiced_run:
                self._discard_frames([self._idle.popleft()])
            if self._voiced_run >= self._onset and not self._suppress:
                # after stop_utterance() mid-speech the voiced run is longer than what is kept
                first_voiced = self._idle[max(0, len(self._idle) - self._voiced_run)]
                utt = self._open(t_s=first_voiced.start / SAMPLE_RATE, has_speech=True)
                frames = list(self._idle)
                self._idle.clear()
                for f in frames:
                    self._emit(f)
                utt.first_voice = first_voiced.start
                utt.last_voice_end = frames[-1].end
            return
        self._add_to_utterance(frame)
        if not self._speaking:
            self._close("silence")

    def _manual_mode_frame(self, frame: _Frame) -> None:
        self._cut_if_full(frame)
        utt = self._utt
        if utt is None:
            self._idle.append(frame)
            while len(self._idle) > self._preroll:
                self._discard_frames([self._idle.popleft()])
            return
        if not utt.has_speech:
            if frame.voiced:
                utt.has_speech = True
                utt.first_voice = frame.start
                lead = list(utt.lead)
                utt.lead.clear()
                for f in lead:
                    self._emit(f)
                self._add_to_utterance(frame)
            else:
                utt.lead.append(frame)
                while len(utt.lead) > self._preroll:
                    self._discard_frames([utt.lead.popleft()])
        else:
            self._add_to_utterance(frame)
        if utt.stop_at is not None and frame.end >= utt.stop_at and not self._voice_goes_on(utt, frame):
            self._close("stop")

    def _voice_goes_on(self, utt: _Utterance, frame: _Frame) -> bool:
        """The release tail is over but the speaker is still talking (stopped mid-word): record on, up to
        ``release_voice_ms`` past the tail."""
        return (utt.last_voice_end is not None and frame.end - utt.last_voice_end < RELEASE_VOICE_GAP
                and frame.end < utt.stop_at + self._release_voice)

    def _cut_if_full(self, frame: _Frame) -> None:
        """Cut the utterance before ``frame`` would take it past ``max_utterance_s``."""
        utt = self._utt
        if utt is not None and utt.length + len(frame.pcm) > self._max_samples:
            self._cut_and_continue()

    def _add_to_utterance(self, frame: _Frame) -> None:
        utt = self._utt
        assert utt is not None
        if frame.voiced:
            for f in utt.pending:
                self._emit(f)
            utt.pending.clear()
            utt.paused = False
            self._emit(frame)
            utt.last_voice_end = frame.end
        else:
            utt.pending.append(frame)
            if not utt.paused and len(utt.pending) >= self._tail:
                self._pause(utt)

    def _pause(self, utt: _Utterance) -> None:
        """The silence after the last voiced frame reached the tail: emit the tail now (it belongs to the
        utterance however the pause ends) and say so; the rest of the silence stays held."""
        for f in utt.pending[:self._tail]:
            self._emit(f)
        del utt.pending[:self._tail]
        utt.paused = True
        if utt.emitted == 0:
            return  # nothing to transcribe (a continued utterance that has only silence so far)
        voiced_span = (utt.last_voice_end or 0) - (utt.first_voice or 0)
        if self.options.mode == "vad" and voiced_span < self._min_voice:
            return  # this end would be cancelled as too short
        self._flush_chunk()  # the tail before the pause
        self._events.append(SpeechPause(utt.id, self._last_emitted_end / SAMPLE_RATE))

    # ------------------------------------------------------------------ utterances

    def _open(self, t_s: float, has_speech: bool, continued: bool = False) -> _Utterance:
        utt = _Utterance(id=self._next_id, has_speech=has_speech)
        self._next_id += 1
        self._utt = utt
        self._events.append(SpeechStart(utt.id, t_s, continued))
        return utt

    def _close(self, reason: str, trim_tail: bool = True) -> None:
        utt = self._utt
        assert utt is not None
        if not trim_tail:
            keep = len(utt.pending)
        else:
            keep = 0 if utt.paused else self._tail  # a pause emitted the tail already
        for f in utt.pending[:keep]:
            self._emit(f)
        self._discard_frames(utt.pending[keep:])
        utt.pending.clear()
        self._discard_frames(utt.lead)
        utt.lead.clear()
        end = self._chunk_end if self._chunk else None
        self._flush_chunk()
        self._utt = None
        if not utt.has_speech or utt.emitted == 0:
            self._events.append(Cancelled(utt.id, "no_speech"))
            return
        voiced_span = (utt.last_voice_end or 0) - (utt.first_voice or 0)
        if self.options.mode == "vad" and reason == "silence" and voiced_span < self._min_voice:
            self._events.append(Cancelled(utt.id, "too_short"))
            return
        if end is None:
            end = self._last_emitted_end
        last_voice = None if utt.last_voice_end is None else utt.last_voice_end / SAMPLE_RATE
        self._events.append(SpeechEnd(utt.id, end / SAMPLE_RATE, reason, last_voice))

    def _cut_and_continue(self) -> None:
        utt = self._utt
        assert utt is not None
        stop_at = utt.stop_at
        if self.options.mode == "vad" and (utt.pending or utt.paused):
            # the cap falls in a pause: end here like a silence end; a resumed voice starts anew
            self._close("max_length")
            return
        self._close("max_length", trim_tail=False)
        nxt = self._open(t_s=self._framed / SAMPLE_RATE, has_speech=self.options.mode == "vad",
                         continued=True)
        nxt.stop_at = stop_at
        if nxt.has_speech:
            nxt.first_voice = nxt.last_voice_end = self._framed

    # ------------------------------------------------------------------ emission and accounting

    def _emit(self, frame: _Frame) -> None:
        utt = self._utt
        assert utt is not None
        if self._chunk and self._chunk_end != frame.start:
            self._flush_chunk()
        if not self._chunk:
            self._chunk_start = frame.start
        self._chunk.append(frame.pcm)
        self._chunk_end = frame.end
        self._last_emitted_end = frame.end
        utt.emitted += len(frame.pcm)
        self.samples_emitted += len(frame.pcm)

    def _flush_chunk(self) -> None:
        if not self._chunk or self._utt is None:
            return
        pcm = np.concatenate(self._chunk) if len(self._chunk) > 1 else self._chunk[0]
        self._events.append(SpeechAudio(self._utt.id, pcm, self._chunk_start / SAMPLE_RATE))
        self._chunk = []

    def _discard_frames(self, frames) -> None:
        for f in frames:
            self.samples_discarded += len(f.pcm)

    def _take_events(self) -> list[SegmentEvent]:
        if self._utt is not None:
            self._flush_chunk()
        events, self._events = self._events, []
        return events
