"""Issue 5 end to end: push-to-talk with the daemon running, the final typed or pasted exactly.

One daemon process for the module, under Xvfb, with the hotkey on (``<pause>``, hold-to-talk), a
PulseAudio null sink as its microphone, the tiny random test bundle, ``debug.save_audio_dir`` set and a
WebSocket subscriber collecting events. The test presses the hotkey with ``xdotool keydown``, plays
espeak-ng speech into the null sink, releases the key, and checks what the focused Tk Entry / xterm holds.

Pause is the hotkey because it reaches neither application as input: xterm sends an escape sequence
for F9 or Ctrl+Alt+Space, which would land in the line the xterm script reads.

The tiny random model writes deterministic gibberish, and ``engine.language`` is forced so the final
has no ``language X<asr_text>`` header. Two replacement rules shape it:
- control characters are removed (a Tab in gibberish would move the Entry's focus; nothing a dictation
  user would want typed);
- in the "exact text" test a second rule ``(?s)^.*$ = <fixed text>`` replaces the whole final with a
  known string of Latin accents, CJK and emoji: the model's output cannot be chosen, but the text shaping
  stage runs before the daemon's output path, so this puts known text through exactly the code that
  delivers a dictated final.
Without a window manager, focus is set with ``xdotool windowfocus --sync`` (XSetInputFocus).
"""

from __future__ import annotations

import json
from dataclasses import replace
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from qasr.config.settings import OutputSettings, Settings
from qasr.daemon.component_options import output_options
from qasr.daemon.desktop.output import OutputOptions
from qasr.daemon.results.text_shaping import ShapingOptions, TextShaper
from tests.harness.daemon import DaemonProcess
from tests.harness.events import Subscribers
from tests.harness.speech import espeak_wav
from tests.test_x11_output import READ_LINE, TK_APP, TkEntry, XtermLine, wait_until
from tests.fixtures.dictation import (
    EXACT_RULE, EXACT_TEXT, MAX_NEW_TOKENS, NO_CONTROLS_RULE, RESTORE_DELAY_S, USER_CLIPBOARD,
)

pytestmark = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("Xvfb", "xterm", "xdotool", "espeak-ng", "paplay")),
    reason="Xvfb, xterm, xdotool, espeak-ng and paplay are needed",
)

HOTKEY = "Pause"


# ------------------------------------------------------------------------------ no X needed

def test_every_output_setting_reaches_the_text_output():
    defaults = output_options(Settings())
    assert defaults == OutputOptions(char_delay_ms=2.0)
    custom = OutputSettings(
        sink="paste", auto_rules={"firefox": "type"}, auto_terminal_sink="paste", auto_default_sink="type",
        terminal_classes=("myterm",), paste_keys="ctrl+shift+v", terminal_paste_keys="shift+Insert",
        paste_key_rules={"myterm": "ctrl+v"}, restore_clipboard=False, restore_delay_s=3.0, focus_check=False,
        type_delay_ms=7, keymap_restore_delay_s=2.0, modifier_release_timeout_s=0.5,
    )
    options = output_options(replace(Settings(), output=custom))
    assert options == OutputOptions(
        sink="paste", auto_rules={"firefox": "type"}, auto_terminal_sink="paste", auto_default_sink="type",
        terminal_classes=("myterm",), paste_keys="ctrl+shift+v", terminal_paste_keys="shift+Insert",
        paste_key_rules={"myterm": "ctrl+v"}, restore_clipboard=False, restore_delay_s=3.0, focus_check=False,
        char_delay_ms=7.0, keymap_restore_delay_s=2.0, modifier_release_timeout_s=0.5,
    )


