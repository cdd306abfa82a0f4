"""`qasr-daemon doctor`: which desktop back-ends work in this session (typing, clipboard, focus, hotkey),
and for each one that does not, the one command that fixes it. Needs no running daemon."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the desktop back-ends (typing, clipboard, focus, hotkey) and say how to fix them",
        description="Detect the session (Wayland when WAYLAND_DISPLAY is set, else X11) and list every typing, "
        "clipboard, focus and hotkey back-end as works / missing package / needs permission / not supported, "
        "with the command that fixes it.",
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    from qasr.daemon.desktop.doctor import format_checks, run_checks

    session, checks = run_checks()
    if args.json:
        print(json.dumps({"session": session.as_dict(), "checks": [c.as_dict() for c in checks]}, indent=2,
                         ensure_ascii=False))
    else:
        print(format_checks(checks))
    return 0
