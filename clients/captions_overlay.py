"""Live captions overlay: a frameless, always-on-top Tk window that never takes the keyboard focus.

    overlay = CaptionsOverlay(OverlayOptions(lines=2, position="bottom"))
    overlay.run()          # until SIGINT/SIGTERM; the daemon's events arrive through captions_feed

Desktop behaviour (X11, also XWayland):
- ``overrideredirect``: no frame, no taskbar entry, and no window manager ever hands it the focus;
  ``-topmost`` keeps it above other windows. WM_HINTS ``input`` is set to False (re-set after every map,
  since Tk rewrites WM_HINTS when it maps a window) and nothing in it accepts focus.
- Click-through: the X Shape extension's *input* region is set empty (python-xlib), so clicks and the
  pointer go to the windows below. Without the Shape extension (rare) the overlay still works but
  catches clicks; move it with ``--position``.
- Translucency: ``-alpha`` needs a compositing manager; without one the window is opaque. Fading never
  relies on it: text colours are blended toward the background instead.
- Committed text is solid, tentative text dimmed; the last ``lines`` lines are shown and fade out after
  ``fade_after_s`` seconds without speech. A dot shows the connection (green: connected, amber:
  reconnecting). The window hides itself when there is nothing to show.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import time
from dataclasses import dataclass

from qasr.clients import captions_model as cm
from qasr.errors import QasrError

log = logging.getLogger("qasr.captions")

TITLE = "qasr captions"
CJK_FONT = "Noto Sans CJK SC"
FALLBACK_FONTS = (CJK_FONT, "Noto Sans", "DejaVu Sans")
POLL_MS = 50
STATUS_COLOURS = {cm.CONNECTED: "#3ecf5a", cm.CONNECTING: "#f0b429", cm.RECONNECTING: "#f0b429"}


@dataclass(frozen=True)
class OverlayOptions:
    lines: int = 2
    font: str = ""  # family; "" picks Noto Sans CJK SC when installed (Latin and CJK in one face)
    font_size: int = 24  # points
    position: str = "bottom"  # "top", "bottom" or "X,Y" (pixels, top-left corner)
    width: str = "80%"  # pixels ("900") or a share of the screen width ("80%")
    margin: int = 48  # pixels between the window and the screen edge (top/bottom positions)
    padding: int = 12
    align: str = "center"  # left, center or right
    opacity: float = 0.85  # window opacity (needs a compositor)
    foreground: str = "#ffffff"
    tentative: str = "#9aa0a6"
    background: str = "#101214"
    fade_after_s: float = 6.0
    fade_s: float = 1.0
    hide_when_idle: bool = True  # no text and connected: the window is withdrawn
    url: str | None = None
    token: str | None = None
    sources: tuple[str, ...] = ()  # whose words: "mic", "system" (what the computer plays); empty: all
    labels: bool = False  # "you:" / "them:" where the source changes
    system_audio: bool = False  # ask the daemon for system audio captions while the overlay runs


def parse_position(text: str) -> str | tuple[int, int]:
    """``top``/``bottom`` or ``X,Y`` in pixels; QasrError otherwise."""
    value = text.strip().lower()
    if value in ("top", "bottom"):
        return value
    parts = value.split(",")
    if len(parts) == 2:
        try:
            return int(parts[0]), int(parts[1])
        except ValueError:
            pass
    raise QasrError(f"--position must be top, bottom or X,Y in pixels (got {text!r})")


def parse_width(text: str, screen_width: int) -> int:
    """``900`` pixels or ``80%`` of the screen width; QasrError otherwise."""
    value = text.strip()
    try:
        if value.endswith("%"):
            share = float(value[:-1])
            if not 0 < share <= 100:
                raise ValueError
            return max(100, int(screen_width * share / 100))
        pixels = int(value)
        if pixels < 100:
            raise ValueError
        return pixels
    except ValueError:
        raise QasrError(f"--width must be pixels (at least 100) or a percentage like 80% (got {text!r})") from None


def blend(colour: str, background: str, amount: float, rgb) -> str:
    """``colour`` faded toward ``background``: amount 1 = colour, 0 = background. ``rgb``: winfo_rgb."""
    (r1, g1, b1), (r2, g2, b2) = rgb(colour), rgb(background)
    mix = [int((a * amount + b * (1 - amount)) / 257) for a, b in ((r1, r2), (g1, g2), (b1, b2))]
    return "#%02x%02x%02x" % tuple(mix)


# ---- X11: never focus, click through ----------------------------------------------------------


def make_passive(window_id: int) -> dict[str, bool]:
    """WM_HINTS input=False and an empty input shape on the top-level X window holding ``window_id``
    (Tk's wrapper window, the child of the root); what could be done, by name."""
    done = {"no_input_hint": False, "click_through": False}
    try:
        from Xlib import X, Xutil, display as xdisplay
        from Xlib.ext import shape
    except ImportError:
        log.warning("python-xlib is missing: the overlay may catch clicks")
        return done
    dpy = xdisplay.Display()
    try:
        window = toplevel_window(dpy, window_id)
        window.set_wm_hints(flags=Xutil.InputHint, input=0)
        done["no_input_hint"] = True
        if dpy.has_extension("SHAPE"):
            window.shape_rectangles(shape.SO.Set, shape.SK.Input, X.Unsorted, 0, 0, [])
            done["click_through"] = True
        else:
            log.warning("the X server has no Shape extension: the overlay catches clicks")
        dpy.sync()
    finally:
        dpy.close()
    return done


def toplevel_window(dpy, window_id: int):
    """The ancestor of ``window_id`` that is a child of the root window (what the X server stacks)."""
    window = dpy.create_resource_object("window", window_id)
    while True:
        tree = window.query_tree()
        if tree.parent.id == tree.root.id or tree.parent.id == 0:
            return window
        window = tree.parent


# ---- the window -------------------------------------------------------------------------------


class CaptionsOverlay:
    def __init__(self, options: OverlayOptions | None = None, events: queue.Queue | None = None) -> None:
        self.options = options or OverlayOptions()
        if self.options.align not in ("left", "center", "right"):
            raise QasrError(f"--align must be left, center or right (got {self.options.align!r})")
        self.position = parse_position(self.options.position)
        self.model = cm.CaptionModel(cm.CaptionOptions(
            max_lines=self.options.lines, fade_after_s=self.options.fade_after_s, fade_s=self.options.fade_s,
            sources=tuple(self.options.sources), labels=self.options.labels))
        self.events: queue.Queue = events if events is not None else queue.Queue()
        self.passive: dict[str, bool] = {}
        self._feed = None
        self._quit = False
        self._shown: tuple | None = None
        self._mapped = False
        self._build()

    def _build(self) -> None:
        if not os.environ.get("DISPLAY"):
            raise QasrError("the captions overlay needs an X display (DISPLAY is not set); "
                            "for a browser or OBS use the web page: qasr-daemon captions --print-url")
        import tkinter as tk
        from tkinter import font as tkfont

        o = self.options
        try:
            self.root = tk.Tk(className="QasrCaptions")
        except tk.TclError as exc:
            raise QasrError(f"cannot open the X display {os.environ.get('DISPLAY')}: {exc}") from None
        root = self.root
        root.withdraw()
        root.title(TITLE)
        root.overrideredirect(True)
        root.attributes("-topmost", True)
        root.configure(background=o.background, takefocus=0)
        families = set(tkfont.families(root))
        family = o.font or next((f for f in FALLBACK_FONTS if f in families), "TkDefaultFont")
        self.font = tkfont.Font(root, family=family, size=o.font_size)
        self.status_font = tkfont.Font(root, family=family, size=max(8, o.font_size // 2))

        self.width = parse_width(o.width, root.winfo_screenwidth())
        line_px = self.font.metrics("linespace")
        self.height = o.lines * line_px + 2 * o.padding
        self.text_width = self.width - 2 * o.padding - self.status_font.measure("●") - 6
        frame = tk.Frame(root, width=self.width, height=self.height, background=o.background,
                         highlightthickness=0, borderwidth=0, takefocus=0)
        frame.pack_propagate(False)
        frame.pack()
        self.status = tk.Label(frame, text="●", font=self.status_font, background=o.background,
                               foreground=STATUS_COLOURS[cm.CONNECTING], takefocus=0, borderwidth=0)
        self.status.pack(side="left", anchor="n", padx=(o.padding // 2, 0), pady=o.padding // 2)
        self.text = tk.Text(frame, font=self.font, background=o.background, foreground=o.foreground,
                            height=o.lines, wrap="none", borderwidth=0, highlightthickness=0, takefocus=0,
                            insertwidth=0, cursor="", exportselection=False, padx=0, pady=0,
                            selectbackground=o.background, inactiveselectbackground=o.background)
        self.text.pack(side="left", fill="both", expand=True, padx=(6, o.padding), pady=o.padding)
        self.text.configure(state="disabled")
        for tag in (cm.COMMITTED, cm.TENTATIVE, "status"):
            self.text.tag_configure(tag, justify=o.align)
        root.geometry(f"{self.width}x{self.height}+{self._x()}+{self._y()}")
        root.bind("<Map>", self._on_map)

    def _x(self) -> int:
        if isinstance(self.position, tuple):
            return self.position[0]
        return max(0, (self.root.winfo_screenwidth() - self.width) // 2)

    def _y(self) -> int:
        if isinstance(self.position, tuple):
            return self.position[1]
        if self.position == "top":
            return self.options.margin
        return max(0, self.root.winfo_screenheight() - self.height - self.options.margin)

    def _on_map(self, event) -> None:
        if event.widget is not self.root:
            return
        # Tk rewrites WM_HINTS (input=True) whenever it maps the window: make it passive again.
        self.root.update_idletasks()
        self.passive = make_passive(self.root.winfo_id())
        try:
            self.root.attributes("-alpha", self.options.opacity)
        except Exception:  # noqa: BLE001 - some Tk builds lack -alpha on X11; opacity is cosmetic
            pass

    # ---- rendering --------------------------------------------------------------------------

    def _colour(self, colour: str, amount: float) -> str:
        return blend(colour, self.options.background, amount, self.root.winfo_rgb)

    def render(self, now: float) -> None:
        view = self.model.view(self.text_width, now, measure=self.font.measure)
        opacity = round(view.opacity, 2)
        key = (view.lines, opacity, view.connection)
        if key == self._shown:
            return
        self._shown = key
        self.status.configure(foreground=STATUS_COLOURS.get(view.connection, "#e5484d"))
        lines: list[tuple[tuple[str, str], ...]] = [tuple((s.text, s.style) for s in line) for line in view.lines]
        if not lines and view.connection != cm.CONNECTED:
            lines = [(("waiting for the qasr daemon…" if view.connection == cm.CONNECTING
                       else "reconnecting to the qasr daemon…", "status"),)]
            opacity = 1.0
        if self.position != "top":  # bottom-anchored: fewer lines sit at the bottom edge
            lines = [()] * (self.options.lines - len(lines)) + lines
        self.text.tag_configure(cm.COMMITTED, foreground=self._colour(self.options.foreground, opacity))
        self.text.tag_configure(cm.TENTATIVE, foreground=self._colour(self.options.tentative, opacity))
        self.text.tag_configure("status", foreground=self.options.tentative)
        self.text.configure(state="normal")
        self.text.delete("1.0", "end")
        for n, line in enumerate(lines):
            if n:
                self.text.insert("end", "\n")
            for text, style in line:
                self.text.insert("end", text, style)
        self.text.configure(state="disabled")
        visible = any(lines) or not self.options.hide_when_idle
        if visible and not self._mapped:
            self.root.deiconify()
            self._mapped = True
        elif not visible and self._mapped:
            self.root.withdraw()
            self._mapped = False

    def _poll(self) -> None:
        if self._quit:
            self.root.destroy()
            return
        now = time.monotonic()
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                break
            self.model.apply(event, now)
        self.render(now)
        self.root.after(POLL_MS, self._poll)

    # ---- running ----------------------------------------------------------------------------

    def request_quit(self, *_args) -> None:
        self._quit = True

    def run(self, follow_daemon: bool = True) -> None:
        """Show the overlay until SIGINT/SIGTERM; ``follow_daemon``: start the network thread."""
        from qasr.clients.captions_feed import EventFeed, FeedOptions

        if follow_daemon:
            self._feed = EventFeed(self.events, FeedOptions(url=self.options.url, token=self.options.token,
                                                            system_audio=self.options.system_audio))
            self._feed.start()
        previous = {sig: signal.signal(sig, self.request_quit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.render(time.monotonic())
            self.root.after(POLL_MS, self._poll)
            self.root.mainloop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._feed is not None:
                self._feed.stop()
