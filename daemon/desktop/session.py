"""Which desktop session the daemon runs in, and which compositor: the basis of every back-end choice.

Wayland when ``WAYLAND_DISPLAY`` is set, even when ``DISPLAY`` is set too (XWayland): an X11 sink would
only reach XWayland windows and an X11 hotkey would only see keys pressed in them. X11 when only
``DISPLAY`` is set. Neither: no desktop (captions and WebSocket clients only).

The compositor decides which typing tools and focus queries can work:
- ``sway``      — ``SWAYSOCK`` (sway IPC: focused window, keyboard layout);
- ``hyprland``  — ``HYPRLAND_INSTANCE_SIGNATURE`` (hyprctl socket: focused window);
- ``kde``       — ``XDG_CURRENT_DESKTOP`` contains KDE / ``KDE_FULL_SESSION`` (no focus API without KWin scripting);
- ``gnome``     — ``XDG_CURRENT_DESKTOP`` contains GNOME (Mutter: no virtual keyboard, no focus API);
- ``wlroots``   — river, Wayfire, labwc, niri, cage… (virtual keyboard yes, focus API no);
- ``unknown``   — any other Wayland compositor.
Pure: reads only the environment it is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

WAYLAND, X11, NONE = "wayland", "x11", "none"
SWAY, HYPRLAND, KDE, GNOME, WLROOTS, UNKNOWN = "sway", "hyprland", "kde", "gnome", "wlroots", "unknown"
# XDG_CURRENT_DESKTOP values of compositors that implement zwp_virtual_keyboard_v1 (wtype works).
WLROOTS_DESKTOPS = ("river", "wayfire", "labwc", "niri", "cage", "dwl", "hikari", "qtile", "cosmic")
# Compositors whose IPC tells the focused window (focus safety on Wayland).
FOCUS_API = {SWAY: "sway IPC (get_tree)", HYPRLAND: "Hyprland IPC (activewindow)"}
NO_FOCUS_API = {
    KDE: "KDE Plasma has no focus query without a KWin script",
    GNOME: "GNOME (Mutter) exposes no focused-window query without a shell extension",
    WLROOTS: "this compositor has no focused-window query qasr knows",
    UNKNOWN: "this compositor has no focused-window query qasr knows",
}


@dataclass(frozen=True)
class Session:
    kind: str                      # wayland | x11 | none
    compositor: str = ""           # sway | hyprland | kde | gnome | wlroots | unknown ("" on X11/none)
    display: str = ""              # WAYLAND_DISPLAY (wayland) or DISPLAY (x11)
    xwayland: bool = False         # Wayland with DISPLAY set: X11 clients (Tk captions) work through XWayland
    desktop_name: str = ""         # XDG_CURRENT_DESKTOP as given
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def wayland(self) -> bool:
        return self.kind == WAYLAND

    @property
    def focus_api(self) -> str:
        """How the focused window is known ("" = it cannot be on this desktop)."""
        if self.kind == X11:
            return "X11 (_NET_ACTIVE_WINDOW / input focus)"
        return FOCUS_API.get(self.compositor, "") if self.wayland else ""

    @property
    def focus_note(self) -> str:
        """Why there is no focus safety here ("" when there is)."""
        if self.focus_api:
            return ""
        if self.kind == NONE:
            return "no desktop session"
        return NO_FOCUS_API.get(self.compositor, "no focused-window query")

    def describe(self) -> str:
        if self.kind == WAYLAND:
            extra = ", XWayland available" if self.xwayland else ""
            return f"Wayland ({self.compositor}{extra})"
        if self.kind == X11:
            return f"X11 ({self.display})"
        return "no desktop session"

    def as_dict(self) -> dict:
        return {"kind": self.kind, "compositor": self.compositor or None, "display": self.display or None,
                "xwayland": self.xwayland, "focus_api": self.focus_api or None,
                "focus_note": self.focus_note or None, "reasons": list(self.reasons)}


def detect(env: Mapping[str, str] | None = None) -> Session:
    env = os.environ if env is None else env
    wayland_display = env.get("WAYLAND_DISPLAY", "")
    x_display = env.get("DISPLAY", "")
    desktop = env.get("XDG_CURRENT_DESKTOP", "")
    if wayland_display:
        compositor, why = _compositor(env, desktop)
        reasons = [f"WAYLAND_DISPLAY={wayland_display} is set", why]
        if x_display:
            reasons.append(f"DISPLAY={x_display} is set too: XWayland, whose X11 sinks reach only X11 windows")
        return Session(WAYLAND, compositor, wayland_display, bool(x_display), desktop, tuple(reasons))
    if x_display:
        reasons = [f"DISPLAY={x_display} is set and WAYLAND_DISPLAY is not"]
        if env.get("XDG_SESSION_TYPE") == "wayland":
            reasons.append("XDG_SESSION_TYPE=wayland but WAYLAND_DISPLAY is unset: treated as X11")
        return Session(X11, "", x_display, False, desktop, tuple(reasons))
    return Session(NONE, "", "", False, desktop, ("neither WAYLAND_DISPLAY nor DISPLAY is set",))


def _compositor(env: Mapping[str, str], desktop: str) -> tuple[str, str]:
    names = [part.strip().lower() for part in desktop.split(":") if part.strip()]
    if env.get("SWAYSOCK"):
        return SWAY, "SWAYSOCK is set: sway"
    if env.get("HYPRLAND_INSTANCE_SIGNATURE"):
        return HYPRLAND, "HYPRLAND_INSTANCE_SIGNATURE is set: Hyprland"
    if "kde" in names or env.get("KDE_FULL_SESSION"):
        return KDE, f"XDG_CURRENT_DESKTOP={desktop or '?'}: KDE Plasma"
    if "gnome" in names or any(n.endswith("gnome") for n in names):
        return GNOME, f"XDG_CURRENT_DESKTOP={desktop}: GNOME"
    if "sway" in names:
        return SWAY, f"XDG_CURRENT_DESKTOP={desktop}: sway (SWAYSOCK unset: no IPC)"
    if "hyprland" in names:
        return HYPRLAND, f"XDG_CURRENT_DESKTOP={desktop}: Hyprland"
    if any(n in WLROOTS_DESKTOPS for n in names):
        return WLROOTS, f"XDG_CURRENT_DESKTOP={desktop}: a wlroots-style compositor"
    return UNKNOWN, f"compositor not recognised (XDG_CURRENT_DESKTOP={desktop or 'unset'})"
