"""The microphone's route in-process: a final is shaped once (replacements, spoken formatting, the short
final's period), typed with its trailing space into the window its utterance began in, journaled with
that window and published with the shaped text; live typing leaves typed text alone; "scratch that" undoes
instead of typing; a cancelled utterance delivers nothing."""

from __future__ import annotations

import json

from qasr.daemon.desktop.output import DeliveryResult, UtteranceTarget
from qasr.daemon.desktop.x11 import WindowInfo
from qasr.daemon.results.desktop_delivery import DesktopDelivery
from qasr.daemon.results.dictation_route import DictationRoute
from qasr.daemon.results.journal import Journal, JournalOptions
from qasr.daemon.results.result_services import ResultServices
from qasr.daemon.results.text_shaping import ShapingOptions, TextShaper
from qasr.engine.events import FinalEvent, FinalTimings, PartialEvent, StepTimings

EDITOR = WindowInfo(7, "gedit", "Gedit", "notes.txt")


class FakeOutput:
    focus_known = True
    backend = None

    def __init__(self) -> None:
        self.typed: list[tuple[str, object]] = []
        self.committed: list[str] = []
        self.cancelled = 0

    def begin_utterance(self) -> UtteranceTarget:
        return UtteranceTarget(EDITOR)

    def deliver(self, text, target=None):
        self.typed.append((text, target.window if target is not None else None))
        return DeliveryResult("type", True, chars=len(text), target=EDITOR)

    def deliver_committed(self, delta, target=None):
        self.committed.append(delta)
        target.typed_text += delta
        return None

    def cancel_utterance(self, target=None):
        self.cancelled += 1

    def close(self):
        pass


def route(tmp_path, live=False, rules="(?i)kwen = Qwen\n", spoken=True):
    (tmp_path / "replacements.txt").write_text(rules, encoding="utf-8")
    published: list[dict] = []
    results = ResultServices(published.append)
    results.shaper = TextShaper(ShapingOptions(config_dir=tmp_path, spoken_formatting=spoken,
                                               strip_final_period_max_words=3))
    results.journal = Journal(JournalOptions(path=tmp_path / "journal.jsonl", fsync=False))
    desktop = DesktopDelivery(results)
    output = desktop._output = FakeOutput()
    return DictationRoute(results, desktop, live_typing=lambda: live), desktop, output, published


def final(uid: str, text: str) -> FinalEvent:
    return FinalEvent(uid, 2, text, "English", [1, 2], 1.0, 2.5, "stop", text, FinalTimings(latency_ms=40.0))


def journal(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "journal.jsonl").read_text(encoding="utf-8").splitlines()]


def test_a_final_is_shaped_once_typed_journaled_and_published(tmp_path):
    mic, desktop, output, published = route(tmp_path)
    desktop.begin_output("1")
    mic.final(final("1", "hello kwen period"))
    assert output.typed == [("hello Qwen ", EDITOR)]  # spoken "period", then dropped: a final of ≤ 3 words
    [message] = published
    assert message["type"] == "final" and message["text"] == "hello Qwen." and message["sink"] == "type"
    assert message["source"] == "mic" and message["seq"] == 2 and message["timings"]["latency_ms"] == 40.0
    [entry] = journal(tmp_path)
    assert (entry["text"], entry["app"], entry["title"], entry["sink"]) == ("hello Qwen.", "Gedit", "notes.txt",
                                                                             "type")
    assert desktop.last_text == "hello Qwen"


def test_live_typing_types_committed_text_and_leaves_it_as_typed(tmp_path):
    mic, desktop, output, published = route(tmp_path, live=True)
    desktop.begin_output("1")
    mic.partial(PartialEvent("1", 0, "hello kwen", " per", 1.0, 2.0, StepTimings()))
    mic.final(final("1", "hello kwen period"))
    assert output.committed == ["hello kwen"]
    assert output.typed == [("hello kwen period ", EDITOR)]  # the output types what live typing has not
    assert [m["type"] for m in published] == ["partial", "final"]
    assert published[1]["text"] == "hello Qwen period"  # replacements only: no spoken formatting live


def test_scratch_that_undoes_instead_of_typing_and_a_cancel_delivers_nothing(tmp_path):
    mic, desktop, output, published = route(tmp_path)
    desktop.begin_output("1")
    mic.final(final("1", "scratch that"))
    desktop.begin_output("2")
    mic.cancelled("2")
    assert output.typed == [] and output.cancelled == 2
    final_message, warning = published
    assert final_message["text"] == "scratch that" and final_message["sink"] is None
    assert warning["type"] == "warning" and warning["code"] == "undo"
    assert not (tmp_path / "journal.jsonl").exists()
