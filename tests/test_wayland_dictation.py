"""Issue 11 end to end: dictation on Wayland, under a real headless sway, with the daemon running.

One sway session (an unprivileged user runs it when the tests run as root) and one daemon for the
module: WAYLAND_DISPLAY and SWAYSOCK set, DISPLAY unset, the tiny random test bundle, a PulseAudio null
sink as its microphone. Push-to-talk goes through the control commands a compositor key binding runs
(`start-utterance` on press, `stop-utterance` on release) while espeak-ng speech plays into the
microphone; what the focused foot terminal / GTK entry received is compared with the `final` event.

The random model's own finals are typed as they come (the engine keeps control characters and its
markers out of them; foot's raw ``cat`` would record any); ``(?s)^.*$ = <fixed text>`` puts known Latin
accents, CJK and emoji, or a newline, through exactly the code path that delivers a dictated final.
"""

from __future__ import annotations

import shutil
import time

import pytest

from qasr.daemon.bench.random_tokenizer import ADDED_TOKENS
from qasr.daemon.results.text_shaping import ShapingOptions, TextShaper
from qasr.engine.safe_text import is_unsafe
from tests.harness.daemon import DaemonProcess
from tests.harness.events import Subscribers
from tests.harness.speech import espeak_wav
from tests.harness.sway import FootLine, GtkEntry, Sway, gtk_available, missing_tools
from tests.fixtures.dictation import (
    EXACT_RULE, EXACT_TEXT, MAX_NEW_TOKENS, NO_CONTROLS_RULE, RESTORE_DELAY_S, USER_CLIPBOARD,
)

pytestmark = pytest.mark.skipif(
    bool(missing_tools()) or not shutil.which("espeak-ng") or not shutil.which("setpriv"),
    reason=f"headless sway needs {', '.join(missing_tools()) or 'setpriv'}, espeak-ng "
           "(apt install sway foot wtype wl-clipboard espeak-ng)",
)



def shaped(final_text: str) -> str:
    shaper = TextShaper(ShapingOptions(replacements_file="/nonexistent/r.txt", hotwords_file="/nonexistent/h.txt"))
    return shaper.shape(final_text)


def config_text(replacements, extra_output: str = "") -> str:
    return (f'[shaping]\nreplacements_file = "{replacements}"\n'
            f"[output]\nrestore_delay_s = {RESTORE_DELAY_S}\n{extra_output}")


class WaylandDesk:
    def __init__(self, sway: Sway, env: DaemonProcess, pulse, replacements, tmp) -> None:
        self.sway, self.env, self.pulse, self.replacements, self.tmp = sway, env, pulse, replacements, tmp
        self.subscriber: Subscribers | None = None
        self.speech = espeak_wav("testing one two three")

    def dictate(self, during=None) -> int:
        """Press (start-utterance), speak, run ``during()``, release (stop-utterance): a compositor binding."""
        mark = self.subscriber.mark()
        assert self.env.cli("start-utterance", timeout=30).returncode == 0
        try:
            assert self.subscriber.wait(mark, "state", 20, state="recording") is not None
            self.pulse.play(self.speech)
            if during is not None:
                during()
        finally:
            assert self.env.cli("stop-utterance", timeout=30).returncode == 0
        return mark

    def final_after(self, mark: int) -> dict:
        final = self.subscriber.wait(mark, "final", 120)
        assert final is not None, f"no final: {self.subscriber.since(mark)}\n{self.env.log_tail(30)}"
        return final

    def reload(self, extra_output: str = "", rules: str = "") -> None:
        self.replacements.write_text(rules, encoding="utf-8")
        self.env.write_config(config_text(self.replacements, extra_output))
        result = self.env.cli("reload", timeout=60)
        assert result.returncode == 0, result.stderr

    def foot(self, name: str, app_id: str = "") -> FootLine:
        return FootLine(self.sway, app_id or f"qasr-{name}", self.tmp / f"{name}.txt")

    def clipboard(self) -> str:
        return self.sway.wl("wl-paste", "--no-newline")


