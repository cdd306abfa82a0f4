"""The IBus engine `qasr`: dictation at the cursor of any IBus client, through the running daemon.

Run by ibus-daemon with the system Python (``/usr/bin/python3 .../ibus_engine.py --ibus``, from the
component file `qasr-daemon ime install` writes): IBus's Python bindings are Debian's python3-gi, which
qasr's virtual environment does not see. It imports only the standard library, ``gi`` and
``daemon_link.py`` beside it; it holds no model. What it does:

- attaches to the daemon's control socket (and again every second while the daemon is not running);
- passes every key to the application untouched, except the push-to-talk key the daemon names in its
  ``welcome`` (``[ime] hotkey``; hold to talk, tap to toggle: the daemon's hotkey state machine decides)
  and, while an utterance is recording, Escape (cancel);
- shows partials as the preedit at the cursor: committed words underlined, tentative words underlined
  and grey; commits the final only into the input context that had the focus when the utterance began
  (the daemon sends the focus serial; a mismatch is answered ``focus moved`` and nothing is committed);
- reports focus changes and the text before the cursor (surrounding text) to the daemon.
Without the daemon it is a plain pass-through keyboard.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import unicodedata
from pathlib import Path

if __package__ in (None, ""):  # run as a script by ibus-daemon
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from daemon_link import DaemonLink  # type: ignore[import-not-found]
else:
    from .daemon_link import DaemonLink

import gi

gi.require_version("IBus", "1.0")
from gi.repository import GLib, GObject, IBus  # noqa: E402

log = logging.getLogger("qasr.ibus")

ENGINE_NAME = "qasr"
BUS_NAME = "org.freedesktop.IBus.Qasr"
RECONNECT_MS = 1000
TENTATIVE_RGB = 0x808080
MAX_BEFORE = 2000
_MASKS = (("ctrl", IBus.ModifierType.CONTROL_MASK), ("alt", IBus.ModifierType.MOD1_MASK),
          ("shift", IBus.ModifierType.SHIFT_MASK),
          ("super", IBus.ModifierType.SUPER_MASK | IBus.ModifierType.MOD4_MASK))


def safe_text(text: str) -> str:
    """No control characters reach the application (line breaks and tabs excepted)."""
    return "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")


def _keyval(spec: dict | None) -> int:
    if not spec:
        return 0
    if spec.get("keysym"):
        value = IBus.keyval_from_name(spec["keysym"])
        if value and value != IBus.KEY_VoidSymbol:
            return IBus.keyval_to_lower(value)
    return IBus.keyval_to_lower(IBus.unicode_to_keyval(spec["char"])) if spec.get("char") else 0


def _held(state: int) -> set[str]:
    return {name for name, mask in _MASKS if state & mask}


class Controller:
    """One per process: the daemon link, the engine instance that has the focus, the key state."""

    def __init__(self) -> None:
        self.link = DaemonLink("ibus")
        self.engine: QasrEngine | None = None  # the instance whose input context has the focus
        self.serial = 0                          # counts focus-ins; the daemon's utterances name it
        self.before: str | None = None
        self.recording = False
        self.hot, self.hot_mods, self.cancel, self.cancel_mods = 0, set(), 0, set()
        self.hot_down = self.cancel_down = False
        self._watch = 0

    # -- the daemon ----------------------------------------------------------------------------
    def connect(self) -> bool:
        """GLib timeout: try to attach; True (try again later) while the daemon is not there."""
        if not self.link.connect():
            return True
        welcome = self.link.welcome
        self.hot, self.hot_mods = _keyval(welcome.get("hotkey")), set((welcome.get("hotkey") or {}).get("modifiers", ()))
        self.cancel, self.cancel_mods = _keyval(welcome.get("cancel")), set((welcome.get("cancel") or {}).get("modifiers", ()))
        self._watch = GLib.io_add_watch(self.link.fileno(), GLib.PRIORITY_DEFAULT,
                                        GLib.IO_IN | GLib.IO_HUP | GLib.IO_ERR, self._readable)
        log.info("attached to the daemon")
        if self.engine is not None:
            self._send_focus(True)
        return False

    def _readable(self, _fd: int, _condition: int) -> bool:
        for message in self.link.receive() or []:
            try:
                self._handle(message)
            except Exception:  # one bad message must not end the engine
                log.exception("message %r failed", message.get("type"))
        if self.link.connected:
            return True
        self._detached()
        return False

    def _detached(self) -> None:
        log.info("the daemon went away; passing keys through, retrying every %d ms", RECONNECT_MS)
        self.recording = self.hot_down = self.cancel_down = False
        if self.engine is not None:
            self.engine.show_preedit("", "")
        GLib.timeout_add(RECONNECT_MS, self.connect)

    def _handle(self, message: dict) -> None:
        kind, engine = message.get("type"), self.engine
        if kind == "state":
            self.recording = bool(message.get("recording"))
        elif kind == "preedit":
            if engine is not None and message.get("serial") == self.serial:
                engine.show_preedit(safe_text(str(message.get("committed", ""))),
                                    safe_text(str(message.get("tentative", ""))))
        elif kind == "clear":
            if engine is not None:
                engine.show_preedit("", "")
        elif kind == "commit":
            ok = engine is not None and message.get("serial") == self.serial
            if ok:
                engine.show_preedit("", "")
                engine.commit_text(IBus.Text.new_from_string(safe_text(str(message.get("text", "")))))
            self.link.send({"type": "committed", "id": message.get("id"), "ok": ok,
                            "reason": "" if ok else "focus moved to another field"})

    def _send_focus(self, focused: bool) -> None:
        self.link.send({"type": "focus", "focused": focused, "serial": self.serial, "before": self.before})

    # -- the engine's events -------------------------------------------------------------------
    def focus_in(self, engine: QasrEngine) -> None:
        self.engine, self.serial, self.before = engine, self.serial + 1, None
        self._send_focus(True)

    def focus_out(self, engine: QasrEngine) -> None:
        if self.hot_down:  # its release may go to a window without IBus: the hold ends here
            self.hot_down = False
            self.link.send({"type": "key", "key": "hotkey", "down": False})
        if self.engine is engine:
            self.engine = None
            self._send_focus(False)

    def surrounding(self, engine: QasrEngine, before: str) -> None:
        if self.engine is engine and before != self.before:
            self.before = before
            self.link.send({"type": "surrounding", "serial": self.serial, "before": before})

    def key(self, keyval: int, state: int) -> bool:
        """True: the key is ours (consumed); False: the application gets it."""
        if not self.link.connected or not self.hot:
            return False
        release = bool(state & IBus.ModifierType.RELEASE_MASK)
        keyval = IBus.keyval_to_lower(keyval)
        if keyval == self.hot:
            if release:
                if not self.hot_down:
                    return False
                self.hot_down = False
                self.link.send({"type": "key", "key": "hotkey", "down": False})
                return True
            if self.hot_down:
                return True  # autorepeat
            if _held(state) != self.hot_mods:
                return False
            self.hot_down = True
            self.link.send({"type": "key", "key": "hotkey", "down": True})
            return True
        if keyval == self.cancel and self.cancel:
            if release:
                was, self.cancel_down = self.cancel_down, False
                if was:
                    self.link.send({"type": "key", "key": "cancel", "down": False})
                return was
            if self.cancel_down:
                return True
            if not self.recording or _held(state) != self.cancel_mods:
                return False
            self.cancel_down = True
            self.link.send({"type": "key", "key": "cancel", "down": True})
            return True
        return False


CONTROLLER = Controller()


class QasrEngine(IBus.Engine):
    __gtype_name__ = "QasrIBusEngine"

    def __init__(self, **props: object) -> None:
        super().__init__(**props)
        self._surrounding = False

    def do_process_key_event(self, keyval: int, keycode: int, state: int) -> bool:
        return CONTROLLER.key(keyval, state)

    def do_set_capabilities(self, caps: int) -> None:
        self._surrounding = bool(caps & IBus.Capabilite.SURROUNDING_TEXT)

    def do_focus_in_id(self, _object_path: str, client: str) -> None:
        """IBus 1.5.27+: the focused context names its client; "fake" is ibus-daemon's own context, which
        has the focus whenever no IBus client has it: no field of ours, the other sinks deliver."""
        log.debug("focus in: %s", client)
        if client == "fake":
            CONTROLLER.focus_out(self)
        else:
            self.do_focus_in()

    def do_focus_out_id(self, _object_path: str) -> None:
        CONTROLLER.focus_out(self)

    def do_focus_in(self) -> None:
        CONTROLLER.focus_in(self)
        if self._surrounding:
            self.get_surrounding_text()  # asks the client; it answers with set_surrounding_text

    def do_focus_out(self) -> None:
        CONTROLLER.focus_out(self)

    def do_enable(self) -> None:
        self.get_surrounding_text()

    def do_disable(self) -> None:
        CONTROLLER.focus_out(self)

    def do_set_surrounding_text(self, text: IBus.Text, cursor_pos: int, anchor_pos: int) -> None:
        IBus.Engine.do_set_surrounding_text(self, text, cursor_pos, anchor_pos)  # else the engine keeps ""
        CONTROLLER.surrounding(self, text.get_text()[:cursor_pos][-MAX_BEFORE:])

    def show_preedit(self, committed: str, tentative: str) -> None:
        text = committed + tentative
        if not text:
            self.hide_preedit_text()
            self.update_preedit_text(IBus.Text.new_from_string(""), 0, False)
            return
        preedit = IBus.Text.new_from_string(text)
        preedit.append_attribute(IBus.AttrType.UNDERLINE, IBus.AttrUnderline.SINGLE, 0, len(text))
        if tentative:
            preedit.append_attribute(IBus.AttrType.FOREGROUND, TENTATIVE_RGB, len(committed), len(text))
        self.update_preedit_text_with_mode(preedit, len(text), True, IBus.PreeditFocusMode.CLEAR)


def _engine_factory(bus: IBus.Bus):
    """Engines made with ``has-focus-id`` (IBus 1.5.27+), so focus-in names the client; plain ones before."""
    count = [0]

    def create(_factory: IBus.Factory, name: str) -> QasrEngine:
        count[0] += 1
        props = {"engine_name": name, "object_path": f"/org/freedesktop/IBus/Engine/Qasr/{count[0]}",
                 "connection": bus.get_connection()}
        try:
            return QasrEngine(**props, has_focus_id=True)
        except TypeError:
            return QasrEngine(**props)
    return create


def component() -> IBus.Component:
    """The component registered at run time (``--register``: no component file needed)."""
    comp = IBus.Component(name=BUS_NAME, description="qasr dictation", version="1", license="Apache-2.0",
                          author="qasr", homepage="", command_line="", textdomain="")
    comp.add_engine(IBus.EngineDesc(name=ENGINE_NAME, longname="Dictation (qasr)", description="qasr dictation",
                                    language="other", license="Apache-2.0", author="qasr", icon="",
                                    layout="default", rank=0))
    return comp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the qasr IBus engine")
    parser.add_argument("--ibus", action="store_true", help="started by ibus-daemon from the component file")
    parser.add_argument("--register", action="store_true", help="register at run time (no component file)")
    args = parser.parse_args(argv)
    level = logging.DEBUG if os.environ.get("QASR_IME_DEBUG") else logging.INFO
    logging.basicConfig(level=level, format="qasr-ibus: %(message)s", filename=os.environ.get("QASR_IME_LOG"))
    IBus.init()
    bus = IBus.Bus()
    if not bus.is_connected():
        print("qasr-ibus: ibus-daemon is not running (start it with `ibus-daemon -drx`)", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    bus.connect("disconnected", lambda *_: loop.quit())
    factory = IBus.Factory.new(bus.get_connection())
    factory.connect("create-engine", _engine_factory(bus))
    if args.ibus:
        bus.request_name(BUS_NAME, 0)
    else:
        bus.register_component(component())
    if CONTROLLER.connect():
        GLib.timeout_add(RECONNECT_MS, CONTROLLER.connect)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
