"""Input-method engines attached to the daemon: the `ime` sink, first in the delivery chain.

An engine process (the IBus engine in ``clients/ime/``; it holds no model) opens the control socket and
sends ``{"cmd": "ime", "engine": "ibus", "version": 1}``; the connection then stays open with one JSON
object per line each way (``IME_PROTOCOL`` in the README of ``clients/ime``):

    engine → daemon   focus {focused, serial, before?}   surrounding {serial, before}
                      key {key: "hotkey"|"cancel", down}   committed {id, ok, reason?}
    daemon → engine   welcome {hotkey, cancel}   state {recording}   preedit {serial, committed, tentative}
                      commit {id, serial, text}   clear {}

``serial`` counts the engine's focus-ins: an utterance belongs to the input context focused when it
began, and its final is committed only while that context still has the focus (the engine checks it
again before committing and answers ``committed``). Otherwise the preedit is cleared, nothing is
committed and the final goes to the clipboard with a ``focus_moved`` warning, like the focus guard of
the other sinks. The engine's push-to-talk key goes through the same hold/tap/Escape state machine as
the X11 hotkey (``HotkeyLogic``). Limits: 64 KiB per line, 200 lines per second (else the engine is
dropped with one log line); the socket is the control socket (mode 0600 in the private runtime folder).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .hotkey import HotkeyLogic, HotkeyOptions, normalize_combo
from .ime_text import combined_context, context_tail, fit_to_surrounding
from .output import DeliveryResult

log = logging.getLogger("qasr.ime")

VERSION = 1
MAX_LINE_BYTES = 65536
MAX_LINES_PER_S = 200
MAX_BEFORE_CHARS = 2000

# pynput key names → X keysym names (what IBus.keyval_from_name reads)
_KEYSYMS = {"space": "space", "esc": "Escape", "enter": "Return", "tab": "Tab", "backspace": "BackSpace",
            "delete": "Delete", "insert": "Insert", "home": "Home", "end": "End", "page_up": "Prior",
            "page_down": "Next", "up": "Up", "down": "Down", "left": "Left", "right": "Right", "menu": "Menu",
            "pause": "Pause", "print_screen": "Print", "scroll_lock": "Scroll_Lock", "caps_lock": "Caps_Lock",
            "num_lock": "Num_Lock", **{f"f{i}": f"F{i}" for i in range(1, 21)}}
_MODIFIERS = {"ctrl": "ctrl", "alt": "alt", "shift": "shift", "cmd": "super", "alt_gr": "alt"}


class ImeProtocolError(ValueError):
    pass


def key_spec(combo: str) -> dict:
    """``"<ctrl>+<alt>+space"`` → ``{"keysym": "space", "char": "", "modifiers": ["alt", "ctrl"]}``."""
    modifiers, keys = set(), []
    for part in normalize_combo(combo).split("+"):
        name = part.strip("<>") if len(part) > 2 else part
        if name in _MODIFIERS:
            modifiers.add(_MODIFIERS[name])
        else:
            keys.append(name)
    if len(keys) != 1:
        raise ValueError(f"the input method's key {combo!r} needs exactly one key besides Ctrl/Alt/Shift/Super")
    key = keys[0]
    char = key if len(key) == 1 else ""
    keysym = _KEYSYMS.get(key, key if key.isalnum() else "")
    if not keysym and not char:
        raise ValueError(f"the input method cannot use the key {key!r} of {combo!r}")
    return {"keysym": keysym, "char": char, "modifiers": sorted(modifiers)}


@dataclass
class ImeOptions:
    hotkey: str = "<ctrl>+<alt>+space"
    cancel_key: str = "<esc>"
    hotkey_mode: str = "auto"
    tap_threshold_s: float = 0.3
    context_from_surrounding: bool = False
    context_chars: int = 200
    commit_timeout_s: float = 2.0


class EngineSession:
    """One attached engine: its connection, its focus, the text before its cursor."""

    def __init__(self, conn: socket.socket, name: str) -> None:
        self.conn, self.name = conn, name
        self.focused = False
        self.serial = 0
        self.before: str | None = None  # text before the cursor (None: the field offers none)
        self.closed = False
        self._send_lock = threading.Lock()
        self._acks: dict[str, list] = {}  # commit id -> [Event, answer]

    def send(self, message: dict) -> bool:
        data = (json.dumps(message, ensure_ascii=False) + "\n").encode()
        with self._send_lock:
            if self.closed:
                return False
            try:
                self.conn.sendall(data)
                return True
            except OSError:
                self.closed = True
                return False

    def commit(self, commit_id: str, text: str, serial: int, timeout_s: float) -> dict:
        waiter = self._acks[commit_id] = [threading.Event(), {"ok": False, "reason": "the engine did not answer"}]
        try:
            if not self.send({"type": "commit", "id": commit_id, "serial": serial, "text": text}):
                return {"ok": False, "reason": "the engine is gone"}
            waiter[0].wait(timeout_s)
            return waiter[1]
        finally:
            self._acks.pop(commit_id, None)

    def close(self) -> None:
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def answered(self, message: dict) -> None:
        waiter = self._acks.get(str(message.get("id")))
        if waiter is not None:
            waiter[1] = {"ok": bool(message.get("ok")), "reason": str(message.get("reason") or "")}
            waiter[0].set()


@dataclass
class _Target:
    session: EngineSession
    serial: int
    before: str | None
    context: str | None = None


class ImeLink:
    """Attached engines and the utterances that go to them. Thread-safe."""

    def __init__(self, options: ImeOptions, on_key: Callable[[str], None]) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._sessions: list[EngineSession] = []
        self._targets: dict[str, _Target] = {}
        self._pending_context: tuple[EngineSession, int, str] | None = None
        self._recording = False
        self._welcome = {"type": "welcome", "version": VERSION, "hotkey": key_spec(options.hotkey),
                         "cancel": key_spec(options.cancel_key) if options.cancel_key else None}
        fire = lambda name: (lambda: on_key(name))  # noqa: E731
        self.keys = HotkeyLogic(HotkeyOptions(combo=options.hotkey, mode=options.hotkey_mode,
                                              tap_threshold_s=options.tap_threshold_s, release_tail_s=0.0),
                                {"hotkey"}, "cancel", set(), fire("start"), fire("stop"), fire("cancel"))

    # -- engines (each on its control-connection thread) -----------------------------------------
    def serve(self, conn: socket.socket, request: dict) -> None:
        name = str(request.get("engine") or "engine")[:32]
        if request.get("version") != VERSION:
            conn.sendall(b'{"type": "error", "message": "unsupported ime protocol version; update qasr"}\n')
            return
        session = EngineSession(conn, name)
        conn.settimeout(None)
        self.attach(session)
        try:
            self._read(session)
        except ImeProtocolError as exc:
            log.warning("input method %s dropped: %s", name, exc)
        except OSError:
            pass
        finally:
            self.detach(session)

    def attach(self, session: Any) -> None:
        """An engine (a connection, or the daemon's own Wayland input method) joins."""
        with self._lock:
            self._sessions.append(session)
            recording = self._recording
        log.info("input method %s attached", session.name)
        session.send(self._welcome)
        session.send({"type": "state", "recording": recording})

    def detach(self, session: Any) -> None:
        with self._lock:
            session.closed = True
            if session in self._sessions:
                self._sessions.remove(session)
            last = not self._sessions
        if last:
            self.keys.key_up("hotkey")  # an engine gone while its key was held: the key is up
        log.info("input method %s detached", session.name)

    def focus(self, session: Any, focused: bool, serial: int, before: str | None) -> None:
        """An engine's focus changed (``serial`` counts its focus-ins)."""
        self._handle(session, {"type": "focus", "focused": focused, "serial": serial, "before": before})

    def key(self, key: str, down: bool) -> None:
        self._handle(None, {"type": "key", "key": key, "down": down})

    def _read(self, session: EngineSession) -> None:
        buffer, window_start, lines = b"", time.monotonic(), 0
        while True:
            chunk = session.conn.recv(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                now = time.monotonic()
                if now - window_start >= 1.0:
                    window_start, lines = now, 0
                lines += 1
                if lines > MAX_LINES_PER_S:
                    raise ImeProtocolError(f"more than {MAX_LINES_PER_S} messages per second")
                if line.strip():
                    self._handle(session, _parse(line))
            if len(buffer) > MAX_LINE_BYTES:
                raise ImeProtocolError(f"a message over {MAX_LINE_BYTES} bytes")

    def _handle(self, session: EngineSession, message: dict) -> None:
        kind = message.get("type")
        if kind == "focus":
            with self._lock:
                session.focused = bool(message.get("focused"))
                session.serial = _int(message.get("serial"), session.serial)
                session.before = _before(message.get("before"))
                if session.focused and session in self._sessions:  # the most recently focused engine first
                    self._sessions.remove(session)
                    self._sessions.insert(0, session)
        elif kind == "surrounding":
            with self._lock:
                if _int(message.get("serial"), -1) == session.serial:
                    session.before = _before(message.get("before"))
        elif kind == "key":
            key, down = message.get("key"), bool(message.get("down"))
            if key not in ("hotkey", "cancel"):
                raise ImeProtocolError(f"unknown key {key!r}")
            if down:
                self.keys.key_down(key)
            else:
                self.keys.key_up(key)
        elif kind == "committed":
            session.answered(message)
        else:
            raise ImeProtocolError(f"unknown message type {kind!r}")

    # -- the microphone's utterances (feed thread, decoder thread) --------------------------------
    def _focused(self) -> EngineSession | None:
        return next((s for s in self._sessions if s.focused and not s.closed), None)

    @property
    def active(self) -> bool:
        """An engine of ours is selected and its field has the focus: the `ime` sink comes first."""
        with self._lock:
            return self._focused() is not None

    def choose_context(self, language: str | None, context: str | None) -> tuple[str | None, str | None]:
        """At an utterance's start (the microphone feed): the text before the cursor joins the context."""
        with self._lock:
            session = self._focused()
            self._pending_context = None
            if session is None or not self.options.context_from_surrounding:
                return language, context
            tail = context_tail(session.before, self.options.context_chars)
            if tail:
                context = combined_context(context, tail)
                self._pending_context = (session, session.serial, context or "")
        return language, context

    def begin_utterance(self, utterance_id: str) -> bool:
        with self._lock:
            session = self._focused()
            pending, self._pending_context = self._pending_context, None
            if session is None:
                return False
            context = pending[2] if pending and pending[0] is session and pending[1] == session.serial else None
            self._targets[utterance_id] = _Target(session, session.serial, session.before, context)
            while len(self._targets) > 64:  # utterances that never ended
                self._targets.pop(next(iter(self._targets)))
        return True

    def owns(self, utterance_id: str) -> bool:
        with self._lock:
            return utterance_id in self._targets

    def context_of(self, utterance_id: str) -> str | None:
        with self._lock:
            target = self._targets.get(utterance_id)
            return target.context if target is not None else None

    def preedit(self, utterance_id: str, committed: str, tentative: str) -> bool:
        """Show a partial at the cursor; False when this utterance is not the input method's."""
        with self._lock:
            target = self._targets.get(utterance_id)
        if target is None:
            return False
        session = target.session
        if session.focused and session.serial == target.serial:
            session.send({"type": "preedit", "serial": target.serial, "committed": committed,
                          "tentative": tentative})
        return True

    def deliver(self, utterance_id: str, text: str, clipboard: Any = None) -> DeliveryResult | None:
        """Commit a final into the field its utterance began in; None: not the input method's utterance."""
        with self._lock:
            target = self._targets.pop(utterance_id, None)
        if target is None:
            return None
        session, started = target.session, time.monotonic()
        if not text:
            session.send({"type": "clear"})
            return DeliveryResult("ime", False, tool=session.name)
        if session.closed:
            return _to_clipboard(text, clipboard, f"the input method {session.name} went away", False)
        if not session.focused or session.serial != target.serial:
            session.send({"type": "clear"})
            return _to_clipboard(text, clipboard, "the text field lost the focus during dictation: nothing "
                                 "committed", True)
        fitted = fit_to_surrounding(text, session.before if session.before is not None else target.before)
        answer = session.commit(utterance_id, fitted, target.serial, self.options.commit_timeout_s)
        if not answer["ok"]:
            moved = "focus" in answer["reason"]
            return _to_clipboard(text, clipboard, f"the input method did not commit ({answer['reason']})", moved)
        return DeliveryResult("ime", True, len(fitted), time.monotonic() - started, tool=session.name)

    def cancel(self, utterance_id: str) -> None:
        with self._lock:
            target = self._targets.pop(utterance_id, None)
        if target is not None:
            target.session.send({"type": "clear"})

    def recording(self, on: bool) -> None:
        """The microphone started/ended an utterance: engines take Escape only while recording."""
        with self._lock:
            self._recording = on
            sessions = list(self._sessions)
        for session in sessions:
            session.send({"type": "state", "recording": on})
        (self.keys.notify_started if on else self.keys.notify_stopped)()

    def describe(self) -> dict:
        with self._lock:
            return {"engines": [{"name": s.name, "focused": s.focused} for s in self._sessions],
                    "active": self._focused() is not None}

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            session.close()
        self.keys.close()


def _parse(line: bytes) -> dict:
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ImeProtocolError(f"not a JSON line ({exc.__class__.__name__})") from None
    if not isinstance(message, dict):
        raise ImeProtocolError("a message must be a JSON object")
    return message


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _before(value: Any) -> str | None:
    return value[-MAX_BEFORE_CHARS:] if isinstance(value, str) else None


def _to_clipboard(text: str, clipboard: Any, why: str, focus_moved: bool) -> DeliveryResult:
    message = f"{why}; the text is on the clipboard"
    tool = ""
    if clipboard is None:
        message = f"{why}; no clipboard here: the text is in the history (`qasr-daemon history`)"
    else:
        try:
            clipboard.set_text(text)
            tool = getattr(clipboard, "tool", "")
        except Exception as exc:  # ClipboardUnavailable and friends
            message = f"{why}; the clipboard failed too ({exc}): the text is in the history"
    log.warning("%s", message)
    return DeliveryResult("clipboard" if tool or clipboard is not None else "none", False, len(text),
                          focus_moved=focus_moved, message=message, tool=tool)
