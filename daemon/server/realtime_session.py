"""One ``/v1/realtime`` transcription session, sans-I/O: every decision, no socket, no thread.

The I/O side (``realtime_bridge.py``) owns the socket and the audio stream into the pipeline; this class
turns what happens into OpenAI server events (``take()`` hands them over, in order) and tells the I/O side
what to do with the stream. Time is passed in (``now``: seconds on a monotonic clock).

    session = RealtimeSession("c4", config, ConnectionLimits(), now=0.0, max_item_s=30.0, languages=...)
    session.take()                                   # [session.created]
    request = session.receive(text, now)             # Feed / Commit / Clear / Reconfigure / Close / None
    session.began(uid, t_s); session.stopped(uid, t_s, reason)   # what the stream did with the audio
    session.result(message, now)                     # a qasr.v1 partial/final/error of one of its utterances

Items: each utterance is one conversation item (``item_<utterance id>``). With ``server_vad`` the VAD
starts and ends them (``speech_started``, ``speech_stopped``); without, the first audio after a commit
starts one and ``input_audio_buffer.commit`` ends it. An ended item is ``committed`` (and
``conversation.item.added``, beta ``.created``); partials' committed text goes out as append-only
``delta``s, then the rest of the final, then ``completed`` with the final's text (GA: ``item.done``).

Limits, as for a ``qasr.v1`` client: audio (appends) is paced at ``audio_bytes_per_second``, never
refused; every other frame counts against ``commands_per_second`` (one ``error`` a second while they are
dropped, ``Close(1008)`` past ``rate_violation_limit``). Without turn detection the buffer holds at most
``max_item_s`` of audio (the longest utterance the engine takes as one piece).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from qasr.daemon.server import realtime_protocol as rt
from qasr.daemon.server.append_only import AppendOnlyText
from qasr.daemon.server.connection import Close, ConnectionLimits, TokenBucket
from qasr.daemon.server.metrics import Metrics
from qasr.protocol import AudioFormat, CloseCode, PcmDecoder, TARGET_SAMPLE_RATE


@dataclass(frozen=True, eq=False)
class Feed:
    pcm: np.ndarray  # float32 mono 16 kHz
    delay_s: float = 0.0  # pace: wait this long before feeding


@dataclass(frozen=True, eq=False)
class Commit:
    tail: np.ndarray  # the resampler's last samples: feed them before ending the item


@dataclass(frozen=True)
class Clear:
    pass


@dataclass(frozen=True)
class Reconfigure:
    config: rt.SessionConfig
    rebuild: bool  # the format or the turn detection changed: a new stream (the buffer is empty)


Request = Feed | Commit | Clear | Reconfigure | Close


@dataclass
class _Item:
    id: str
    sent: AppendOnlyText = field(default_factory=AppendOnlyText)  # transcript text already sent as deltas
    ended_at: float | None = None  # when the item's audio ended (commit / speech end)
    previous: str | None = None  # the item committed before it
    start_s: float = 0.0  # its audio in the session's audio (s)
    end_s: float = 0.0


class RealtimeSession:
    def __init__(self, client_id: str, config: rt.SessionConfig, limits: ConnectionLimits, now: float,
                 max_item_s: float, languages: Callable[[str], str], metrics: Metrics | None = None) -> None:
        self.session_id = f"sess_{client_id}"
        self.ids = rt.EventIds(client_id)
        self.config = config
        self.limits = limits
        self.max_item_s = max_item_s
        self.metrics = metrics or Metrics()
        self._resolve = languages
        self._out: list[dict] = [rt.session_event(self.ids, config, self.session_id, created=True)]
        self._decoder = self._new_decoder()
        self._items: dict[str, _Item] = {}  # utterance id -> its item
        self._open: str | None = None  # utterance id of the item the buffer is filling
        self._previous: str | None = None  # the last committed item's id
        self._buffered = 0  # 16 kHz samples appended since the last commit or clear
        self._commands = TokenBucket(limits.commands_per_second, limits.command_burst, now)
        self._violations = TokenBucket(limits.commands_per_second, limits.rate_violation_limit, now)
        self._audio = TokenBucket(limits.audio_bytes_per_second, limits.audio_bytes_per_second, now)
        self._rate_error_at = float("-inf")
        self._refusal: Close | None = None

    def take(self) -> list[dict]:
        """The server events to send now, in order."""
        out, self._out = self._out, []
        return out

    # ---- client events ----------------------------------------------------------------------
    def receive(self, text: str | bytes, now: float) -> Request | None:
        self.metrics.count("realtime_events_received")
        counted = False
        try:
            event = rt.parse_event(text)
            if event.kind == "append":
                return self._append(event, now)
            counted = True
            if not self._admit(now):
                return self._refusal
            if event.kind == "update":
                return self._update(event)
            if event.kind == "commit":
                return self._commit(event)
            return self._clear()
        except rt.RealtimeError as exc:
            if not counted and not self._admit(now):
                return self._refusal
            self._error(exc)
            return None

    def binary(self, now: float) -> Request | None:
        if not self._admit(now):
            return self._refusal
        self._error(rt.RealtimeError("binary frames are not part of the Realtime API; send input_audio_buffer.append "
                                     "events with base64 PCM16 in 'audio'", code="invalid_json"))
        return None

    def _admit(self, now: float) -> bool:
        """Rate limit of frames other than audio. False: this one is dropped (``_refusal``: close, or None)."""
        self._refusal = None
        if self._commands.take(now):
            return True
        self.metrics.count("rate_limited")
        if not self._violations.take(now):
            self._refusal = Close(CloseCode.POLICY, "rate limit exceeded: too many events")
        elif now - self._rate_error_at >= 1.0:
            self._rate_error_at = now
            self._error(rt.RealtimeError(f"more than {self.limits.commands_per_second:g} events a second besides "
                                         "audio; events are being dropped", code="rate_limit_exceeded",
                                         kind="rate_limit_error"))
        return False

    def _error(self, exc: rt.RealtimeError) -> None:
        self.metrics.count("realtime_errors")
        self._out.append(rt.error_event(self.ids, exc))

    def _append(self, event: rt.ClientEvent, now: float) -> Request | None:
        data = rt.decode_audio(event)
        delay = self._audio.debt_delay(now, len(data))
        self.metrics.count("realtime_audio_bytes", len(data))
        seconds = len(data) / 2 / self.config.rate
        if not self.config.vad and (self._buffered / TARGET_SAMPLE_RATE + seconds > self.max_item_s):
            raise rt.RealtimeError(
                f"the input audio buffer would hold more than {self.max_item_s:g} s (engine.max_utterance_s); "
                "commit it first, or turn server_vad on to cut the audio at pauses",
                code="input_audio_buffer_too_large", param="audio", event_id=event.event_id)
        pcm = self._decoder.feed(data)
        self._buffered += pcm.size
        return Feed(pcm, delay) if pcm.size else None

    def _update(self, event: rt.ClientEvent) -> Request:
        config = rt.apply_update(self.config, event, self._resolve)
        rebuild = (config.rate, config.turn_detection) != (self.config.rate, self.config.turn_detection)
        if rebuild and (self._open is not None or (not self.config.vad and self._buffered)):
            raise rt.RealtimeError("commit or clear the input audio buffer before changing the audio format or "
                                   "turn detection", code="invalid_value", param="session", event_id=event.event_id)
        rate_changed = config.rate != self.config.rate
        self.config = config
        if rate_changed:
            self._decoder = self._new_decoder()
        self._out.append(rt.session_event(self.ids, config, self.session_id, created=False))
        return Reconfigure(config, rebuild)

    def _commit(self, event: rt.ClientEvent) -> Request:
        if self.config.vad:
            if self._open is None:
                raise rt.RealtimeError("nothing to commit: no speech is open (server_vad commits each utterance "
                                       "when the speaker pauses)", code="input_audio_buffer_commit_empty",
                                       event_id=event.event_id)
        elif self._open is None or self._buffered * 1000 < rt.MIN_COMMIT_MS * TARGET_SAMPLE_RATE:
            ms = self._buffered * 1000 / TARGET_SAMPLE_RATE
            raise rt.RealtimeError(f"buffer too small: expected at least {rt.MIN_COMMIT_MS} ms of audio, the buffer "
                                   f"holds {ms:.2f} ms", code="input_audio_buffer_commit_empty",
                                   event_id=event.event_id)
        tail = self._decoder.flush()
        self._decoder = self._new_decoder()
        self._buffered = 0
        return Commit(tail)

    def _clear(self) -> Request:
        self._decoder = self._new_decoder()
        self._buffered = 0
        return Clear()

    def server_error(self, message: str) -> None:
        """The daemon could not do what an event asked (the pipeline failed); the session goes on."""
        self._error(rt.RealtimeError(message, code="server_error", kind="server_error"))

    def cleared(self) -> None:
        """The stream dropped the buffer (after ``Clear``)."""
        self._out.append(rt.cleared(self.ids))

    def _new_decoder(self) -> PcmDecoder:
        return PcmDecoder(AudioFormat("s16le", self.config.rate, 1))

    # ---- what the stream did ------------------------------------------------------------------
    def began(self, utterance_id: str, t_s: float) -> None:
        """An utterance (item) began at ``t_s`` seconds of the session's audio."""
        item = self._items[utterance_id] = _Item(f"item_{utterance_id}", start_s=t_s)
        self._open = utterance_id
        if self.config.vad:
            self._out.append(rt.speech_started(self.ids, item.id, round(t_s * 1000)))

    def stopped(self, utterance_id: str, t_s: float, reason: str, now: float) -> None:
        """The item's audio ended: ``reason`` ``silence``/``max_length`` (the VAD), ``commit``, ``cancel``
        (cleared, or too short for the VAD: no transcript follows)."""
        item = self._items.get(utterance_id)
        if item is None:
            return
        if self._open == utterance_id:
            self._open = None
        if reason in ("silence", "max_length", "too_short"):
            self._out.append(rt.speech_stopped(self.ids, item.id, round(t_s * 1000)))
        if reason == "cancel" or reason == "too_short":
            del self._items[utterance_id]
            return
        item.ended_at, item.end_s = now, t_s
        item.previous = self._previous
        self._out.append(rt.committed(self.ids, item.id, self._previous))
        name = "conversation.item.created" if self.config.beta else "conversation.item.added"
        self._out.append(rt.item_event(self.ids, name, item.id, self._previous))
        self._previous = item.id
        self.metrics.count("realtime_items")

    def result(self, message: dict, now: float) -> None:
        """A ``partial``/``final``/``error`` of one of this session's utterances."""
        item = self._items.get(str(message.get("utterance_id")))
        kind = message.get("type")
        if item is None:
            return
        if kind == "partial":
            self._extend(item, message.get("committed") or "")
        elif kind == "final":
            text = message.get("text") or ""
            self._extend(item, text)
            self._out.append(rt.completed(self.ids, item.id, text, item.end_s - item.start_s))
            if not self.config.beta:
                self._out.append(rt.item_event(self.ids, "conversation.item.done", item.id, item.previous, text))
            self._done(message, item, now)
        elif kind == "error":
            self._out.append(rt.failed(self.ids, item.id, message.get("message") or "transcription failed"))
            self._done(message, item, now)

    def _extend(self, item: _Item, text: str) -> None:
        delta = item.sent.delta(text)
        if delta:
            self._out.append(rt.delta(self.ids, item.id, delta))

    def _done(self, message: dict, item: _Item, now: float) -> None:
        self._items.pop(str(message.get("utterance_id")), None)
        if item.ended_at is not None:
            self.metrics.observe("realtime_end_to_completed_ms", (now - item.ended_at) * 1000.0)

    @property
    def open_items(self) -> int:
        return len(self._items)


def with_defaults(config: rt.SessionConfig, preroll_ms: int, hangover_ms: int) -> rt.SessionConfig:
    """The session's first config: the daemon's own VAD times as the turn detection's."""
    return replace(config, turn_detection=rt.TurnDetection(prefix_padding_ms=preroll_ms, silence_duration_ms=hangover_ms))
