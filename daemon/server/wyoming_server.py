"""Wyoming server (Home Assistant's voice pipeline): ``describe`` → ``info``; ``transcribe``,
``audio-start``/``audio-chunk``/``audio-stop`` → ``transcript``, with ``transcript-start``/``-chunk``/``-stop``
streamed from qasr's partials while the audio arrives.

Frames are read and validated by ``wyoming_frames.FrameReader`` and written with the ``wyoming``
package. The audio of one ``audio-start`` … ``audio-stop`` is one utterance through the same
``AudioJob`` / ``UtteranceFeed`` / pipeline as every other source (a foreground utterance: a spoken
command is live, like dictation). A client that sends a bad frame, audio before ``audio-start``, a rate,
width or channel count the daemon cannot take, more events than ``events_per_second``, or nothing for
``idle_timeout_s`` (while no transcription is pending) gets one log line and its connection closed.

Wyoming has no authentication: the server listens on loopback unless ``allow_remote`` is set (then with a
warning in the log).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioStart
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import AsrModel, AsrProgram, Attribution, Info

from qasr import __version__
from qasr.daemon.server.connection import TokenBucket
from qasr.daemon.server.metrics import Metrics
from qasr.daemon.server.append_only import AppendOnlyText
from qasr.daemon.server.openai_api import ApiError, resolve_language
from qasr.daemon.server.wyoming_frames import FrameError, FrameReader
from qasr.daemon.transcription.audio_jobs import AudioJob
from qasr.daemon.transcription.routes import WYOMING
from qasr.daemon.transcription.service import TranscriptionService
from qasr.engine.audio_constants import SAMPLE_RATE
from qasr.engine.languages import code_of_language
from qasr.errors import QasrError
from qasr.protocol import AudioFormat, PcmDecoder

log = logging.getLogger("qasr.wyoming")

SOURCE_KIND = "wyoming"
READ_BYTES = 65536
TICK_S = 1.0  # how often a silent connection's idle time is checked
MAX_RATE = 192000


@dataclass(frozen=True)
class WyomingOptions:
    uri: str = "tcp://127.0.0.1:10300"
    allow_remote: bool = False
    max_clients: int = 8
    max_event_bytes: int = 1 << 20
    max_audio_s: float = 300.0
    idle_timeout_s: float = 30.0
    events_per_second: float = 500.0
    streaming: bool = True


def parse_uri(uri: str, allow_remote: bool) -> tuple[str, int]:
    parts = urlsplit(uri)
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
        raise QasrError(f"wyoming.uri = {uri!r}: write it as tcp://HOST:PORT (e.g. tcp://127.0.0.1:10300)")
    host = parts.hostname
    if not _loopback(host) and not allow_remote:
        raise QasrError(f"wyoming.uri = {uri!r} is reachable from other machines and Wyoming has no "
                        "authentication; use 127.0.0.1, or set wyoming.allow_remote = true if you mean it")
    return host, parts.port


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def language_codes(languages: list[str]) -> list[str]:
    """The model's language names as the codes Home Assistant uses (``English`` → ``en``)."""
    codes = []
    for name in languages:
        code = code_of_language(name)
        if code is not None and code not in codes:
            codes.append(code)
    return codes


class Closing(Exception):
    """Ends a connection with one log line."""


