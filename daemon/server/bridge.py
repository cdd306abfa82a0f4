"""Glue between the daemon and the WebSocket server (daemon/server/ws_server.py).

- ``ServerRunner`` runs an ``EventServer`` on its own asyncio loop in a thread, so the rest of the
  daemon stays synchronous (``publish``/``send_to`` are thread-safe).
- ``DaemonServerHandler`` answers the server: hello/health/metrics facts, commands (the daemon's
  ``CommandHandler``), and audio streams.
- ``ClientAudio`` is one client's audio (``audio.start`` … ``audio.end``): an ``AudioJob`` (source kind
  ``stream``) fed through the same ``UtteranceFeed`` as the microphone: VAD-delimited utterances (segment
  "vad") or all of it as one utterance ("none"). Its results go to that client only; ``end()`` returns
  once its last final was sent.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable

import numpy as np

from qasr.daemon import status
from qasr.daemon.server import web_pages
from qasr.daemon.server.ws_server import BaseServerHandler, EventServer, IngestRequest
from qasr.daemon.transcription.audio_jobs import AudioJob
from qasr.daemon.transcription.routes import STREAM
from qasr.daemon.transcription.service import TranscriptionService
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

    ``daemon``: settings, state, commands, status facts; ``service``: the transcription service (streams);
    ``openai`` / ``realtime``: the OpenAI endpoints, when on; ``send_to(client_id, message)``: the server's."""

    def __init__(self, daemon: Any, service: TranscriptionService) -> None:
        self.daemon = daemon
        self.service = service
        self.openai: Any = None
        self.realtime: Any = None
        self.send_to: Callable[[str, dict], None] = lambda client_id, message: None

    def hello_info(self) -> dict:
        return status.hello_info(self.daemon)

    def http_response(self, path: str, query: dict[str, list[str]]):
        return web_pages.http_response(path, query)

    def http_app(self):
        """Other HTTP requests on the port (``POST /v1/audio/transcriptions``): the OpenAI endpoint, if on."""
        return self.openai

    def realtime_app(self):
        """WebSockets on ``/v1/realtime`` (OpenAI Realtime transcription), if the OpenAI endpoint is on."""
        return self.realtime

    def health_info(self) -> dict:
        return status.health_info(self.daemon)

    def metrics_info(self) -> dict:
        return status.metrics_info(self.daemon)

    def on_command(self, client_id: str, msg: dict) -> dict | None:
        try:
            return self.daemon.commands.websocket(msg)
        except QasrError as exc:
            raise ProtocolError(ErrorCode.INVALID_STATE, str(exc)) from None

    def open_ingest(self, client_id: str, request: IngestRequest) -> "ClientAudio":
        if request.language:
            try:
                self.service.check_language(request.language)
            except QasrError as exc:
                raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc)) from None
        job = AudioJob(self.service, STREAM, f"ws:{client_id}", language=request.language, context=request.context,
                       on_message=lambda message: self.send_to(client_id, message))
        job.open_audio(segmenter=self.service.segmenter("vad") if request.segment == "vad" else None)
        return ClientAudio(job)


class ClientAudio:
    """A client's ``audio.start`` … ``audio.end`` as the server's ingest sink: its ``AudioJob``, whose results
    go to that client only; ``end()`` returns once the stream's last final was sent."""

    def __init__(self, job: AudioJob) -> None:
        self.job = job

    def feed(self, samples: np.ndarray) -> None:
        self.job.feed(samples)

    def end(self) -> dict | None:
        self.job.finish()  # closes a speech segment still open
        result = self.job.wait(INGEST_END_TIMEOUT_S)
        if result is None:
            raise QasrError("transcribing the stream took too long; see the daemon log")
        return {"utterances": len(result.finals)}

    def cancel(self) -> None:
        self.job.cancel()
