"""Pipeline events → where they go: text shaping → desktop output → journal → publish (decoder thread).

Microphone results are typed or pasted into the window their utterance started in (``begin_output``
records it), journaled and broadcast to every WebSocket subscriber. Every other source has a route,
registered by the kind its source names start with (``ws:c3`` → ``ws``, ``openai:7`` → ``openai``,
``wyoming:2`` → ``wyoming``): its results go to that route only (``IngestRoutes.deliver``), its finals
are journaled when the route asks for it, and ``on_final(kind, message)`` sees each of them (metrics).
The engine's events are turned into ``qasr.v1`` messages here, once: ``partial_message`` / ``final_message``.

With ``words`` (``[output] word_timestamps``, ``final_words.py``) a final's text is typed and journaled at
once, and its event goes out after the aligner added the words; events made after it wait behind it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, replace
from typing import Any, Callable, Protocol

from qasr import protocol
from qasr.daemon import profiles
from qasr.daemon.desktop.output import DeliveryResult, TextOutput
from qasr.daemon.desktop.undo import UndoResult, remove_last
from qasr.daemon.results.final_words import FinalWords
from qasr.daemon.results.journal import Journal
from qasr.daemon.transcription.pipeline import PipelineEvent, UtteranceCancelled, UtteranceFailed
from qasr.daemon.results.text_shaping import TextShaper
from qasr.daemon.results.utterance_audio import UtteranceAudioSaver
from qasr.engine.events import FinalEvent, PartialEvent
from qasr.errors import QasrError

log = logging.getLogger("qasr.results")

PARTIAL_TIMINGS = ("encoder_ms", "prefill_ms", "decode_ms", "step_ms", "draft_tokens", "accepted_tokens")
FINAL_TIMINGS = ("latency_ms", "compute_ms", "final_ms")
KEPT_FINAL_TEXTS = 8  # finals remembered as context for an utterance that continues cut speech


def partial_message(event: PartialEvent, source: str) -> dict:
    timings = asdict(event.timings)
    return protocol.partial(event.utterance_id, event.seq, event.committed, event.tentative, event.audio_start_s,
                            event.audio_end_s, timings={k: timings[k] for k in PARTIAL_TIMINGS}, source=source)


def final_message(event: FinalEvent, source: str, sink: str | None = None) -> dict:
    timings = {k: v for k, v in asdict(event.timings).items() if k in FINAL_TIMINGS and v is not None}
    return protocol.final(event.utterance_id, event.seq, event.text, event.language or None, event.token_ids,
                          event.audio_start_s, event.audio_end_s, timings=timings, sink=sink, source=source,
                          prepared=bool(event.prepared))


class IngestRoutes(Protocol):
    def deliver(self, utterance_id: str, message: dict | None, outcome: str | None) -> None:
        """``message`` for the streaming client; ``outcome`` final/cancelled/error ends the utterance."""


def source_kind(source: str) -> str:
    """``ws:c3`` → ``ws``; ``mic`` → ``mic``."""
    return source.partition(":")[0]


class ResultRouter:
    def __init__(self, publish: Callable[[dict], None], live_typing: Callable[[], bool]) -> None:
        self._publish = publish  # to every WebSocket subscriber
        self._live_typing = live_typing
        self.shaper: TextShaper | None = None
        self.journal: Journal | None = None
        self._routes: dict[str, tuple[IngestRoutes, bool]] = {}  # source kind -> (route, journaled)
        self.on_final: Callable[[str, dict], None] = lambda kind, message: None  # every non-mic final
        self.saver: UtteranceAudioSaver | None = None
        self.on_done: Callable[[], None] = lambda: None  # after each event: the daemon's state may change
        self._output: TextOutput | None = None
        self._output_lock = threading.Lock()
        self._targets: dict[str, Any] = {}  # mic utterance id -> its output.UtteranceTarget
        self._final_texts: dict[str, str] = {}
        self.last_text = ""  # the last mic final as delivered, without its trailing space (paste-last)
        self.profiles: tuple = ()  # [[profile]] settings (daemon/profiles.py)
        self.engine_context: Callable[[], str] = lambda: ""  # engine.context, for profiles with hot words
        self._deliveries: dict[str, profiles.Delivery] = {}  # mic utterance id -> its profile's overrides
        self.words: FinalWords | None = None  # word timestamps on finals (None: never)
        self.ime: Any = None  # desktop/ime_link.ImeLink: an input method of ours, first in the chain

    # -- components ----------------------------------------------------------------------------
    @property
    def output(self) -> TextOutput | None:
        return self._output

    def set_output(self, output: TextOutput | None) -> None:
        with self._output_lock:
            old, self._output = self._output, output
        if old is not None:
            old.close()

    def add_route(self, kind: str, route: IngestRoutes, journal: bool = False) -> None:
        """Results of sources ``kind:...`` go to ``route``; ``journal``: their finals are journaled too."""
        self._routes[kind] = (route, journal)

    def remove_route(self, kind: str) -> None:
        self._routes.pop(kind, None)

    @property
    def ingest(self) -> IngestRoutes | None:
        """The WebSocket clients' route (``ws``)."""
        entry = self._routes.get("ws")
        return entry[0] if entry else None

    @ingest.setter
    def ingest(self, route: IngestRoutes | None) -> None:
        if route is None:
            self.remove_route("ws")
        else:
            self.add_route("ws", route)

    def final_text(self, utterance_id: str | None) -> str:
        """The model's text of a recent final (context for the utterance that continues it)."""
        return self._final_texts.get(utterance_id or "", "")

    def begin_output(self, utterance_id: str) -> None:
        """Record the focused window for this utterance: its text goes there or to the clipboard."""
        if self.ime is not None:
            self.ime.begin_utterance(utterance_id)  # a focused input-method field takes it first
        with self._output_lock:
            if self._output is None:
                return
            try:
                target = self._targets[utterance_id] = self._output.begin_utterance()
            except QasrError as exc:
                log.warning("text output: %s", exc)
                return
            delivery = profiles.Delivery.of(profiles.match(self.profiles, target.window))
            target.sink = delivery.sink
            self._deliveries[utterance_id] = delivery
            while len(self._deliveries) > 64:  # utterances that never ended
                self._deliveries.pop(next(iter(self._deliveries)))

    def choose_engine_options(self, language: str | None, context: str | None) -> tuple[str | None, str | None]:
        """Microphone feed, at each utterance start: the focused window's profile's language/context."""
        if not self.profiles:
            return language, context
        with self._output_lock:
            output = self._output
            window = output.focused() if output is not None and output.focus_known else None
        profile = profiles.match(self.profiles, window)
        hotwords = self.shaper.context() if self.shaper is not None and profile is not None else ""
        return profiles.engine_overrides(profile, self.engine_context(), hotwords, language, context)

    def profile_status(self) -> dict:
        """``status``: the profile in force for the window focused now."""
        with self._output_lock:
            output = self._output
            known = output is not None and output.focus_known
            window = output.focused() if known else None
        return {**profiles.describe(profiles.match(self.profiles, window), window, known),
                "profiles": len(self.profiles)}

    # -- events (decoder thread) -----------------------------------------------------------------
    def __call__(self, source: str, event: PipelineEvent) -> None:
        if isinstance(event, FinalEvent):
            self._final(source, event)
        elif isinstance(event, PartialEvent):
            if source == "mic":
                if self.ime is None or not self.ime.preedit(event.utterance_id, event.committed, event.tentative):
                    self._live_type(event)
                self._send(partial_message(event, source))
            else:
                self._send_route(source, event.utterance_id, partial_message(event, source), None)
        elif isinstance(event, UtteranceCancelled):
            self._forget_audio(event.utterance_id)
            if source == "mic":
                self._end_output(event.utterance_id)
            else:
                self._send_route(source, event.utterance_id, None, "cancelled")
        elif isinstance(event, UtteranceFailed):
            log.error("utterance %s: %s", event.utterance_id, event.message)
            self._forget_audio(event.utterance_id)
            message = protocol.error(protocol.ErrorCode.INTERNAL, event.message)
            if source == "mic":
                self._end_output(event.utterance_id)
                self._send(message)
            else:
                self._send_route(source, event.utterance_id, message, "error")
        self.on_done()

    def _final(self, source: str, event: FinalEvent) -> None:
        if self.saver is not None:
            self.saver.save(event.utterance_id)
        raw = event.text
        self._final_texts[event.utterance_id] = raw
        while len(self._final_texts) > KEPT_FINAL_TEXTS:
            self._final_texts.pop(next(iter(self._final_texts)))
        if self.shaper is not None and raw:
            event = replace(event, text=self.shaper.apply_replacements(raw))
        if source != "mic":
            message = final_message(event, source)
            kind = source_kind(source)
            if self._routes.get(kind, (None, False))[1]:
                self._journal(message)
            try:
                self.on_final(kind, message)
            except Exception:
                log.exception("on_final failed")
            self._send_final(event, source, message,
                             lambda m: self._route(source, event.utterance_id, m, "final"))
            return
        language = event.language or None
        delivery = self._deliveries.pop(event.utterance_id, profiles.Delivery())
        if self.shaper is not None and raw and not self._live_typing():
            spoken = self.shaper.format_spoken(event.text, language, delivery.spoken_formatting)
            if spoken.undo:  # "scratch that": remove the last dictation instead of typing this one
                self._end_output(event.utterance_id)
                self._send_final(event, source, final_message(event, source, None), self._publish)
                log.info("final #%s is the spoken undo command %r", event.utterance_id, event.text)
                self.undo()
                return
            event = replace(event, text=spoken.text)
        context = self.ime.context_of(event.utterance_id) if self.ime is not None else None
        result = self._deliver(event.utterance_id, raw, language, delivery)
        sink = _delivered_by(result)
        message = final_message(event, source, sink)
        if context:
            message["context"] = context  # the field's text the model was given (input method)
        self._journal(message, {**_where(result), "profile": delivery.name})
        log.info("final #%s (%.2f s audio, %s ms, sink %s): %s", event.utterance_id,
                 event.audio_end_s - event.audio_start_s, event.timings.latency_ms, sink or "none", event.text)
        self._send_final(event, source, message, self._publish)  # typed already: words never delay typing
        self._publish_output_warning(result, event.utterance_id, ordered=True)

    # -- in order, with words --------------------------------------------------------------------
    def _send(self, message: dict) -> None:
        """Publish to every subscriber, after any final still waiting for its words."""
        if self.words is None:
            self._publish(message)
        else:
            self.words.in_order(lambda: self._publish(message))

    def _send_route(self, source: str, utterance_id: str, message: dict | None, outcome: str | None) -> None:
        if self.words is None or not self.words.ordered(source):  # OpenAI, Wyoming: never wait for words
            self._route(source, utterance_id, message, outcome)
        else:
            self.words.in_order(lambda: self._route(source, utterance_id, message, outcome))

    def _send_final(self, event: FinalEvent, source: str, message: dict, send: Callable[[dict], None]) -> None:
        """``send(message)``, with ``words`` when they are wanted (then on the aligner thread)."""
        words = self.words
        audio = None if words is None else words.take(event.utterance_id, source,
                                                      event.audio_end_s - event.audio_start_s)
        if audio is not None:
            words.attach(message, audio, send)
        elif words is not None and words.ordered(source):
            words.in_order(lambda: send(message))
        else:
            send(message)

    def _forget_audio(self, utterance_id: str) -> None:
        if self.saver is not None:
            self.saver.drop(utterance_id)
        if self.words is not None:
            self.words.drop(utterance_id)

    def _journal(self, message: dict, extra: dict | None = None) -> None:
        journal = self.journal
        if journal is not None and message.get("text"):
            try:
                journal.append(message, extra=extra)
            except QasrError as exc:
                log.error("%s", exc)

    def _route(self, source: str, utterance_id: str, message: dict | None, outcome: str | None) -> None:
        entry = self._routes.get(source_kind(source))
        if entry is not None:
            entry[0].deliver(utterance_id, message, outcome)

    # -- desktop output ------------------------------------------------------------------------
    def _deliver(self, utterance_id: str, text: str, language: str | None = None,
                 delivery: profiles.Delivery = profiles.Delivery()) -> DeliveryResult | None:
        """Type/paste a mic final into the window its utterance started in."""
        with self._output_lock:
            target = self._targets.pop(utterance_id, None)
            if self.ime is not None and self.ime.owns(utterance_id):
                return self._deliver_ime(utterance_id, text, language, delivery, target)
            if self._output is None or not text:
                return None
            shaped = text
            if self.shaper is not None:
                # Live typing already typed committed text that cannot be rewritten: no replacements then.
                if not self._live_typing():
                    text = self.shaper.shape(text, language, delivery.spoken_formatting, trailing_space=False)
                shaped = self.shaper.with_trailing_space(text, delivery.trailing_space)
            self.last_text = text  # paste-last adds the space the window it goes to wants
            try:
                return self._output.deliver(shaped, target)
            except QasrError as exc:
                log.warning("text output failed: %s", exc)
                return DeliveryResult("none", False, message=f"text output failed: {exc}")

    def _deliver_ime(self, utterance_id: str, text: str, language: str | None, delivery: profiles.Delivery,
                     target: Any) -> DeliveryResult | None:
        """The input method commits it (no trailing space: it joins the next dictation to the field's text)."""
        shaped = self.shaper.shape(text, language, delivery.spoken_formatting, False) if self.shaper and text \
            else text
        output = self._output
        if output is not None and target is not None:
            output.cancel_utterance(target)
        self.last_text = shaped or self.last_text
        clipboard = output.backend.clipboard() if output is not None and output.backend is not None else None
        return self.ime.deliver(utterance_id, shaped, clipboard)

    # -- commands: paste-last, undo ------------------------------------------------------------
    def paste_last(self, text: str | None = None) -> DeliveryResult:
        """Deliver the last final (or ``text``) again, to the window focused now."""
        with self._output_lock:
            text = text if text is not None else self.last_text
            if self._output is None or self._output.backend is None:
                raise QasrError("text output is off (output.sink = \"none\" or no desktop); nothing to paste")
            if not text:
                raise QasrError("nothing to paste: no final since the daemon started and the journal is empty")
            target = self._output.begin_utterance()
            delivery = profiles.Delivery.of(profiles.match(self.profiles, target.window))
            target.sink = delivery.sink
            if self.shaper is not None:
                text = self.shaper.with_trailing_space(text, delivery.trailing_space)
            result = self._output.deliver(text, target)
        self._publish_output_warning(result, None)
        return result

    def undo(self) -> UndoResult:
        """Remove the last delivered final from its window when that is safe; a warning when it is not."""
        with self._output_lock:
            if self._output is None or self._output.backend is None:
                result = UndoResult(False, message="nothing deleted: text output is off")
            else:
                result = remove_last(self._output)
        if result.message:
            log.warning("undo: %s", result.message)
            self._publish(protocol.warning("undo", result.message))
        else:
            log.info("undo: removed %d characters from %s", result.chars,
                     result.window.describe() if result.window is not None else "the window")
        return result

    def _live_type(self, event: PartialEvent) -> None:
        if not self._live_typing():
            return
        # Committed text only grows within an utterance: type what was committed since the last partial.
        with self._output_lock:
            target = self._targets.get(event.utterance_id)
            if self._output is None or target is None:
                return
            typed = target.typed_text
            delta = event.committed[len(typed):] if event.committed.startswith(typed) else ""
            try:
                result = self._output.deliver_committed(delta, target)
            except QasrError as exc:
                log.warning("live typing failed: %s", exc)
                return
        self._publish_output_warning(result, event.utterance_id, ordered=True)

    def _end_output(self, utterance_id: str) -> None:
        """A cancelled or failed utterance: nothing will be delivered for it."""
        with self._output_lock:
            target = self._targets.pop(utterance_id, None)
            self._deliveries.pop(utterance_id, None)
            if self.ime is not None:
                self.ime.cancel(utterance_id)
            if self._output is not None and target is not None:
                self._output.cancel_utterance(target)

    def _publish_output_warning(self, result: DeliveryResult | None, utterance_id: str | None,
                                ordered: bool = False) -> None:
        if result is None or not result.message:
            return
        code = "focus_moved" if result.focus_moved else "output"
        info = {"utterance_id": utterance_id} if utterance_id is not None else {}
        message = protocol.warning(code, result.message, sink=_delivered_by(result), **info)
        (self._send if ordered else self._publish)(message)


def _where(result: DeliveryResult | None) -> dict:
    """The journal's ``app`` and ``title`` of the window a final went to (when the desktop told)."""
    window = result.target if result is not None else None
    if window is None:
        return {}
    return {"app": window.wm_class or window.wm_instance, "title": window.name}


def _delivered_by(result: DeliveryResult | None) -> str | None:
    """The sink that delivered a final (`clipboard` when it was left there), None when nothing was."""
    if result is None:
        return None
    return result.sink if result.delivered or result.sink == "clipboard" else None