def test_output_tables_load_from_toml_and_bad_sinks_are_refused():
    from qasr.config.loader import ConfigError, apply_overrides, apply_toml

    settings = apply_toml(Settings(), '[output]\nauto_rules = { firefox = "type", "keepass*" = "none" }\n')
    assert settings.output.auto_rules == {"firefox": "type", "keepass*": "none"}
    assert settings.output.paste_key_rules["xterm"] == "shift+Insert"  # untouched default
    settings = apply_overrides(settings, ['output.paste_key_rules={ kitty = "ctrl+shift+v" }'])
    assert settings.output.paste_key_rules == {"kitty": "ctrl+shift+v"}
    with pytest.raises(ConfigError, match=r"line 2.*output.auto_rules.firefox = 'shout'"):
        apply_toml(Settings(), '[output]\nauto_rules = { firefox = "shout" }\n')
    with pytest.raises(ConfigError, match="table of strings"):
        apply_toml(Settings(), "[output]\nauto_rules = { firefox = 1 }\n")


# ------------------------------------------------------------------------------ the running daemon

class Desk:
    """The daemon under test, its subscriber, a Tk Entry, and helpers to dictate into them."""

    def __init__(self, env: DaemonProcess, bundle: Path, pulse, saved: Path, replacements: Path, tk: TkEntry,
                 scripts: Path, tmp: Path) -> None:
        self.env, self.bundle, self.pulse, self.saved = env, bundle, pulse, saved
        self.replacements, self.tk, self.scripts, self.tmp = replacements, tk, scripts, tmp
        self.subscriber: Subscribers | None = None
        self.speech: Path | None = None

    def dictate(self, during=None, speech: Path | None = None) -> int:
        """Hold the hotkey while speech plays into the microphone; run ``during()`` before the release.

        Returns the subscriber mark taken before the key press.
        """
        mark = self.subscriber.mark()
        xdotool("keydown", HOTKEY)
        try:
            started = self.subscriber.wait(mark, "state", 20, state="recording")
            assert started is not None, f"the hotkey press started no utterance\n{self.env.log()[-3000:]}"
            self.pulse.play(speech or self.speech)
            if during is not None:
                during()
        finally:
            xdotool("keyup", HOTKEY)
        return mark

    def final_after(self, mark: int) -> dict:
        final = self.subscriber.wait(mark, "final", 120)
        assert final is not None, f"no final event; events: {self.subscriber.since(mark)}\n{self.env.log()[-3000:]}"
        return final

    def offline(self, utterance_id: str) -> dict:
        """`qasr-daemon transcribe` of the audio the daemon saved for this utterance."""
        [wav] = self.saved.glob(f"utterance-*-{int(utterance_id):04d}.wav")
        result = self.env.cli("transcribe", "--model", str(self.bundle), "--language", "English",
                              "--max-new-tokens", str(MAX_NEW_TOKENS), "--format", "json", str(wav))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def reload(self, config: str) -> None:
        self.env.write_config(config)
        result = self.env.cli("reload", timeout=60)
        assert result.returncode == 0, result.stderr

    def reset_rules(self) -> None:
        """Back to the module's replacement rules and config."""
        self.replacements.write_text(NO_CONTROLS_RULE, encoding="utf-8")
        self.reload(config_text(self.replacements))

    def xterm(self, name: str) -> XtermLine:
        return XtermLine(self.scripts / "read_line.py", self.tmp / f"{name}.txt", f"qasr dictation {name}")


def xdotool(*args: str) -> str:
    return subprocess.run(["xdotool", *args], check=True, capture_output=True, text=True, timeout=20).stdout


def _shaper_without_rules() -> TextShaper:
    return TextShaper(ShapingOptions(replacements_file="/nonexistent/replacements.txt",
                                     hotwords_file="/nonexistent/hotwords.txt"))


def shaped(final_text: str) -> str:
    """What the daemon delivers for a final event's text: the event text already carries the replacements;
    the rest of the shaping (trailing space, period rule at its default) comes on top."""
    return _shaper_without_rules().shape(final_text)


def shaped_live(final_text: str) -> str:
    """What live mode delivers in all: the final without replacements (typed text cannot be rewritten)."""
    return _shaper_without_rules().shape_live_final(final_text)


def config_text(replacements: Path, extra_output: str = "") -> str:
    return (f'[shaping]\nreplacements_file = "{replacements}"\n'
            f"[output]\nrestore_delay_s = {RESTORE_DELAY_S}\n{extra_output}")


