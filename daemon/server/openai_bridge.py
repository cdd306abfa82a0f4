"""The OpenAI endpoint's I/O: HTTP requests (``http_front``) → uploads decoded → an ``AudioJob`` in the
pipeline (background priority: dictation first) → the response, whole or as server-sent events.

Requests and responses are ``openai_api`` (sans-I/O); this module owns the limits that need state (jobs
running at once, requests per minute), the decoding of uploads (PyAV, in a worker thread) and the job.

``timestamp_granularities[]=word``: whenever an aligner bundle is installed (the request asks for words
explicitly, so ``[output] word_timestamps`` need not be on), each piece's final text is aligned with the
piece's audio on the daemon's aligner thread, in its background lane (dictation finals first), and the
words' times are offset by the piece's start in the file.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import numpy as np

from qasr.daemon.server import http_routes, openai_api as api
from qasr.daemon.server.append_only import AppendOnlyText
from qasr.daemon.server.connection import TokenBucket
from qasr.daemon.server.http_front import FrontOptions, Guard, HttpRequest, HttpResponse
from qasr.daemon.server.metrics import Metrics
from qasr.daemon.transcription.audio_jobs import AudioJob, JobResult
from qasr.daemon.transcription.routes import OPENAI
from qasr.daemon.transcription.service import TranscriptionService
from qasr.engine.audio_constants import SAMPLE_RATE
from qasr.engine.transcribe import join_texts, merge_languages, normalize_waveform
from qasr.errors import QasrError

log = logging.getLogger("qasr.openai")

SOURCE_KIND = "openai"


@dataclass(frozen=True)
class OpenAIOptions:
    enabled: bool = True
    max_upload_bytes: int = 25 << 20
    max_concurrent_jobs: int = 2
    requests_per_minute: float = 120.0
    max_audio_s: float = 3600.0
    job_timeout_s: float = 3600.0


class OpenAIEndpoint:
    """``HttpApp`` for ``/v1/...``. ``service``: the model, its languages, jobs' sources, the words aligner."""

    def __init__(self, service: TranscriptionService, options: OpenAIOptions) -> None:
        self.service = service
        self.options = options
        self.metrics = Metrics()  # replaced by the server's own in bind()
        self.guard: Guard | None = None
        self._active = 0
        self._ids = itertools.count(1)
        self._bucket = TokenBucket(options.requests_per_minute / 60.0, max(1.0, options.requests_per_minute / 6),
                                   time.monotonic())
        self._executor = ThreadPoolExecutor(max_workers=options.max_concurrent_jobs + 1, thread_name_prefix="openai")
        self._created = int(time.time())
        self.front_options = FrontOptions(max_body_bytes=options.max_upload_bytes)

    def bind(self, guard: Guard, metrics: Metrics) -> None:
        self.guard, self.metrics = guard, metrics

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- HttpApp -------------------------------------------------------------------------------
    def too_large(self, limit: int) -> HttpResponse:
        return self._error(api.ApiError(413, f"the upload is larger than {limit} bytes (openai.max_upload_bytes); "
                                             "send a shorter or more compressed file", code="file_too_large"))

    def check_head(self, request: HttpRequest) -> HttpResponse | None:
        try:
            self._route(request)
            self._check_origin(request)
            api.check_auth(request.header("authorization"), self.guard.token, self.guard.token_path)
            if request.method == "POST" and request.path == api.TRANSCRIPTIONS_PATH:
                self._check_capacity()
                if not self._bucket.take(time.monotonic()):
                    raise api.ApiError(429, f"more than {self.options.requests_per_minute:g} requests a minute "
                                            "(openai.requests_per_minute); retry later", code="rate_limit_exceeded",
                                       headers={"Retry-After": "1"})
                content_type = request.header("content-type", "") or ""
                if not content_type.lower().startswith("multipart/form-data"):
                    raise api.ApiError(415, "send the request as multipart/form-data with the audio in the 'file' "
                                            f"field (got {content_type or 'no Content-Type'})",
                                       code="unsupported_media_type")
        except api.ApiError as exc:
            return self._error(exc)
        return None

    async def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            if request.method == "GET":
                return self._models(request.path)
            return await self._transcribe(request)
        except api.ApiError as exc:
            return self._error(exc)

    # -- checks --------------------------------------------------------------------------------
    def _route(self, request: HttpRequest) -> None:
        path = request.path.rstrip("/") or "/"
        if path == api.MODELS_PATH or path.startswith(api.MODELS_PATH + "/"):
            allowed = "GET"
        elif path == api.TRANSCRIPTIONS_PATH:
            allowed = "POST"
        elif path == "/v1/audio/translations":
            raise api.ApiError(404, "qasr transcribes only; /v1/audio/translations is not available",
                               code="unknown_url")
        else:
            raise api.ApiError(404, f"unknown URL {request.method} {request.path}; qasr serves "
                                    f"POST {api.TRANSCRIPTIONS_PATH} and GET {api.MODELS_PATH}", code="unknown_url")
        if request.method != allowed:
            raise api.ApiError(405, f"{request.path} takes {allowed}, not {request.method}",
                               headers={"Allow": allowed})

    def _check_origin(self, request: HttpRequest) -> None:
        origin = request.header("origin")
        if not http_routes.origin_allowed(origin, self.guard.origins):
            self.metrics.count("rejected_origin")
            raise api.ApiError(403, http_routes.origin_refused(origin))

    def _check_capacity(self) -> None:
        if self._active >= self.options.max_concurrent_jobs:
            raise api.ApiError(429, f"{self._active} transcriptions are running (openai.max_concurrent_jobs); "
                                    "retry later", code="too_many_jobs", headers={"Retry-After": "2"})

    def _error(self, exc: api.ApiError) -> HttpResponse:
        self.metrics.count(f"openai_errors_{exc.status}")
        if exc.status >= 500:
            log.error("openai: %s", exc.message)
        else:
            log.info("openai: %s %s", exc.status, exc.message)
        return exc.response()

    # -- GET /v1/models ------------------------------------------------------------------------
    def _models(self, path: str) -> HttpResponse:
        name = self.service.model_name or "qasr"
        wanted = path.rstrip("/")[len(api.MODELS_PATH) + 1:]
        if not wanted:
            return api.json_response(200, api.models_list(name, self._created))
        if wanted != name:
            raise api.ApiError(404, f"no model {wanted!r}; this daemon serves {name!r}", code="model_not_found")
        return api.json_response(200, api.model_entry(name, self._created))

    # -- POST /v1/audio/transcriptions ---------------------------------------------------------
    async def _transcribe(self, request: HttpRequest) -> HttpResponse:
        self._check_capacity()
        self._active += 1
        try:
            parsed = api.parse_transcription(request.header("content-type"), request.body,
                                             self.service.languages(), aligner=True)
            aligner = self._word_aligner() if parsed.words else None
            loop = asyncio.get_running_loop()
            audio = await loop.run_in_executor(self._executor, decode_upload, parsed.file.filename, parsed.file.data,
                                               self.options.max_audio_s)
            duration = audio.size / SAMPLE_RATE
            if duration > self.options.max_audio_s:
                raise api.ApiError(400, f"the audio is {duration:.0f} s long, over openai.max_audio_s "
                                        f"({self.options.max_audio_s:.0f} s); split it", param="file")
            self.metrics.count("openai_requests")
            source = f"{SOURCE_KIND}:{next(self._ids)}"
            log.info("openai: %s %.1f s of audio (%s%s)", source, duration, parsed.response_format,
                     ", stream" if parsed.stream else "")
            if parsed.stream:
                return self._stream(parsed, audio, source)  # the stream takes its own slot while it runs
            return await self._whole(request, parsed, audio, source, aligner)
        finally:
            self._active -= 1

    def _word_aligner(self):
        """The daemon's AlignerHost for a request that wants words; 400 aligner_not_installed without one."""
        host = self.service.words_aligner()
        if host is None or not host.available:
            note = host.error if host is not None and host.path is not None else api.WORDS_NEED_ALIGNER
            raise api.ApiError(400, note, param="timestamp_granularities", code="aligner_not_installed")
        return host

    async def _words(self, host, audio: np.ndarray, result: JobResult) -> list[api.Word]:
        try:
            return await asyncio.wrap_future(host.submit(lambda h: align_pieces(h, audio, result), background=True))
        except QasrError as exc:
            if not host.available:  # the aligner did not load (said once in the log)
                raise api.ApiError(400, str(exc), param="timestamp_granularities", code="aligner_not_installed") from None
            raise api.ApiError(500, f"word timestamps failed: {exc}") from None

    def _job(self, parsed: api.TranscriptionRequest, source: str, on_message=None) -> AudioJob:
        return AudioJob(self.service, OPENAI, source, language=parsed.language, context=parsed.prompt,
                        partials=parsed.stream, on_message=on_message)

    def _run(self, job: AudioJob, audio: np.ndarray) -> JobResult:
        job.transcribe_audio(audio)
        result = job.wait(self.options.job_timeout_s)
        if result is None:
            raise QasrError(f"the transcription took longer than {self.options.job_timeout_s:.0f} s")
        return result

    async def _whole(self, request: HttpRequest, parsed: api.TranscriptionRequest, audio: np.ndarray,
                     source: str, aligner=None) -> HttpResponse:
        started = time.monotonic()
        job = self._job(parsed, source)
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._executor, self._run, job, audio)
        gone = asyncio.ensure_future(request.disconnected.wait())
        try:
            await asyncio.wait([work, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not work.done():
            job.cancel()
            log.info("openai: %s: the client went away; dropped", source)
            return api.ApiError(499, "client closed the request").response()
        try:
            result = work.result()
        except QasrError as exc:
            raise api.ApiError(500, str(exc)) from None
        if result.error:
            raise api.ApiError(500, f"transcription failed: {result.error}")
        words = await self._words(aligner, audio, result) if aligner is not None else None
        self.metrics.observe("openai_request_ms", (time.monotonic() - started) * 1000.0)
        return api.render(parsed, transcript_of(result, audio.size / SAMPLE_RATE, words))

    def _stream(self, parsed: api.TranscriptionRequest, audio: np.ndarray, source: str) -> HttpResponse:
        headers = {"X-Accel-Buffering": "no"}
        if parsed.notes:
            headers["X-Qasr-Note"] = "; ".join(parsed.notes)
        return HttpResponse(200, api.SSE, headers=headers, stream=self._events(parsed, audio, source))

    async def _events(self, parsed: api.TranscriptionRequest, audio: np.ndarray, source: str) -> AsyncIterator[bytes]:
        """Deltas are append-only: committed text of partials, then the rest of each piece's final."""
        self._active += 1
        started = time.monotonic()
        duration = audio.size / SAMPLE_RATE
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        job = self._job(parsed, source, on_message=lambda m: loop.call_soon_threadsafe(queue.put_nowait, m))
        work = loop.run_in_executor(self._executor, self._run, job, audio)
        work.add_done_callback(lambda _: queue.put_nowait(None))
        finished: list[str] = []
        sent = AppendOnlyText()
        try:
            while True:
                message = await queue.get()
                if message is None:
                    break
                if message["type"] == "partial":
                    text = join_texts([*finished, message["committed"]])
                elif message["type"] == "final":
                    finished.append(message["text"])
                    text = join_texts(finished)
                else:
                    continue
                delta = sent.delta(text)
                if delta:
                    yield api.sse_delta(delta)
            try:
                result = work.result()
            except QasrError as exc:
                yield api.sse_error(500, str(exc))
                return
            if result.error:
                yield api.sse_error(500, f"transcription failed: {result.error}")
                return
            self.metrics.observe("openai_request_ms", (time.monotonic() - started) * 1000.0)
            yield api.sse_done(join_texts([f["text"] for f in result.finals]), duration)
        finally:
            if not work.done():
                job.cancel()
            self._active -= 1


def transcript_of(result: JobResult, duration: float, words: list[api.Word] | None = None) -> api.Transcript:
    segments = [api.Segment(start, end, final["text"], list(final["token_ids"]))
                for final, (start, end) in zip(result.finals, result.pieces)]
    return api.Transcript(join_texts([s.text for s in segments]),
                          merge_languages([f.get("language") or "" for f in result.finals]), duration, segments,
                          words)


def align_pieces(host, audio: np.ndarray, result: JobResult) -> list[api.Word]:
    """(Aligner thread) every piece's final text aligned with the piece's audio, as the job fed it to the
    pipeline (``normalize_waveform``, then the piece's samples); times from the start of the file."""
    audio = normalize_waveform(audio)
    words: list[api.Word] = []
    for final, (start, end) in zip(result.finals, result.pieces):
        text = final.get("text") or ""
        if not text.strip():
            continue
        clip = audio[int(round(start * SAMPLE_RATE)):int(round(end * SAMPLE_RATE))]
        for w in host.align(clip, text, final.get("language")):
            words.append(api.Word(w["word"], round(start + w["start"], 3), round(start + w["end"], 3)))
    return words


def declared_duration(path: str) -> float | None:
    """The container's own idea of its length (seconds), read without decoding; None if it has none."""
    try:
        import av

        with av.open(path, mode="r") as container:
            if container.duration:
                return container.duration / 1_000_000
            stream = container.streams.audio[0] if container.streams.audio else None
            if stream is not None and stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
    except Exception:  # load_audio says what is wrong with the file
        return None
    return None


def decode_upload(filename: str | None, data: bytes, max_audio_s: float = float("inf")) -> np.ndarray:
    """The upload → 16 kHz mono float32 through the same decoder as ``qasr-daemon transcribe``. A file whose
    header says it is longer than ``max_audio_s`` is refused before decoding (a small file of hours of
    low-bitrate audio would otherwise decode into gigabytes)."""
    from qasr.engine.audio import load_audio

    name = Path(filename or "upload").name or "upload"
    suffix = Path(name).suffix[:16]
    fd, tmp = tempfile.mkstemp(prefix="qasr-upload-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        declared = declared_duration(tmp)
        if declared is not None and declared > max_audio_s:
            raise api.ApiError(400, f"{name} is {declared:.0f} s long, over openai.max_audio_s ({max_audio_s:.0f} s); "
                                    "split it", param="file")
        try:
            return load_audio(tmp, SAMPLE_RATE)
        except QasrError as exc:
            raise api.ApiError(400, str(exc).replace(tmp, name), param="file", code="invalid_audio") from None
        except Exception as exc:  # PyAV raises more than its documented errors on hostile input
            raise api.ApiError(400, f"{name}: cannot decode ({type(exc).__name__}); the file is corrupt or "
                                    "not an audio format FFmpeg reads", param="file", code="invalid_audio") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass
