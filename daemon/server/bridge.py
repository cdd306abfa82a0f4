"""Glue between the daemon and the WebSocket server (daemon/server/ws_server.py).

- ``ServerRunner`` runs an ``EventServer`` on its own asyncio loop in a thread, so the rest of the
  daemon stays synchronous (``publish``/``send_to`` are thread-safe).
- ``DaemonServerHandler`` answers the server: hello/health/metrics info, commands, and audio streams.
- ``IngestStream`` is one client's audio stream: VAD-delimited utterances (segment "vad") or the whole
  stream as one utterance ("none"). Its results go to that client only; ``end()`` returns once the
  stream's last final was handed to ``send_to``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from qasr import protocol
from qasr.protocol import ErrorCode, ProtocolError
from qasr.daemon.server.ws_server import BaseServerHandler, EventServer, IngestRequest
from qasr.errors import QasrError

if TYPE_CHECKING:
    from qasr.daemon.app import Daemon

log = logging.getLogger("qasr.server")

INGEST_END_TIMEOUT_S = 600.0


class ServerRunner:
    def __init__(self, server: EventServer) -> None:
        self.server = server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="websocket", daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout_s)
        except BaseException:
            self._stop_loop()
            raise

    def stop(self, timeout_s: float = 10.0) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout_s)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()


class DaemonServerHandler(BaseServerHandler):
    """Plain methods: the server runs them in a worker thread, so they may block."""

    COMMANDS = {"start": "start-utterance", "stop": "stop-utterance", "toggle": "toggle", "cancel": "cancel"}

    def __init__(self, daemon: "Daemon") -> None:
        self.daemon = daemon
        self._lock = threading.Lock()
        self._streams: dict[int, IngestStream] = {}  # utterance id -> the stream it belongs to

    def hello_info(self) -> dict:
        d = self.daemon
        return {"model": d.model_name, "state": d.state, "mode": d.settings.vad.mode,
                "language": d.settings.engine.language or None, "languages": d.languages()}

    def http_response(self, path: str, query: dict[str, list[str]]):
        from qasr.daemon.server import web_pages

        return web_pages.http_response(path, query)

    def health_info(self) -> dict:
        d = self.daemon
        return {"ok": d.state not in ("error", "stopping"), "state": d.state, "model": d.model_name,
                "input_device": d.input_device}

    def metrics_info(self) -> dict:
        status = self.daemon.status()
        return {"utterances": status["utterances"], "pending_utterances": status["pending_utterances"],
                "uptime_s": status["uptime_s"]}

    def on_command(self, client_id: str, msg: dict) -> dict | None:
        kind = msg["type"]
        try:
            if kind == "set":
                return self.daemon.set_engine(language=msg.get("language"), context=msg.get("context"))
            return self.daemon.command(self.COMMANDS[kind])
        except QasrError as exc:
            raise ProtocolError(ErrorCode.INVALID_STATE, str(exc)) from None

    def open_ingest(self, client_id: str, request: IngestRequest) -> "IngestStream":
        d = self.daemon
        if request.language:
            try:
                d.check_language(request.language)
            except QasrError as exc:
                raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc)) from None
        return IngestStream(self, client_id, request)

    # -- routing of pipeline events (decoder thread) --------------------------------------------
    def register(self, utterance_id: int, stream: "IngestStream") -> None:
        with self._lock:
            self._streams[utterance_id] = stream

    def route(self, event: dict[str, Any], protocol_event: dict[str, Any] | None) -> None:
        """An event of an ingested utterance: to its client; finals/cancels/errors close the utterance."""
        with self._lock:
            stream = self._streams.get(event["utterance_id"])
            if stream is not None and event["type"] in ("final", "cancelled", "error"):
                del self._streams[event["utterance_id"]]
        if stream is None:
            return
        server = self.daemon.server
        if protocol_event is not None and server is not None:
            server.send_to(stream.client_id, protocol_event)
        if event["type"] in ("final", "cancelled", "error"):
            stream.utterance_done(event["utterance_id"], event["type"] == "final")


class IngestStream:
    def __init__(self, handler: DaemonServerHandler, client_id: str, request: IngestRequest) -> None:
        self.handler = handler
        self.daemon = handler.daemon
        self.client_id = client_id
        self.source = f"ws:{client_id}"
        self.options = {"language": request.language, "context": request.context}
        self._cond = threading.Condition()
        self._open: set[int] = set()
        self._finals = 0
        self.utterance: int | None = None
        self.utterance_before: int | None = None  # the previous utterance: context when speech was cut
        self.segmenter = self.daemon.make_segmenter(mode="vad") if request.segment == "vad" else None
        if self.segmenter is None:
            self._begin(0.0)

    def _begin(self, audio_start: float, continued: bool = False) -> None:
        pipeline = self.daemon.pipeline
        options = dict(self.options, continues=self.utterance_before) if continued else self.options
        utterance_id = pipeline.begin(self.source, options, audio_start=audio_start)
        self.utterance_before = utterance_id
        with self._cond:
            self._open.add(utterance_id)
        self.handler.register(utterance_id, self)
        self.utterance = utterance_id

    def feed(self, samples: np.ndarray) -> None:
        if self.segmenter is None:
            if samples.size:
                self.daemon.pipeline.audio(self.utterance, samples)
            return
        self._handle(self.segmenter.process(samples))

    def _handle(self, events: list) -> None:
        pipeline = self.daemon.pipeline
        for event in events:
            kind = type(event).__name__
            if kind == "SpeechStart":
                self._begin(event.t_s, event.continued)
            elif kind == "SpeechAudio" and self.utterance is not None:
                pipeline.audio(self.utterance, event.pcm, event.t_s)
            elif kind == "SpeechPause" and self.utterance is not None:
                pipeline.pause(self.utterance)
            elif kind in ("SpeechEnd", "Cancelled") and self.utterance is not None:
                (pipeline.end if kind == "SpeechEnd" else pipeline.cancel)(self.utterance)
                self.utterance = None

    def end(self) -> dict | None:
        if self.segmenter is not None:
            self._handle(self.segmenter.finish())  # closes a speech segment still open
        if self.utterance is not None:
            self.daemon.pipeline.end(self.utterance)
            self.utterance = None
        with self._cond:
            if not self._cond.wait_for(lambda: not self._open, timeout=INGEST_END_TIMEOUT_S):
                raise QasrError("transcribing the stream took too long; see the daemon log")
            return {"utterances": self._finals}

    def cancel(self) -> None:
        if self.utterance is not None:
            self.daemon.pipeline.cancel(self.utterance)
            self.utterance = None

    def utterance_done(self, utterance_id: int, final: bool) -> None:
        with self._cond:
            self._open.discard(utterance_id)
            self._finals += int(final)
            self._cond.notify_all()


def protocol_event(event: dict[str, Any], sink: str | None = None) -> dict[str, Any] | None:
    """A pipeline event as a qasr.v1 server event (None for internal-only events)."""
    kind = event["type"]
    if kind == "final":
        timings = {"compute_ms": event["elapsed_s"] * 1000.0}
        # end of utterance -> final emitted; the engine's final (computed at the pause when prepared)
        for key in ("latency_ms", "final_ms"):
            if event.get(key) is not None:
                timings[key] = event[key]
        info = {"prepared": bool(event["prepared"])} if "prepared" in event else {}  # computed at a pause
        return protocol.final(
            str(event["utterance_id"]), event["seq"], event["text"], event["language"] or None,
            event["token_ids"], event["audio_start"], event["audio_end"], timings=timings, sink=sink,
            source=event["source"], **info,
        )
    if kind == "partial":
        return protocol.partial(
            str(event["utterance_id"]), event["seq"], event["committed"], event["tentative"],
            event["audio_start"], event["audio_end"], timings=event.get("timings") or None, source=event["source"],
        )
    if kind == "error":
        return protocol.error(ErrorCode.INTERNAL, event["message"])
    return None
