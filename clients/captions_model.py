"""Caption state, sans-I/O: daemon events in, lines of styled text out.

    model = CaptionModel(CaptionOptions(max_lines=2, fade_after_s=6))
    model.apply(event.raw, now=time.monotonic())       # qasr.v1 event dicts (+ client "disconnected")
    view = model.view(width=600, measure=font.measure, now=time.monotonic())
    for line in view.lines:                              # at most max_lines, the newest last
        for span in line:                                # Span(text, style) with style "committed"/"tentative"
            ...
    view.opacity                                         # 1.0 while speech is recent, down to 0.0 as it fades

``sources`` picks whose words are shown (the microphone ``mic``, system audio ``system``: what the
computer plays); with ``labels`` each utterance whose source differs from the one before it starts with
``you:`` or ``them:``.

Text flows like a teleprompter: finished utterances (finals) and the committed part of the utterance in
progress are solid, its tentative tail is dimmed; wrapped to ``width`` (measured with ``measure``: pixels
in the overlay, display columns by default) and only the newest ``max_lines`` lines are shown, so older
ones scroll off the top. After ``fade_after_s`` seconds without a transcript event the captions fade out
over ``fade_s`` seconds and are then forgotten, so the next utterance starts on a clean slate.
"""

from __future__ import annotations

import unicodedata
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

COMMITTED = "committed"
TENTATIVE = "tentative"

# Connection states shown by the captions clients.
CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"

Measure = Callable[[str], float]
LABELS = {"mic": "you:", "system": "them:"}  # other sources (WebSocket streams...) by their own name


def source_of(event: dict) -> str:
    """A partial's or final's source; a daemon from before sources were sent means the microphone."""
    return str(event.get("source") or "mic")


def label(source: str) -> str:
    return LABELS.get(source, f"{source.partition(':')[0]}:")


@dataclass(frozen=True)
class CaptionOptions:
    max_lines: int = 2
    fade_after_s: float = 6.0  # seconds without transcript events before the captions fade
    fade_s: float = 1.0  # length of the fade-out
    history_chars: int = 2000  # finished text kept for wrapping; older text is dropped
    sources: tuple[str, ...] = ()  # event sources shown ("mic", "system"...); empty: all
    labels: bool = False  # mark whose words they are ("you:", "them:") where the source changes

    def __post_init__(self) -> None:
        if self.max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        if self.fade_after_s <= 0 or self.fade_s < 0:
            raise ValueError("fade_after_s must be positive and fade_s not negative")


@dataclass(frozen=True)
class Span:
    text: str
    style: str  # COMMITTED or TENTATIVE


@dataclass(frozen=True)
class CaptionView:
    lines: tuple[tuple[Span, ...], ...]
    opacity: float
    connection: str
    detail: str  # why we are (re)connecting; "" when connected

    @property
    def text(self) -> str:
        return "\n".join("".join(span.text for span in line) for line in self.lines)


def is_wide(char: str) -> bool:
    """CJK and other full-width characters: two display columns, and a line may break after each."""
    return unicodedata.east_asian_width(char) in ("W", "F")


def display_width(text: str) -> float:
    """Default measure: terminal-style display columns."""
    return float(sum(2 if is_wide(c) else 1 for c in text))


def separator(left: str, right: str) -> str:
    """What goes between two utterances: a space between words, nothing next to CJK text or a space."""
    if not left or not right or left[-1].isspace() or right[0].isspace():
        return ""
    if is_wide(left[-1]) or is_wide(right[0]):
        return ""
    return " "


def join_text(left: str, right: str) -> str:
    return left + separator(left, right) + right


