"""Text sent in append-only pieces (Wyoming transcript chunks, OpenAI ``transcript.text.delta``, realtime
``delta``s): each newer version of the text gives the part not sent yet.

A version that does not extend what was sent (the model changed its mind about uncommitted text) gives
nothing; the rest goes out with a later version that does, or with the final's own full text.
"""

from __future__ import annotations


class AppendOnlyText:
    def __init__(self) -> None:
        self.sent = ""

    def delta(self, text: str) -> str:
        """What ``text`` adds to what was sent ("" if nothing, or if it does not extend it); it counts as sent."""
        if len(text) > len(self.sent) and text.startswith(self.sent):
            added, self.sent = text[len(self.sent):], text
            return added
        return ""
