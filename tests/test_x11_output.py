"""Typing, pasting, clipboard and focus safety against real X clients (Tk, xterm) under Xvfb."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from qasr.daemon.desktop import x11
from qasr.daemon.desktop.clipboard import CLIPBOARD, PRIMARY, Clipboard
from qasr.daemon.desktop.output import (
    DEFAULT_TERMINAL_CLASSES,
    OutputOptions,
    TextOutput,
    paste_keys_for,
    parse_key_combo,
    resolve_sink,
    validate_options,
)
from qasr.daemon.desktop.typing_xtest import XTestTyper, keysym_for_char
from qasr.errors import QasrError

SAMPLE = "Grüße, café — naïve 你好世界 🎤😀 Привет"
NEEDS_X = pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xterm") and shutil.which("xdotool")),
                             reason="Xvfb, xterm and xdotool are needed")

TK_APP = textwrap.dedent(
    """
    import json, sys, threading, tkinter as tk
    root = tk.Tk(className=sys.argv[1])
    root.title(sys.argv[2])
    entry = tk.Entry(root, width=80)
    entry.pack()
    entry.focus_force()
    def command(line):
        if line == "get":
            print("TEXT " + json.dumps(entry.get()), flush=True)
        elif line == "clear":
            entry.delete(0, "end")
            print("OK", flush=True)
        elif line == "focus":
            root.focus_force(); entry.focus_set()
            print("OK", flush=True)
    def reader():
        for line in sys.stdin:
            root.after(0, command, line.strip())
        root.after(0, root.destroy)
    root.after(100, lambda: print("READY", flush=True))
    threading.Thread(target=reader, daemon=True).start()
    root.mainloop()
    """
)

READ_LINE = textwrap.dedent(
    """
    import sys
    line = sys.stdin.readline()
    with open(sys.argv[1] + ".tmp", "w", encoding="utf-8") as f:
        f.write(line)
    import os; os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    """
)


def wait_until(predicate, timeout_s: float = 10.0, step_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step_s)
    return predicate()


@pytest.fixture(scope="module")
def display(xvfb_display):
    """The shared Xvfb (tests/fixtures/desktop.py); DISPLAY points at it."""
    return xvfb_display


class TkEntry:
    """A Tk window with one Entry, driven over stdin/stdout."""

    def __init__(self, script: Path, klass: str, title: str) -> None:
        self.title = title
        self.proc = subprocess.Popen([sys.executable, str(script), klass, title], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     encoding="utf-8")
        assert self.proc.stdout.readline().strip() == "READY"
        self.window_id = int(_xdotool("search", "--sync", "--onlyvisible", "--name", f"^{title}$").split()[0])

    def _ask(self, command: str) -> str:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def text(self) -> str:
        line = self._ask("get")
        assert line.startswith("TEXT ")
        return json.loads(line[5:])

    def wait_text(self, expected: str, timeout_s: float = 10.0) -> str:
        return wait_until(lambda: (lambda t: t if t == expected else "")(self.text()), timeout_s) or self.text()

    def clear(self) -> None:
        assert self._ask("clear") == "OK"

    def focus(self) -> None:
        _xdotool("windowfocus", "--sync", str(self.window_id))
        assert self._ask("focus") == "OK"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


class XtermLine:
    """xterm running a script that reads one line and writes it to a file."""

    def __init__(self, script: Path, out: Path, title: str) -> None:
        self.out = out
        env = dict(os.environ, LC_ALL="C.UTF-8")
        self.proc = subprocess.Popen(
            ["xterm", "-u8", "-T", title, "-fa", "Noto Sans Mono CJK SC", "-e", sys.executable, str(script), str(out)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.window_id = int(_xdotool("search", "--sync", "--onlyvisible", "--name", f"^{title}$").split()[0])
        time.sleep(0.3)  # the child process must be reading before keys arrive

    def focus(self) -> None:
        _xdotool("windowfocus", "--sync", str(self.window_id))

    def line(self, timeout_s: float = 10.0) -> str | None:
        if not wait_until(self.out.exists, timeout_s):
            return None
        return self.out.read_text(encoding="utf-8")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)


def _xdotool(*args: str) -> str:
    return subprocess.run(["xdotool", *args], check=True, capture_output=True, text=True, timeout=20).stdout


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xapps")
    (folder / "tk_entry.py").write_text(TK_APP)
    (folder / "read_line.py").write_text(READ_LINE)
    return folder


@pytest.fixture(scope="module")
def tk_app(display, scripts):
    app = TkEntry(scripts / "tk_entry.py", "QasrTkTest", "qasr tk entry")
    yield app
    app.close()


@pytest.fixture
def xterm_app(display, scripts, tmp_path, request):
    term = XtermLine(scripts / "read_line.py", tmp_path / "line.txt", f"qasr xterm {request.node.name}")
    yield term
    term.close()


@pytest.fixture
def make_output(xdisp, clipboard):
    """TextOutput on the test display; closed (pending restores run) when the test ends."""
    made: list[TextOutput] = []

    def make(**options) -> TextOutput:
        output = TextOutput(OutputOptions(**options), disp=xdisp, clipboard=clipboard)
        made.append(output)
        return output

    yield make
    for output in made:
        output.close()


@pytest.fixture(scope="module")
def xdisp(display):
    disp = x11.open_display()
    yield disp
    disp.close()


@pytest.fixture(scope="module")
def clipboard(display):
    return Clipboard()


@pytest.fixture(scope="module")
def speeds():
    measured: dict[str, list[float]] = {}
    yield measured
    for name, values in measured.items():
        print(f"\n{name}: {', '.join(f'{v:.0f}' for v in values)} characters/s")


# -- pure logic (no X server) ------------------------------------------------------------------

def test_keysym_for_char_covers_latin1_unicode_and_controls():
    assert keysym_for_char("a") == ord("a")
    assert keysym_for_char("é") == 0xE9
    assert keysym_for_char("你") == 0x01000000 + ord("你")
    assert keysym_for_char("😀") == 0x01000000 + 0x1F600
    assert keysym_for_char("\n") == 0xFF0D


def test_auto_sink_rules():
    from qasr.daemon.desktop.x11 import WindowInfo

    options = OutputOptions(auto_rules={"firefox": "type", "keepass*": "none"})
    xterm = WindowInfo(1, "xterm", "XTerm")
    kitty = WindowInfo(2, "kitty", "kitty")
    gedit = WindowInfo(3, "gedit", "Gedit")
    assert resolve_sink(xterm, options) == "type"
    assert resolve_sink(gedit, options) == "paste"
    assert resolve_sink(WindowInfo(4, "Navigator", "firefox"), options) == "type"
    assert resolve_sink(WindowInfo(5, "keepassxc", "KeePassXC"), options) == "none"
    assert resolve_sink(gedit, OutputOptions(sink="type")) == "type"
    assert paste_keys_for(xterm, options) == "shift+Insert"
    assert paste_keys_for(kitty, options) == "ctrl+shift+v"
    assert paste_keys_for(gedit, options) == "ctrl+v"
    assert "xterm" in DEFAULT_TERMINAL_CLASSES


def test_bad_output_options_raise_one_line_errors():
    with pytest.raises(QasrError, match="sink"):
        validate_options(OutputOptions(sink="keyboard"))
    with pytest.raises(QasrError, match="unknown key"):
        parse_key_combo("ctrl+notakey")
    with pytest.raises(QasrError, match="auto_rules"):
        validate_options(OutputOptions(auto_rules={"xterm": "shout"}))
    assert parse_key_combo("ctrl+shift+v")[-1] == ord("v")


def test_no_display_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(x11.X11Unavailable, match="no X display"):
        x11.open_display()
    assert not x11.display_available()
    none_sink = TextOutput(OutputOptions(sink="none"))  # needs no display
    assert none_sink.deliver("hello").sink == "none"


# -- under Xvfb --------------------------------------------------------------------------------

@NEEDS_X
def test_active_window_names_the_focused_toplevel(tk_app, xdisp):
    tk_app.focus()
    info = x11.active_window(xdisp)
    assert info is not None
    assert info.window_id == tk_app.window_id
    assert info.wm_class.lower() == "qasrtktest" and info.name == tk_app.title


@NEEDS_X
def test_xtest_typing_is_exact_in_tk(tk_app, xdisp, speeds):
    tk_app.focus()
    tk_app.clear()
    typer = XTestTyper(xdisp)
    for _ in range(2):  # the second pass reuses keycodes that are still mapped from the first
        tk_app.clear()
        started = time.monotonic()
        assert typer.type(SAMPLE) == len(SAMPLE)
        speeds.setdefault("type (Tk)", []).append(len(SAMPLE) / (time.monotonic() - started))
        assert tk_app.wait_text(SAMPLE) == SAMPLE
    typer.restore_keymap()
    info = xdisp.display.info
    mapping = xdisp.get_keyboard_mapping(info.min_keycode, info.max_keycode - info.min_keycode + 1)
    assert all(not any(mapping[kc - info.min_keycode]) for kc in typer._pool)  # noqa: SLF001


@NEEDS_X
def test_xtest_typing_is_exact_in_xterm(xterm_app, xdisp, speeds):
    xterm_app.focus()
    started = time.monotonic()
    XTestTyper(xdisp).type(SAMPLE + "\n")
    speeds.setdefault("type (xterm)", []).append((len(SAMPLE) + 1) / (time.monotonic() - started))
    assert xterm_app.line() == SAMPLE + "\n"


@NEEDS_X
def test_clipboard_round_trip_keeps_non_text_content(clipboard):
    clipboard.set_text(SAMPLE)
    assert clipboard.get_text() == SAMPLE
    snapshot = clipboard.save()
    assert snapshot.data == SAMPLE.encode()
    if clipboard.tool == "xclip":
        from qasr.daemon.desktop.clipboard import ClipboardSnapshot

        image = ClipboardSnapshot(CLIPBOARD, "image/png", b"\x89PNG\r\n\x1a\nnot really")
        clipboard.restore(image)
        assert clipboard.save() == image
    clipboard.restore(snapshot)
    assert clipboard.get_text() == SAMPLE


@NEEDS_X
def test_clipboard_children_do_not_hold_our_pipes(display):
    """xclip keeps serving the selection after set_text returns; it must not inherit our stdout."""
    code = ("from qasr.daemon.desktop.clipboard import Clipboard; Clipboard().set_text('pipe test'); print('done')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert proc.stdout.strip() == "done"
    assert Clipboard().get_text() == "pipe test"


@NEEDS_X
def test_paste_into_tk_restores_the_users_clipboard(tk_app, xdisp, clipboard, speeds, make_output):
    tk_app.focus()
    tk_app.clear()
    clipboard.set_text("the user's own clipboard")
    output = make_output(sink="paste", restore_delay_s=30)
    output.begin_utterance()
    result = output.deliver(SAMPLE)
    assert (result.sink, result.delivered, result.focus_moved) == ("paste", True, False)
    speeds.setdefault("paste (Tk)", []).append(result.chars / result.seconds)
    assert tk_app.wait_text(SAMPLE) == SAMPLE
    assert clipboard.get_text() == SAMPLE  # restore is delayed
    output.flush()
    assert clipboard.get_text() == "the user's own clipboard"


@NEEDS_X
def test_restore_skipped_when_the_user_copied_something_new(tk_app, xdisp, clipboard, make_output):
    tk_app.focus()
    tk_app.clear()
    clipboard.set_text("old")
    output = make_output(sink="paste", restore_delay_s=30)
    output.deliver("first ")
    output.deliver("second")  # a restore is pending: the original "old" must still be what comes back
    assert tk_app.wait_text("first second") == "first second"
    output.flush()
    assert clipboard.get_text() == "old"
    output.deliver("third")
    clipboard.set_text("copied meanwhile")
    output.flush()
    assert clipboard.get_text() == "copied meanwhile"


@NEEDS_X
def test_paste_into_xterm_uses_primary_and_restores_both(xterm_app, xdisp, clipboard, speeds, make_output):
    xterm_app.focus()
    clipboard.set_text("clip before")
    clipboard.set_text("primary before", PRIMARY)
    output = make_output(sink="paste", restore_delay_s=30)
    output.begin_utterance()
    assert output.target.wm_class == "XTerm"
    result = output.deliver(SAMPLE)
    assert (result.sink, result.delivered) == ("paste", True)
    speeds.setdefault("paste (xterm)", []).append(result.chars / result.seconds)
    time.sleep(0.3)
    XTestTyper(xdisp).type("\n")
    assert xterm_app.line() == SAMPLE + "\n"
    output.flush()
    assert clipboard.get_text() == "clip before"
    assert clipboard.get_text(PRIMARY) == "primary before"


@NEEDS_X
def test_auto_types_into_terminals_and_pastes_elsewhere(tk_app, xterm_app, xdisp, clipboard, make_output):
    output = make_output(sink="auto", restore_delay_s=30, terminal_newlines=True)
    xterm_app.focus()
    output.begin_utterance()
    assert output.deliver("auto in xterm\n").sink == "type"
    assert xterm_app.line() == "auto in xterm\n"  # terminal_newlines = true: the newline is Enter
    tk_app.focus()
    tk_app.clear()
    output.begin_utterance()
    assert output.deliver("auto in Tk").sink == "paste"
    assert tk_app.wait_text("auto in Tk") == "auto in Tk"
    output.flush()


@NEEDS_X
def test_a_typed_newline_never_reaches_a_terminal_as_enter(xterm_app, xdisp, clipboard, make_output):
    _newline_into_xterm(xterm_app, xdisp, make_output, "type")


@NEEDS_X
def test_a_pasted_newline_never_reaches_a_terminal_as_enter(xterm_app, xdisp, clipboard, make_output):
    _newline_into_xterm(xterm_app, xdisp, make_output, "paste")


def _newline_into_xterm(xterm_app, xdisp, make_output, sink: str) -> None:
    """Typed or pasted into xterm, a final's newlines arrive as spaces: no Enter runs the line early."""
    xterm_app.focus()
    output = make_output(sink=sink, restore_delay_s=30)
    output.begin_utterance()
    assert output.deliver("echo one\necho two\r\n").delivered
    assert xterm_app.line(timeout_s=1.0) is None  # nothing submitted the line
    time.sleep(0.3)
    XTestTyper(xdisp).type("\n")  # the user's own Enter
    assert xterm_app.line() == "echo one echo two \n"
    output.flush()