@pytest.fixture(scope="module")
def desk(xvfb_display, pulse_server, tiny_bundle, tmp_path_factory):
    from qasr.daemon.desktop.clipboard import Clipboard  # noqa: F401 - fails early without xclip/xsel

    tmp = tmp_path_factory.mktemp("dictation")
    scripts = tmp / "scripts"
    scripts.mkdir()
    (scripts / "tk_entry.py").write_text(TK_APP)
    (scripts / "read_line.py").write_text(READ_LINE)
    replacements = tmp / "replacements.txt"
    replacements.write_text(NO_CONTROLS_RULE, encoding="utf-8")
    saved = tmp / "saved"
    env = DaemonProcess(tmp, extra_env=pulse_server.client_env, display=xvfb_display)
    env.write_config(config_text(replacements))
    tk = TkEntry(scripts / "tk_entry.py", "QasrDictation", "qasr dictation entry")
    desk = Desk(env, tiny_bundle, pulse_server, saved, replacements, tk, scripts, tmp)
    try:
        env.start(tiny_bundle, "--set", "vad.mode=ptt", "--set", "hotkey.enabled=true",
                  "--set", f"hotkey.combo=<{HOTKEY.lower()}>", "--set", "hotkey.mode=hold",
                  "--set", "hotkey.paste_last_combo=<f7>", "--set", "hotkey.undo_combo=<f8>",
                  "--set", "engine.language=English", "--set", f"engine.max_new_tokens={MAX_NEW_TOKENS}",
                  "--set", "engine.rtf_budget=10",  # partials at every step: live typing has commits to type
                  "--set", f"debug.save_audio_dir={saved}")
        status = env.wait_status(lambda s: s["state"] == "listening", timeout=60)
        assert status["state"] == "listening", status
        assert status["output"] == "auto", status
        assert not [w for w in status["warnings"] if "hotkey" in w or "output" in w], status["warnings"]
        desk.subscriber = Subscribers.of(env)
        desk.speech = espeak_wav("testing one two three")
        yield desk
    finally:
        if desk.subscriber is not None:
            desk.subscriber.close()
        env.stop()
        tk.close()


@pytest.fixture
def clipboard(desk):
    from qasr.daemon.desktop.clipboard import Clipboard

    return Clipboard()


def test_hold_to_talk_pastes_the_final_into_tk_and_restores_the_clipboard(desk, clipboard):
    desk.tk.focus()
    desk.tk.clear()
    clipboard.set_text(USER_CLIPBOARD)
    final = desk.final_after(desk.dictate())
    assert final["source"] == "mic" and final["language"] == "English"
    assert final["text"], "the tiny model wrote nothing for the speech"
    assert final["sink"] == "paste"  # auto: an ordinary window gets the clipboard paste
    assert desk.tk.wait_text(shaped(final["text"])) == shaped(final["text"])
    # the daemon's final is the offline transcription of the very audio it recorded
    offline = desk.offline(final["utterance_id"])
    assert offline["token_ids"] == final["token_ids"]
    # the user's clipboard comes back once the application had time to read the paste
    assert wait_until(lambda: clipboard.get_text() == USER_CLIPBOARD, RESTORE_DELAY_S + 10), clipboard.get_text()
    entries = [json.loads(line) for line in desk.env.journal_file.read_text().splitlines()]
    assert entries[-1]["utterance_id"] == final["utterance_id"] and entries[-1]["sink"] == "paste"
    assert f"sink paste): {final['text']}" in desk.env.log()


def test_hold_to_talk_types_the_final_into_xterm(desk):
    term = desk.xterm("typed")
    try:
        term.focus()
        final = desk.final_after(desk.dictate())
        assert final["sink"] == "type"  # auto: terminals are typed
        assert final["text"]
        xdotool("key", "Return")  # the final has no newline: end the line the script reads
        assert term.line() == shaped(final["text"]) + "\n"
        assert desk.offline(final["utterance_id"])["token_ids"] == final["token_ids"]
    finally:
        term.close()


