"""One WebSocket client's state, sans-I/O: outgoing queue, rate limits, subscriptions, audio ingestion.

The asyncio server (``ws_server.py``) owns the socket and the handler calls; ``Connection`` owns every
decision. Time is passed in (``now``, seconds on a monotonic clock), so tests drive it without a socket:

    conn = Connection("c1", ConnectionLimits(), now=0.0)
    request = conn.receive_text('{"type": "start", "id": 1}', now=0.1)   # -> RunCommand(msg)
    conn.complete(request, {"state": "recording"})                     # queues the ack
    conn.next_outgoing()                                               # -> '{"type":"ack",...}'

Incoming frames:
- ``receive_text(text, now)`` parses and validates a text frame. Replies that need no handler (``ping``,
  ``subscribe``, errors, rate-limit errors) are queued at once; otherwise it returns a *request* for the
  I/O side to carry out: ``RunCommand`` (``handler.on_command``), ``OpenIngest`` (``handler.open_ingest``),
  ``EndIngest`` (feed the tail, ``sink.end()``), ``CancelIngest`` (``sink.cancel()``), or ``Close``.
  The I/O side reports back with ``complete(request, result)`` or ``fail(request, exc)``; either may
  return a follow-up request (a failed feed becomes a ``CancelIngest``).
- ``pace_audio(nbytes, now)`` -> seconds to wait before reading on (audio is paced, never refused);
  ``receive_binary(data, now)`` decodes PCM and returns ``FeedIngest`` (or ``CancelIngest`` on bad audio).

Outgoing events (``queue_event``): a queued partial is replaced by a newer one for the same utterance (and
dropped when that utterance's final arrives); finals and other events are never dropped. When more than
``max_queued_events`` of them wait, ``queue_event`` returns ``Close(4000)``: the client is too slow.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from qasr import protocol
from qasr.daemon.server.metrics import Metrics
from qasr.errors import QasrError
from qasr.protocol import AudioFormat, CloseCode, ErrorCode, PcmDecoder, ProtocolError

log = logging.getLogger("qasr.server")


@dataclass(frozen=True)
class ConnectionLimits:
    commands_per_second: float = 20.0  # text frames; excess ones are dropped with an error
    command_burst: int = 40
    rate_violation_limit: int = 200  # dropped frames (refilling at the command rate) before closing with 1008
    audio_bytes_per_second: float = 32 * 1024 * 1024  # binary frames beyond this are paced, not refused
    max_queued_events: int = 2000  # undelivered non-partial events before closing with 4000


@dataclass(frozen=True)
class IngestRequest:
    """An ``audio.start`` request. ``format``/``sample_rate``/``channels`` describe the client's bytes;
    the sink always receives float32 mono 16 kHz."""

    format: str
    sample_rate: int
    channels: int
    segment: str  # "vad": split into utterances at pauses; "none": the whole stream is one utterance
    language: str | None = None
    context: str | None = None
    request_id: Any = None


@runtime_checkable
class IngestSink(Protocol):
    def feed(self, samples: np.ndarray) -> None: ...
    def end(self) -> dict | None: ...
    def cancel(self) -> None: ...


@dataclass(eq=False)
class Ingest:
    """An open audio stream: the app's sink, the decoder of the client's bytes, the request."""

    sink: IngestSink
    decoder: PcmDecoder
    request: IngestRequest


# ---- what the I/O side is asked to do ---------------------------------------------------------


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True)
class RunCommand:
    msg: dict  # start/stop/toggle/cancel/set, validated


@dataclass(frozen=True)
class OpenIngest:
    request: IngestRequest
    audio: AudioFormat


@dataclass(frozen=True, eq=False)
class EndIngest:
    ingest: Ingest
    tail: np.ndarray  # the decoder's last samples: feed them before ``end()``
    request_id: Any = None


@dataclass(frozen=True, eq=False)
class FeedIngest:
    ingest: Ingest
    samples: np.ndarray


@dataclass(frozen=True, eq=False)
class CancelIngest:
    ingest: Ingest | None  # None: nothing to cancel any more, only the reply to send
    reply: dict | None = None  # queued once the sink is cancelled


Request = RunCommand | OpenIngest | EndIngest | FeedIngest | CancelIngest | Close


# ---- pieces of state --------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; the caller passes the time."""

    def __init__(self, rate: float, burst: float, now: float):
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._stamp) * self.rate)
        self._stamp = max(self._stamp, now)

    def take(self, now: float, n: float = 1.0) -> bool:
        self._refill(now)
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    def debt_delay(self, now: float, n: float) -> float:
        """Take ``n`` even into debt; seconds to wait until the balance is back to zero."""
        self._refill(now)
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class _Entry:
    __slots__ = ("etype", "utterance_id", "data", "dead")

    def __init__(self, etype: str, utterance_id: str | None, data: str):
        self.etype = etype
        self.utterance_id = utterance_id
        self.data = data
        self.dead = False