@NEEDS_X
def test_focus_moved_types_nothing_and_leaves_text_on_clipboard(tk_app, xterm_app, xdisp, clipboard, make_output):
    tk_app.focus()
    tk_app.clear()
    clipboard.set_text("before")
    output = make_output(sink="type")
    target = output.begin_utterance()
    assert target.window_id == tk_app.window_id
    xterm_app.focus()  # the user clicked elsewhere while speaking
    result = output.deliver(SAMPLE)
    assert result.focus_moved and not result.delivered and result.sink == "clipboard"
    assert "focus moved" in result.message and "clipboard" in result.message
    assert result.focused.window_id == xterm_app.window_id
    assert clipboard.get_text() == SAMPLE
    output.flush()
    assert clipboard.get_text() == SAMPLE  # the fallback text is never "restored" away
    tk_app.focus()
    time.sleep(0.3)
    assert tk_app.text() == ""
    xterm_app.focus()
    XTestTyper(xdisp).type("end\n")
    assert xterm_app.line() == "end\n"  # nothing of SAMPLE reached the terminal


@NEEDS_X
def test_live_typing_appends_committed_text_and_finishes_at_final(tk_app, xdisp, make_output):
    tk_app.focus()
    tk_app.clear()
    output = make_output(sink="type")
    output.begin_utterance()
    for delta in ("Grüße, ", "café — ", "你好"):
        result = output.deliver_committed(delta)
        assert result.delivered and result.sink == "type"
    assert tk_app.wait_text("Grüße, café — 你好") == "Grüße, café — 你好"
    assert output.typed_text == "Grüße, café — 你好"
    final = output.deliver("Grüße, café — 你好世界")
    assert final.chars == 2
    assert tk_app.wait_text("Grüße, café — 你好世界") == "Grüße, café — 你好世界"
    output.close()


