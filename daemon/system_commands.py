"""System audio and call transcripts in the one command vocabulary (control socket / CLI, WebSocket):

    system-audio  action on|off|status   captions of what the computer plays, for this session (beside
                                         [audio] system); WebSocket ``system_audio`` with ``enabled``
    record-call   action start|stop|status   a call transcript, you (microphone) and them (system audio);
                                         WebSocket ``record_call`` with ``action``

``run(parts, name, args)`` is called by ``commands.CommandHandler``; ``parts.system`` is the daemon's
``system_source.SystemSource``. Kept free of heavy imports (the CLI reads the names).
"""

from __future__ import annotations

from typing import Any

from qasr.errors import QasrError

NAMES = ("system-audio", "record-call")
WEBSOCKET_NAMES = {"system_audio": "system-audio", "record_call": "record-call"}


def run(parts: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    system = parts.system
    if name == "system-audio":
        action = _action(args, ("on", "off", "status"), flag="enabled")
        return system.status() if action == "status" else system.ask(action == "on")
    if name == "record-call":
        action = _action(args, ("start", "stop", "status"))
        if action == "start":
            return system.start_call()
        if action == "stop":
            return system.stop_call()
        return system.recorder.status()
    raise QasrError(f"unknown command {name!r}")


def _action(args: dict[str, Any], choices: tuple[str, ...], flag: str | None = None) -> str:
    """The command's ``action``; for ``flag`` (the WebSocket's ``enabled``) true → on, false → off, null → status."""
    if flag is not None and flag in args:
        value = args[flag]
        return "status" if value is None else ("on" if value else "off")
    action = args.get("action", "status")
    if action not in choices:
        raise QasrError(f"unknown action {action!r}; use one of {', '.join(choices)}")
    return str(action)
