"""The router's route for system audio (source ``system``): captions for every subscriber.

What the computer plays is never typed into a window nor journaled as dictation: its partials, finals
and errors are broadcast as they are (each carries ``"source": "system"``); the captions clients and the
call recorder (which taps the broadcast) take them from there."""

from __future__ import annotations

from typing import Callable


class SystemRoute:
    def __init__(self, publish: Callable[[dict], None]) -> None:
        self._publish = publish

    def deliver(self, utterance_id: str, message: dict | None, outcome: str | None) -> None:
        if message is not None:
            self._publish(message)
