"""Issue 22 on Wayland: the daemon as the seat's input method (input-method-v2) under headless sway.

One sway session, one daemon with ``[ime] wayland = true`` (the tiny random bundle, a PulseAudio null sink
as its microphone). A ``wtype -s`` process keeps a virtual keyboard on the seat for the whole module: a
seat without a keyboard gives no client the keyboard focus, and GTK enables text-input only with it.
Push-to-talk goes through the control commands a compositor binding runs; the final is committed through
input-method-v2 into a GTK 3 entry (Wayland backend, im-wayland = text-input-v3), where a preedit shows
first, and into foot. Replacement rules turn the random model's text into known accents, CJK and emoji.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from qasr.daemon.desktop.wayland_ime import HELD, WaylandInputMethod
from tests.fixtures.dictation import EXACT_RULE, EXACT_TEXT, MAX_NEW_TOKENS, NO_CONTROLS_RULE
from tests.harness.daemon import DaemonProcess
from tests.harness.events import Subscribers
from tests.harness.ibus import SYSTEM_PYTHON, GtkEntries
from tests.harness.processes import stop_process
from tests.harness.speech import espeak_wav
from tests.harness.sway import FootLine, Sway, gtk_available, missing_tools

pytestmark = pytest.mark.skipif(
    bool(missing_tools()) or not shutil.which("espeak-ng") or not shutil.which("setpriv") or not gtk_available(),
    reason="headless sway, foot, wtype, espeak-ng and python3-gi with GTK 3 are needed")
GTK_APP = "qasr-ime-gtk"


class WaylandIme:
    def __init__(self, sway: Sway, env: DaemonProcess, pulse, replacements, tmp) -> None:
        self.sway, self.env, self.pulse, self.replacements, self.tmp = sway, env, pulse, replacements, tmp
        self.subscriber: Subscribers | None = None
        self.speech = espeak_wav("testing one two three")

    def dictate(self) -> int:
        mark = self.subscriber.mark()
        assert self.env.cli("start-utterance", timeout=30).returncode == 0
        try:
            assert self.subscriber.wait(mark, "state", 20, state="recording") is not None
            self.pulse.play(self.speech)
        finally:
            assert self.env.cli("stop-utterance", timeout=30).returncode == 0
        return mark

    def final_after(self, mark: int) -> dict:
        final = self.subscriber.wait(mark, "final", 120)
        assert final is not None, f"no final: {self.subscriber.since(mark)}\n{self.env.log_tail(30)}"
        return final

    def wait_active(self) -> None:
        status = self.env.wait_status(lambda s: (s.get("ime") or {}).get("active"), timeout=15)
        assert status["ime"]["active"], status


@pytest.fixture(scope="module")
def wime(pulse_server, tiny_bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wayland-ime")
    sway = Sway()
    sway.start()
    keyboard = subprocess.Popen(["wtype", "-s", "600000"], env=sway.env, stdin=subprocess.DEVNULL)
    replacements = tmp / "replacements.txt"
    replacements.write_text(NO_CONTROLS_RULE + EXACT_RULE, encoding="utf-8")
    env = DaemonProcess(tmp / "daemon", extra_env={**pulse_server.client_env, **sway.client_env})
    env.write_config(f'[shaping]\nreplacements_file = "{replacements}"\n[ime]\nwayland = true\n')
    desk = WaylandIme(sway, env, pulse_server, replacements, tmp)
    try:
        env.start(tiny_bundle, "--set", "vad.mode=ptt", "--set", "engine.language=English",
                  "--set", f"engine.max_new_tokens={MAX_NEW_TOKENS}", "--set", "engine.rtf_budget=10")
        status = env.wait_status(lambda s: s["state"] == "listening", timeout=60)
        assert [e["name"] for e in status["ime"]["engines"]] == ["wayland"], (status, env.log_tail(20))
        desk.subscriber = Subscribers.of(env)
        yield desk
    finally:
        if desk.subscriber is not None:
            desk.subscriber.close()
        env.stop()
        stop_process(keyboard, timeout=5)
        sway.stop()


def test_the_final_is_committed_into_a_gtk_entry_after_a_preedit(wime):
    gtk_env = {**wime.sway.env, "GDK_BACKEND": "wayland", "GTK_IM_MODULE": "wayland", "NO_AT_BRIDGE": "1"}
    gtk = GtkEntries(gtk_env, wime.tmp / "gtk_entries.py")
    try:
        wime.sway.wait_window(GTK_APP)
        wime.sway.focus(GTK_APP)
        gtk.focus(0)
        wime.wait_active()
        gtk_mark = gtk.mark()
        final = wime.final_after(wime.dictate())
        assert final["text"] == EXACT_TEXT and final["sink"] == "ime", final
        assert gtk.wait_text(0, EXACT_TEXT) == EXACT_TEXT
        events = gtk.since(gtk_mark)
        commit = next(e for e in events if e["ev"] == "changed" and e["text"] == EXACT_TEXT)
        assert [e for e in events if e["ev"] == "preedit" and e["text"] and e["t"] < commit["t"]], events
        assert "Wayland input method (input-method-v2) active" in wime.env.log()
    finally:
        gtk.close()


def test_the_final_is_committed_into_foot(wime):
    term = FootLine(wime.sway, "qasr-ime-foot", wime.tmp / "foot.txt")
    try:
        term.focus()
        wime.wait_active()
        final = wime.final_after(wime.dictate())
        assert final["sink"] == "ime", final
        assert term.wait_text(EXACT_TEXT) == EXACT_TEXT
    finally:
        term.close()


def test_a_second_input_method_is_refused_and_says_the_seat_is_held(wime):
    second = WaylandInputMethod(None, wime.sway.env)
    assert not second.start()
    assert second.unavailable == HELD
