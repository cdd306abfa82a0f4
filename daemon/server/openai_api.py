"""The OpenAI-compatible transcription API, sans-I/O: requests in, responses and errors out.

``POST /v1/audio/transcriptions`` (multipart: ``file``, ``model``, ``language``, ``prompt``,
``temperature``, ``response_format``, ``stream``, ``timestamp_granularities[]``) and ``GET /v1/models``.
Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``. The I/O (decoding the
upload, the pipeline, streaming) is ``openai_bridge.py``.
"""

from __future__ import annotations

import hmac
import json
import math
from dataclasses import dataclass, field

from qasr.daemon.server.http_front import HttpResponse
from qasr.daemon.server.multipart import FormError, Part, parse_form
from qasr.engine.languages import ISO_639_1, language_of_code
from qasr.engine.subtitles import Cue, format_srt, format_vtt

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
MODELS_PATH = "/v1/models"
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")
JSON = "application/json"
SSE = "text/event-stream"

# ISO-639-1 (and a few ISO-639-3) codes of the languages Qwen3-ASR names.
WORDS_NEED_ALIGNER = (
    "word timestamps need the forced aligner (Qwen3-ForcedAligner), and this daemon has none installed; "
    "ask for timestamp_granularities[]=segment (the default), or install it with "
    "`qasr-daemon models pull aligner`"
)


class ApiError(Exception):
    TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
             404: "invalid_request_error", 405: "invalid_request_error", 413: "invalid_request_error",
             415: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def response(self) -> HttpResponse:
        body = {"error": {"message": self.message, "type": self.TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}
        return HttpResponse(self.status, JSON, (json.dumps(body, ensure_ascii=False) + "\n").encode(), dict(self.headers))


def json_response(status: int, body: dict) -> HttpResponse:
    return HttpResponse(status, JSON, (json.dumps(body, ensure_ascii=False) + "\n").encode())


def check_auth(authorization: str | None, token: str, token_path: str) -> None:
    """The daemon's token as the Bearer API key (``OPENAI_API_KEY``)."""
    if not authorization:
        raise ApiError(401, f"missing API key: send the daemon's token (from {token_path}) as the API key "
                            "('Authorization: Bearer <token>')", code="invalid_api_key")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise ApiError(401, f"incorrect API key: use the daemon's token from {token_path}", code="invalid_api_key")


def resolve_language(value: str, languages: list[str]) -> str:
    """ISO-639-1 code (``en``, ``de``, ``zh-CN``) or a language name → the model's language name."""
    names = {name.lower(): name for name in languages}
    key = value.strip().lower()
    if key in names:
        return names[key]
    name = language_of_code(key)
    if name is not None and name.lower() in names:
        return names[name.lower()]
    codes = [code for code, n in ISO_639_1.items() if n.lower() in names]
    raise ApiError(400, f"language {value!r} is not one this model transcribes; use an ISO-639-1 code "
                        f"({', '.join(codes)}) or leave it out to detect the language", param="language",
                   code="unsupported_language")


@dataclass(frozen=True)
class TranscriptionRequest:
    file: Part
    model: str = ""
    language: str | None = None  # the model's language name
    prompt: str | None = None
    response_format: str = "json"
    stream: bool = False
    words: bool = False
    notes: tuple[str, ...] = ()  # e.g. temperature ignored: sent back in X-Qasr-Note


def parse_transcription(content_type: str | None, body: bytes, languages: list[str],
                        aligner: bool = False, aligner_note: str = WORDS_NEED_ALIGNER) -> TranscriptionRequest:
    if not (content_type or "").lower().startswith("multipart/form-data"):
        raise ApiError(415, f"send the request as multipart/form-data with the audio in the 'file' field "
                            f"(got {content_type or 'no Content-Type'})", code="unsupported_media_type")
    try:
        parts = parse_form(content_type, body)
    except FormError as exc:
        raise ApiError(400, f"malformed multipart body: {exc}") from None
    fields: dict[str, str] = {}
    granularities: list[str] = []
    upload: Part | None = None
    for part in parts:
        if part.name == "file":
            upload = part
        elif part.name in ("timestamp_granularities[]", "timestamp_granularities"):
            granularities.append(part.text().strip())
        else:
            fields[part.name] = part.text()
    if upload is None:
        raise ApiError(400, "missing the 'file' field (the audio to transcribe)", param="file")
    if not upload.data:
        raise ApiError(400, "the uploaded file is empty", param="file")
    fmt = fields.get("response_format", "json").strip() or "json"
    if fmt not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format {fmt!r} is not supported; use one of {', '.join(RESPONSE_FORMATS)}",
                       param="response_format")
    stream = _bool(fields.get("stream", "false"), "stream")
    if stream and fmt not in STREAM_FORMATS:
        raise ApiError(400, f"stream=true works with response_format json or text, not {fmt}", param="stream")
    for granularity in granularities:
        if granularity not in ("word", "segment"):
            raise ApiError(400, f"timestamp_granularities[] {granularity!r} is not 'word' or 'segment'",
                           param="timestamp_granularities")
    words = "word" in granularities
    if words and not aligner:
        raise ApiError(400, aligner_note, param="timestamp_granularities", code="aligner_not_installed")
    if granularities and fmt != "verbose_json":
        raise ApiError(400, "timestamp_granularities needs response_format verbose_json",
                       param="timestamp_granularities")
    language = fields.get("language", "").strip()
    notes = []
    temperature = fields.get("temperature", "").strip()
    if temperature:
        try:
            value = float(temperature)
        except ValueError:
            raise ApiError(400, f"temperature {temperature!r} is not a number", param="temperature") from None
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise ApiError(400, "temperature must be between 0 and 1", param="temperature")
        if value != 0:
            notes.append(f"temperature {temperature} ignored: qasr decodes greedily (temperature 0)")
    return TranscriptionRequest(
        file=upload, model=fields.get("model", "").strip(),
        language=resolve_language(language, languages) if language else None,
        prompt=fields.get("prompt") or None, response_format=fmt, stream=stream, words=words, notes=tuple(notes),
    )


