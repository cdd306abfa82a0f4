"""`qasr-daemon history`, `paste-last`, `undo`: the dictation comforts from the command line.

They go through the running daemon's control socket (the one command vocabulary); `history` (listing,
search, `--copy`, `--clear`) also works without a daemon, straight from the journal files the config names.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="past dictation from the journal: list, search, copy, clear")
    p.add_argument("-n", type=int, default=20, metavar="N", help="show the last N entries (default 20)")
    p.add_argument("--search", metavar="TEXT", default="", help="only entries containing TEXT (any case)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--copy", type=int, metavar="N", help="put entry N (1 = the last) on the clipboard")
    p.add_argument("--clear", action="store_true", help="delete the journal and its rotated files")
    p.add_argument("--config", help="config file (when no daemon runs: where the journal is)")
    p.set_defaults(func=cmd_history)
    p = sub.add_parser("paste-last", help="deliver the last dictated text again to the focused window")
    p.set_defaults(func=cmd_comfort, control_cmd="paste-last")
    p = sub.add_parser("undo", help="remove the last dictated text (\"scratch that\") if that is safe")
    p.set_defaults(func=cmd_comfort, control_cmd="undo")


def _request(cmd: str, **args: Any) -> dict[str, Any]:
    from qasr.daemon.server import control_socket as control

    return control.request(cmd, timeout_s=60.0, **args)


def cmd_comfort(args: argparse.Namespace) -> int:
    result = _request(args.control_cmd)
    done = result.get("delivered") if args.control_cmd == "paste-last" else result.get("removed")
    if done:
        what = "delivered" if args.control_cmd == "paste-last" else "removed"
        print(f"{what} {result.get('chars', 0)} characters ({result.get('window') or 'focused window'})")
    if result.get("message"):
        print(f"qasr-daemon: warning: {result['message']}", file=sys.stderr)
    return 0 if done else 1


def cmd_history(args: argparse.Namespace) -> int:
    from qasr.daemon.server import control_socket as control
    from qasr.errors import QasrError

    if args.n < 1:
        raise QasrError(f"-n must be at least 1, got {args.n}")
    if args.copy is not None:
        try:
            result = _request("history-copy", n=args.copy)
        except control.DaemonNotRunningError:
            result = _copy_here(args.config, args.copy)
        print(f"entry {result['copied']} ({result['chars']} characters) is on the clipboard")
        return 0
    try:
        if args.clear:
            cleared = _request("history-clear")["cleared_files"]
        else:
            entries = _request("history", count=args.n, search=args.search)["entries"]
    except control.DaemonNotRunningError:
        path = _journal_path(args.config)
        if args.clear:
            from qasr.daemon.results.journal import clear_files

            cleared = clear_files(path)
        else:
            from qasr.daemon.results.history import entries as read

            entries = read(path, args.n, args.search)
    if args.clear:
        print(f"history cleared ({cleared} file{'s' if cleared != 1 else ''} deleted)")
        return 0
    from qasr.daemon.results.history import format_entry, json_line

    for entry in entries:
        print(json_line(entry) if args.json else format_entry(entry))
    if not entries and not args.json:
        print("no matching entries" if args.search else "the history is empty", file=sys.stderr)
    return 0


def _copy_here(config: str | None, number: int) -> dict[str, Any]:
    """No daemon: copy with this session's clipboard tool (xclip/xsel, wl-copy)."""
    from qasr.daemon.desktop.output import OutputOptions, make_backend
    from qasr.daemon.results.history import entry

    item = entry(_journal_path(config), number)
    make_backend(OutputOptions()).clipboard().set_text(item["text"])
    return {"copied": item["n"], "chars": len(item["text"])}


def _journal_path(config: str | None):
    from qasr.config.loader import load_settings
    from qasr.errors import QasrError

    settings, _ = load_settings(config)
    if not settings.journal.enabled:
        raise QasrError("the journal is off (journal.enabled = false): there is no history")
    return settings.journal.resolved_path()
