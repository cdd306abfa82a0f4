"""Dictation comforts in the one command vocabulary: history, paste-last, undo ("scratch that").

    history(count, search)   history-copy(n)   history-clear   paste-last   undo

``run(parts, name, args)`` is called by ``commands.CommandHandler`` for these names (control socket / CLI,
WebSocket, hotkeys); ``parts`` is the daemon's ``Components``. Every refusal is a one-line QasrError.
"""

from __future__ import annotations

from typing import Any

from qasr.errors import QasrError

NAMES = ("history", "history-copy", "history-clear", "paste-last", "undo")
# qasr.v1 message type -> command name
WEBSOCKET_NAMES = {"history": "history", "history.copy": "history-copy", "history.clear": "history-clear",
                   "paste_last": "paste-last", "undo": "undo"}


def _journal(parts: Any) -> Any:
    journal = parts.results.journal
    if journal is None or not journal.enabled:
        raise QasrError("the journal is off (journal.enabled = false): there is no history")
    return journal


def _window(window: Any) -> str | None:
    return window.describe() if window is not None else None


def run(parts: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    from qasr.daemon.results import history

    desktop = parts.desktop_delivery
    if name == "history":
        journal = _journal(parts)
        found = history.entries(journal.path, args.get("count"), args.get("search"))
        return {"entries": found, "journal_file": str(journal.path)}
    if name == "history-clear":
        return {"cleared_files": _journal(parts).clear()}
    if name == "history-copy":
        entry = history.entry(_journal(parts).path, args.get("n", 1))
        output = desktop.output
        if output is None or output.backend is None:
            raise QasrError("no desktop clipboard (output.sink = \"none\" or no desktop session); "
                            "use `qasr-daemon history --json` instead")
        output.backend.clipboard().set_text(entry["text"])
        return {"copied": entry["n"], "chars": len(entry["text"])}
    if name == "paste-last":
        text = None
        journal = parts.results.journal
        if not desktop.last_text and journal is not None and journal.enabled:
            try:
                text = history.entry(journal.path, 1)["text"]  # after a restart: the journal's last
            except QasrError:
                text = None
        result = desktop.paste_last(text)
        return {"delivered": result.delivered, "sink": result.sink, "chars": result.chars,
                "window": _window(result.target), "message": result.message}
    if name == "undo":
        undone = desktop.undo()
        return {"removed": undone.removed, "chars": undone.chars, "text": undone.text,
                "window": _window(undone.window), "message": undone.message}
    raise QasrError(f"unknown command {name!r}")
