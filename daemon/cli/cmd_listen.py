"""`qasr-daemon listen [--json]`: print the running daemon's transcripts as they happen.

Text mode on a terminal: the current utterance on one line (committed text, then the tentative tail dimmed),
replaced by its final on a line of its own. Text mode into a pipe or file: finals only, one per line.
``--json``: every server event as one JSON object per line. Notices go to stderr.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import TextIO

CLEAR_LINE = "\r\x1b[2K"
DIM = "\x1b[2m"
RESET = "\x1b[0m"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "listen",
        help="print transcripts from the running daemon",
        description="Follow the running daemon's transcript events (reconnects if the daemon restarts).",
    )
    parser.add_argument("--json", action="store_true", help="print every event as one JSON object per line")
    parser.add_argument("--finals-only", action="store_true", help="text mode: print finals only, even on a terminal")
    parser.add_argument("--url", help="WebSocket address of the daemon (default: read from its server info file)")
    parser.set_defaults(func=run)


class TranscriptPrinter:
    """Renders client events as text. ``live``: redraw the current utterance in place (a terminal)."""

    def __init__(self, out: TextIO, live: bool, width: int | None = None):
        self.out = out
        self.live = live
        self.width = width
        self._line_open = False

    def _columns(self) -> int:
        return self.width or shutil.get_terminal_size((80, 24)).columns

    def show(self, event) -> None:
        from qasr.clients.client import Final, Partial

        if isinstance(event, Partial) and self.live:
            self._draw(event.committed, event.tentative)
        elif isinstance(event, Final):
            if self._line_open:
                self.out.write(CLEAR_LINE)
                self._line_open = False
            if event.text:
                self.out.write(event.text + "\n")
            self.out.flush()

    def _draw(self, committed: str, tentative: str) -> None:
        room = max(1, self._columns() - 1)
        # Keep the end of the utterance in view: cut from the left, committed first.
        if len(committed) + len(tentative) > room:
            if len(tentative) >= room:
                committed, tentative = "", tentative[-room:]
            else:
                committed = committed[len(committed) + len(tentative) - room :]
        self.out.write(CLEAR_LINE + committed + (DIM + tentative + RESET if tentative else ""))
        self.out.flush()
        self._line_open = True

    def notice(self, text: str, err: TextIO) -> None:
        if self._line_open:
            self.out.write(CLEAR_LINE)
            self.out.flush()
            self._line_open = False
        err.write(f"qasr-daemon: {text}\n")
        err.flush()


def run(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_listen(args, sys.stdout, sys.stderr))


async def _listen(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from qasr.clients.client import Disconnected, Error, Hello, QasrClient, Warning

    live = out.isatty() and not args.finals_only and not args.json
    printer = TranscriptPrinter(out, live)
    subscribe = None if args.json else (["partial", "final", "error", "warning"] if live else ["final", "error", "warning"])
    client = QasrClient(url=args.url, subscribe=subscribe)
    await client.connect()  # DaemonNotRunning / QasrError: one line from the CLI
    seen_hello = False
    try:
        async for event in client:
            if args.json:
                if not isinstance(event, Disconnected):
                    out.write(json.dumps(event.raw, ensure_ascii=False) + "\n")
                    out.flush()
                else:
                    err.write(f"qasr-daemon: connection lost ({event.reason}); reconnecting\n")
                    err.flush()
                continue
            if isinstance(event, Hello):
                if seen_hello:
                    printer.notice("reconnected", err)
                seen_hello = True
            elif isinstance(event, Disconnected):
                printer.notice(f"connection lost ({event.reason}); reconnecting", err)
            elif isinstance(event, (Error, Warning)):
                printer.notice(f"{event.type}: {event.message}", err)
            else:
                printer.show(event)
    finally:
        await client.close()
    return 0
