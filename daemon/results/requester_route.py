"""The route of a source whose results answer one requester: a WebSocket audio stream, an OpenAI or
Wyoming request, a ``/v1/realtime`` session, or the system audio (whose requester is every subscriber).

Each event becomes a ``qasr.v1`` message for ``deliver(utterance_id, message, outcome)``; ``outcome``
(final/cancelled/error) ends the utterance. A final's text gets the replacement rules (never typed, so no
spoken formatting); it is journaled for the kinds in ``routes.JOURNALED`` and counted by
``on_final(kind, message)``.
"""

from __future__ import annotations

import logging

from qasr import protocol
from qasr.daemon.results.messages import final_message, partial_message
from qasr.daemon.results.result_services import ResultServices
from qasr.daemon.transcription.routes import JOURNALED, Deliver
from qasr.engine.events import FinalEvent, PartialEvent

log = logging.getLogger("qasr.results")


class RequesterRoute:
    def __init__(self, kind: str, name: str, services: ResultServices, deliver: Deliver) -> None:
        self.kind = kind
        self.name = name
        self._services = services
        self._deliver = deliver
        self._journaled = kind in JOURNALED

    def partial(self, event: PartialEvent) -> None:
        message = partial_message(event, self.name)
        self._services.in_order(self.name, lambda: self._deliver(event.utterance_id, message, None))

    def final(self, event: FinalEvent) -> None:
        services = self._services
        services.final_audio(event.utterance_id)
        shaper = services.shaper
        text = shaper.apply_replacements(event.text) if shaper is not None and event.text else event.text
        message = final_message(event, self.name, text)
        if self._journaled:
            services.write_journal(message)
        try:
            services.on_final(self.kind, message)
        except Exception:
            log.exception("on_final failed")
        services.send_final(event, self.name, message, lambda m: self._deliver(event.utterance_id, m, "final"))

    def cancelled(self, utterance_id: str) -> None:
        self._services.forget_audio(utterance_id)
        self._services.in_order(self.name, lambda: self._deliver(utterance_id, None, "cancelled"))

    def failed(self, utterance_id: str, message: str) -> None:
        log.error("utterance %s: %s", utterance_id, message)
        self._services.forget_audio(utterance_id)
        error = protocol.error(protocol.ErrorCode.INTERNAL, message)
        self._services.in_order(self.name, lambda: self._deliver(utterance_id, error, "error"))
