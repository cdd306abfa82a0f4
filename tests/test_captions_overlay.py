"""The captions overlay under Xvfb: shows transcripts, never takes the focus, lets clicks through, and
follows a daemon that restarts. ``qasr-daemon captions`` runs as a subprocess; events come from an
in-process qasr.v1 server (fast, scripted) and, in the system test, from a running daemon that hears
speech through a PulseAudio virtual microphone."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qasr import protocol

SCREEN = (1280, 800)
BACKGROUND = (0x10, 0x12, 0x14)  # the overlay's default background
OVERLAY_X, OVERLAY_Y, OVERLAY_W = 40, 560, 1000


# ---------------------------------------------------------------------------- helpers

class FakeDaemon:
    """A qasr.v1 EventServer in this process, found by clients through ``runtime``/qasr/server.json."""

    def __init__(self, runtime: Path, handler=None, port: int = 0) -> None:
        from qasr.daemon.server.bridge import ServerRunner
        from qasr.daemon.server.ws_server import BaseServerHandler, EventServer, ServerOptions

        folder = runtime / "qasr"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.server = EventServer(ServerOptions(
            port=port, info_path=folder / "server.json", token_path=folder / "token", http_requires_token=False,
        ), handler or BaseServerHandler())
        self.runner = ServerRunner(self.server)
        self.runner.start()

    def publish(self, event: dict) -> None:
        self.server.publish(event)

    def wait_clients(self, count: int, timeout: float = 60) -> None:
        assert wait_for(lambda: self.server.clients_count >= count, timeout), "the client did not connect"

    def stop(self) -> None:
        self.runner.stop()


def wait_for(predicate, timeout: float, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()  # None/False: not yet
        if (value is not None and value is not False) or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def screenshot(path: Path, display: str) -> np.ndarray:
    """``import -window root`` into ``path`` (PNG, kept); the pixels as an (h, w, 3) uint8 array."""
    env = dict(os.environ, DISPLAY=display)
    subprocess.run(["/usr/bin/import", "-window", "root", str(path)], env=env, check=True, timeout=60,
                   capture_output=True)
    raw = subprocess.run(["/usr/bin/convert", str(path), "-depth", "8", "rgb:-"], check=True, timeout=60,
                         capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(SCREEN[1], SCREEN[0], 3)


def overlay_window(display: str):
    """(python-xlib Display, the overlay's top-level window) once it is mapped, else (display, None)."""
    from Xlib import X
    from Xlib.error import XError

    from qasr.daemon.desktop.x11 import open_display

    dpy = open_display(display)  # its own event table: Xvfb and XWayland tests share this process
    for window in dpy.screen().root.query_tree().children:
        try:
            if window.get_wm_name() == "qasr captions" and window.get_attributes().map_state == X.IsViewable:
                return dpy, window
        except XError:  # a window (the xterm of an earlier test) went away while we looked
            continue
    dpy.close()
    return None, None


def overlay_geometry(display: str) -> tuple[int, int, int, int] | None:
    dpy, window = overlay_window(display)
    if window is None:
        return None
    try:
        g = window.get_geometry()
        return g.x, g.y, g.width, g.height
    finally:
        dpy.close()


def text_pixels(image: np.ndarray, box: tuple[int, int, int, int]) -> int:
    """Pixels of the overlay's text area (right of the status dot) brighter than its background."""
    x, y, w, h = box
    area = image[y:y + h, x + 40:x + w].astype(int)
    return int((np.abs(area - np.array(BACKGROUND)).max(axis=2) > 60).sum())


def dot_colour(image: np.ndarray, box: tuple[int, int, int, int]) -> str | None:
    """'green' or 'amber': the status dot in the overlay's left strip."""
    x, y, w, h = box
    strip = image[y:y + h, x:x + 40].astype(int)
    r, g, b = strip[..., 0], strip[..., 1], strip[..., 2]
    if ((g > 170) & (r < 110) & (b < 140)).sum() > 10:
        return "green"
    if ((r > 200) & (g > 140) & (g < 210) & (b < 90)).sum() > 10:
        return "amber"
    return None


def focused_window(display: str) -> int:
    out = subprocess.run(["xdotool", "getwindowfocus"], env=dict(os.environ, DISPLAY=display), check=True,
                         capture_output=True, text=True, timeout=30).stdout
    return int(out.strip())


class FocusedXterm:
    """An xterm holding the keyboard focus (XSetInputFocus via xdotool; Xvfb has no window manager)."""

    def __init__(self, display: str) -> None:
        self.env = dict(os.environ, DISPLAY=display)
        self.proc = subprocess.Popen(["xterm", "-geometry", "80x12+0+0", "-title", "focus-keeper"], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = subprocess.run(["xdotool", "search", "--sync", "--pid", str(self.proc.pid)], env=self.env,
                             capture_output=True, text=True, timeout=60).stdout.split()
        assert out, "xterm did not open a window"
        self.window = int(out[-1])
        subprocess.run(["xdotool", "windowfocus", "--sync", str(self.window)], env=self.env, check=True, timeout=30)
        assert focused_window(display) == self.window

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_overlay(env: dict, display: str, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "qasr", "captions", "--position", f"{OVERLAY_X},{OVERLAY_Y}",
           "--width", str(OVERLAY_W), "--lines", "2", "--fade", "600", *args]
    return subprocess.Popen(cmd, env=dict(env, DISPLAY=display), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def stop_overlay(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.terminate()
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def assert_passive(display: str) -> None:
    """WM_HINTS input=False and an empty input shape (click-through) on the mapped overlay."""
    from Xlib.ext import shape

    dpy, window = overlay_window(display)
    assert window is not None
    try:
        hints = window.get_wm_hints()
        assert hints is not None and hints.input == 0
        assert window.get_attributes().override_redirect
        assert list(window.shape_get_rectangles(shape.SK.Input).rectangles) == []
    finally:
        dpy.close()


def partial_event(uid: str, committed: str, tentative: str) -> dict:
    return protocol.partial(uid, 1, committed, tentative, 0.0, 1.0)


def final_event(uid: str, text: str) -> dict:
    return protocol.final(uid, 2, text, "English", [1, 2], 0.0, 1.0)


# ---------------------------------------------------------------------------- unit

def test_position_width_and_colour_blending():
    from qasr.clients.captions_overlay import blend, parse_position, parse_width
    from qasr.errors import QasrError

    assert parse_position("Bottom") == "bottom" and parse_position("12,34") == (12, 34)
    assert parse_width("80%", 1000) == 800 and parse_width("640", 1000) == 640
    for bad in ("middle", "1,2,3", "x,y"):
        with pytest.raises(QasrError, match="--position"):
            parse_position(bad)
    for bad in ("0%", "150%", "50", "wide"):
        with pytest.raises(QasrError, match="--width"):
            parse_width(bad, 1000)
    rgb = {"#ffffff": (65535,) * 3, "#000000": (0,) * 3}.__getitem__
    assert blend("#ffffff", "#000000", 1.0, rgb) == "#ffffff"
    assert blend("#ffffff", "#000000", 0.5, rgb) == "#7f7f7f"
    assert blend("#ffffff", "#000000", 0.0, rgb) == "#000000"


def test_captions_command_without_a_display_says_what_to_do(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    result = subprocess.run([sys.executable, "-m", "qasr", "captions"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "DISPLAY" in result.stderr and "--print-url" in result.stderr


def test_captions_command_rejects_bad_options():
    result = subprocess.run([sys.executable, "-m", "qasr", "captions", "--opacity", "2"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "--opacity" in result.stderr


# ---------------------------------------------------------------------------- Xvfb

@pytest.mark.system
def test_overlay_shows_captions_keeps_focus_away_and_follows_a_restarted_daemon(tmp_path, xvfb_display):
    for tool in ("xterm", "xdotool", "/usr/bin/import", "/usr/bin/convert"):
        assert shutil.which(tool), f"{tool} is missing (scripts/install.sh installs it)"
    runtime = Path(tempfile.mkdtemp(prefix="qasr-cap-"))
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    daemon = FakeDaemon(runtime)
    xterm = FocusedXterm(xvfb_display)
    overlay = start_overlay(env, xvfb_display)
    try:
        daemon.wait_clients(1)
        assert overlay_geometry(xvfb_display) is None  # connected, nothing said: hidden
        daemon.publish(final_event("1", "The quick brown fox jumps over the lazy dog."))
        daemon.publish(partial_event("2", "Hello wor", "ld 你好世界"))
        box = wait_for(lambda: overlay_geometry(xvfb_display), 60)
        assert box is not None, "the overlay never appeared"
        assert box[:3] == (OVERLAY_X, OVERLAY_Y, OVERLAY_W)
        shot = tmp_path / "overlay-text.png"
        image = wait_for(lambda: (lambda im: im if text_pixels(im, box) > 500 else None)(
            screenshot(shot, xvfb_display)), 30)
        assert image is not None, f"no text in the overlay; see {shot}"
        assert dot_colour(image, box) == "green"
        assert focused_window(xvfb_display) == xterm.window, "the overlay took the keyboard focus"
        assert_passive(xvfb_display)

        # the daemon goes away: the overlay says it is reconnecting, text stays
        daemon.stop()
        image = wait_for(lambda: (lambda im: im if dot_colour(im, box) == "amber" else None)(
            screenshot(tmp_path / "overlay-reconnecting.png", xvfb_display)), 60)
        assert image is not None, "the overlay did not show the lost connection"
        # a new daemon (another port): the overlay finds it through the info file and shows its text
        daemon = FakeDaemon(runtime)
        daemon.wait_clients(1, timeout=90)
        before = text_pixels(screenshot(tmp_path / "overlay-before.png", xvfb_display), box)
        daemon.publish(final_event("1", "Back again after the restart, with more words on the second line."))
        image = wait_for(lambda: (lambda im: im if dot_colour(im, box) == "green" and text_pixels(im, box) != before
                                  else None)(screenshot(tmp_path / "overlay-restarted.png", xvfb_display)), 60)
        assert image is not None, "the overlay did not show the restarted daemon's text"
        assert focused_window(xvfb_display) == xterm.window
        assert_passive(xvfb_display)  # still passive after being remapped
    finally:
        err = stop_overlay(overlay)
        xterm.close()
        daemon.stop()
        shutil.rmtree(runtime, ignore_errors=True)
    assert overlay.returncode == 0, err


@pytest.mark.system
def test_overlay_shows_a_running_daemons_speech_transcript(tmp_path, xvfb_display, pulse_server, tiny_bundle):
    """The real daemon hears espeak speech through the virtual microphone and broadcasts partials and the
    final; the overlay draws them while an xterm keeps the focus."""
    from tests.fixtures.desktop import espeak_wav
    from tests.harness.daemon import DaemonProcess

    env = DaemonProcess(tmp_path, extra_env=pulse_server.client_env)
    xterm = FocusedXterm(xvfb_display)
    overlay = None
    try:
        env.start(tiny_bundle, "--set", "vad.hangover_ms=450", "--set", "output.sink=none")
        assert env.wait_status(lambda s: s["state"] == "listening", timeout=60)["state"] == "listening"
        overlay = start_overlay(env.env, xvfb_display)
        events = asyncio.run(_listen_while_speaking(env, pulse_server, espeak_wav("hello world, this is a captions test")))
        final = next(e for e in events if e["type"] == "final")
        assert final["source"] == "mic"
        shown = final["text"].strip() or next((p["committed"] + p["tentative"] for p in events
                                               if p["type"] == "partial" and (p["committed"] + p["tentative"]).strip()), "")
        assert shown, f"the daemon transcribed nothing to show: {events}"
        box = wait_for(lambda: overlay_geometry(xvfb_display), 60)
        assert box is not None, "the overlay never appeared"
        shot = tmp_path / "overlay-daemon.png"
        image = wait_for(lambda: (lambda im: im if text_pixels(im, box) > 100 else None)(
            screenshot(shot, xvfb_display)), 30)
        assert image is not None, f"no text in the overlay; see {shot}"
        assert dot_colour(image, box) == "green"
        assert focused_window(xvfb_display) == xterm.window, "the overlay took the keyboard focus"
        assert_passive(xvfb_display)
    finally:
        err = stop_overlay(overlay) if overlay is not None else ""
        xterm.close()
        env.stop()
    assert overlay.returncode == 0, err


async def _listen_while_speaking(env, pulse_server, speech: Path) -> list[dict]:
    from websockets.asyncio.client import connect

    info, token = env.server_info(), env.token()
    async with connect(info["ws_url"], additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
        await asyncio.sleep(1.0)  # the overlay's own connection is up before anything is said
        player = threading.Thread(target=pulse_server.play, args=(speech,))
        player.start()
        events = []
        try:
            deadline = time.monotonic() + 180
            while True:
                event = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic())))
                if event["type"] in ("partial", "final"):
                    events.append(event)
                if event["type"] == "final":
                    return events
        finally:
            await asyncio.to_thread(player.join)
