"""``/v1/realtime``: OpenAI Realtime transcription sessions on the WebSocket port (the I/O side).

The WebSocket server (``ws_server.py``) hands every upgrade of ``PATH`` to ``RealtimeEndpoint``: the
handshake is checked here (the daemon token as the API key, in ``Authorization: Bearer`` or the
``openai-insecure-api-key.<key>`` subprotocol browsers use; Origin and the client limit as for ``qasr.v1``;
refusals in OpenAI's error JSON), then ``serve`` runs the session: ``realtime_session.RealtimeSession``
makes every decision, this module carries them out.

The audio goes the way of every other source: a ``_SessionAudio`` (one per session, on the server's
worker threads) feeds an ``UtteranceFeed`` (with the ``Segmenter`` under ``server_vad``) of source
``realtime:<client>``, whose route hands the results to the session (``_SessionAudio._result``);
finals are journaled with their source and counted in ``/metrics`` (``finals_realtime``). Utterances are
foreground work, like dictation: a person is talking.

The session's audio reports what the VAD and the commits did (``began``/``stopped``) through the event loop before
the pipeline hears of it, so a session always learns of an item before any of its results.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np

from qasr.daemon.audio.segment_events import Cancelled, SegmentEvent, SpeechEnd, SpeechStart
from qasr.daemon.audio.segmenter import Segmenter
from qasr.daemon.server import http_routes, realtime_protocol as rt
from qasr.daemon.server.connection import Close
from qasr.daemon.server.openai_api import ApiError, resolve_language
from qasr.daemon.server.realtime_session import Clear, Commit, Feed, Reconfigure, RealtimeSession, with_defaults
from qasr.daemon.transcription.routes import REALTIME
from qasr.daemon.transcription.service import TranscriptionService
from qasr.daemon.transcription.utterance_feed import UtteranceFeed
from qasr.engine.audio_constants import SAMPLE_RATE
from qasr.errors import QasrError

log = logging.getLogger("qasr.realtime")

SOURCE_KIND = REALTIME
KEY_PROTOCOL = "openai-insecure-api-key."
BETA_PROTOCOL = "openai-beta.realtime-v1"


@dataclass(frozen=True)
class RealtimeOptions:
    max_item_s: float = 30.0  # without turn detection: the most audio one commit may hold (engine.max_utterance_s)


class RealtimeEndpoint:
    """``service``: the model's languages, segmenter options, a source and feed per session."""

    path = rt.PATH

    def __init__(self, service: TranscriptionService, options: RealtimeOptions) -> None:
        self.service = service
        self.options = options

    # -- handshake (ws_server's process_request) -------------------------------------------------
    def refuse(self, headers, query: dict[str, list[str]], token: str, token_path: str, origin_ok: bool,
               full: bool, upgrade: bool) -> tuple[int, bytes] | None:
        """None: accept the upgrade; else (status, OpenAI error JSON)."""
        if not upgrade:
            return _refusal(426, f"{rt.PATH} is a WebSocket endpoint (OpenAI Realtime API, transcription); "
                                 "connect with a WebSocket client", "upgrade_required")
        if not origin_ok:
            return _refusal(403, http_routes.origin_refused(headers.get('Origin')),
                            "origin_not_allowed")
        offered = offered_key(headers, query)
        if offered is None:
            return _refusal(401, f"missing API key: send the daemon's token (from {token_path}) as the API key "
                                 f"('Authorization: Bearer <token>' or the '{KEY_PROTOCOL}<token>' subprotocol)",
                            "invalid_api_key")
        if not hmac.compare_digest(offered.encode("utf-8"), token.encode("utf-8")):
            return _refusal(401, f"incorrect API key: use the daemon's token from {token_path}", "invalid_api_key")
        if full:
            return _refusal(503, "too many clients; close one or raise server.max_clients", "too_many_clients")
        return None

    @staticmethod
    def select_subprotocol(offered: list[str]) -> str | None:
        """Answer ``realtime`` when the browser offered it (never echo the key)."""
        return "realtime" if "realtime" in offered else None

    # -- one session -----------------------------------------------------------------------------
    async def serve(self, link: Any, ws: Any) -> None:
        """``link``: the server's side of this client (``send``, ``close``, ``run``, ``limits``, ``metrics``)."""
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        vad = self.service.segmenter_options(mode="vad")
        beta = BETA_PROTOCOL in _subprotocols(ws.request.headers) or \
            "realtime=v1" in (ws.request.headers.get("OpenAI-Beta") or "")
        config = with_defaults(rt.SessionConfig(model=_query(ws.request.path, "model") or "", beta=beta),
                               vad.preroll_ms, vad.hangover_ms)
        session = RealtimeSession(link.id, config, link.limits, time.monotonic(), self.options.max_item_s,
                                  self._language, link.metrics)

        def flush() -> None:
            for event in session.take():
                link.send(event)

        def post(name: str, *args) -> None:  # stream and route → the session, in the order they happen
            def apply() -> None:
                now = time.monotonic()
                if name == "result":
                    session.result(args[0], now)
                elif name == "began":
                    session.began(*args)
                else:
                    session.stopped(*args, now)
                flush()
            try:
                loop.call_soon_threadsafe(apply)
            except RuntimeError:  # the server's loop is closed (shutting down): nobody to tell
                pass

        stream = _SessionAudio(self, link.id, config, post)
        link.metrics.count("realtime_connections")
        log.info("realtime %s: connected (%s names)", link.id, "beta" if beta else "GA")
        flush()
        try:
            async for message in ws:
                if link.closing:
                    continue
                now = time.monotonic()
                request = session.receive(message, now) if isinstance(message, str) else session.binary(now)
                flush()
                stream = await self._carry_out(link, session, stream, request)
                flush()
        except ConnectionClosed:
            pass
        finally:
            try:
                await link.run(stream.close)
            except Exception:  # the server is stopping: its worker threads are gone
                stream.close()
            log.info("realtime %s: closed", link.id)

    async def _carry_out(self, link: Any, session: RealtimeSession, stream: "_SessionAudio",
                         request) -> "_SessionAudio":
        if request is None:
            return stream
        if isinstance(request, Close):
            link.close(request.code, request.reason)
            return stream
        try:
            if isinstance(request, Feed):
                if request.delay_s > 0:
                    await asyncio.sleep(request.delay_s)
                await link.run(stream.feed, request.pcm)
            elif isinstance(request, Commit):
                await link.run(stream.commit, request.tail)
            elif isinstance(request, Clear):
                await link.run(stream.clear)
                session.cleared()
            elif isinstance(request, Reconfigure):
                if request.rebuild:
                    await link.run(stream.close)
                    return _SessionAudio(self, link.id, request.config, stream.post, stream.position)
                stream.configure(request.config)
        except Exception as exc:  # the pipeline refused: the session goes on
            if not isinstance(exc, QasrError):
                log.error("realtime %s: %s failed", link.id, type(request).__name__, exc_info=exc)
            session.server_error(str(exc) if isinstance(exc, QasrError) else
                                 f"internal error ({type(exc).__name__}); see the daemon log")
        return stream

    def _language(self, code: str) -> str:
        try:
            return resolve_language(code, self.service.languages())
        except ApiError as exc:
            raise ValueError(exc.message) from None


