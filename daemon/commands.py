"""The daemon's one command vocabulary, served to the control socket (CLI), the WebSocket and the hotkey.

    status  stop  reload  start-utterance  stop-utterance  toggle  cancel  set(language, context)
    history(count, search)  history-copy(n)  history-clear  paste-last  undo   (comfort_commands.py)
    system-audio(action on|off|status)  record-call(action start|stop|status)   (system_commands.py)

The WebSocket spells four of them the short way (``start``, ``stop``, ``toggle``, ``cancel``); the hotkey
sends ``start``/``stop``/``cancel`` presses, which mean push-to-talk in ptt/toggle mode and
pause/resume listening in vad mode. Kept free of heavy imports: the CLI's control client reads it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

from qasr.daemon import comfort_commands, system_commands
from qasr.errors import QasrError

log = logging.getLogger("qasr.commands")

COMMANDS = ("status", "stop", "reload", "start-utterance", "stop-utterance", "toggle", "cancel", "set",
            *comfort_commands.NAMES, *system_commands.NAMES)
WEBSOCKET_NAMES = {"start": "start-utterance", "stop": "stop-utterance", "toggle": "toggle", "cancel": "cancel",
                   "set": "set", **comfort_commands.WEBSOCKET_NAMES, **system_commands.WEBSOCKET_NAMES}
MIC_COMMANDS = ("start-utterance", "stop-utterance", "toggle", "cancel")


class CommandHandler:
    """``daemon`` provides status(), request_stop(), reload(), set_engine(), microphone and vad_mode()."""

    def __init__(self, daemon: Any, on_change: Callable[[], None] = lambda: None) -> None:
        self.daemon = daemon
        self._on_change = on_change

    def run(self, name: str, **args: Any) -> dict[str, Any]:
        d = self.daemon
        if name == "status":
            return d.status()
        if name == "stop":
            d.request_stop()
            return {"stopping": True, "pid": os.getpid()}
        if name == "reload":
            if not d.reload():  # the CLI prints the reason and exits non-zero
                raise QasrError(d.reload_error or "reload refused; see the log")
            return {"reloaded": True}
        if name == "set":
            return d.set_engine(language=args.get("language"), context=args.get("context"))
        if name in comfort_commands.NAMES:
            return comfort_commands.run(d.parts, name, args)
        if name in system_commands.NAMES:
            return system_commands.run(d.parts, name, args)
        if name not in MIC_COMMANDS:
            raise QasrError(f"unknown command {name!r}; use one of {', '.join(COMMANDS)}")
        if d.state == "stopping":
            raise QasrError("the daemon is stopping")
        mic = d.microphone
        if mic is None:
            raise QasrError(
                f"no microphone is open ({d.device_error or 'capture unavailable'}); check "
                "`qasr-daemon devices`, or stream audio over the WebSocket"
            )
        result = {"start-utterance": mic.start_utterance, "stop-utterance": mic.stop_utterance,
                  "toggle": mic.toggle, "cancel": mic.cancel}[name]()
        self._on_change()
        return result

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """A control-socket request ``{"cmd": name, ...args}``."""
        args = {k: v for k, v in request.items() if k != "cmd"}
        return self.run(request["cmd"], **args)

    def websocket(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A validated qasr.v1 command message."""
        args = {k: v for k, v in msg.items() if k not in ("type", "id")}
        return self.run(WEBSOCKET_NAMES[msg["type"]], **args)

    def hotkey(self, press: str) -> None:
        """Hotkey thread: ``start``/``stop``/``cancel``, or a command name (``paste-last``, ``undo``)."""
        if press in comfort_commands.NAMES:
            name = press
        elif self.daemon.vad_mode():
            name = "cancel" if press == "cancel" else "toggle"
        else:
            name = {"start": "start-utterance", "stop": "stop-utterance", "cancel": "cancel"}[press]
        try:
            self.run(name)
        except QasrError as exc:
            log.warning("hotkey: %s", exc)