def test_accents_cjk_and_emoji_are_typed_and_pasted_exactly(desk, clipboard):
    desk.replacements.write_text(NO_CONTROLS_RULE + EXACT_RULE, encoding="utf-8")
    expected = EXACT_TEXT + " "  # trailing_space: the text ends in an emoji, not CJK, so a space follows
    try:
        # XTEST typing: the Tk window's class is routed to `type` by an auto rule from config.toml
        desk.reload(config_text(desk.replacements, 'auto_rules = { qasrdictation = "type" }\n'))
        desk.tk.focus()
        desk.tk.clear()
        final = desk.final_after(desk.dictate())
        assert final["text"] == EXACT_TEXT
        assert final["sink"] == "type"
        assert desk.tk.wait_text(expected) == expected

        # the same text through the paste sink, restoring what the user had on the clipboard
        desk.reload(config_text(desk.replacements))
        desk.tk.clear()
        clipboard.set_text(USER_CLIPBOARD)
        final = desk.final_after(desk.dictate())
        assert final["sink"] == "paste"
        assert desk.tk.wait_text(expected) == expected
        assert wait_until(lambda: clipboard.get_text() == USER_CLIPBOARD, RESTORE_DELAY_S + 10)
    finally:
        desk.reset_rules()


def test_focus_moved_mid_utterance_types_nothing_and_leaves_the_text_on_the_clipboard(desk, clipboard):
    term = desk.xterm("elsewhere")
    try:
        desk.tk.focus()
        desk.tk.clear()
        clipboard.set_text(USER_CLIPBOARD)
        final = desk.final_after(desk.dictate(during=term.focus))  # the user clicked into the xterm
        assert final["sink"] == "clipboard"
        warning = desk.subscriber.wait(0, "warning", 10, utterance_id=final["utterance_id"])
        assert warning is not None, f"no warning for the utterance: {desk.subscriber.since(0, 'warning')}"
        assert warning["code"] == "focus_moved" and "clipboard" in warning["message"]
        assert warning["sink"] == "clipboard"
        assert clipboard.get_text() == shaped(final["text"])
        time.sleep(1.0)  # anything that was going to be typed has been by now
        assert desk.tk.text() == ""
        xdotool("key", "Return")  # xterm still has the focus: its line holds nothing but this Return
        assert term.line() == "\n"
    finally:
        term.close()


def test_escape_cancels_the_utterance(desk):
    desk.tk.focus()
    desk.tk.clear()
    done_before = desk.env.status()["utterances"]
    saved_before = set(desk.saved.glob("*.wav"))
    mark = desk.dictate(during=lambda: xdotool("key", "Escape"))
    assert desk.env.wait_status(lambda s: s["state"] == "listening", timeout=30)["state"] == "listening"
    time.sleep(3.0)  # a final, had there been one, would be out by now (they take well under a second)
    assert desk.subscriber.since(mark, "final") == []
    assert desk.tk.text() == ""
    assert desk.env.status()["utterances"] == done_before
    assert set(desk.saved.glob("*.wav")) == saved_before  # a cancelled utterance's audio is dropped


def test_utterance_started_over_the_websocket_is_stopped_by_the_hotkey(desk):
    """start from a client, then one press of the hotkey stops it: the hotkey follows the daemon's state."""
    desk.tk.focus()
    desk.tk.clear()
    mark = desk.subscriber.mark()
    desk.subscriber.send({"type": "start", "id": "ws-start"})
    assert desk.subscriber.wait(mark, "ack", 20) is not None
    desk.pulse.play(desk.speech)
    xdotool("key", HOTKEY)
    final = desk.final_after(mark)
    assert final["sink"] == "paste"
    assert desk.tk.wait_text(shaped(final["text"])) == shaped(final["text"])
    # and after a CLI start-utterance likewise
    desk.tk.clear()
    mark = desk.subscriber.mark()
    assert desk.env.cli("start-utterance", timeout=30).returncode == 0
    desk.pulse.play(desk.speech)
    xdotool("key", HOTKEY)
    final = desk.final_after(mark)
    assert desk.tk.wait_text(shaped(final["text"])) == shaped(final["text"])