class WyomingServer:
    """``service``: the model, its languages, a source and feed per request."""

    def __init__(self, service: TranscriptionService, options: WyomingOptions, metrics: Metrics | None = None) -> None:
        self.service = service
        self.options = options
        self.metrics = metrics or Metrics()
        self.host, self.requested_port = parse_uri(options.uri, options.allow_remote)
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[_Session] = set()
        self._ids = itertools.count(1)
        self._executor = ThreadPoolExecutor(max_workers=max(2, options.max_clients), thread_name_prefix="wyoming")

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.requested_port)
        except OSError as exc:
            raise QasrError(f"wyoming: cannot listen on {self.host}:{self.requested_port}: {exc.strerror}; choose "
                            "another wyoming.uri or stop the program using it") from exc
        self.port = self._server.sockets[0].getsockname()[1]
        if not _loopback(self.host):
            log.warning("wyoming: listening on %s:%d without authentication: anyone who reaches it can use the "
                        "model (wyoming.allow_remote = true)", self.host, self.port)
        log.info("wyoming: serving tcp://%s:%d", self.host, self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for session in list(self._sessions):
            session.abort()
        await server.wait_closed()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def info(self) -> Info:
        attribution = Attribution(name="Qwen3-ASR (Alibaba Qwen); qasr", url="https://github.com/QwenLM/Qwen3-ASR")
        model = AsrModel(name=self.service.model_name or "qasr", attribution=attribution, installed=True,
                         description="Qwen3-ASR served by qasr", version=None,
                         languages=language_codes(self.service.languages()))
        program = AsrProgram(name="qasr", attribution=attribution, installed=True, description="qasr dictation daemon",
                             version=__version__, models=[model], supports_transcript_streaming=self.options.streaming)
        return Info(asr=[program])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        name = f"{SOURCE_KIND}:{next(self._ids)}"
        if len(self._sessions) >= self.options.max_clients:
            log.info("wyoming %s (%s): refused, %d clients connected (wyoming.max_clients)", name, peer,
                     len(self._sessions))
            self.metrics.count("wyoming_rejected_full")
            writer.close()
            return
        session = _Session(self, name, reader, writer)
        self._sessions.add(session)
        self.metrics.count("wyoming_connections")
        try:
            await session.run()
        finally:
            self._sessions.discard(session)


class _Session:
    def __init__(self, server: WyomingServer, name: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.options = server.options
        self.name = name
        self.reader = reader
        self.writer = writer
        self.frames = FrameReader(self.options.max_event_bytes)
        self.bucket = TokenBucket(self.options.events_per_second, 2 * self.options.events_per_second, time.monotonic())
        self.loop = asyncio.get_running_loop()
        self.language: str | None = None
        self.context: str | None = None
        self.job: AudioJob | None = None  # the utterance being streamed or transcribed
        self.decoder: PcmDecoder | None = None
        self.format: tuple[int, int, int] | None = None  # audio-start's rate, width, channels
        self.pending = 0  # utterances whose transcript is still to come
        self.sent = AppendOnlyText()  # transcript-chunk text sent for the current utterance
        self.stopped_at = 0.0
        self.outbox: asyncio.Queue = asyncio.Queue()
        self.last_activity = time.monotonic()

    def abort(self) -> None:
        self.writer.transport.abort()

    async def run(self) -> None:
        sender = asyncio.ensure_future(self._send_loop())
        reason = ""
        try:
            while True:
                try:
                    data = await asyncio.wait_for(self.reader.read(READ_BYTES), TICK_S)
                except asyncio.TimeoutError:
                    idle = time.monotonic() - self.last_activity
                    if not self.pending and idle > self.options.idle_timeout_s:
                        raise Closing(f"silent for {idle:.0f} s (wyoming.idle_timeout_s)") from None
                    continue
                if not data:
                    reason = self._gone("")
                    break
                self.last_activity = time.monotonic()
                for event in self.frames.feed(data):
                    if not self.bucket.take(time.monotonic()):
                        raise Closing(f"more than {self.options.events_per_second:g} events a second "
                                      "(wyoming.events_per_second)")
                    await self._handle(event)
        except (FrameError, Closing) as exc:
            reason = str(exc)
            self.server.metrics.count("wyoming_errors")
        except (ConnectionError, asyncio.IncompleteReadError):
            reason = self._gone("connection lost")
        except Exception:
            log.exception("wyoming %s: failed", self.name)
            reason = "internal error"
        finally:
            if reason:
                log.info("wyoming %s: %s; connection closed", self.name, reason)
            self._drop_stream()
            await self.outbox.put(None)
            try:
                await asyncio.wait_for(sender, 5.0)
            except (asyncio.TimeoutError, Exception):
                sender.cancel()
            self.writer.close()

    def _gone(self, otherwise: str) -> str:
        """The client closed (or reset) the connection: worth a line only if it left an utterance open."""
        if self.job is not None and self.job.audio_open:
            return "went away mid-audio; the utterance was dropped"
        return otherwise

    # -- events from the client ----------------------------------------------------------------
    async def _handle(self, event: Event) -> None:
        kind = event.type
        if kind == "describe":
            self._send(self.server.info().event())
        elif kind == "ping":
            self._send(Event(type="pong", data={"text": event.data.get("text")}))
        elif kind == "transcribe":
            self._transcribe(Transcribe.from_event(event))
        elif kind == "audio-start":
            await self._audio_start(event)
        elif kind == "audio-chunk":
            await self._audio_chunk(event)
        elif kind == "audio-stop":
            await self._audio_stop()
        else:
            log.debug("wyoming %s: ignoring %s", self.name, kind)

    def _transcribe(self, request: Transcribe) -> None:
        self.language = None
        if request.language:
            try:
                self.language = resolve_language(request.language, self.server.service.languages())
            except ApiError as exc:
                log.info("wyoming %s: %s", self.name, exc.message)
                self._send(Error(text=exc.message, code="unsupported_language").event())
        terms = [*(request.transcript_names or []), *(request.transcript_terms or [])]
        words = [str(t) for t in terms if isinstance(t, (str, int, float))]
        self.context = ", ".join(words) if words else None

    async def _audio_start(self, event: Event) -> None:
        fmt = self._format(event, "audio-start")
        if self.job is not None and self.job.audio_open:
            log.info("wyoming %s: audio-start inside an utterance: the open one is dropped", self.name)
            self._drop_stream()
        self.decoder = PcmDecoder(AudioFormat("s16le", fmt[0], fmt[2]))
        self.format = fmt
        self.sent = AppendOnlyText()
        self.job = AudioJob(self.server.service, WYOMING, self.name, language=self.language,
                            context=self.context, partials=self.options.streaming,
                            on_message=lambda m: self.loop.call_soon_threadsafe(self._result, m))
        await self.loop.run_in_executor(self.server._executor, self.job.open_audio)
        self.pending += 1
        if self.options.streaming:
            self._send(TranscriptStart(language=self._code(self.language)).event())

    async def _audio_chunk(self, event: Event) -> None:
        if self.job is None or not self.job.audio_open or self.decoder is None:
            raise Closing("audio-chunk before audio-start")
        if any(key in event.data for key in ("rate", "width", "channels")):
            if self._format(event, "audio-chunk") != self.format:
                raise Closing(f"audio-chunk format {self._format(event, 'audio-chunk')} differs from audio-start's "
                              f"{self.format}")
        pcm = self.decoder.feed(event.payload or b"")
        if self.job.fed_s + pcm.size / SAMPLE_RATE > self.options.max_audio_s:
            raise Closing(f"more than {self.options.max_audio_s:.0f} s of audio in one utterance (wyoming.max_audio_s)")
        if pcm.size:
            await self.loop.run_in_executor(self.server._executor, self.job.feed, pcm)

    async def _audio_stop(self) -> None:
        if self.job is None or not self.job.audio_open or self.decoder is None:
            raise Closing("audio-stop before audio-start")
        tail = self.decoder.flush()
        job = self.job
        if tail.size:
            await self.loop.run_in_executor(self.server._executor, job.feed, tail)
        self.stopped_at = time.monotonic()
        await self.loop.run_in_executor(self.server._executor, job.finish)
        self.decoder = None

    def _format(self, event: Event, kind: str) -> tuple[int, int, int]:
        try:
            chunk = AudioStart.from_event(event) if kind == "audio-start" else AudioChunk.from_event(event)
            rate, width, channels = int(chunk.rate), int(chunk.width), int(chunk.channels)
        except (KeyError, TypeError, ValueError):
            raise Closing(f"{kind} without a valid rate/width/channels") from None
        if not 0 < rate <= MAX_RATE or width <= 0 or channels <= 0:
            raise Closing(f"{kind} with rate {rate}, width {width}, channels {channels}: each must be above 0 "
                          f"(rate at most {MAX_RATE})")
        if width != 2 or channels > 8:
            raise Closing(f"{kind}: only 16-bit PCM (width 2) with up to 8 channels is taken, not width {width}, "
                          f"channels {channels}")
        return rate, width, channels

    def _drop_stream(self) -> None:
        if self.job is not None and self.job.audio_open:
            self.job.cancel()
            self.pending = max(0, self.pending - 1)
        self.decoder = None

    # -- results (on the loop, from the decoder thread) ------------------------------------------
    def _result(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "partial" and self.options.streaming:
            chunk = self.sent.delta(message.get("committed", ""))
            if chunk:
                self._send(TranscriptChunk(text=chunk).event())
        elif kind == "final":
            text, language = message.get("text", ""), self._code(message.get("language"))
            if self.options.streaming:
                chunk = self.sent.delta(text)
                if chunk:
                    self._send(TranscriptChunk(text=chunk).event())
                self._send(TranscriptStop().event())
            self._send(Transcript(text=text, language=language).event())
            self.pending = max(0, self.pending - 1)
            self.last_activity = time.monotonic()
            self.server.metrics.count("wyoming_transcripts")
            if self.stopped_at:
                self.server.metrics.observe("wyoming_stop_to_transcript_ms", (time.monotonic() - self.stopped_at) * 1000)
            log.info("wyoming %s: transcript (%s ms after audio-stop): %s", self.name,
                     round((time.monotonic() - self.stopped_at) * 1000) if self.stopped_at else "?", text)
        elif kind == "error":
            self._send(Error(text=message.get("message", "transcription failed"), code="transcription_failed").event())
            self.pending = max(0, self.pending - 1)

    def _code(self, language: str | None) -> str | None:
        if not language:
            return None
        first = language.split(",")[0]
        return code_of_language(first) or first

    def _send(self, event: Event) -> None:
        self.outbox.put_nowait(event)

    async def _send_loop(self) -> None:
        while True:
            event = await self.outbox.get()
            if event is None:
                return
            try:
                await async_write_event(event, self.writer)
            except (ConnectionError, RuntimeError):
                return
