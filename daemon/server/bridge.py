"""Glue between the daemon and the WebSocket server (daemon/server/ws_server.py).

- ``ServerRunner`` runs an ``EventServer`` on its own asyncio loop in a thread, so the rest of the
  daemon stays synchronous (``publish``/``send_to`` are thread-safe).
- ``DaemonServerHandler`` answers the server: hello/health/metrics facts, commands (the daemon's
  ``CommandHandler``), and audio streams; it is also the result router's ``IngestRoutes``.
- ``IngestStream`` is one client's audio stream, fed through the same ``UtteranceFeed`` as the
  microphone: VAD-delimited utterances (segment "vad") or the whole stream as one utterance ("none").
  Its results go to that client only; ``end()`` returns once the stream's last final was sent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import numpy as np

from qasr.daemon import status
from qasr.daemon.audio.segmenter import Segmenter
from qasr.daemon.server import web_pages
from qasr.daemon.server.ws_server import BaseServerHandler, EventServer, IngestRequest
from qasr.daemon.transcription.utterance_feed import UtteranceFeed
from qasr.daemon.transcription.utterance_targets import UtteranceTargets
from qasr.errors import QasrError
from qasr.protocol import ErrorCode, ProtocolError

log = logging.getLogger("qasr.server")

INGEST_END_TIMEOUT_S = 600.0


class ServerRunner:
    def __init__(self, server: EventServer, name: str = "websocket") -> None:
        self.server = server  # anything with start()/stop() coroutines (the Wyoming server too)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)

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
    """Plain methods: the server runs them in a worker thread, so they may block.

    ``daemon``: settings, state, commands; ``parts``: its Components (pipeline, server, languages)."""

    def __init__(self, daemon: Any, parts: Any) -> None:
        self.daemon = daemon
        self.parts = parts
        self._streams: UtteranceTargets[IngestStream] = UtteranceTargets()  # utterance id -> its stream

    def hello_info(self) -> dict:
        return status.hello_info(self.daemon)

    def http_response(self, path: str, query: dict[str, list[str]]):
        return web_pages.http_response(path, query)

    def http_app(self):
        """Other HTTP requests on the port (``POST /v1/audio/transcriptions``): the OpenAI endpoint, if on."""
        return self.parts.openai

    def realtime_app(self):
        """WebSockets on ``/v1/realtime`` (OpenAI Realtime transcription), if the OpenAI endpoint is on."""
        return self.parts.realtime

    def health_info(self) -> dict:
        return status.health_info(self.daemon)

    def metrics_info(self) -> dict:
        return status.metrics_info(self.daemon)

    def on_command(self, client_id: str, msg: dict) -> dict | None:
        try:
            return self.daemon.commands.websocket(msg)
        except QasrError as exc:
            raise ProtocolError(ErrorCode.INVALID_STATE, str(exc)) from None

    def open_ingest(self, client_id: str, request: IngestRequest) -> "IngestStream":
        if request.language:
            try:
                self.parts.check_language(request.language)
            except QasrError as exc:
                raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc)) from None
        segmenter = Segmenter(self.parts.segmenter_options(mode="vad")) if request.segment == "vad" else None
        return IngestStream(self, client_id, request, segmenter)

    # -- IngestRoutes: results of streamed audio (decoder thread) --------------------------------
    def register(self, utterance_id: str, stream: "IngestStream") -> None:
        self._streams.register(utterance_id, stream)

    def deliver(self, utterance_id: str, message: dict | None, outcome: str | None) -> None:
        """An event of an ingested utterance: to its client; an outcome closes the utterance."""
        stream = self._streams.lookup(utterance_id, outcome)
        if stream is None:
            return
        server = self.parts.server
        if message is not None and server is not None:
            server.send_to(stream.client_id, message)
        if outcome is not None:
            stream.utterance_done(utterance_id, outcome == "final")


class IngestStream:
    def __init__(self, handler: DaemonServerHandler, client_id: str, request: IngestRequest,
                 segmenter: Segmenter | None) -> None:
        self.handler = handler
        self.client_id = client_id
        self._cond = threading.Condition()
        self._open: set[str] = set()
        self._finals = 0
        self._feed = UtteranceFeed(handler.parts.pipeline, f"ws:{client_id}", segmenter, language=request.language,
                                  context=request.context, on_begin=self._began)

    def _began(self, utterance_id: str) -> None:
        with self._cond:
            self._open.add(utterance_id)
        self.handler.register(utterance_id, self)

    def feed(self, samples: np.ndarray) -> None:
        self._feed.process(samples)

    def end(self) -> dict | None:
        self._feed.finish()  # closes a speech segment still open
        with self._cond:
            if not self._cond.wait_for(lambda: not self._open, timeout=INGEST_END_TIMEOUT_S):
                raise QasrError("transcribing the stream took too long; see the daemon log")
            return {"utterances": self._finals}

    def cancel(self) -> None:
        self._feed.cancel()

    def utterance_done(self, utterance_id: str, final: bool) -> None:
        with self._cond:
            self._open.discard(utterance_id)
            self._finals += int(final)
            self._cond.notify_all()
