"""What the servers (WebSocket audio streams, OpenAI, Wyoming, realtime) get of the daemon: the model's name
and languages, segmenter options, a source with its route for each requester and a feed for its audio,
and the words aligner.

    source = service.source(OPENAI, "openai:7", deliver)     # deliver(utterance_id, message, outcome)
    feed = service.feed(source, segmenter, language=..., context=..., on_begin=...)
"""

from __future__ import annotations

from typing import Any, Callable

from qasr.daemon.audio.segmenter import Segmenter, SegmenterOptions
from qasr.daemon.transcription.pipeline import Pipeline
from qasr.daemon.transcription.routes import Deliver, Route, Source
from qasr.daemon.transcription.utterance_feed import UtteranceFeed

MakeRoute = Callable[[str, str, Deliver], Route]  # (kind, name, deliver) -> the source's route


class TranscriptionService:
    """``engine``: the loaded model (``EngineHost``; None: none yet); ``segmenter_options(mode)`` as
    configured; ``words_aligner()`` the aligner for a request that wants words."""

    def __init__(self, pipeline: Pipeline, engine: Any, make_route: MakeRoute,
                 segmenter_options: Callable[[str | None], SegmenterOptions],
                 words_aligner: Callable[[], Any] = lambda: None) -> None:
        self.pipeline = pipeline
        self._engine = engine
        self._make_route = make_route
        self._segmenter_options = segmenter_options
        self._words_aligner = words_aligner

    @property
    def model_name(self) -> str | None:
        return self._engine.model_name if self._engine is not None else None

    def languages(self) -> list[str]:
        return self._engine.languages() if self._engine is not None else []

    def check_language(self, language: str | None) -> None:
        """A ``ConfigError`` naming the model's languages unless the model knows ``language``."""
        if self._engine is not None:
            self._engine.check_language(language)

    def segmenter_options(self, mode: str | None = None) -> SegmenterOptions:
        return self._segmenter_options(mode)

    def segmenter(self, mode: str | None = None) -> Segmenter:
        return Segmenter(self._segmenter_options(mode))

    def words_aligner(self) -> Any:
        return self._words_aligner()

    def source(self, kind: str, name: str, deliver: Deliver) -> Source:
        """A requester's source: its results go to ``deliver`` (on the route's thread)."""
        return Source.of(kind, name, self._make_route(kind, name, deliver))

    def feed(self, source: Source, segmenter: Segmenter | None = None, **options: Any) -> UtteranceFeed:
        """The source's audio → utterances (``UtteranceFeed``'s options: language, context, on_begin, …)."""
        return UtteranceFeed(self.pipeline, source, segmenter, **options)