@pytest.fixture(scope="module")
def wdesk(pulse_server, tiny_bundle, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wayland")
    sway = Sway()
    sway.start()
    replacements = tmp / "replacements.txt"
    replacements.write_text("", encoding="utf-8")
    env = DaemonProcess(tmp / "daemon", extra_env={**pulse_server.client_env, **sway.client_env})
    assert "DISPLAY" not in env.env
    env.write_config(config_text(replacements))
    desk = WaylandDesk(sway, env, pulse_server, replacements, tmp)
    try:
        env.start(tiny_bundle, "--set", "vad.mode=ptt", "--set", "engine.language=English",
                  "--set", f"engine.max_new_tokens={MAX_NEW_TOKENS}")
        status = env.wait_status(lambda s: s["state"] == "listening", timeout=60)
        assert status["state"] == "listening", status
        desk.subscriber = Subscribers.of(env)
        yield desk
    finally:
        if desk.subscriber is not None:
            desk.subscriber.close()
        env.stop()
        sway.stop()


def test_status_and_log_say_which_session_sinks_and_hotkey_and_why(wdesk):
    status = wdesk.env.status()
    desktop = status["desktop"]
    assert desktop["session"]["kind"] == "wayland" and desktop["session"]["compositor"] == "sway"
    assert any("WAYLAND_DISPLAY" in r for r in desktop["session"]["reasons"])
    assert desktop["output"]["typing"][0] == "wtype"
    assert desktop["output"]["clipboard"] == "wl-clipboard"
    assert desktop["output"]["focus"].startswith("sway IPC")
    # no readable keyboard here: no hotkey, and the warning says what to bind instead
    assert desktop["hotkey"]["backend"] == "none"
    assert any("start-utterance" in w for w in status["warnings"]), status["warnings"]
    human = wdesk.env.cli("status", timeout=60).stdout  # plain status has the same lines as --json
    assert "      desktop: Wayland (sway" in human and "         sink: auto\n" in human, human
    assert "\n typing tools: wtype" in human and "\n    clipboard: wl-clipboard\n" in human, human
    assert "\n        focus: sway IPC" in human and "\n       hotkey: none (" in human, human
    log = wdesk.env.log()
    assert "desktop session: Wayland (sway" in log and "hotkey back-end: none" in log
    assert "text output: sink auto, typing wtype" in log


def test_push_to_talk_types_the_final_into_foot(wdesk):
    term = wdesk.foot("typed")
    try:
        term.focus()
        final = wdesk.final_after(wdesk.dictate())
        assert final["source"] == "mic" and final["text"], final
        assert final["sink"] == "type"
        assert term.wait_text(shaped(final["text"])) == shaped(final["text"])
        assert "(wtype)" in wdesk.env.log()  # the log names the tool that delivered it
        # nothing but visible text: no control character, no marker of the model
        assert not any(is_unsafe(c) for c in term.text()), repr(term.text())
        assert not any(marker in term.text() for marker, _ in ADDED_TOKENS), repr(term.text())
    finally:
        term.close()


@pytest.mark.parametrize("sink", ["type", "paste"])
def test_a_newline_into_foot_arrives_as_a_space_unless_terminal_newlines(wdesk, sink):
    """A replacement rule's newline typed or pasted into foot (a terminal by its app_id): never Enter by
    default; with `terminal_newlines = true` it is."""
    term = wdesk.foot(f"newline-{sink}", app_id="foot")
    try:
        term.focus()
        for setting, expected in (("false", "echo one echo two "), ("true", "echo one\necho two ")):
            term.clear()
            wdesk.reload(f'sink = "{sink}"\nterminal_newlines = {setting}\n', rules="(?s)^.*$ = echo one\\necho two\n")
            final = wdesk.final_after(wdesk.dictate())
            assert final["sink"] == sink
            assert term.wait_text(expected) == expected, setting
    finally:
        term.close()
        wdesk.reload()


def test_accents_cjk_and_emoji_are_typed_exactly_into_foot_and_a_gtk_entry(wdesk):
    expected = EXACT_TEXT + " "
    wdesk.reload(rules=NO_CONTROLS_RULE + EXACT_RULE)
    term = wdesk.foot("exact")
    entry = GtkEntry(wdesk.sway, "qasr-gtk", wdesk.tmp / "gtk.txt", wdesk.tmp / "gtk_entry.py") \
        if gtk_available() else None
    try:
        term.focus()
        final = wdesk.final_after(wdesk.dictate())
        assert final["text"] == EXACT_TEXT and final["sink"] == "type"
        assert term.wait_text(expected) == expected
        if entry is not None:
            entry.focus()
            final = wdesk.final_after(wdesk.dictate())
            assert final["sink"] == "type"
            assert entry.wait_text(expected) == expected
    finally:
        term.close()
        if entry is not None:
            entry.close()
        wdesk.reload()


def test_paste_sink_pastes_exactly_restores_the_clipboard_and_leaves_no_modifier_held(wdesk):
    wdesk.reload('sink = "paste"\n', rules=NO_CONTROLS_RULE + EXACT_RULE)
    term = wdesk.foot("pasted", app_id="foot")  # foot's own app_id: a terminal (output.terminal_classes)
    try:
        term.focus()
        wdesk.sway.wl("wl-copy", data=USER_CLIPBOARD.encode())
        final = wdesk.final_after(wdesk.dictate())
        assert final["sink"] == "paste"
        expected = EXACT_TEXT + " "
        assert term.wait_text(expected) == expected  # foot: Ctrl+Shift+V (a terminal, from its app_id)
        deadline = time.monotonic() + RESTORE_DELAY_S + 10
        while wdesk.clipboard() != USER_CLIPBOARD and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wdesk.clipboard() == USER_CLIPBOARD
        # Ctrl and Shift are up again: a plain key now types a plain character, not ^Z
        import subprocess
        subprocess.run(["wtype", "-s", "30", "z"], env=wdesk.sway.env, check=True, timeout=20)
        assert term.wait_text(expected + "z") == expected + "z"
    finally:
        term.close()
        wdesk.reload()


def test_focus_moved_mid_utterance_types_nothing_and_warns(wdesk):
    first, second = wdesk.foot("first"), wdesk.foot("second")
    try:
        first.focus()
        wdesk.sway.wl("wl-copy", data=USER_CLIPBOARD.encode())
        final = wdesk.final_after(wdesk.dictate(during=second.focus))  # swaymsg focuses the other window
        assert final["sink"] == "clipboard"
        warning = wdesk.subscriber.wait(0, "warning", 10, utterance_id=final["utterance_id"])
        assert warning is not None and warning["code"] == "focus_moved", wdesk.subscriber.since(0, "warning")
        assert "qasr-first" in warning["message"] and "qasr-second" in warning["message"]
        assert wdesk.clipboard() == shaped(final["text"])
        time.sleep(1.0)
        assert first.text() == "" and second.text() == ""
    finally:
        first.close()
        second.close()


def test_a_missing_tool_falls_back_with_a_warning_and_the_clipboard_comes_last(wdesk):
    term = wdesk.foot("fallback")
    try:
        term.focus()
        wdesk.reload('wayland_tools = ["dotool", "wtype"]\n')  # dotool is not packaged: not installed here
        final = wdesk.final_after(mark := wdesk.dictate())
        assert final["sink"] == "type"
        assert term.wait_text(shaped(final["text"])) == shaped(final["text"])
        warning = wdesk.subscriber.wait(mark, "warning", 10, utterance_id=final["utterance_id"])
        assert warning is not None and warning["code"] == "output"
        assert "dotool is not installed" in warning["message"] and "typed with wtype" in warning["message"]

        term.clear()
        wdesk.reload('wayland_tools = ["dotool"]\n')  # nothing can type or press the paste keys
        final = wdesk.final_after(mark := wdesk.dictate())
        assert final["sink"] == "clipboard"
        warning = wdesk.subscriber.wait(mark, "warning", 10, utterance_id=final["utterance_id"])
        assert warning is not None and "dotool is not installed" in warning["message"]
        assert "clipboard" in warning["message"]
        assert wdesk.clipboard() == shaped(final["text"])
        time.sleep(0.5)
        assert term.text() == ""
        assert wdesk.env.status()["state"] == "listening"  # the daemon keeps serving
    finally:
        term.close()
        wdesk.reload()


def test_doctor_lists_every_back_end_with_its_state_and_fix(wdesk):
    import json

    result = wdesk.env.cli("doctor", "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    checks = {(c["area"], c["name"]): c for c in report["checks"]}
    assert report["session"]["kind"] == "wayland" and report["session"]["compositor"] == "sway"
    assert checks[("typing", "wtype")]["state"] == "works"
    assert checks[("clipboard", "wl-clipboard")]["state"] == "works"
    assert checks[("focus", "focused window")]["state"] == "works"
    assert checks[("typing", "dotool")]["state"] == "missing package" and checks[("typing", "dotool")]["fix"]
    uinput = checks[("typing", "uinput")]
    assert uinput["state"] in ("works", "needs permission") and (uinput["state"] == "works" or uinput["fix"])
    assert checks[("typing", "RemoteDesktop portal (libei)")]["state"] == "not implemented"
    assert "bindsym --release" in checks[("hotkey", "compositor binding")]["fix"]
    text = wdesk.env.cli("doctor", timeout=60).stdout
    assert "typing:" in text and "fix:" in text and "Traceback" not in text


def _ppm(path) -> "np.ndarray":
    import numpy as np

    data = path.read_bytes()
    parts = data.split(b"\n", 3)  # P6, "W H", maxval, pixels (grim writes no comments)
    width, height = map(int, parts[1].split())
    return np.frombuffer(parts[3][: width * height * 3], np.uint8).reshape(height, width, 3)


def test_captions_overlay_on_xwayland_never_takes_focus_and_stays_on_top(wdesk):
    """The Tk overlay runs through sway's XWayland: an override-redirect window, never focused by sway,
    drawn above the tiled foot window; dictation keeps going into foot while it shows the captions.

    The overlay is hidden while it is connected and nobody speaks, so it is looked for once a final is
    on it (a long fade keeps it there), never in the moment before it connects."""
    import subprocess
    import sys

    from tests.test_captions_overlay import BACKGROUND, overlay_geometry

    display = wdesk.sway.xwayland_display()  # XWayland is up: its first X client (xhost) has run
    if not display:
        pytest.skip("Xwayland is not installed (apt install xwayland)")
    term = wdesk.foot("captioned")
    overlay = None
    try:
        term.focus()
        errors = wdesk.tmp / "overlay.err"
        clients = wdesk.env.metrics()["clients"]
        overlay = subprocess.Popen([sys.executable, "-m", "qasr", "captions", "--position", "40,560",
                                    "--width", "1000", "--opacity", "1", "--fade", "120"],
                                   env=dict(wdesk.env.env, DISPLAY=display), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=errors.open("w"))
        subscribed = time.monotonic() + 60
        while wdesk.env.metrics()["clients"] <= clients and time.monotonic() < subscribed:
            assert overlay.poll() is None, f"the overlay exited: {errors.read_text()[-2000:]}"
            time.sleep(0.1)
        final = wdesk.final_after(wdesk.dictate())
        assert term.wait_text(shaped(final["text"])) == shaped(final["text"])
        deadline = time.monotonic() + 30
        while (box := overlay_geometry(display)) is None and time.monotonic() < deadline:
            assert overlay.poll() is None, f"the overlay exited: {errors.read_text()[-2000:]}"
            time.sleep(0.1)
        assert box is not None, f"the overlay never showed the final on XWayland: {errors.read_text()[-2000:]}"
        time.sleep(0.5)
        assert wdesk.sway.focused()["app_id"] == "qasr-captioned"  # the overlay took no focus
        shot = wdesk.sway.screenshot(wdesk.tmp / "shot.ppm")
        if shot is not None:  # on top: the overlay's background covers the foot window there
            x, y, w, h = box
            pixel = _ppm(shot)[y + h - 3, x + w - 3]
            # the overlay's colour, give or take the compositor's rounding (foot's own background is #242424)
            assert max(abs(int(v) - c) for v, c in zip(pixel, BACKGROUND)) <= 4, pixel
    finally:
        if overlay is not None:
            overlay.terminate()
            overlay.wait(timeout=10)
        term.close()


def test_profile_by_app_id_undo_paste_last_and_history_on_sway(wdesk):
    """Issue 14 on Wayland: a [[profile]] matched by sway's app_id (paste, no trailing space), undo's
    BackSpaces (foot's raw `cat` records them as DEL bytes: one per character typed), paste-last into a
    GTK entry and undo refused from another window, and the history naming the app_id and title."""
    import json

    profile = '[[profile]]\nname = "foot paste"\nmatch = ["qasr-wprof*"]\nsink = "paste"\ntrailing_space = false\n'
    keys = 'paste_key_rules = { "qasr-wprof*" = "ctrl+shift+v" }\n'  # foot under another app_id
    wdesk.reload(extra_output=keys + profile, rules=NO_CONTROLS_RULE + EXACT_RULE)
    term = wdesk.foot("wprofile")
    entry = None
    try:
        term.focus()
        status = wdesk.env.status()
        assert status["profile"]["name"] == "foot paste" and "qasr-wprofile" in status["profile"]["window"]
        final = wdesk.final_after(wdesk.dictate())
        assert final["text"] == EXACT_TEXT and final["sink"] == "paste"  # auto would have typed it
        assert term.wait_text(EXACT_TEXT) == EXACT_TEXT  # no trailing space
        undo = wdesk.env.cli("undo", timeout=60)
        assert undo.returncode == 0, undo.stderr
        removed = EXACT_TEXT + "\x7f" * len(EXACT_TEXT)
        assert term.wait_text(removed) == removed
        listed = wdesk.env.cli("history", "-n", "1", "--json", timeout=60)
        [item] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert item["app"] == "qasr-wprofile" and item["title"] == "qasr-wprofile"
        assert item["profile"] == "foot paste" and item["sink"] == "paste"
        if gtk_available():
            entry = GtkEntry(wdesk.sway, "qasr-gtk-undo", wdesk.tmp / "gtk_undo.txt", wdesk.tmp / "gtk_undo.py")
            entry.focus()
            assert wdesk.env.status()["profile"]["name"] is None
            pasted = wdesk.env.cli("paste-last", timeout=60)
            assert pasted.returncode == 0, pasted.stderr
            # no profile here: the trailing space this window wants, which foot's profile left out
            assert entry.wait_text(EXACT_TEXT + " ") == EXACT_TEXT + " "
            term.focus()  # undo from another window: refused, nothing deleted
            refused = wdesk.env.cli("undo", timeout=60)
            assert refused.returncode == 1 and "nothing deleted" in refused.stderr
            assert term.text() == removed
            # Not checked: undo's BackSpaces in the GTK entry. GTK 3 ignores wtype's BackSpace as it ignores its
            # Ctrl (see docs/wayland.md).
    finally:
        term.close()
        if entry is not None:
            entry.close()
        wdesk.reload()
