"""Dictation into the desktop: the window (or input-method field) each microphone utterance started in,
typing or pasting its final there, live typing of committed text, paste-last and undo, and the
per-application ``[[profile]]`` in force.

``begin_output`` records the focused window at the utterance's start; the final goes there or to the
clipboard. An input method of ours (``ime``) is asked first: an utterance that began in one of its fields
is committed by it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from qasr import protocol
from qasr.daemon import profiles
from qasr.daemon.desktop.output import DeliveryResult, TextOutput
from qasr.daemon.desktop.undo import UndoResult, remove_last
from qasr.daemon.results.result_services import ResultServices
from qasr.errors import QasrError

log = logging.getLogger("qasr.results")

MIC = "mic"


class DesktopDelivery:
    def __init__(self, services: ResultServices) -> None:
        self._services = services
        self._output: TextOutput | None = None
        self._lock = threading.Lock()
        self._targets: dict[str, Any] = {}  # mic utterance id -> its output.UtteranceTarget
        self._deliveries: dict[str, profiles.Delivery] = {}  # mic utterance id -> its profile's overrides
        self.last_text = ""  # the last mic final as delivered, without its trailing space (paste-last)
        self.profiles: tuple = ()  # [[profile]] settings (daemon/profiles.py)
        self.engine_context: Callable[[], str] = lambda: ""  # engine.context, for profiles with hot words
        self.ime: Any = None  # desktop/ime_link.ImeLink: an input method of ours, first in the chain

    @property
    def output(self) -> TextOutput | None:
        return self._output

    def set_output(self, output: TextOutput | None) -> None:
        with self._lock:
            old, self._output = self._output, output
        if old is not None:
            old.close()

    # -- an utterance's start (microphone feed) --------------------------------------------------
    def begin_output(self, utterance_id: str) -> None:
        """Record the focused window for this utterance: its text goes there or to the clipboard."""
        if self.ime is not None:
            self.ime.begin_utterance(utterance_id)  # a focused input-method field takes it first
        with self._lock:
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
        with self._lock:
            output = self._output
            window = output.focused() if output is not None and output.focus_known else None
        profile = profiles.match(self.profiles, window)
        shaper = self._services.shaper
        hotwords = shaper.context() if shaper is not None and profile is not None else ""
        return profiles.engine_overrides(profile, self.engine_context(), hotwords, language, context)

    def profile_status(self) -> dict:
        """``status``: the profile in force for the window focused now."""
        with self._lock:
            output = self._output
            known = output is not None and output.focus_known
            window = output.focused() if known else None
        return {**profiles.describe(profiles.match(self.profiles, window), window, known),
                "profiles": len(self.profiles)}

    def delivery_of(self, utterance_id: str) -> profiles.Delivery:
        """The utterance's profile overrides (once: the final takes them)."""
        with self._lock:
            return self._deliveries.pop(utterance_id, profiles.Delivery())

    def context_of(self, utterance_id: str) -> str | None:
        """The input-method field's text the model was given as context, if any."""
        return self.ime.context_of(utterance_id) if self.ime is not None else None

    # -- results ---------------------------------------------------------------------------------
    def deliver_final(self, utterance_id: str, ime_text: str, text: str, spaced: str) -> DeliveryResult | None:
        """A mic final into its utterance's window: ``spaced`` is typed/pasted (``text`` without the trailing
        space is what paste-last repeats); an input-method field of ours commits ``ime_text`` instead."""
        with self._lock:
            target = self._targets.pop(utterance_id, None)
            if self.ime is not None and self.ime.owns(utterance_id):
                output = self._output
                if output is not None:
                    ime_text = output.text_for(ime_text, target)  # into a terminal: no newline, no tab
                    if target is not None:
                        output.cancel_utterance(target)
                self.last_text = ime_text or self.last_text
                clipboard = output.backend.clipboard() if output is not None and output.backend is not None else None
                return self.ime.deliver(utterance_id, ime_text, clipboard)
            if self._output is None or not text:
                return None
            self.last_text = text  # paste-last adds the space the window it goes to wants
            try:
                return self._output.deliver(spaced, target)
            except QasrError as exc:
                log.warning("text output failed: %s", exc)
                return DeliveryResult("none", False, message=f"text output failed: {exc}")

    def live_type(self, utterance_id: str, committed: str) -> None:
        """Committed text only grows within an utterance: type what was committed since the last partial."""
        with self._lock:
            target = self._targets.get(utterance_id)
            if self._output is None or target is None:
                return
            typed = target.typed_text
            delta = committed[len(typed):] if committed.startswith(typed) else ""
            try:
                result = self._output.deliver_committed(delta, target)
            except QasrError as exc:
                log.warning("live typing failed: %s", exc)
                return
        self.publish_warning(result, utterance_id, ordered=True)

    def end_output(self, utterance_id: str) -> None:
        """A cancelled or failed utterance: nothing will be delivered for it."""
        with self._lock:
            target = self._targets.pop(utterance_id, None)
            self._deliveries.pop(utterance_id, None)
            if self.ime is not None:
                self.ime.cancel(utterance_id)
            if self._output is not None and target is not None:
                self._output.cancel_utterance(target)

    # -- commands: paste-last, undo ------------------------------------------------------------
    def paste_last(self, text: str | None = None) -> DeliveryResult:
        """Deliver the last final (or ``text``) again, to the window focused now."""
        with self._lock:
            text = text if text is not None else self.last_text
            if self._output is None or self._output.backend is None:
                raise QasrError("text output is off (output.sink = \"none\" or no desktop); nothing to paste")
            if not text:
                raise QasrError("nothing to paste: no final since the daemon started and the journal is empty")
            target = self._output.begin_utterance()
            delivery = profiles.Delivery.of(profiles.match(self.profiles, target.window))
            target.sink = delivery.sink
            shaper = self._services.shaper
            if shaper is not None:
                text = shaper.with_trailing_space(text, delivery.trailing_space)
            result = self._output.deliver(text, target)
        self.publish_warning(result, None)
        return result

    def undo(self) -> UndoResult:
        """Remove the last delivered final from its window when that is safe; a warning when it is not."""
        with self._lock:
            if self._output is None or self._output.backend is None:
                result = UndoResult(False, message="nothing deleted: text output is off")
            else:
                result = remove_last(self._output)
        if result.message:
            log.warning("undo: %s", result.message)
            self._services.publish(protocol.warning("undo", result.message))
        else:
            log.info("undo: removed %d characters from %s", result.chars,
                     result.window.describe() if result.window is not None else "the window")
        return result

    def publish_warning(self, result: DeliveryResult | None, utterance_id: str | None, ordered: bool = False) -> None:
        if result is None or not result.message:
            return
        code = "focus_moved" if result.focus_moved else "output"
        info = {"utterance_id": utterance_id} if utterance_id is not None else {}
        message = protocol.warning(code, result.message, sink=delivered_by(result), **info)
        if ordered:
            self._services.in_order(MIC, lambda: self._services.publish(message))
        else:
            self._services.publish(message)


def where(result: DeliveryResult | None) -> dict:
    """The journal's ``app`` and ``title`` of the window a final went to (when the desktop told)."""
    window = result.target if result is not None else None
    if window is None:
        return {}
    return {"app": window.wm_class or window.wm_instance, "title": window.name}


def delivered_by(result: DeliveryResult | None) -> str | None:
    """The sink that delivered a final (`clipboard` when it was left there), None when nothing was."""
    if result is None:
        return None
    return result.sink if result.delivered or result.sink == "clipboard" else None