@NEEDS_X
def test_live_typing_stops_when_focus_moves(tk_app, xterm_app, xdisp, clipboard, make_output):
    tk_app.focus()
    tk_app.clear()
    output = make_output(sink="type")
    output.begin_utterance()
    output.deliver_committed("one ")
    xterm_app.focus()
    moved = output.deliver_committed("two ")
    assert moved.focus_moved and not moved.delivered
    assert output.deliver_committed("three") is None
    final = output.deliver("one two three")
    assert final.sink == "clipboard" and final.focus_moved
    assert clipboard.get_text() == "one two three"
    assert tk_app.wait_text("one ") == "one "


@NEEDS_X
def test_typing_waits_until_the_hotkey_modifiers_are_released(tk_app, xdisp, clipboard, make_output):
    tk_app.focus()
    tk_app.clear()
    output = make_output(sink="type", modifier_release_timeout_s=5)
    output.begin_utterance()
    _xdotool("keydown", "ctrl")  # the user still holds Ctrl of the hotkey
    releaser = threading.Timer(0.4, _xdotool, ("keyup", "ctrl"))
    releaser.start()
    started = time.monotonic()
    result = output.deliver("ctrl-free")
    waited = time.monotonic() - started
    releaser.join()
    assert result.delivered and waited >= 0.3
    assert tk_app.wait_text("ctrl-free") == "ctrl-free"  # no Ctrl+c / Ctrl+f shortcuts fired
    # still held past the timeout: nothing typed, the text waits on the clipboard
    tk_app.clear()
    impatient = make_output(sink="type", modifier_release_timeout_s=0.2)
    impatient.begin_utterance()
    _xdotool("keydown", "ctrl")
    try:
        held = impatient.deliver("not typed")
    finally:
        _xdotool("keyup", "ctrl")
    assert held.sink == "clipboard" and not held.delivered and "modifier" in held.message
    assert clipboard.get_text() == "not typed"
    time.sleep(0.2)
    assert tk_app.text() == ""


def test_each_display_connection_keeps_its_own_event_table(display):
    """python-xlib writes extension event codes into a table on its Display class; a connection to a
    second X server with other codes (Xvfb and XWayland in one process) then failed. Ours never share."""
    from Xlib.protocol import display as protocol_display
    from Xlib.protocol import event as protocol_event

    first, second = x11.open_display(display), x11.open_display(display)
    try:
        assert protocol_display.Display.event_classes == protocol_event.event_class  # the class table untouched
        assert first.display.event_classes is not second.display.event_classes
        assert len(first.display.event_classes) > len(protocol_event.event_class)  # the extensions' events
        first.display.event_classes[88] = protocol_event.AnyEvent  # another server's code in one connection ...
        third = x11.open_display(display)  # ... does not reach the next one
        assert third.display.event_classes.get(88) is not protocol_event.AnyEvent
        third.close()
    finally:
        first.close()
        second.close()
