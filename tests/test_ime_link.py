"""The input-method link without a desktop: the control socket's ``ime`` stream, the engine's own client
(clients/ime/daemon_link.py, standard library only), the sink's focus rules, the text fitting, bad input.

A real ControlServer on a unix socket and a real DaemonLink play both sides; the engine's replies
(``committed``) are sent by the test the way the IBus engine sends them.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from qasr.clients.ime import daemon_link
from qasr.config import paths
from qasr.daemon.desktop.ime_link import ImeLink, ImeOptions, key_spec
from qasr.daemon.desktop.output import OutputOptions, TextOutput, UtteranceTarget
from qasr.daemon.desktop.x11 import WindowInfo
from qasr.daemon.desktop.ime_text import combined_context, context_tail, fit_to_surrounding, sentence_starts
from qasr.daemon.server.control_socket import ControlServer, request


def wait_until(predicate, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    return predicate()


class Clipboard:
    tool = "test"

    def __init__(self) -> None:
        self.text = ""

    def set_text(self, text: str) -> None:
        self.text = text


@pytest.fixture
def link(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    keys: list[str] = []
    ime = ImeLink(ImeOptions(hotkey="<f9>", hotkey_mode="hold", context_from_surrounding=True, context_chars=20,
                             commit_timeout_s=1.0), keys.append)
    server = ControlServer(lambda r: {"pong": r["cmd"]}, streams={"ime": ime.serve})
    server.start()
    ime.pressed = keys
    try:
        yield ime
    finally:
        ime.close()
        server.stop()


def attach(name: str = "test") -> daemon_link.DaemonLink:
    engine = daemon_link.DaemonLink(name)
    assert engine.connect()
    return engine


def messages(engine: daemon_link.DaemonLink, kind: str, timeout_s: float = 5.0) -> list[dict]:
    got: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got += engine.receive() or []
        found = [m for m in got if m.get("type") == kind]
        if found:
            return found
        time.sleep(0.01)
    return []


def answer_commits(engine: daemon_link.DaemonLink, ok: bool = True) -> threading.Thread:
    """The engine's side of one commit: receive it, answer ``committed``."""
    seen: list[dict] = []

    def run():
        found = messages(engine, "commit")
        if found:
            seen.append(found[0])
            engine.send({"type": "committed", "id": found[0]["id"], "ok": ok,
                         "reason": "" if ok else "focus moved to another field"})

    thread = threading.Thread(target=run)
    thread.seen = seen
    thread.start()
    return thread


def test_the_engine_finds_the_socket_where_the_daemon_makes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert daemon_link.control_socket_path() == paths.control_socket()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert daemon_link.control_socket_path() == paths.control_socket()


def test_welcome_names_the_key_and_focus_picks_the_ime_sink(link):
    engine = attach()
    assert engine.welcome["hotkey"] == {"keysym": "F9", "char": "", "modifiers": []}
    assert engine.welcome["cancel"]["keysym"] == "Escape"
    assert messages(engine, "state")[0]["recording"] is False
    assert not link.active
    engine.send({"type": "focus", "focused": True, "serial": 1, "before": ""})
    assert wait_until(lambda: link.active)
    assert link.describe() == {"engines": [{"name": "test", "focused": True}], "active": True}
    # ordinary control commands still work beside the stream
    assert request("status") == {"pong": "status"}
    engine.close()
    assert wait_until(lambda: not link.describe()["engines"])


def test_preedit_then_exact_commit_fitted_to_the_text_before_the_cursor(link):
    engine = attach()
    engine.send({"type": "focus", "focused": True, "serial": 3, "before": "Dear team. The"})
    assert wait_until(lambda: link.active)
    language, context = link.choose_context("English", "hot words")
    assert context == "hot words\nDear team. The"
    assert link.begin_utterance("u1") and link.context_of("u1") == context
    assert link.preedit("u1", "Quick", " brown")
    assert messages(engine, "preedit")[0] == {"type": "preedit", "serial": 3, "committed": "Quick",
                                              "tentative": " brown"}
    replier = answer_commits(engine)
    result = link.deliver("u1", "Quick brown 狐狸 🦊")
    replier.join()
    assert result.sink == "ime" and result.delivered and result.tool == "test"
    # mid-sentence: a space before, the model's capital letter made small; the rest exactly as given
    assert replier.seen[0]["text"] == " quick brown 狐狸 🦊" and replier.seen[0]["serial"] == 3
    assert not link.owns("u1")


