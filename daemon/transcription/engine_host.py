"""The loaded model, shared by every utterance: one ``Transcriber`` and the engine backend the pipeline drives."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from qasr.config.loader import ConfigError
from qasr.daemon.transcription.engine_streams import EngineBackend, StreamingBackend, StreamOptions, WholeUtteranceBackend
from qasr.engine.bundle import Bundle, load_bundle
from qasr.engine.prompt import resolve_language
from qasr.engine.streaming import CONTINUATION_CONTEXT_CHARS, StreamingOptions, StreamingSession
from qasr.engine.transcribe import TranscribeOptions, Transcriber, TranscriptionResult
from qasr.errors import QasrError

log = logging.getLogger("qasr.engine_host")


@dataclass(frozen=True)
class EngineHostOptions:
    """What the engine host needs of the settings (``component_options.engine_host_options``)."""
    model_path: Path
    verify: str
    transcribe: TranscribeOptions  # the model's, at load
    streaming: StreamingOptions  # each utterance's session: language and context are filled in per utterance
    stream: bool = True  # engine.streaming: a streaming session per utterance, else one offline transcription
    context: str = ""  # engine.context
    context_limit_bytes: int = 1536  # the decoder is sized for this much context


class EngineHost:
    """``options()`` is read per utterance (a reload or a WebSocket ``set`` applies to the next one);
    ``hotwords()`` is the hot-word context; ``final_text(id)`` the text of a recent final."""

    def __init__(self, options: Callable[[], EngineHostOptions], hotwords: Callable[[], str],
                 final_text: Callable[[str | None], str]) -> None:
        self._options = options
        self._hotwords = hotwords
        self._final_text = final_text
        o = options()
        self.bundle: Bundle = load_bundle(o.model_path, verify=o.verify)
        self.check_language(o.transcribe.language)
        self.transcriber = Transcriber(self.bundle, o.transcribe)
        # as `transcribe` and `batch` do: a q4_k decoder's first prefill after loading was seen to differ from
        # every later one (AVX2 build), so the first utterance would not equal `transcribe` of its audio
        self.transcriber.warm_up()

    @property
    def model_name(self) -> str | None:
        return self.bundle.manifest.model.get("name")

    def languages(self) -> list[str]:
        return list(self.bundle.manifest.languages)

    def check_language(self, language: str | None) -> None:
        if not language:
            return
        try:
            resolve_language(language, self.languages())
        except QasrError:
            raise ConfigError(
                f"engine.language = {language!r} is not a language of {self.model_name}; use \"\" (detect) "
                f"or one of: {', '.join(self.languages())}"
            ) from None

    def backend(self) -> EngineBackend:
        if self._options().stream:
            return StreamingBackend(self._session)
        return WholeUtteranceBackend(self._transcribe)

    def _session(self, options: StreamOptions, encoder_guard=None) -> StreamingSession:
        """A streaming session for one utterance (decoder worker); the stream's options win over settings."""
        o = self._options()
        session = replace(o.streaming, language=options.language or o.streaming.language,
                          context=self.context(options, o))
        return StreamingSession(self.transcriber, session, utterance_id=options.utterance_id,
                                start_s=options.audio_start, encoder_guard=encoder_guard)

    def _transcribe(self, audio: np.ndarray, options: StreamOptions) -> TranscriptionResult:
        """Offline engine call (engine.streaming = false; decoder worker): the whole utterance."""
        o = self._options()
        self.transcriber.set_prompt(options.language or o.transcribe.language, self.context(options, o),
                                    o.transcribe.max_new_tokens)
        return self.transcriber.transcribe(audio)

    def context(self, options: StreamOptions, o: EngineHostOptions | None = None) -> str:
        """The stream's own context, else engine.context plus the hot words; an utterance that continues
        cut speech also gets the previous final's text."""
        o = o or self._options()
        if options.context is not None:
            context = options.context
        else:
            context = ", ".join(part for part in (o.context, self._hotwords()) if part)
        previous = self._final_text(options.continues)
        if previous:
            context = f"{context} {previous[-CONTINUATION_CONTEXT_CHARS:]}".strip()
        data = context.encode("utf-8")
        limit = o.context_limit_bytes
        if len(data) > limit:  # the decoder is sized for this much; keep the newest part
            log.warning("context is %d bytes, more than the %d the decoder holds: its start is dropped",
                        len(data), limit)
            context = data[-limit:].decode("utf-8", errors="ignore")
        return context

    def close(self) -> None:
        self.transcriber.close()