@dataclass
class _Throttle:
    """At most one message per ``interval`` seconds (rate-limit and no-ingest errors)."""

    interval: float = 1.0
    last: float = field(default=float("-inf"))

    def allow(self, now: float) -> bool:
        if now - self.last >= self.interval:
            self.last = now
            return True
        return False


# ---- the connection ---------------------------------------------------------------------------


class Connection:
    def __init__(self, client_id: str, limits: ConnectionLimits, now: float, metrics: Metrics | None = None):
        self.id = client_id
        self.limits = limits
        self.metrics = metrics or Metrics()
        self.subscribed: set[str] = set(protocol.SUBSCRIBABLE)
        self.ingest: Ingest | None = None
        self.closing = False
        self._queue: deque[_Entry] = deque()
        self._partials: dict[str | None, _Entry] = {}
        self._held = 0  # queued entries that are not partials
        self._commands = TokenBucket(limits.commands_per_second, limits.command_burst, now)
        self._violations = TokenBucket(limits.commands_per_second, limits.rate_violation_limit, now)
        self._audio = TokenBucket(limits.audio_bytes_per_second, limits.audio_bytes_per_second, now)
        self._rate_errors = _Throttle()
        self._audio_errors = _Throttle()

    # ---- outgoing ---------------------------------------------------------------------------

    def wants(self, etype: str) -> bool:
        """Whether a broadcast of ``etype`` goes to this client (replies always do)."""
        return etype in self.subscribed or etype not in protocol.SUBSCRIBABLE

    def queue_event(self, event: dict, data: str | None = None) -> Close | None:
        """Queue ``event`` (``data``: its encoding, when already made). Close: the client is too slow."""
        if self.closing:
            return None
        etype, utterance_id = event.get("type", ""), event.get("utterance_id")
        data = protocol.encode(event) if data is None else data
        if etype == "partial":
            queued = self._partials.get(utterance_id)
            if queued is not None:  # newest partial replaces the one still waiting
                queued.data = data
                self.metrics.count("partials_dropped")
                return None
            entry = _Entry(etype, utterance_id, data)
            self._partials[utterance_id] = entry
        else:
            if etype == "final" and utterance_id in self._partials:
                self._partials.pop(utterance_id).dead = True
                self.metrics.count("partials_dropped")
            entry = _Entry(etype, utterance_id, data)
            self._held += 1
            if self._held > self.limits.max_queued_events:
                return self._too_slow()
        self._queue.append(entry)
        return None

    def _too_slow(self) -> Close:
        log.warning("client %s does not read its events; disconnecting it", self.id)
        self.metrics.count("slow_client_disconnects")
        self.closing = True
        self._queue.clear()
        self._partials.clear()
        return Close(CloseCode.SLOW_CLIENT, f"client too slow: more than {self.limits.max_queued_events} events waiting")

    def next_outgoing(self) -> str | None:
        """The next text frame to send, or None when nothing waits."""
        while self._queue:
            entry = self._queue.popleft()
            if entry.dead:
                continue
            if entry.etype == "partial":
                if self._partials.get(entry.utterance_id) is entry:
                    del self._partials[entry.utterance_id]
            else:
                self._held -= 1
            return entry.data
        return None

    # ---- incoming text ----------------------------------------------------------------------

    def receive_text(self, text: str | bytes, now: float) -> Request | None:
        self.metrics.count("messages_received")
        if not self._commands.take(now):
            self.metrics.count("rate_limited")
            if not self._violations.take(now):
                self.closing = True
                return Close(CloseCode.POLICY, "rate limit exceeded: too many messages")
            if self._rate_errors.allow(now):
                self.queue_event(
                    protocol.error(
                        ErrorCode.RATE_LIMITED,
                        f"more than {self.limits.commands_per_second:g} messages per second; messages are being dropped",
                    )
                )
            return None
        msg = None
        try:
            msg = protocol.parse_client_message(text)
            return self._dispatch(msg)
        except ProtocolError as exc:
            if msg is None:  # raised while parsing
                self.queue_event(protocol.error(exc.code, exc.message, exc.request_id, exc.command))
            else:
                self.queue_event(protocol.error(exc.code, exc.message, msg.get("id"), msg["type"]))
            return None

    def _dispatch(self, msg: dict) -> Request | None:
        mtype, rid = msg["type"], msg.get("id")
        if mtype == "ping":
            self.queue_event(protocol.pong(rid))
        elif mtype == "subscribe":
            self.subscribed = set(msg["events"])
            self.queue_event(protocol.ack(mtype, rid, events=sorted(self.subscribed)))
        elif mtype in protocol.COMMANDS:
            return RunCommand(msg)
        elif mtype == "audio.start":
            if self.ingest is not None:
                raise ProtocolError(ErrorCode.INGEST_ACTIVE, "an audio stream is already open; send audio.end first")
            request = IngestRequest(
                format=msg["format"],
                sample_rate=msg["sample_rate"],
                channels=msg["channels"],
                segment=msg["segment"],
                language=msg.get("language"),
                context=msg.get("context"),
                request_id=rid,
            )
            return OpenIngest(request, AudioFormat.from_message(msg))
        elif mtype == "audio.end":
            ingest = self.ingest
            if ingest is None:
                raise ProtocolError(ErrorCode.NO_INGEST, "no audio stream is open; send audio.start first")
            self.ingest = None
            return EndIngest(ingest, ingest.decoder.flush(), rid)
        elif mtype == "audio.cancel":
            if self.ingest is None:
                raise ProtocolError(ErrorCode.NO_INGEST, "no audio stream is open; nothing to cancel")
            ingest, self.ingest = self.ingest, None
            return CancelIngest(ingest, protocol.ack(mtype, rid))
        else:
            raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {mtype!r}")
        return None

    # ---- incoming audio ---------------------------------------------------------------------

    def pace_audio(self, nbytes: int, now: float) -> float:
        """Seconds to wait before handling a binary frame of ``nbytes`` (0: at once)."""
        self.metrics.count("audio_bytes_received", nbytes)
        return self._audio.debt_delay(now, nbytes)

    def receive_binary(self, data: bytes, now: float) -> Request | None:
        ingest = self.ingest
        if ingest is None:
            if self._audio_errors.allow(now):  # one error per second, not one per frame
                self.queue_event(protocol.error(ErrorCode.NO_INGEST, "binary frame without audio.start; send audio.start first"))
            return None
        try:
            samples = ingest.decoder.feed(data)
        except Exception as exc:
            return self._stream_failed(ingest, exc)
        return FeedIngest(ingest, samples) if samples.size else None

    def _stream_failed(self, ingest: Ingest, exc: Exception) -> CancelIngest:
        if self.ingest is ingest:
            self.ingest = None
        if isinstance(exc, ProtocolError):
            reply = protocol.error(exc.code, exc.message + "; the audio stream was cancelled")
        else:
            log.error("audio stream of %s failed", self.id, exc_info=exc)
            message = str(exc) if isinstance(exc, QasrError) else f"internal error ({type(exc).__name__}); see the daemon log"
            reply = protocol.error(ErrorCode.INTERNAL, message + "; the audio stream was cancelled")
        return CancelIngest(ingest, reply)

    # ---- results of the I/O side's work -----------------------------------------------------

    def complete(self, request: Request, result: Any = None) -> Request | None:
        """``request`` was carried out; ``result``: what the handler returned."""
        if isinstance(request, RunCommand):
            self.queue_event(protocol.ack(request.msg["type"], request.msg.get("id"), **(result or {})))
        elif isinstance(request, OpenIngest):
            self.ingest = Ingest(result, PcmDecoder(request.audio), request.request)
            self.queue_event(protocol.ack("audio.start", request.request.request_id, sample_rate=protocol.TARGET_SAMPLE_RATE))
        elif isinstance(request, EndIngest):
            decoder = request.ingest.decoder
            ack = protocol.ack("audio.end", request.request_id, bytes=decoder.bytes_in, samples=decoder.samples_out, **(result or {}))
            self.queue_event(ack)
        elif isinstance(request, CancelIngest) and request.reply is not None:
            self.queue_event(request.reply)
        return None

    def fail(self, request: Request, exc: Exception) -> Request | None:
        """``request`` raised ``exc``: queue the error reply; may return a follow-up request."""
        if isinstance(request, FeedIngest):
            return self._stream_failed(request.ingest, exc)
        if isinstance(request, CancelIngest):  # the sink could not cancel; the stream is gone all the same
            log.error("cancelling the audio stream of %s failed", self.id, exc_info=exc)
            return self.complete(request)
        if isinstance(request, RunCommand):
            rid, command = request.msg.get("id"), request.msg["type"]
        elif isinstance(request, OpenIngest):
            rid, command = request.request.request_id, "audio.start"
        else:
            rid, command = getattr(request, "request_id", None), "audio.end"
        if isinstance(exc, ProtocolError):
            reply = protocol.error(exc.code, exc.message, rid, command)
        elif isinstance(exc, QasrError):
            reply = protocol.error(ErrorCode.FAILED, str(exc), rid, command)
        else:  # a bug in a handler must not kill the connection
            log.error("handling %s from %s failed", command, self.id, exc_info=exc)
            reply = protocol.error(ErrorCode.INTERNAL, f"internal error ({type(exc).__name__}); see the daemon log", rid, command)
        self.queue_event(reply)
        return None

    def close(self) -> CancelIngest | None:
        """The connection is gone: nothing more is queued; the open stream (if any) must be cancelled."""
        self.closing = True
        ingest, self.ingest = self.ingest, None
        return CancelIngest(ingest) if ingest is not None else None
