"""The daemon's own Wayland input method (``zwp_input_method_v2``, ``[ime] wayland = true``).

Where the compositor offers input-method-v2 (sway, Hyprland, river, labwc: wlroots) and no other input
method holds the seat, the daemon itself is the seat's input method: every ``zwp_text_input_v3`` client
(GTK 3/4, Qt with its text-input module, foot, Firefox) shows the partial as its preedit and receives
the final as committed text, with the surrounding text for spacing and context. It is one more engine
session of ``ImeLink`` (same focus-serial rule, same ``ime`` sink), run on a thread of its own over the
wire protocol (``wayland_wire.py``). Only one input method may hold a seat: when IBus, Fcitx5 or another
already does, the compositor answers ``unavailable``; the daemon says so in the log and status, and the
other sinks deliver. The push-to-talk key stays with the compositor's bindings (or the evdev hotkey):
this client does not grab the keyboard.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .wayland_wire import Connection, WaylandError, load_interfaces, socket_path

log = logging.getLogger("qasr.ime")

MANAGER = "zwp_input_method_manager_v2"
HELD = "another input method (IBus, Fcitx5, …) already holds the seat: the type/paste sinks deliver"


def offered(env: dict[str, str] | None = None) -> tuple[bool, str]:
    """Whether the compositor offers input-method-v2 (doctor); the reason when it does not."""
    try:
        conn = Connection(load_interfaces("wayland-core-subset.xml", "input-method-unstable-v2.xml"),
                          socket_path(env))
    except WaylandError as exc:
        return False, str(exc)
    try:
        names = _globals(conn)
    except (WaylandError, OSError) as exc:
        return False, str(exc)
    finally:
        conn.close()
    return (True, "") if MANAGER in names else (False, "the compositor offers no input-method-v2")


def _globals(conn: Connection) -> dict[str, int]:
    registry = conn.new_object("wl_registry")
    names: dict[str, int] = {}
    conn.on("wl_registry", registry, "global", lambda name, interface, _version: names.setdefault(interface, name))
    conn.request(1, "get_registry", registry)
    conn.roundtrip()
    names["__registry__"] = registry
    return names


class WaylandInputMethod:
    """One ``zwp_input_method_v2`` on the default seat; an ``ImeLink`` session."""

    name = "wayland"

    def __init__(self, link: Any, env: dict[str, str] | None = None) -> None:
        self.link, self.env = link, env
        self.focused, self.serial, self.before, self.closed = False, 0, None, False
        self.unavailable = ""
        self._conn: Connection | None = None
        self._im = 0
        self._done = 0              # `done` events received: every commit request carries it
        self._pending: dict[str, Any] = {"active": False, "before": None}
        self._attached = False

    def start(self) -> bool:
        """Become the seat's input method; False (``unavailable`` says why) when that cannot be."""
        try:
            conn = Connection(load_interfaces("wayland-core-subset.xml", "input-method-unstable-v2.xml"),
                              socket_path(self.env))
        except WaylandError as exc:
            self.unavailable = str(exc)
            return False
        try:
            names = _globals(conn)
            if MANAGER not in names or "wl_seat" not in names:
                self.unavailable = "the compositor offers no input-method-v2 (GNOME and KDE use IBus/their own)"
                conn.close()
                return False
            registry = names["__registry__"]
            seat = conn.bind(registry, names["wl_seat"], "wl_seat", 1)
            manager = conn.bind(registry, names[MANAGER], MANAGER, 1)
            self._im = conn.new_object("zwp_input_method_v2")
            for event in ("activate", "deactivate", "surrounding_text", "done", "unavailable"):
                conn.on("zwp_input_method_v2", self._im, event, getattr(self, f"_on_{event}"))
            conn.request(manager, "get_input_method", seat, self._im)
            conn.roundtrip()
        except (WaylandError, OSError) as exc:
            self.unavailable = f"input-method-v2 failed: {exc}"
            conn.close()
            return False
        if self.unavailable:
            conn.close()
            return False
        self._conn = conn
        self.link.attach(self)
        self._attached = True
        threading.Thread(target=self._run, name="wayland-ime", daemon=True).start()
        return True

    def _run(self) -> None:
        try:
            while not self.closed:
                self._conn.dispatch()
        except (WaylandError, OSError) as exc:
            if not self.closed:
                log.warning("Wayland input method stopped: %s", exc)
        finally:
            self._detach()

    def _detach(self) -> None:
        if self._attached:
            self._attached = False
            self.link.detach(self)

    # -- events (the reader thread) --------------------------------------------------------------
    def _on_activate(self) -> None:
        self._pending = {"active": True, "before": None}

    def _on_deactivate(self) -> None:
        self._pending["active"] = False

    def _on_surrounding_text(self, text: str | None, cursor: int, _anchor: int) -> None:
        self._pending["before"] = (text or "").encode("utf-8")[:cursor].decode("utf-8", "ignore")

    def _on_done(self) -> None:
        self._done += 1
        active, before = self._pending["active"], self._pending["before"]
        if active and not self.focused:
            self.serial += 1
        if active != self.focused or before != self.before:
            self.link.focus(self, active, self.serial, before)

    def _on_unavailable(self) -> None:
        self.unavailable = HELD
        log.warning("Wayland input method: %s", HELD)
        if self._attached:
            self.closed = True

    # -- the link's messages (any thread) --------------------------------------------------------
    def send(self, message: dict) -> bool:
        kind = message.get("type")
        if kind == "preedit" and message.get("serial") == self.serial and self.focused:
            text = str(message.get("committed", "")) + str(message.get("tentative", ""))
            end = len(text.encode("utf-8"))
            return self._requests(("set_preedit_string", text, end, end))
        if kind == "clear":
            return self._requests(("set_preedit_string", "", 0, 0))
        return True  # welcome, state: the keys stay with the compositor's bindings

    def commit(self, _commit_id: str, text: str, serial: int, _timeout_s: float) -> dict:
        if not self.focused or serial != self.serial:
            return {"ok": False, "reason": "focus moved to another field"}
        if not self._requests(("commit_string", text)):
            return {"ok": False, "reason": "the compositor connection is gone"}
        return {"ok": True, "reason": ""}

    def _requests(self, *requests: tuple) -> bool:
        conn = self._conn
        if conn is None or self.closed:
            return False
        try:
            for name, *args in requests:
                conn.request(self._im, name, *args)
            conn.request(self._im, "commit", self._done)
            return True
        except (WaylandError, OSError):
            return False

    def close(self) -> None:
        self.closed = True
        if self._conn is not None:
            self._conn.close()
