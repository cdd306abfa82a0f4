"""Per-application profiles: ``[[profile]]`` tables matched against the focused window.

A profile matches a window when one of its ``match`` globs matches the window's WM_CLASS class or
instance (X11) or its app_id (sway; Hyprland's class), any case, and its ``title`` glob (if any) matches
the window title. The first matching profile wins. It is chosen when an utterance starts, from the window
focused then (the window the text will go to):
- engine side (before the utterance reaches the engine): ``language``, ``context``, ``hotwords``;
- delivery side: ``sink``, ``trailing_space``, ``spoken_formatting``.
Where the desktop cannot tell the focused window (GNOME, KDE on Wayland) no profile applies.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from qasr.config.settings import ProfileSettings


def _glob(pattern: str, value: str) -> bool:
    return bool(value) and fnmatch.fnmatchcase(value.lower(), pattern.lower())


def match(profiles: tuple[ProfileSettings, ...], window: Any) -> ProfileSettings | None:
    """The first profile that matches ``window`` (an x11.WindowInfo, also for Wayland), or None."""
    if window is None:
        return None
    names = (window.wm_class, window.wm_instance)
    for profile in profiles:
        if not any(_glob(pattern, name) for pattern in profile.match for name in names):
            continue
        if profile.title and not _glob(profile.title, window.name):
            continue
        return profile
    return None


def _flag(value: str) -> bool | None:
    return {"true": True, "false": False}.get(value)


@dataclass(frozen=True)
class Delivery:
    """What a profile changes in how one utterance's final is delivered (None / "" = the settings')."""
    name: str = ""
    sink: str = ""
    trailing_space: bool | None = None
    spoken_formatting: bool | None = None

    @classmethod
    def of(cls, profile: ProfileSettings | None) -> "Delivery":
        if profile is None:
            return cls()
        return cls(profile.label, profile.sink, _flag(profile.trailing_space), _flag(profile.spoken_formatting))


def engine_overrides(profile: ProfileSettings | None, engine_context: str, hotwords: str,
                     language: str | None, context: str | None) -> tuple[str | None, str | None]:
    """The utterance's (language, context): the profile's where it sets them, else what was asked."""
    if profile is None:
        return language, context
    if profile.language:
        language = profile.language
    if profile.context or profile.hotwords:
        parts = (profile.context or engine_context, hotwords, ", ".join(profile.hotwords))
        context = ", ".join(part for part in parts if part)
    return language, context


def describe(profile: ProfileSettings | None, window: Any, focus_known: bool) -> dict:
    """``status``'s ``profile``: the one in force for the window focused now, and why."""
    where = window.describe() if window is not None else None
    if not focus_known:
        return {"name": None, "window": None, "why": "the desktop does not tell the focused window"}
    if profile is None:
        return {"name": None, "window": where, "why": "no [[profile]] matches the focused window"}
    overrides = {k: v for k, v in (("sink", profile.sink), ("language", profile.language),
                                   ("context", profile.context), ("hotwords", list(profile.hotwords)),
                                   ("trailing_space", _flag(profile.trailing_space)),
                                   ("spoken_formatting", _flag(profile.spoken_formatting))) if v or v is False}
    return {"name": profile.label, "window": where, "overrides": overrides}
