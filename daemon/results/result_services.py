"""What every route shares: the broadcast, text shaping, the journal, word timestamps, saved utterance audio.

Components replace ``shaper`` and ``journal`` on reload; routes read them per event. With ``words``
(``[output] word_timestamps``, ``final_words.py``) a final's event goes out once the aligner added its words,
and events of word sources made after it wait behind it (``in_order``).
"""

from __future__ import annotations

import logging
from typing import Callable

from qasr.daemon.results.final_words import FinalWords
from qasr.daemon.results.journal import Journal
from qasr.daemon.results.text_shaping import TextShaper
from qasr.daemon.results.utterance_audio import UtteranceAudioSaver
from qasr.engine.events import FinalEvent
from qasr.errors import QasrError

log = logging.getLogger("qasr.results")


class ResultServices:
    def __init__(self, publish: Callable[[dict], None]) -> None:
        self.publish = publish  # to every WebSocket subscriber
        self.shaper: TextShaper | None = None
        self.journal: Journal | None = None
        self.words: FinalWords | None = None  # word timestamps on finals (None: never)
        self.saver: UtteranceAudioSaver | None = None
        self.on_final: Callable[[str, dict], None] = lambda kind, message: None  # every final but the mic's

    def in_order(self, source: str, send: Callable[[], None]) -> None:
        """``send()``, after any final of a word source still waiting for its words."""
        words = self.words
        if words is None or not words.ordered(source):  # OpenAI, Wyoming: never wait for words
            send()
        else:
            words.in_order(send)

    def send_final(self, event: FinalEvent, source: str, message: dict, send: Callable[[dict], None]) -> None:
        """``send(message)``, with ``words`` when they are wanted (then on the aligner thread)."""
        words = self.words
        if words is None:
            send(message)
            return
        audio = words.take(event.utterance_id, source, event.audio_end_s - event.audio_start_s)
        if audio is not None:
            words.attach(message, audio, send)
        else:
            self.in_order(source, lambda: send(message))

    def final_audio(self, utterance_id: str) -> None:
        """A final came: its audio is saved (``debug.save_audio_dir``)."""
        if self.saver is not None:
            self.saver.save(utterance_id)

    def forget_audio(self, utterance_id: str) -> None:
        if self.saver is not None:
            self.saver.drop(utterance_id)
        if self.words is not None:
            self.words.drop(utterance_id)

    def write_journal(self, message: dict, extra: dict | None = None) -> None:
        journal = self.journal
        if journal is not None and message.get("text"):
            try:
                journal.append(message, extra=extra)
            except QasrError as exc:
                log.error("%s", exc)