def test_focus_moved_mid_utterance_commits_nothing_and_leaves_the_text_on_the_clipboard(link):
    engine = attach()
    engine.send({"type": "focus", "focused": True, "serial": 1, "before": ""})
    assert wait_until(lambda: link.active)
    link.begin_utterance("u2")
    engine.send({"type": "focus", "focused": True, "serial": 2, "before": "other field"})
    assert wait_until(lambda: link.describe()["engines"] and link._sessions[0].serial == 2)
    clipboard = Clipboard()
    result = link.deliver("u2", "Hello there", clipboard)
    assert result.sink == "clipboard" and not result.delivered and result.focus_moved
    assert "lost the focus" in result.message and clipboard.text == "Hello there"
    assert messages(engine, "clear") and not [m for m in engine.receive() or [] if m.get("type") == "commit"]


def test_an_engine_that_refuses_or_does_not_answer_falls_back(link):
    engine = attach()
    engine.send({"type": "focus", "focused": True, "serial": 1, "before": None})
    assert wait_until(lambda: link.active)
    link.begin_utterance("u3")
    replier = answer_commits(engine, ok=False)  # the engine saw the focus move before the daemon did
    result = link.deliver("u3", "text", Clipboard())
    replier.join()
    assert result.sink == "clipboard" and result.focus_moved and replier.seen[0]["text"] == "text"
    link.begin_utterance("u4")
    started = time.monotonic()
    result = link.deliver("u4", "more", None)  # nobody answers: after commit_timeout_s, history only
    assert 0.9 < time.monotonic() - started < 3 and result.sink == "none" and "history" in result.message


def test_hotkey_hold_and_escape_go_through_the_hotkey_state_machine(link):
    engine = attach()
    engine.send({"type": "key", "key": "hotkey", "down": True})
    assert wait_until(lambda: link.pressed == ["start"])
    link.recording(True)
    assert messages(engine, "state")[-1]["recording"] is True
    engine.send({"type": "key", "key": "hotkey", "down": False})
    assert wait_until(lambda: link.pressed == ["start", "stop"])
    link.recording(False)
    engine.send({"type": "key", "key": "hotkey", "down": True})
    engine.send({"type": "key", "key": "cancel", "down": True})
    assert wait_until(lambda: link.pressed == ["start", "stop", "start", "cancel"])


@pytest.mark.parametrize("bad", [b"not json\n", b"[1, 2]\n", b'{"type": "explode"}\n',
                                 b'{"type": "key", "key": "rm -rf", "down": true}\n',
                                 b"x" * 70000, b'{"type": "focus"}\n' * 300])
def test_bad_input_drops_that_engine_with_one_line_and_others_keep_working(link, bad, caplog):
    good = attach("good")
    bad_engine = attach("bad")
    bad_engine.sock.setblocking(True)
    try:
        bad_engine.sock.sendall(bad)
    except OSError:
        pass
    assert wait_until(lambda: [e["name"] for e in link.describe()["engines"]] == ["good"])
    assert any("input method bad dropped" in r.getMessage() for r in caplog.records)
    assert not any(r.exc_info for r in caplog.records)
    good.send({"type": "focus", "focused": True, "serial": 1, "before": ""})
    assert wait_until(lambda: link.active)


def test_a_wrong_protocol_version_is_refused_with_a_reason(link):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(paths.control_socket()))
    sock.sendall(b'{"cmd": "ime", "version": 99}\n')
    reply = json.loads(sock.makefile().readline())
    assert reply["type"] == "error" and "version" in reply["message"]
    sock.close()