class _SessionAudio:
    """The session's audio into the pipeline (server worker threads, one call at a time).

    ``server_vad``: one ``Segmenter`` over the whole stream cuts it into utterances. Without: the first
    audio after a commit begins an utterance, the commit ends it."""

    def __init__(self, endpoint: RealtimeEndpoint, client_id: str, config: rt.SessionConfig,
                 post: Callable[..., None], offset: int = 0) -> None:
        self.endpoint = endpoint
        self.post = post
        self.source = endpoint.service.source(REALTIME, f"{SOURCE_KIND}:{client_id}", self._result)
        self.language, self.context = config.language, config.prompt or None
        self.position = offset  # 16 kHz samples of the session before this stream, then fed
        self._start = offset  # where the open utterance starts
        self.segmenter: Segmenter | None = None
        self._feed: UtteranceFeed | None = None
        self._uids: dict[int, str] = {}  # segmenter utterance id -> pipeline utterance id
        self._segment = 0  # the segmenter utterance being begun
        self._offset_s = offset / SAMPLE_RATE  # the segmenter's clock starts here
        if config.turn_detection is not None:
            td = config.turn_detection
            options = replace(endpoint.service.segmenter_options(mode="vad"), preroll_ms=td.prefix_padding_ms,
                              hangover_ms=td.silence_duration_ms)
            self.segmenter = Segmenter(options)
            self._feed = self._new_feed(self.segmenter)

    def _new_feed(self, segmenter: Segmenter | None) -> UtteranceFeed:
        return self.endpoint.service.feed(self.source, segmenter, language=self.language, context=self.context,
                                          on_begin=self._began)

    def configure(self, config: rt.SessionConfig) -> None:
        """Language and prompt for the utterances that begin from now on."""
        self.language, self.context = config.language, config.prompt or None
        if self.segmenter is not None and self._feed is not None:
            self._feed.language, self._feed.context = self.language, self.context

    def _result(self, utterance_id: str, message: dict | None, outcome: str | None) -> None:
        """Its route's thread: a result of one of its utterances, to the session."""
        if message is not None:
            self.post("result", message)

    def _began(self, utterance_id: str) -> None:
        if self.segmenter is not None:
            self._uids[self._segment] = utterance_id
        self.post("began", utterance_id, self._start / SAMPLE_RATE)

    # -- audio -----------------------------------------------------------------------------------
    def feed(self, pcm: np.ndarray) -> None:
        if self.segmenter is not None:
            self.position += pcm.size
            self._handle(self.segmenter.process(pcm))
            return
        if self._feed is None:
            self._start = self.position
            self._feed = self._new_feed(None)  # begins the utterance
        self.position += pcm.size
        self._feed.process(pcm)

    def commit(self, tail: np.ndarray) -> None:
        if tail.size:
            self.feed(tail)
        if self.segmenter is not None:
            self._handle(self.segmenter.stop_utterance())
        elif self._feed is not None:
            feed, self._feed = self._feed, None
            self.post("stopped", feed.current, self.position / SAMPLE_RATE, "commit")
            feed.finish()

    def clear(self) -> None:
        if self.segmenter is not None:
            self._handle(self.segmenter.cancel())
        elif self._feed is not None:
            feed, self._feed = self._feed, None
            self.post("stopped", feed.current, self.position / SAMPLE_RATE, "cancel")
            feed.cancel()

    def close(self) -> None:
        """The connection is gone (or the stream is replaced): the open utterance is dropped; items already
        committed still finish."""
        if self._feed is not None:
            self._feed.cancel()
            self._feed = None

    def _handle(self, events: list[SegmentEvent]) -> None:
        for event in events:
            if isinstance(event, SpeechStart):
                self._segment = event.utterance_id
                self._start = int(round((self._offset_s + event.t_s) * SAMPLE_RATE))
            elif isinstance(event, (SpeechEnd, Cancelled)):
                uid = self._uids.pop(event.utterance_id, None)
                if uid is not None:
                    if isinstance(event, SpeechEnd):
                        reason = "commit" if event.reason == "stop" else event.reason
                        self.post("stopped", uid, self._offset_s + event.t_s, reason)
                    else:
                        self.post("stopped", uid, self._offset_s + self.segmenter.t_s,
                                  "too_short" if event.reason == "too_short" else "cancel")
            self._feed.handle([event])


def offered_key(headers, query: dict[str, list[str]]) -> str | None:
    """The API key: ``Authorization: Bearer``, the ``openai-insecure-api-key.`` subprotocol, or ``?token=``."""
    auth = headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
    for name in _subprotocols(headers):
        if name.startswith(KEY_PROTOCOL):
            return name[len(KEY_PROTOCOL):]
    if query.get("token"):
        return query["token"][0]
    return None


def _subprotocols(headers) -> list[str]:
    values = headers.get_all("Sec-WebSocket-Protocol") if hasattr(headers, "get_all") else \
        [headers.get("Sec-WebSocket-Protocol") or ""]
    return [p.strip() for value in values for p in value.split(",") if p.strip()]


def _query(path: str, name: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get(name)
    return values[0][:256] if values else None


def _refusal(status: int, message: str, code: str) -> tuple[int, bytes]:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return status, (json.dumps(body, ensure_ascii=False) + "\n").encode("utf-8")
