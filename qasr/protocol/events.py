"""Server -> client events as typed, immutable objects, and the parsing of server text frames.

    event = parse_server_message(text)      # Hello, State, Vad, Partial, Final, Error, Warning, Ack, Pong
    if isinstance(event, Final):            # or Unknown for a type this version does not know
        print(event.text)
    event.to_dict()                         # the message again, field for field (extra fields kept)

Fields a type does not declare stay in ``.raw`` (the whole message as received), so a newer daemon's
additions are never lost. ``builders.py`` makes the same messages as dicts; a test checks that both agree
with each other and with config/protocol.schema.json.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from qasr.protocol.constants import TARGET_SAMPLE_RATE
from qasr.protocol.json_text import decode_object


@dataclass(frozen=True)
class Event:
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    TYPE: ClassVar[str] = ""
    # Optional fields the wire leaves out rather than sending as null.
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ()

    @property
    def type(self) -> str:
        return self.raw.get("type") or self.TYPE

    def to_dict(self) -> dict[str, Any]:
        """The message as a dict: ``raw``'s fields (in their order) with the declared fields' values."""
        out = dict(self.raw)
        out["type"] = self.type
        for f in fields(self):
            if f.name == "raw":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in self.OMITTED_WHEN_NONE and f.name not in self.raw:
                continue
            out[f.name] = value
        return out


@dataclass(frozen=True)
class Hello(Event):
    TYPE: ClassVar[str] = "hello"
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("state",)

    protocol: str = ""
    version: str = ""
    model: str | None = None
    sample_rate: int = TARGET_SAMPLE_RATE
    client_id: str = ""
    state: str | None = None


@dataclass(frozen=True)
class State(Event):
    TYPE: ClassVar[str] = "state"

    state: str = ""


@dataclass(frozen=True)
class Vad(Event):
    TYPE: ClassVar[str] = "vad"
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("utterance_id",)

    speech: bool = False
    time: float = 0.0
    utterance_id: str | None = None


@dataclass(frozen=True)
class Partial(Event):
    TYPE: ClassVar[str] = "partial"

    utterance_id: str = ""
    seq: int = 0
    committed: str = ""
    tentative: str = ""
    language: str | None = None
    audio_start: float = 0.0
    audio_end: float = 0.0
    timings: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.committed + self.tentative


@dataclass(frozen=True)
class Final(Event):
    TYPE: ClassVar[str] = "final"
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("words",)

    utterance_id: str = ""
    seq: int = 0
    text: str = ""
    language: str | None = None
    token_ids: list = field(default_factory=list)
    audio_start: float = 0.0
    audio_end: float = 0.0
    timings: dict = field(default_factory=dict)
    sink: str | None = None
    words: list | None = None  # word timestamps, when the daemon adds them: [{"word", "start", "end"}]


@dataclass(frozen=True)
class Error(Event):
    TYPE: ClassVar[str] = "error"
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("command", "id")

    code: str = ""
    message: str = ""
    command: str | None = None
    id: Any = None


@dataclass(frozen=True)
class Warning(Event):  # noqa: A001 - the protocol's name for it
    TYPE: ClassVar[str] = "warning"

    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class Ack(Event):
    TYPE: ClassVar[str] = "ack"
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("id",)

    command: str = ""
    id: Any = None

    @property
    def result(self) -> dict:
        return {k: v for k, v in self.raw.items() if k not in ("type", "command", "id")}


@dataclass(frozen=True)
class Pong(Event):
    TYPE: ClassVar[str] = "pong"
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ("id",)

    id: Any = None


@dataclass(frozen=True)
class Unknown(Event):
    """An event type this version does not know (a newer daemon); ``raw`` has it all."""


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls for cls in (Hello, State, Vad, Partial, Final, Error, Warning, Ack, Pong)
}


def parse_event(data: dict) -> Event:
    """Typed event from a server message dict; unknown fields stay in ``.raw``."""
    cls = EVENT_TYPES.get(data.get("type"), Unknown)
    names = {f.name for f in fields(cls)} - {"raw"}
    return cls(raw=data, **{k: v for k, v in data.items() if k in names})


def parse_server_message(text: str | bytes) -> Event:
    """Typed event from one server text frame; ProtocolError (one line) when it is not a JSON object."""
    return parse_event(decode_object(text))