class CaptionModel:
    def __init__(self, options: CaptionOptions | None = None) -> None:
        self.options = options or CaptionOptions()
        self._finished = ""  # text of finals still on screen
        self._live: OrderedDict[str, tuple[str, str, str]] = OrderedDict()  # id -> (committed, tentative, source)
        self._finished_source: str | None = None  # whose words end the finished text
        self._last_activity: float | None = None
        self.connection = CONNECTING
        self.detail = ""

    # ---- events in -----------------------------------------------------------------------------

    def apply(self, event: dict, now: float) -> bool:
        """Take one qasr.v1 event dict; True when what is shown may have changed."""
        self._expire(now)
        kind = event.get("type")
        if kind in ("partial", "final") and self.options.sources and source_of(event) not in self.options.sources:
            return False
        if kind == "partial":
            self.partial(str(event.get("utterance_id", "")), event.get("committed") or "",
                         event.get("tentative") or "", now, source_of(event))
        elif kind == "final":
            self.final(str(event.get("utterance_id", "")), event.get("text") or "", now, source_of(event))
        elif kind == "hello":
            self.set_connection(CONNECTED)
        elif kind == "disconnected":
            # Never connected yet: still "connecting" (the daemon may not have started).
            state = CONNECTING if self.connection == CONNECTING else RECONNECTING
            self.set_connection(state, event.get("reason") or "connection lost")
        elif kind == "vad" and event.get("speech"):
            self._last_activity = now  # speech started: keep what is shown from fading
        else:
            return False
        return True

    def partial(self, utterance_id: str, committed: str, tentative: str, now: float, source: str = "mic") -> None:
        self._expire(now)
        self._live[utterance_id] = (committed, tentative, source)
        self._last_activity = now

    def final(self, utterance_id: str, text: str, now: float, source: str = "mic") -> None:
        self._expire(now)
        self._live.pop(utterance_id, None)
        text = text.strip()
        if text:
            self._finish_text(text, source)
        self._last_activity = now

    def _finish_text(self, text: str, source: str) -> None:
        if self.options.labels and source != self._finished_source:
            text = f"{label(source)} {text}"
        self._finished_source = source
        self._finished = join_text(self._finished, text)[-self.options.history_chars:]

    def set_connection(self, state: str, detail: str = "") -> None:
        self.connection = state
        self.detail = detail if state != CONNECTED else ""
        if state != CONNECTED:
            # Utterances in flight will never get their final from a lost connection: keep their text solid.
            for committed, tentative, source in self._live.values():
                if (committed + tentative).strip():
                    self._finish_text((committed + tentative).strip(), source)
            self._live.clear()

    def clear(self) -> None:
        self._finished = ""
        self._finished_source = None
        self._live.clear()
        self._last_activity = None

    # ---- view out ------------------------------------------------------------------------------

    def opacity(self, now: float) -> float:
        if self._last_activity is None:
            return 0.0
        idle = now - self._last_activity - self.options.fade_after_s
        if idle <= 0:
            return 1.0
        if self.options.fade_s <= 0 or idle >= self.options.fade_s:
            return 0.0
        return 1.0 - idle / self.options.fade_s

    def next_change_in(self, now: float) -> float | None:
        """Seconds until the view changes by time alone (fade start/step), None when nothing is pending."""
        if self._last_activity is None:
            return None
        idle = now - self._last_activity
        if idle < self.options.fade_after_s:
            return self.options.fade_after_s - idle
        if idle < self.options.fade_after_s + self.options.fade_s:
            return 0.0
        return None

    def spans(self) -> list[Span]:
        """All text on screen, oldest first, as styled runs (before wrapping)."""
        spans: list[Span] = []
        text = self._finished
        if text:
            spans.append(Span(text, COMMITTED))
        shown_source = self._finished_source
        for committed, tentative, source in self._live.values():
            first = True
            for piece, style in ((committed, COMMITTED), (tentative, TENTATIVE)):
                if not piece:
                    continue
                if first:  # a new utterance: separate it from what precedes it (and say whose it is)
                    if self.options.labels and source != shown_source:
                        _append(spans, separator(text, "x") + label(source), COMMITTED)
                        text += separator(text, "x") + label(source)
                    shown_source = source
                    piece = separator(text, piece) + piece
                    first = False
                text += piece
                if spans and spans[-1].style == style:
                    spans[-1] = Span(spans[-1].text + piece, style)
                else:
                    spans.append(Span(piece, style))
        return spans

    def view(self, width: float, now: float, measure: Measure = display_width) -> CaptionView:
        self._expire(now)
        opacity = self.opacity(now)
        lines = wrap(self.spans(), width, measure) if opacity > 0 else []
        return CaptionView(tuple(tuple(line) for line in lines[-self.options.max_lines:]), opacity,
                           self.connection, self.detail)

    def _expire(self, now: float) -> None:
        """Fully faded captions are forgotten, so the next speech starts on a clean slate."""
        if self._last_activity is not None and self.opacity(now) <= 0.0:
            self.clear()


# ---- wrapping ------------------------------------------------------------------------------------


Unit = list[Span]  # a piece no line break may split: a word (possibly of two styles) and its trailing spaces


def _text(spans: list[Span]) -> str:
    return "".join(span.text for span in spans)


def _append(spans: list[Span], text: str, style: str) -> None:
    if spans and spans[-1].style == style:
        spans[-1] = Span(spans[-1].text + text, style)
    elif text:
        spans.append(Span(text, style))


def _units(spans: list[Span]) -> list[Unit]:
    """Break points: after a word's trailing spaces, and around each wide (CJK) character."""
    units: list[Unit] = []
    current: Unit = []
    for span in spans:
        for char in span.text.replace("\n", " "):
            last = _text(current)[-1:] if current else ""
            if last and not char.isspace() and (last.isspace() or is_wide(last) or is_wide(char)):
                units.append(current)
                current = []
            _append(current, char, span.style)
    if current:
        units.append(current)
    return units


def _split_long(unit: Unit, width: float, measure: Measure) -> list[Unit]:
    """A word wider than the line: cut it by characters."""
    pieces: list[Unit] = []
    current: Unit = []
    for span in unit:
        for char in span.text:
            if current and measure(_text(current) + char) > width:
                pieces.append(current)
                current = []
            _append(current, char, span.style)
    if current:
        pieces.append(current)
    return pieces


def wrap(spans: list[Span], width: float, measure: Measure = display_width) -> list[list[Span]]:
    """Greedy word wrap of styled text into lines no wider than ``width``; adjacent runs of a style merge."""
    lines: list[list[Span]] = []
    line: list[Span] = []
    for unit in _units(spans):
        fits_alone = measure(_text(unit).rstrip()) <= width
        for piece in [unit] if fits_alone else _split_long(unit, width, measure):
            if line and measure((_text(line) + _text(piece)).rstrip()) > width:
                lines.append(line)
                line = []
            for span in piece:
                _append(line, span.text if line else span.text.lstrip(), span.style)
    if line:
        lines.append(line)
    return [stripped for stripped in map(_rstrip_line, lines) if stripped]


def _rstrip_line(line: list[Span]) -> list[Span]:
    out = list(line)
    while out:
        text = out[-1].text.rstrip()
        if text:
            out[-1] = Span(text, out[-1].style)
            break
        out.pop()
    return out
