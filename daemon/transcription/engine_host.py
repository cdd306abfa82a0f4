"""The loaded model, shared by every utterance: one ``Transcriber`` and the engine backend the pipeline drives."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from qasr.config.loader import ConfigError
from qasr.config.settings import Settings
from qasr.daemon import component_options
from qasr.daemon.transcription.engine_streams import EngineBackend, StreamingBackend, StreamOptions, WholeUtteranceBackend
from qasr.engine.bundle import Bundle, load_bundle
from qasr.engine.prompt import resolve_language
from qasr.engine.streaming import CONTINUATION_CONTEXT_CHARS, StreamingSession
from qasr.engine.transcribe import Transcriber, TranscriptionResult
from qasr.errors import QasrError

log = logging.getLogger("qasr.engine_host")

class EngineHost:
    """``settings()`` is read per utterance (a reload or a WebSocket ``set`` applies to the next one);
    ``hotwords()`` is the hot-word context; ``final_text(id)`` the text of a recent final."""

    def __init__(self, settings: Callable[[], Settings], hotwords: Callable[[], str],
                 final_text: Callable[[str | None], str]) -> None:
        self._settings = settings
        self._hotwords = hotwords
        self._final_text = final_text
        s = settings()
        self.bundle: Bundle = load_bundle(s.model.resolved_path(), verify=s.model.verify)
        self.check_language(s.engine.language)
        self.transcriber = Transcriber(self.bundle, component_options.transcribe_options(s))

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
        if self._settings().engine.streaming:
            return StreamingBackend(self._session)
        return WholeUtteranceBackend(self._transcribe)

    def _session(self, options: StreamOptions) -> StreamingSession:
        """A streaming session for one utterance (decoder worker); the stream's options win over settings."""
        s = self._settings()
        return StreamingSession(
            self.transcriber, component_options.streaming_options(s, options.language, self.context(options)),
            utterance_id=options.utterance_id, start_s=options.audio_start,
        )

    def _transcribe(self, audio: np.ndarray, options: StreamOptions) -> TranscriptionResult:
        """Offline engine call (engine.streaming = false; decoder worker): the whole utterance."""
        e = self._settings().engine
        self.transcriber.set_prompt(options.language or e.language or None, self.context(options), e.max_new_tokens)
        return self.transcriber.transcribe(audio)

    def context(self, options: StreamOptions) -> str:
        """The stream's own context, else engine.context plus the hot words; an utterance that continues
        cut speech also gets the previous final's text."""
        if options.context is not None:
            context = options.context
        else:
            context = ", ".join(part for part in (self._settings().engine.context, self._hotwords()) if part)
        previous = self._final_text(options.continues)
        if previous:
            context = f"{context} {previous[-CONTINUATION_CONTEXT_CHARS:]}".strip()
        data = context.encode("utf-8")
        limit = component_options.CONTEXT_RESERVE_BYTES
        if len(data) > limit:  # the decoder is sized for this much; keep the newest part
            log.warning("context is %d bytes, more than the %d the decoder holds: its start is dropped",
                        len(data), limit)
            context = data[-limit:].decode("utf-8", errors="ignore")
        return context

    def close(self) -> None:
        self.transcriber.close()