def test_no_daemon_means_no_link(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert not daemon_link.DaemonLink("x").connect()


@pytest.mark.parametrize("before, text, expected", [
    ("", "hello world", "Hello world"),                       # start of the field: a capital
    ("Line one.\n", "next", "Next"),                          # a new line: no space, a capital
    ("It works. ", "and then", "And then"),                   # after a sentence and its space
    ("It works.", "and then", " And then"),                   # after a sentence end, no space yet
    ("we said", "Hello there", " hello there"),               # mid-sentence: a space, the capital made small
    ("we said", "I think", " I think"),                       # "I" stays
    ("we said ", "NASA called", "NASA called"),               # an acronym stays; no double space
    ("你好", "世界", "世界"),                                    # CJK: no space
    ("list", ", then", ", then"),                             # punctuation joins without a space
    (None, "as is", "as is"),                                 # no surrounding text: unchanged
])
def test_fit_to_surrounding(before, text, expected):
    assert fit_to_surrounding(text, before) == expected


def test_context_helpers_and_key_specs():
    assert sentence_starts("") and sentence_starts("Done!\" ") and not sentence_starts("so")
    assert context_tail("one two three four", 9) == "four"
    assert context_tail("short", 200) == "short" and context_tail(None, 10) == ""
    assert combined_context(None, "") is None and combined_context("", "x") == "x"
    assert key_spec("<ctrl>+<alt>+space") == {"keysym": "space", "char": "", "modifiers": ["alt", "ctrl"]}
    assert key_spec("<cmd>+d")["modifiers"] == ["super"] and key_spec("<cmd>+d")["char"] == "d"
    with pytest.raises(ValueError):
        key_spec("<ctrl>+<alt>")


def test_ime_install_and_uninstall_for_the_user(tmp_path):
    import os
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    from qasr.daemon.desktop.ime_install import bindings_problem

    if bindings_problem():
        pytest.skip("needs /usr/bin/python3 with python3-gi and gir1.2-ibus-1.0")
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_RUNTIME_DIR": str(tmp_path)}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "qasr", "ime", *args], env=env, capture_output=True,
                              text=True, timeout=60)

    done = cli("install")
    assert done.returncode == 0, done.stderr
    component = tmp_path / "data" / "qasr" / "ibus" / "qasr.xml"
    root = ET.parse(component).getroot()
    assert root.findtext("engines/engine/name") == "qasr"
    python, script, flag = root.findtext("exec").split()
    assert python == "/usr/bin/python3" and flag == "--ibus" and script.endswith("clients/ime/ibus_engine.py")
    env_file = tmp_path / "config" / "environment.d" / "60-qasr-ibus.conf"
    assert f"IBUS_COMPONENT_PATH={component.parent}:/usr/share/ibus/component" in env_file.read_text()
    assert "gsettings set org.gnome.desktop.input-sources sources" in done.stdout and "('ibus', 'qasr')" in done.stdout
    status = cli("status", "--json")
    assert json.loads(status.stdout)["installed"]["user_file"] == str(component)
    gone = cli("uninstall")
    assert gone.returncode == 0 and not component.exists() and not env_file.exists()
    assert "('ibus', 'qasr')" not in gone.stdout.split("GNOME:")[1]


def test_the_protocol_xml_gives_wlroots_opcodes_and_the_wire_round_trips():
    from qasr.daemon.desktop.wayland_wire import decode_args, encode_args, load_interfaces

    interfaces = load_interfaces("wayland-core-subset.xml", "input-method-unstable-v2.xml")
    im = interfaces["zwp_input_method_v2"]
    assert [m.name for m in im.requests] == ["commit_string", "set_preedit_string", "delete_surrounding_text",
                                             "commit", "get_input_popup_surface", "grab_keyboard", "destroy"]
    assert [m.name for m in im.events] == ["activate", "deactivate", "surrounding_text", "text_change_cause",
                                           "content_type", "done", "unavailable"]
    opcode, preedit = im.request("set_preedit_string")
    assert opcode == 1
    data = encode_args(preedit, ("Grüße 你好", 13, 13))
    assert len(data) % 4 == 0 and decode_args(preedit, data) == ["Grüße 你好", 13, 13]
    surrounding = im.events[2]
    assert decode_args(surrounding, encode_args(surrounding, (None, 0, 0))) == [None, 0, 0]


class TerminalOutput:
    """A text output whose focused window is ``window`` (an input-method field's window); types nothing."""

    focus_known = True
    backend = None
    text_for = TextOutput.text_for

    def __init__(self, window: WindowInfo, terminal_newlines: bool = False) -> None:
        self.window = window
        self.options = OutputOptions(terminal_newlines=terminal_newlines)
        self.cancelled: list = []

    def begin_utterance(self) -> UtteranceTarget:
        return UtteranceTarget(self.window)

    def cancel_utterance(self, target=None) -> None:
        self.cancelled.append(target)


@pytest.mark.parametrize("window, newlines, expected", [
    (WindowInfo(1, "foot", "foot"), False, "Echo one  echo two"),  # a terminal: Enter and Tab would act
    (WindowInfo(1, "foot", "foot"), True, "Echo one\n\techo two"),  # [output] terminal_newlines = true
    (WindowInfo(2, "gedit", "Gedit"), False, "Echo one\n\techo two"),  # an editor takes them as they are
])
def test_the_input_methods_commit_follows_the_terminal_newline_rule(link, window, newlines, expected):
    from qasr.daemon.results.desktop_delivery import DesktopDelivery
    from qasr.daemon.results.result_services import ResultServices

    engine = attach()
    engine.send({"type": "focus", "focused": True, "serial": 5, "before": ""})
    assert wait_until(lambda: link.active)
    desktop = DesktopDelivery(ResultServices(publish=lambda message: None))
    desktop.ime = link
    output = desktop._output = TerminalOutput(window, newlines)
    desktop.begin_output("u1")
    replier = answer_commits(engine)
    result = desktop.deliver_final("u1", "echo one\n\techo two", "unused", "unused ")
    replier.join()
    assert result.sink == "ime" and result.delivered and output.cancelled
    assert replier.seen[0]["text"] == expected
    engine.close()
