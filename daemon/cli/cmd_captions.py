"""`qasr-daemon captions`: live captions of the running daemon in an always-on-top overlay window.

``--system`` captions what the computer plays (the daemon captures the default output while the overlay
runs); ``--both`` shows the microphone and system audio together, labelled. ``--print-url`` prints the address of the web captions page instead (for a browser or an OBS browser
source); it carries the token in the URL fragment, which browsers never send to a server.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "captions",
        help="show live captions in an overlay window",
        description="Show the running daemon's transcripts as live captions in a frameless, always-on-top, "
        "click-through window that never takes the keyboard focus (X11). Reconnects if the daemon restarts.",
    )
    parser.add_argument("--lines", type=_positive_int, default=2, help="lines of text shown (default 2)")
    parser.add_argument("--font", default="", help="font family (default: Noto Sans CJK SC when installed)")
    parser.add_argument("--font-size", type=_positive_int, default=24, help="font size in points (default 24)")
    parser.add_argument("--position", default="bottom", help="top, bottom, or X,Y in pixels (default bottom)")
    parser.add_argument("--width", default="80%", help="window width: pixels or a share of the screen, e.g. 80%% "
                        "(default 80%%)")
    parser.add_argument("--opacity", type=_opacity, default=0.85,
                        help="window opacity 0.1-1 (needs a compositing window manager; default 0.85)")
    parser.add_argument("--align", choices=("left", "center", "right"), default="center")
    parser.add_argument("--color", default="#ffffff", help="colour of committed text (default #ffffff)")
    parser.add_argument("--tentative-color", default="#9aa0a6",
                        help="colour of tentative text, which may still change (default #9aa0a6)")
    parser.add_argument("--background", default="#101214", help="background colour (default #101214)")
    parser.add_argument("--fade", type=_positive_float, default=6.0,
                        help="seconds without speech before the captions fade out (default 6)")
    parser.add_argument("--system", action="store_true",
                        help="captions of what the computer plays (system audio) instead of the microphone; the "
                        "daemon captures its default output while the overlay runs")
    parser.add_argument("--both", action="store_true",
                        help="captions of the microphone and system audio together, labelled you: / them:")
    parser.add_argument("--url", help="WebSocket address of the daemon (default: read from its server info file)")
    parser.add_argument("--print-url", action="store_true",
                        help="print the web captions page address (with its token) and exit")
    parser.set_defaults(func=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _opacity(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0.1 and 1")
    return value


def run(args: argparse.Namespace) -> int:
    if args.print_url:
        from qasr.config.runtime import discover
        from qasr.daemon.server.web_pages import captions_url

        info = discover()
        appearance = {"source": "both" if args.both else "system"} if args.system or args.both else {}
        if appearance:  # the page only shows what it gets: turn system audio on now (`system-audio off` ends it)
            from qasr.daemon.server import control_socket

            control_socket.request("system-audio", action="on")
        print(captions_url(info.http_url or f"http://127.0.0.1:{info.port}", info.token, **appearance))
        return 0

    from qasr.clients.captions_overlay import CaptionsOverlay, OverlayOptions

    overlay = CaptionsOverlay(OverlayOptions(
        lines=args.lines, font=args.font, font_size=args.font_size, position=args.position, width=args.width,
        opacity=args.opacity, align=args.align, foreground=args.color, tentative=args.tentative_color,
        background=args.background, fade_after_s=args.fade, url=args.url,
        sources=("mic", "system") if args.both else ("system",) if args.system else (),
        labels=args.both, system_audio=args.system or args.both,
    ))
    overlay.run()
    return 0
