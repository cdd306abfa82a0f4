"""Where each utterance's results go: the job or client stream that began it (thread-safe).

Routes of the sources that answer one requester (a WebSocket audio stream, an OpenAI or Wyoming job, a
realtime session) register the utterance when it begins; the decoder thread looks it up for every event,
and the event that ends the utterance (an outcome) drops the entry.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class UtteranceTargets(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, T] = {}

    def register(self, utterance_id: str, target: T) -> None:
        with self._lock:
            self._targets[utterance_id] = target

    def lookup(self, utterance_id: str, outcome: str | None) -> T | None:
        """The utterance's target; an outcome (the utterance ended) also forgets it."""
        with self._lock:
            if outcome is not None:
                return self._targets.pop(utterance_id, None)
            return self._targets.get(utterance_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._targets)
