"""Wayland clipboard and primary selection through wl-clipboard (``wl-copy`` / ``wl-paste``).

The same interface as ``clipboard.Clipboard`` (get_text, save, set_text, restore, clear), so the output
restores what the user had with one code path on X11 and Wayland. ``wl-copy`` forks a child that serves
the selection until someone else takes it: it gets DEVNULL for every stream, so it never holds a caller's
pipe open. ``set_text`` returns only once ``wl-paste`` reads our text back: a paste keystroke sent
earlier would paste the previous (stale) content. On wlroots compositors (sway, Hyprland) and KDE the
tools use the data-control protocol; on GNOME wl-paste needs a focused surface and may briefly flash.
"""

from __future__ import annotations

import shutil
import subprocess
import time

from .clipboard import CLIPBOARD, PRIMARY, ClipboardSnapshot, ClipboardUnavailable

_TEXT_TYPES = ("text/plain;charset=utf-8", "text/plain", "UTF8_STRING", "STRING", "TEXT")
INSTALL_HINT = "install wl-clipboard (apt install wl-clipboard)"


class WlClipboard:
    tool = "wl-clipboard"

    def __init__(self, timeout_s: float = 2.0) -> None:
        if not (shutil.which("wl-copy") and shutil.which("wl-paste")):
            raise ClipboardUnavailable(f"wl-copy/wl-paste are not installed: {INSTALL_HINT}")
        self.timeout_s = timeout_s

    # -- reading -------------------------------------------------------------------------------
    def get_text(self, selection: str = CLIPBOARD) -> str | None:
        data = self._read(selection, None)
        return None if data is None else data.decode("utf-8", "replace")

    def targets(self, selection: str = CLIPBOARD) -> list[str]:
        data = self._paste(_flags(selection) + ["--list-types"])
        return [t.strip() for t in (data or b"").decode("utf-8", "replace").splitlines() if t.strip()]

    def save(self, selection: str = CLIPBOARD) -> ClipboardSnapshot:
        """Snapshot the selection; non-text content (an image) is kept in its own MIME type."""
        types = self.targets(selection)
        if types and not any(t in _TEXT_TYPES for t in types):
            data = self._read(selection, types[0])
            if data is not None:
                return ClipboardSnapshot(selection, types[0], data)
        data = self._read(selection, None) if types else None
        return ClipboardSnapshot(selection) if data is None else ClipboardSnapshot(selection, "UTF8_STRING", data)

    # -- writing -------------------------------------------------------------------------------
    def set_text(self, text: str, selection: str = CLIPBOARD) -> None:
        data = text.encode("utf-8")
        self._copy(selection, None, data)
        self._wait_for(selection, data)

    def restore(self, snapshot: ClipboardSnapshot) -> None:
        if snapshot.empty:
            self.clear(snapshot.selection)
            return
        target = None if snapshot.target == "UTF8_STRING" else snapshot.target
        self._copy(snapshot.selection, target, snapshot.data)
        self._wait_for(snapshot.selection, snapshot.data, target)

    def clear(self, selection: str = CLIPBOARD) -> None:
        self._run(["wl-copy", *_flags(selection), "--clear"], b"")

    def _wait_for(self, selection: str, data: bytes, target: str | None = None) -> None:
        deadline = time.monotonic() + self.timeout_s
        delay = 0.002
        while (self._read(selection, target) or b"") != data:
            if time.monotonic() > deadline:
                raise ClipboardUnavailable(f"wl-copy did not take the {selection} selection; check WAYLAND_DISPLAY")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # -- subprocesses --------------------------------------------------------------------------
    def _read(self, selection: str, target: str | None) -> bytes | None:
        args = _flags(selection) + ["--no-newline"] + (["--type", target] if target else [])
        return self._paste(args)

    def _paste(self, args: list[str]) -> bytes | None:
        try:
            proc = subprocess.run(["wl-paste", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, timeout=self.timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return None
        return proc.stdout if proc.returncode == 0 else None  # 1: "Nothing is copied"

    def _copy(self, selection: str, target: str | None, data: bytes) -> None:
        self._run(["wl-copy", *_flags(selection), *(["--type", target] if target else [])], data)

    def _run(self, cmd: list[str], data: bytes) -> None:
        try:
            proc = subprocess.run(cmd, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=self.timeout_s, check=False, start_new_session=True)
        except subprocess.TimeoutExpired as exc:
            raise ClipboardUnavailable("wl-copy did not finish; check that WAYLAND_DISPLAY reaches the compositor") from exc
        if proc.returncode != 0:
            raise ClipboardUnavailable(f"wl-copy failed (exit {proc.returncode}); check WAYLAND_DISPLAY")


def _flags(selection: str) -> list[str]:
    return ["--primary"] if selection == PRIMARY else []
