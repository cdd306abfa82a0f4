"""`qasr-daemon ime install|uninstall|status`: the IBus engine `qasr` (see daemon/desktop/ime_install.py)."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "ime", help="register the input method (IBus engine `qasr`) for this user, or remove it",
        description="The input method shows the partial at the cursor while you speak and commits the final "
        "into the focused field (GNOME, KDE, X11; any IBus client). `install` writes the IBus component file "
        "under $XDG_DATA_HOME/qasr/ibus and IBUS_COMPONENT_PATH in ~/.config/environment.d (no root; read at "
        "the next login), or with --system (as root) /usr/share/ibus/component/qasr.xml, and prints the "
        "commands left to run (GNOME: the gsettings line that adds the input source).")
    parser.add_argument("action", choices=("install", "uninstall", "status"))
    parser.add_argument("--system", action="store_true", help="install into /usr/share/ibus/component (root)")
    parser.add_argument("--json", action="store_true", help="status as JSON")
    parser.set_defaults(func=run)


def run(args) -> int:
    from qasr.daemon.desktop import ime_install

    if args.action == "install":
        report = ime_install.install(system=args.system)
        print("input method `qasr` installed:\n" + report.text())
    elif args.action == "uninstall":
        report = ime_install.uninstall()
        print("input method `qasr` removed:\n" + report.text())
    else:
        from qasr.daemon.desktop.doctor import format_checks, ime_checks

        checks = ime_checks()
        if args.json:
            print(json.dumps({"installed": ime_install.installed(), "checks": [c.as_dict() for c in checks]},
                             indent=2, ensure_ascii=False))
        else:
            print(format_checks(checks))
    return 0