def _bool(value: str, name: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise ApiError(400, f"{name} must be true or false, not {value!r}", param=name)


# ---- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from the start of the file
    end: float


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str  # the model's names, "English" or "English,Chinese"; "" when unknown
    duration: float
    segments: list[Segment]
    words: list[Word] | None = None  # timestamp_granularities[]=word (the forced aligner)


def render(request: TranscriptionRequest, result: Transcript) -> HttpResponse:
    fmt = request.response_format
    usage = {"type": "duration", "seconds": int(math.ceil(result.duration))}
    if fmt == "text":
        response = HttpResponse(200, "text/plain; charset=utf-8", (result.text + "\n").encode())
    elif fmt == "srt":
        response = HttpResponse(200, "application/x-subrip; charset=utf-8", srt(result.segments).encode())
    elif fmt == "vtt":
        response = HttpResponse(200, "text/vtt; charset=utf-8", vtt(result.segments).encode())
    elif fmt == "verbose_json":
        body = {
            "task": "transcribe", "language": language_name(result.language), "duration": round(result.duration, 3),
            "text": result.text, "segments": [_verbose_segment(i, s) for i, s in enumerate(result.segments)],
        }
        if request.words and result.words is not None:  # OpenAI's shape: top-level words, each with its times
            body["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in result.words]
        body["usage"] = usage
        response = json_response(200, body)
    else:
        response = json_response(200, {"text": result.text, "usage": usage})
    if request.notes:
        response.headers["X-Qasr-Note"] = "; ".join(request.notes)
    return response


def language_name(language: str) -> str:
    """OpenAI writes the language lower-case in full ("english"); several pieces' languages: the first."""
    return language.split(",")[0].strip().lower()


def _verbose_segment(index: int, segment: Segment) -> dict:
    # qasr has no per-segment log-probabilities or no-speech probability: neutral values, documented.
    return {"id": index, "seek": int(round(segment.start * 100)), "start": round(segment.start, 3),
            "end": round(segment.end, 3), "text": segment.text, "tokens": list(segment.tokens),
            "temperature": 0.0, "avg_logprob": 0.0, "compression_ratio": 0.0, "no_speech_prob": 0.0}


def srt(segments: list[Segment]) -> str:
    return format_srt(Cue(s.start, s.end, s.text) for s in segments)


def vtt(segments: list[Segment]) -> str:
    return format_vtt(Cue(s.start, s.end, s.text) for s in segments)


def sse(event: dict) -> bytes:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode()


def sse_delta(delta: str) -> bytes:
    return sse({"type": "transcript.text.delta", "delta": delta})


def sse_done(text: str, duration: float) -> bytes:
    return sse({"type": "transcript.text.done", "text": text,
                "usage": {"type": "duration", "seconds": int(math.ceil(duration))}})


def sse_error(status: int, message: str) -> bytes:
    return sse({"type": "error", "error": {"message": message, "type": ApiError.TYPES.get(status, "server_error"),
                                           "param": None, "code": None}})


def models_list(model_name: str, created: int) -> dict:
    return {"object": "list", "data": [model_entry(model_name, created)]}


def model_entry(model_name: str, created: int) -> dict:
    return {"id": model_name, "object": "model", "created": created, "owned_by": "qasr"}