def test_live_typing_types_committed_text_and_the_rest_of_the_final(desk, clipboard):
    """output.live: committed text is typed while speaking; the final adds only what is missing."""
    desk.replacements.write_text("", encoding="utf-8")  # live text is typed as committed: no rewriting rules
    try:
        desk.reload(config_text(desk.replacements, "live = true\n"))
        desk.tk.focus()
        desk.tk.clear()
        clipboard.set_text(USER_CLIPBOARD)
        mark = desk.dictate(speech=espeak_wav("hello world, this is a longer dictation test of live typing"))
        final = desk.final_after(mark)
        partials = desk.subscriber.since(mark, "partial", utterance_id=final["utterance_id"])
        # committed text only grows, and each partial is typed before it is published
        typed_live = partials[-1]["committed"] if partials else ""
        whole = shaped_live(final["text"])
        if final["text"].startswith(typed_live):
            # the final continues what was typed (or nothing was committed): the rest follows, pasted into Tk
            assert desk.tk.wait_text(whole) == whole
            assert final["sink"] == ("paste" if whole != typed_live else None)
        else:
            # random weights may change their mind after committing: typed text is never erased, so the
            # Entry keeps the live text and the whole final goes on the clipboard, with a warning
            assert final["sink"] == "clipboard"
            assert desk.tk.text() == typed_live
            assert clipboard.get_text() == whole
            warning = desk.subscriber.wait(mark, "warning", 10, utterance_id=final["utterance_id"])
            assert warning is not None and "typed live" in warning["message"]
    finally:
        desk.reset_rules()


def test_each_utterance_keeps_the_window_it_started_in(desk, clipboard):
    """Utterance 2 starting in another window before utterance 1's final is out does not redirect 1."""
    from qasr.daemon.desktop.output import TextOutput

    term = desk.xterm("second")
    output = TextOutput(OutputOptions(sink="type", terminal_newlines=True))  # the newline ends the xterm's line
    try:
        desk.tk.focus()
        desk.tk.clear()
        first = output.begin_utterance()
        term.focus()
        second = output.begin_utterance()
        assert (first.window_id, second.window_id) == (desk.tk.window_id, term.window_id)
        late = output.deliver("first utterance", first)  # the user is in the xterm now: not typed there
        assert late.focus_moved and late.sink == "clipboard" and late.target.window_id == desk.tk.window_id
        assert clipboard.get_text() == "first utterance"
        result = output.deliver("second utterance\n", second)
        assert result.delivered and result.sink == "type"
        assert term.line() == "second utterance\n"
        assert desk.tk.text() == ""
    finally:
        output.close()
        term.close()


# ------------------------------------------------------------------------------ issue 14: comforts

def test_graphemes_count_what_one_backspace_removes():
    from qasr.daemon.desktop.undo import grapheme_count, graphemes

    assert grapheme_count(EXACT_TEXT) == len(EXACT_TEXT)  # precomposed accents, CJK, single-code-point emoji
    assert graphemes("e\u0301a") == ["e\u0301", "a"]
    assert graphemes("👍🏽!") == ["👍🏽", "!"]
    assert graphemes("👨\u200d👩\u200d👧 ok") == ["👨\u200d👩\u200d👧", " ", "o", "k"]
    assert graphemes("🇩🇪🇫🇷") == ["🇩🇪", "🇫🇷"]
    assert graphemes("❤️\r\n") == ["❤️", "\r\n"]
    try:
        import regex
    except ImportError:
        return
    for text in (EXACT_TEXT, "e\u0301a👍🏽!", "👨\u200d👩\u200d👧 ok", "🇩🇪🇫🇷x", "नमस्ते"[:0] + "ä\u0308b"):
        assert graphemes(text) == regex.findall(r"\X", text), text


