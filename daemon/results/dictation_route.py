"""The microphone's route: a final is shaped once → delivered into its window (or input-method field) →
journaled → published to every subscriber; partials become live typing or the input method's preedit,
and are published. Runs on its own thread (``route_dispatch``): typing, pasting and the journal's fsync
never delay the decoder.

With words (``[output] word_timestamps``) the final is typed and journaled at once and its event goes out
once the aligner added the words; events made after it wait behind it.
"""

from __future__ import annotations

import logging
from typing import Callable

from qasr import protocol
from qasr.daemon.results.desktop_delivery import MIC, DesktopDelivery, delivered_by, where
from qasr.daemon.results.messages import final_message, partial_message
from qasr.daemon.results.result_services import ResultServices
from qasr.daemon.results.text_shaping import ShapedFinal
from qasr.engine.events import FinalEvent, PartialEvent

log = logging.getLogger("qasr.results")


class DictationRoute:
    def __init__(self, services: ResultServices, desktop: DesktopDelivery, live_typing: Callable[[], bool]) -> None:
        self._services = services
        self._desktop = desktop
        self._live_typing = live_typing

    def partial(self, event: PartialEvent) -> None:
        ime = self._desktop.ime
        if ime is None or not ime.preedit(event.utterance_id, event.committed, event.tentative):
            if self._live_typing():
                self._desktop.live_type(event.utterance_id, event.committed)
        self._publish(partial_message(event, MIC))

    def final(self, event: FinalEvent) -> None:
        services, desktop = self._services, self._desktop
        services.final_audio(event.utterance_id)
        language = event.language or None
        delivery = desktop.delivery_of(event.utterance_id)
        live = self._live_typing()
        shaped = self._shape(event.text, language, delivery.spoken_formatting)
        if shaped.undo and not live:  # "scratch that": remove the last dictation instead of typing this one
            desktop.end_output(event.utterance_id)
            services.send_final(event, MIC, final_message(event, MIC, shaped.replaced), services.publish)
            log.info("final #%s is the spoken undo command %r", event.utterance_id, shaped.replaced)
            desktop.undo()
            return
        # Live typing already typed committed text that cannot be rewritten: no replacements in the window then.
        text = event.text if live else shaped.delivered
        shaper = services.shaper
        spaced = shaper.with_trailing_space(text, delivery.trailing_space) if shaper is not None else text
        context = desktop.context_of(event.utterance_id)
        result = desktop.deliver_final(event.utterance_id, shaped.delivered, text, spaced)
        sink = delivered_by(result)
        message = final_message(event, MIC, shaped.replaced if live else shaped.text, sink)
        if context:
            message["context"] = context  # the field's text the model was given (input method)
        services.write_journal(message, {**where(result), "profile": delivery.name})
        log.info("final #%s (%.2f s audio, %s ms, sink %s): %s", event.utterance_id,
                 event.audio_end_s - event.audio_start_s, event.timings.latency_ms, sink or "none", message["text"])
        services.send_final(event, MIC, message, services.publish)  # typed already: words never delay typing
        desktop.publish_warning(result, event.utterance_id, ordered=True)

    def _shape(self, raw: str, language: str | None, spoken: bool | None) -> ShapedFinal:
        shaper = self._services.shaper
        if shaper is None or not raw:
            return ShapedFinal(raw, raw, raw)
        return shaper.shape_final(raw, language, spoken)

    def cancelled(self, utterance_id: str) -> None:
        self._services.forget_audio(utterance_id)
        self._desktop.end_output(utterance_id)

    def failed(self, utterance_id: str, message: str) -> None:
        log.error("utterance %s: %s", utterance_id, message)
        self._services.forget_audio(utterance_id)
        self._desktop.end_output(utterance_id)
        self._publish(protocol.error(protocol.ErrorCode.INTERNAL, message))

    def _publish(self, message: dict) -> None:
        """To every subscriber, after any final still waiting for its words."""
        self._services.in_order(MIC, lambda: self._services.publish(message))

