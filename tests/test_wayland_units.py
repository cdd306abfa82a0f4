"""Issue 11 without a compositor: session detection, tool order and fallbacks, key combos, layouts."""

from __future__ import annotations

import pytest

from qasr.daemon.desktop import session as sessions
from qasr.daemon.desktop.session import detect
from qasr.daemon.desktop.wayland_backend import WaylandBackend, tool_order
from qasr.daemon.desktop.wayland_typing import is_us_ascii, parse_combo
from qasr.daemon.desktop.x11_backend import SinkFailed
from qasr.errors import QasrError


def test_wayland_wins_over_xwayland_and_the_reasons_say_why():
    s = detect({"WAYLAND_DISPLAY": "wayland-1", "DISPLAY": ":0", "SWAYSOCK": "/run/sway.sock"})
    assert (s.kind, s.compositor, s.xwayland) == ("wayland", "sway", True)
    assert any("XWayland" in r for r in s.reasons) and s.focus_api.startswith("sway IPC")
    assert detect({"DISPLAY": ":0", "XDG_SESSION_TYPE": "wayland"}).kind == "x11"
    assert detect({}).kind == "none"


@pytest.mark.parametrize("env, compositor, focus", [
    ({"HYPRLAND_INSTANCE_SIGNATURE": "abc"}, "hyprland", True),
    ({"XDG_CURRENT_DESKTOP": "KDE"}, "kde", False),
    ({"XDG_CURRENT_DESKTOP": "ubuntu:GNOME"}, "gnome", False),
    ({"XDG_CURRENT_DESKTOP": "river"}, "wlroots", False),
    ({"XDG_CURRENT_DESKTOP": "Weird"}, "unknown", False),
])
def test_compositors_and_where_focus_safety_exists(env, compositor, focus):
    s = detect({"WAYLAND_DISPLAY": "wayland-0", **env})
    assert s.compositor == compositor
    assert bool(s.focus_api) == focus and bool(s.focus_note) != focus


def test_tool_order_per_compositor_and_from_the_config():
    assert tool_order(detect({"WAYLAND_DISPLAY": "w", "SWAYSOCK": "/s"}))[0] == "wtype"
    assert "wtype" not in tool_order(detect({"WAYLAND_DISPLAY": "w", "XDG_CURRENT_DESKTOP": "GNOME"}))
    assert tool_order(detect({"WAYLAND_DISPLAY": "w", "XDG_CURRENT_DESKTOP": "KDE"}))[0] == "ydotool"
    assert tool_order(detect({"WAYLAND_DISPLAY": "w"}), ("uinput", "wtype")) == ("uinput", "wtype")


def test_no_usable_tool_raises_with_one_line_per_tool_and_warns_once(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    backend = WaylandBackend(detect({"WAYLAND_DISPLAY": "w", "XDG_CURRENT_DESKTOP": "river"}),
                             ("wtype", "dotool"), layout="us", env={})
    with pytest.raises(SinkFailed) as first:
        backend.type_text("hello")
    assert [n.split(":")[0] for n in first.value.notes] == ["wtype", "dotool"]
    assert "apt install wtype" in first.value.notes[0]
    with pytest.raises(SinkFailed) as again:
        backend.type_text("hello")
    assert again.value.notes == []  # said once per back-end, not on every utterance
    with pytest.raises(QasrError, match="unknown tool"):
        WaylandBackend(detect({"WAYLAND_DISPLAY": "w"}), ("xdotool",), env={})


def test_key_code_tools_type_only_us_ascii_and_the_layout_comes_from_the_environment():
    assert is_us_ascii("Hello, world! 42 ~/path\n") and not is_us_ascii("café") and not is_us_ascii("你好")
    env = {"XKB_DEFAULT_LAYOUT": "de"}
    backend = WaylandBackend(detect({"WAYLAND_DISPLAY": "w", "XDG_CURRENT_DESKTOP": "GNOME"}), env=env)
    assert backend.layout() == "de"
    us = WaylandBackend(detect({"WAYLAND_DISPLAY": "w"}), ("ydotool",), env={"XKB_DEFAULT_LAYOUT": "us,de"})
    assert us.layout() == "us"
    assert us.tools[0].can_type("plain ascii") and not us.tools[0].can_type("naïve")


def test_paste_combos_parse_and_bad_ones_say_what_to_use():
    assert parse_combo("ctrl+shift+v") == (["ctrl", "shift"], "v")
    assert parse_combo("shift+Insert") == (["shift"], "Insert")
    with pytest.raises(QasrError, match="unknown modifier"):
        parse_combo("hyper+v")


def test_sessions_module_is_pure():
    assert sessions.detect({"WAYLAND_DISPLAY": "x"}).as_dict()["kind"] == "wayland"
