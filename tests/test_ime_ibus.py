"""Issue 22 end to end: the IBus engine `qasr` with a real ibus-daemon, a GTK 3 window and the daemon.

One Xvfb display, one private D-Bus session and ibus-daemon (reading only qasr's component file, as
`qasr-daemon ime install` writes it), one GTK 3 window with two entries under the IBus IM module, and
one daemon (the tiny random bundle, a PulseAudio null sink as its microphone, [ime] hotkey F9). The
engine is selected before the daemon starts: it attaches by itself once the daemon is up. Push-to-talk
is the engine's own key: XTEST F9 press and release into the focused entry, with espeak-ng speech
playing into the microphone meanwhile.

As in the other desktop tests, replacement rules shape the random model's text: control characters are
removed, and ``(?s)^.*$ = <fixed text>`` puts known Latin accents, CJK and emoji (or 2000 characters)
through the path that delivers a dictated final.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from qasr.daemon.desktop.ime_install import component_xml, engine_script
from qasr.daemon.desktop.ime_text import fit_to_surrounding
from tests.fixtures.dictation import EXACT_RULE, EXACT_TEXT, MAX_NEW_TOKENS, NO_CONTROLS_RULE
from tests.harness.daemon import DaemonProcess
from tests.harness.events import Subscribers
from tests.harness.ibus import SYSTEM_PYTHON, GtkEntries, IBusSession, ibus_missing
from tests.harness.processes import kill_pid
from tests.harness.speech import espeak_wav
from tests.harness.xvfb import Xvfb

MISSING = ibus_missing() + ([] if shutil.which("espeak-ng") else ["espeak-ng"])
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} "
                                "(apt install ibus ibus-gtk3 gir1.2-ibus-1.0 python3-gi dbus xdotool espeak-ng)")
LONG_TEXT = ("Długi tekst — ça va? 長い文章です。🎙️ " * 80)[:2000]


def config_text(replacements) -> str:
    return (f'[shaping]\nreplacements_file = "{replacements}"\n[output]\nrestore_delay_s = 0.5\n'
            '[ime]\nhotkey = "<f9>"\ncontext_from_surrounding = true\n')


class ImeDesk:
    def __init__(self, env: DaemonProcess, ibus: IBusSession, gtk: GtkEntries, pulse, replacements) -> None:
        self.env, self.ibus, self.gtk, self.pulse, self.replacements = env, ibus, gtk, pulse, replacements
        self.subscriber: Subscribers | None = None
        self.speech = espeak_wav("testing one two three")
        self.long_speech = espeak_wav("testing one two three, this is a longer dictation to see partial results")

    def rules(self, rules: str) -> None:
        self.replacements.write_text(NO_CONTROLS_RULE + rules, encoding="utf-8")
        time.sleep(0.05)  # the shaper re-reads the file when its modification time changes

    def dictate(self, during=None, preedit: bool = False) -> tuple[int, int, float]:
        """Hold F9 (XTEST into the focused entry), speak, run ``during()``, release F9. ``preedit``: a longer
        speech, and the test sees a preedit while it plays (partials come while voice is heard)."""
        mark, gtk_mark = self.subscriber.mark(), self.gtk.mark()
        self.ibus.xdotool("keydown", "F9")
        released = 0.0
        try:
            assert self.subscriber.wait(mark, "state", 20, state="recording") is not None, self.env.log_tail(20)
            player = self.pulse.play(self.long_speech if preedit else self.speech, wait=not preedit)
            if preedit:
                self.gtk.wait(lambda e: e["ev"] == "preedit" and e["text"], 30, gtk_mark)
                player.wait(timeout=60)
            if during is not None:
                during()
        finally:
            released = time.monotonic()
            self.ibus.xdotool("keyup", "F9")
        return mark, gtk_mark, released

    def final_after(self, mark: int) -> dict:
        final = self.subscriber.wait(mark, "final", 120)
        assert final is not None, f"no final: {self.subscriber.since(mark)}\n{self.env.log_tail(30)}"
        return final

    def clipboard(self) -> str:
        return subprocess.run(["xclip", "-o", "-selection", "clipboard"], env=self.ibus.env, capture_output=True,
                              text=True, timeout=10).stdout


@pytest.fixture(scope="module")
def ime(pulse_server, tiny_bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ime")
    xvfb = Xvfb()
    display = xvfb.start()
    replacements = tmp / "replacements.txt"
    replacements.write_text(NO_CONTROLS_RULE, encoding="utf-8")
    env = DaemonProcess(tmp / "daemon", extra_env=pulse_server.client_env, display=display)
    env.write_config(config_text(replacements))
    ibus = IBusSession(display, env.runtime, tmp / "ibus", component_xml(SYSTEM_PYTHON, engine_script()))
    gtk = desk = None
    try:
        ibus.start()
        gtk = GtkEntries(ibus.env, tmp / "gtk_entries.py")
        gtk.focus(0)
        ibus.select()  # the engine starts now, before the daemon: it attaches once the daemon is up
        desk = ImeDesk(env, ibus, gtk, pulse_server, replacements)
        env.start(tiny_bundle, "--set", "vad.mode=ptt", "--set", "hotkey.enabled=false",
                  "--set", "engine.language=English", "--set", f"engine.max_new_tokens={MAX_NEW_TOKENS}",
                  "--set", "engine.rtf_budget=10")
        status = env.wait_status(lambda s: s["state"] == "listening" and (s.get("ime") or {}).get("engines"),
                                 timeout=60)
        assert status["ime"]["engines"][0]["name"] == "ibus", (status, ibus.log.read_text()[-2000:])
        desk.subscriber = Subscribers.of(env)
        yield desk
    finally:
        if desk is not None and desk.subscriber is not None:
            desk.subscriber.close()
        env.stop()
        if gtk is not None:
            gtk.close()
        ibus.stop()
        xvfb.stop()


def refocus(ime: ImeDesk, index: int, text: str = "") -> None:
    """Put ``text`` in the entry (the other one empty) and give it the focus afresh (a focus-in sends its
    surrounding text)."""
    ime.gtk.set_text(1 - index, "")
    ime.gtk.set_text(index, text)
    ime.gtk.focus(1 - index)
    ime.gtk.focus(index)
    status = ime.env.wait_status(lambda s: (s.get("ime") or {}).get("active"), timeout=10)
    assert status["ime"]["active"], status


def test_hold_to_talk_shows_the_preedit_then_commits_the_final_exactly(ime):
    ime.rules(EXACT_RULE)
    refocus(ime, 0)
    mark, gtk_mark, released = ime.dictate(preedit=True)
    final = ime.final_after(mark)
    assert final["text"] == EXACT_TEXT and final["sink"] == "ime", final
    assert ime.gtk.wait_text(0, EXACT_TEXT) == EXACT_TEXT  # no trailing space: the next dictation joins
    events = ime.gtk.since(gtk_mark)
    commit = next(e for e in events if e["ev"] == "changed" and e["text"] == EXACT_TEXT)
    preedits = [e for e in events if e["ev"] == "preedit" and e["text"] and e["t"] < commit["t"]]
    assert preedits, f"no preedit before the commit: {events}"
    partials = ime.subscriber.since(mark, "partial", utterance_id=final["utterance_id"])
    assert any(p["committed"] + p["tentative"] for p in partials)
    assert events[-1]["ev"] != "preedit" or events[-1]["text"] == ""  # the preedit is gone after the commit
    assert ime.gtk.texts()[1] == ""
    entry = json.loads(ime.env.journal_file.read_text().splitlines()[-1])
    assert entry["utterance_id"] == final["utterance_id"] and entry["sink"] == "ime"
    assert "sink ime" in ime.env.log()


def test_ordinary_keys_pass_through_unchanged_with_the_engine_active(ime):
    refocus(ime, 1)
    ime.ibus.xdotool("type", "--delay", "20", "Hello, world 42!")
    ime.ibus.xdotool("key", "Escape")  # not recording: Escape is the application's
    assert ime.gtk.wait_text(1, "Hello, world 42!") == "Hello, world 42!"


def test_surrounding_text_is_the_context_and_joins_the_final(ime):
    before = "Dear team. We met"
    ime.rules(EXACT_RULE)
    refocus(ime, 0, before)
    mark, _, _ = ime.dictate()
    final = ime.final_after(mark)
    assert final["sink"] == "ime" and final["context"].endswith(before), final
    expected = before + fit_to_surrounding(final["text"], before)
    assert expected == before + " grüße, café — naïve 你好世界 🎤😀"  # a space, mid-sentence lower case
    assert ime.gtk.wait_text(0, expected) == expected


def test_a_2000_character_final_is_committed_whole(ime):
    ime.rules(f"(?s)^.*$ = {LONG_TEXT}\n")
    refocus(ime, 1)
    final = ime.final_after(ime.dictate()[0])
    assert final["text"] == LONG_TEXT.strip() and final["sink"] == "ime"
    assert ime.gtk.wait_text(1, final["text"]) == final["text"]


def test_focus_moved_to_another_entry_mid_utterance_commits_nothing_and_warns(ime):
    ime.rules(EXACT_RULE)
    refocus(ime, 0)
    mark, gtk_mark, _ = ime.dictate(during=lambda: ime.gtk.focus(1))
    final = ime.final_after(mark)
    assert final["sink"] == "clipboard", final
    warning = ime.subscriber.wait(mark, "warning", 10, utterance_id=final["utterance_id"])
    assert warning is not None and warning["code"] == "focus_moved", ime.subscriber.since(mark)
    assert ime.clipboard() == final["text"]
    time.sleep(0.5)
    assert ime.gtk.texts() == ["", ""]
    entry = json.loads(ime.env.journal_file.read_text().splitlines()[-1])
    assert entry["text"] == final["text"]  # in the history


def test_escape_cancels_the_utterance_and_is_not_typed(ime):
    refocus(ime, 0)
    mark = ime.subscriber.mark()
    ime.ibus.xdotool("key", "F9")  # a tap: toggled on
    assert ime.subscriber.wait(mark, "state", 20, state="recording") is not None
    ime.ibus.xdotool("key", "Escape")
    assert ime.subscriber.wait(mark, "state", 20, state="listening") is not None
    time.sleep(0.5)
    assert ime.subscriber.since(mark, "final") == [] and ime.gtk.texts() == ["", ""]


def test_without_a_focused_ibus_field_the_input_method_is_not_the_sink(ime, tmp_path):
    """A closed window leaves the focus with ibus-daemon's own "fake" context: no field of ours."""
    other = GtkEntries(ime.ibus.env, tmp_path / "other.py", "qasr-other")
    other.focus(0)
    other.close()
    status = ime.env.wait_status(lambda s: not s["ime"]["active"], timeout=10)
    assert not status["ime"]["active"] and status["ime"]["engines"], status
    ime.ibus.xdotool("search", "--name", "qasr ime test", "windowfocus", "--sync", "%1")  # no WM to do it
    refocus(ime, 0)


def test_the_daemon_dying_mid_utterance_clears_the_preedit_and_keys_keep_passing(ime):
    """Last: it kills the daemon (SIGKILL: a crash; a graceful `qasr-daemon stop` finishes the utterance)."""
    ime.rules("")
    refocus(ime, 0)
    gtk_mark = ime.gtk.mark()
    ime.ibus.xdotool("keydown", "F9")
    player = ime.pulse.play(ime.speech, wait=False)
    try:
        shown = ime.gtk.wait(lambda e: e["ev"] == "preedit" and e["text"], 30, gtk_mark)
        assert shown is not None, ime.gtk.since(gtk_mark)
        kill_pid(ime.env.pid())
        cleared = ime.gtk.wait(lambda e: e["ev"] == "preedit" and not e["text"] and e["t"] > shown["t"], 10,
                               gtk_mark)
        assert cleared is not None, ime.gtk.since(gtk_mark)
    finally:
        ime.ibus.xdotool("keyup", "F9")
        if player is not None:
            player.wait(timeout=30)
    ime.ibus.xdotool("type", "--delay", "20", "still typing")
    assert ime.gtk.wait_text(0, "still typing") == "still typing"
    assert "Traceback" not in ime.ibus.log.read_text()