def test_profiles_match_class_instance_or_app_id_and_title_and_override_the_engine():
    from qasr.config.settings import ProfileSettings
    from qasr.daemon import profiles
    from qasr.daemon.desktop.x11 import WindowInfo

    mail = ProfileSettings(name="mail", match=("thunderbird*",), language="English", context="email",
                           hotwords=("Qwen", "qasr"), spoken_formatting="true")
    vim = ProfileSettings(match=("*term*", "foot"), title="*vim*", sink="type", trailing_space="false")
    terms = ProfileSettings(match=("*term*", "foot"))
    table = (mail, vim, terms)
    assert profiles.match(table, WindowInfo(1, "Mail", "Thunderbird-ESR", "Inbox")) is mail  # any case
    assert profiles.match(table, WindowInfo(2, "xterm", "XTerm", "vim notes.txt")) is vim   # first match wins
    assert profiles.match(table, WindowInfo(3, "foot", "foot", "bash")) is terms             # app_id, no vim
    assert profiles.match(table, WindowInfo(4, "", "", "")) is None and profiles.match(table, None) is None
    assert profiles.engine_overrides(mail, "engine ctx", "hot, words", None, None) == \
        ("English", "email, hot, words, Qwen, qasr")
    assert profiles.engine_overrides(terms, "engine ctx", "hot", "Chinese", None) == ("Chinese", None)
    assert profiles.engine_overrides(None, "engine ctx", "hot", None, "asked") == (None, "asked")
    assert profiles.Delivery.of(vim) == profiles.Delivery("*term*", "type", False, None)
    assert profiles.Delivery.of(mail).spoken_formatting is True and profiles.Delivery.of(None) == profiles.Delivery()
    # status shows the overrides with their types: booleans, not the strings the config keeps
    shown = profiles.describe(vim, WindowInfo(2, "xterm", "XTerm", "vim notes.txt"), True)["overrides"]
    assert shown == {"sink": "type", "trailing_space": False}
    shown = profiles.describe(mail, WindowInfo(1, "Mail", "Thunderbird-ESR", "Inbox"), True)["overrides"]
    assert shown == {"language": "English", "context": "email", "hotwords": ["Qwen", "qasr"], "spoken_formatting": True}


def test_undo_is_refused_unless_it_is_safe():
    from qasr.daemon.desktop.undo import Delivered, undo_problem
    from qasr.daemon.desktop.x11 import WindowInfo

    tk, term = WindowInfo(1, "tk", "Tk", "entry"), WindowInfo(2, "xterm", "XTerm", "shell")
    last = Delivered(tk, "hello ", 5, "paste")
    assert undo_problem(last, 5, True, tk) == ""
    assert "nothing to undo" in undo_problem(None, 5, True, tk)
    assert "typed or pasted something after" in undo_problem(last, 6, True, tk)
    assert "does not tell which window" in undo_problem(last, 5, False, tk)
    assert "the focus is on XTerm 'shell'" in undo_problem(last, 5, True, term)
    assert "the focus is on no window" in undo_problem(last, 5, True, None)
    ran = Delivered(term, "ls\n", 5, "type", terminal=True)
    assert "line break to a terminal" in undo_problem(ran, 5, True, term)
    assert undo_problem(Delivered(tk, "two\nlines", 5, "paste"), 5, True, tk) == ""  # an editor: fine


def test_undo_paste_last_and_history_in_tk_and_xterm(desk, clipboard):
    """Undo removes exactly the dictated text (accents, CJK, emoji) from the window it went to; paste-last
    brings it back; undo refuses in another window or after we typed again; history lists and copies it.

    Undo's BackSpaces are checked in xterm: Tk 8.6 keeps emoji as UTF-16 surrogate pairs and deletes half
    of one per BackSpace (GTK, Qt, browsers and terminals delete the whole character)."""
    desk.replacements.write_text(NO_CONTROLS_RULE + EXACT_RULE, encoding="utf-8")
    expected = EXACT_TEXT + " "
    term = desk.xterm("undo")
    try:
        desk.reload(config_text(desk.replacements))
        term.focus()
        xdotool("type", "kept ")  # the user's own text before the dictation stays
        final = desk.final_after(desk.dictate())
        assert final["text"] == EXACT_TEXT and final["sink"] == "type"
        undo = desk.env.cli("undo", timeout=60)
        assert undo.returncode == 0, undo.stderr
        assert f"removed {len(expected)} characters" in undo.stdout
        again = desk.env.cli("undo", timeout=60)  # once only: nothing left to undo
        assert again.returncode == 1 and "nothing to undo" in again.stderr and "Traceback" not in again.stderr

        # paste-last into Tk (auto: pasted), then undo asked for while the xterm has focus: refused
        desk.tk.focus()
        desk.tk.clear()
        pasted = desk.env.cli("paste-last", timeout=60)
        assert pasted.returncode == 0, pasted.stderr
        assert desk.tk.wait_text(expected) == expected
        term.focus()
        mark = desk.subscriber.mark()
        refused = desk.env.cli("undo", timeout=60)
        assert refused.returncode == 1 and "nothing deleted: the focus is on" in refused.stderr
        warning = desk.subscriber.wait(mark, "warning", 10, code="undo")
        assert warning is not None and "nothing deleted" in warning["message"]
        assert desk.tk.text() == expected

        # paste-last into the xterm (typed), then undo there over the WebSocket
        mark = desk.subscriber.mark()
        desk.subscriber.send({"type": "paste_last", "id": "p1"})
        ack = desk.subscriber.wait(mark, "ack", 60, id="p1")
        assert ack is not None and ack["delivered"] and ack["sink"] == "type", desk.subscriber.since(mark)
        desk.subscriber.send({"type": "undo", "id": "u1"})
        ack = desk.subscriber.wait(mark, "ack", 60, id="u1")
        assert ack is not None and ack["removed"] and ack["chars"] == len(expected), desk.subscriber.since(mark)
        xdotool("type", "after")
        xdotool("key", "Return")
        assert term.line() == "kept after\n"  # both undos removed exactly what was typed, nothing more

        # history: the final with its window, searchable, as JSON, copied to the clipboard
        listed = desk.env.cli("history", "-n", "1", "--json", timeout=60)
        assert listed.returncode == 0, listed.stderr
        [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert entry["text"] == EXACT_TEXT and entry["n"] == 1 and entry["sink"] == "type"
        assert entry["app"] == "XTerm" and entry["title"] == "qasr dictation undo"
        assert entry["duration_s"] > 0.5
        shown = desk.env.cli("history", "--search", "CAFÉ", timeout=60)
        assert shown.returncode == 0 and EXACT_TEXT in shown.stdout and "XTerm" in shown.stdout
        assert all("café" in line.lower() for line in shown.stdout.splitlines())
        mark = desk.subscriber.mark()
        desk.subscriber.send({"type": "history", "id": "h1", "count": 2, "search": "你好"})
        ack = desk.subscriber.wait(mark, "ack", 30, id="h1")
        assert ack is not None and ack["entries"][-1]["text"] == EXACT_TEXT
        clipboard.set_text(USER_CLIPBOARD)
        copied = desk.env.cli("history", "--copy", "1", timeout=60)
        assert copied.returncode == 0, copied.stderr
        assert clipboard.get_text() == EXACT_TEXT
        bad = desk.env.cli("history", "--copy", "100000", timeout=60)
        assert bad.returncode != 0 and "no history entry 100000" in bad.stderr and "Traceback" not in bad.stderr
        assert desk.env.status()["state"] == "listening"  # the daemon keeps serving

        # without a daemon: the CLI reads the journal the config names and copies with xclip/xsel itself
        offline = DaemonProcess(desk.tmp / "no-daemon", display=desk.env.env.get("DISPLAY"))
        offline.write_config(f'[journal]\npath = "{desk.env.journal_file}"\n')
        clipboard.set_text(USER_CLIPBOARD)
        listed = offline.cli("history", "-n", "2", timeout=60)
        assert listed.returncode == 0 and EXACT_TEXT in listed.stdout.splitlines()[-1], listed.stderr
        assert offline.cli("history", "--copy", "1", timeout=60).returncode == 0
        assert wait_until(lambda: clipboard.get_text() == EXACT_TEXT, 10)
        bad = offline.cli("history", "-n", "0", timeout=60)
        assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "-n must be at least 1" in bad.stderr
    finally:
        term.close()
        desk.reset_rules()


def test_profile_for_the_tk_window_and_spoken_formatting_with_the_spoken_undo(desk):
    """A [[profile]] matched by WM_CLASS sets language, sink, trailing space and spoken formatting for Tk;
    the model-style Chinese final "你好世界逗号。" is typed as "你好世界，", and "撤销。" removes it again."""
    profile = ('[[profile]]\nname = "tk chinese"\nmatch = ["qasrdict*"]\nlanguage = "Chinese"\nsink = "type"\n'
               'trailing_space = false\nspoken_formatting = true\n'
               '[[profile]]\nmatch = ["nothing-matches"]\nlanguage = "Klingon"\n')
    desk.replacements.write_text(NO_CONTROLS_RULE + "(?s)^.*$ = 你好世界逗号。\n", encoding="utf-8")
    try:
        desk.reload(config_text(desk.replacements) + profile)
        desk.tk.focus()
        desk.tk.clear()
        status = desk.env.status()
        assert status["profile"]["name"] == "tk chinese" and status["profile"]["profiles"] == 2, status["profile"]
        assert any("[[profile]] nothing-matches" in w and "Klingon" in w for w in status["warnings"])
        assert "qasr dictation entry" in status["profile"]["window"]
        final = desk.final_after(desk.dictate())
        assert final["language"] == "Chinese" and final["sink"] == "type"
        assert final["text"] == "你好世界，"
        assert desk.tk.wait_text("你好世界，") == "你好世界，"  # no trailing space, no doubled comma
        entry = json.loads(desk.env.journal_file.read_text().splitlines()[-1])
        assert entry["profile"] == "tk chinese" and entry["text"] == "你好世界，"

        desk.replacements.write_text(NO_CONTROLS_RULE + "(?s)^.*$ = 撤销。\n", encoding="utf-8")
        mark = desk.subscriber.mark()
        desk.dictate()
        desk.final_after(mark)
        assert desk.tk.wait_text("") == ""
        assert desk.subscriber.since(mark, "warning") == []

        term = desk.xterm("profile")
        try:
            term.focus()
            status = desk.env.status()
            assert status["profile"]["name"] is None and "XTerm" in status["profile"]["window"]
            # dictated into the xterm (with its trailing space), then paste-last into Tk: Tk's profile says
            # trailing_space = false, so the space of the first delivery does not come along
            desk.replacements.write_text(NO_CONTROLS_RULE + "(?s)^.*$ = spaced out\n", encoding="utf-8")
            final = desk.final_after(desk.dictate())
            assert final["text"] == "spaced out" and final["sink"] == "type"
            desk.tk.focus()
            desk.tk.clear()
            pasted = desk.env.cli("paste-last", timeout=60)
            assert pasted.returncode == 0, pasted.stderr
            assert desk.tk.wait_text("spaced out") == "spaced out"
        finally:
            term.close()
    finally:
        desk.reset_rules()


def test_paste_last_and_undo_hotkeys(desk):
    """hotkey.undo_combo (F8) removes the final just dictated; hotkey.paste_last_combo (F7) brings it back."""
    desk.replacements.write_text(NO_CONTROLS_RULE + "(?s)^.*$ = Grüße, café 你好\n", encoding="utf-8")
    try:
        desk.reload(config_text(desk.replacements))
        desk.tk.focus()
        desk.tk.clear()
        xdotool("type", "mine ")
        desk.final_after(desk.dictate())
        assert desk.tk.wait_text("mine Grüße, café 你好") == "mine Grüße, café 你好"
        xdotool("key", "F8")
        assert desk.tk.wait_text("mine ") == "mine "
        xdotool("key", "F7")
        assert desk.tk.wait_text("mine Grüße, café 你好") == "mine Grüße, café 你好"
    finally:
        desk.reset_rules()
