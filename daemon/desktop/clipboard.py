"""Read, set, save and restore X selections (CLIPBOARD, PRIMARY) through xclip or xsel.

Both tools fork a process that keeps owning the selection after we return. That process must not
inherit our stdout/stderr (it would hold a caller's capture pipe open forever), so every child gets
DEVNULL for its output. pyperclip is not used: it lets the child inherit our pipes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

from qasr.errors import QasrError

CLIPBOARD = "clipboard"
PRIMARY = "primary"

# Targets that mean "this selection holds text" (what xclip -o gives by default).
_TEXT_TARGETS = ("UTF8_STRING", "text/plain;charset=utf-8", "STRING", "TEXT", "text/plain", "COMPOUND_TEXT")
# Targets every owner lists that carry no content of their own.
_META_TARGETS = {"TARGETS", "MULTIPLE", "TIMESTAMP", "SAVE_TARGETS", "DELETE", "INSERT_SELECTION"}


class ClipboardUnavailable(QasrError):
    pass


@dataclass(frozen=True)
class ClipboardSnapshot:
    """What a selection held: `data` in `target` format, or nothing (`target` is None)."""

    selection: str
    target: str | None = None
    data: bytes = b""

    @property
    def empty(self) -> bool:
        return self.target is None


class Clipboard:
    """One X selection tool (xclip preferred, xsel as fallback)."""

    def __init__(self, tool: str | None = None, timeout_s: float = 2.0) -> None:
        self.tool = tool or _find_tool()
        self.timeout_s = timeout_s

    # -- reading -------------------------------------------------------------------------------
    def get_text(self, selection: str = CLIPBOARD) -> str | None:
        """The selection's text, or None when nobody owns it or it holds no text."""
        data = self._read(selection, None)
        return None if data is None else data.decode("utf-8", "replace")

    def targets(self, selection: str = CLIPBOARD) -> list[str]:
        if self.tool != "xclip":
            return []
        data = self._read(selection, "TARGETS")
        if not data:
            return []
        return [t.strip() for t in data.decode("utf-8", "replace").splitlines() if t.strip()]

    def save(self, selection: str = CLIPBOARD) -> ClipboardSnapshot:
        """Snapshot the selection, keeping non-text content (an image) in its own format with xclip."""
        targets = self.targets(selection)
        content = [t for t in targets if t not in _META_TARGETS]
        if content and not any(t in _TEXT_TARGETS for t in content):
            data = self._read(selection, content[0])
            if data is not None:
                return ClipboardSnapshot(selection, content[0], data)
        data = self._read(selection, None)
        if data is None:
            return ClipboardSnapshot(selection)
        return ClipboardSnapshot(selection, "UTF8_STRING", data)

    # -- writing -------------------------------------------------------------------------------
    def set_text(self, text: str, selection: str = CLIPBOARD) -> None:
        """Own the selection with `text`; returns once the selection really holds it."""
        data = text.encode("utf-8")
        self._write(selection, None, data)
        self._wait_for(selection, data)

    def restore(self, snapshot: ClipboardSnapshot) -> None:
        if snapshot.empty:
            self.clear(snapshot.selection)
        else:
            target = None if snapshot.target == "UTF8_STRING" else snapshot.target
            self._write(snapshot.selection, target, snapshot.data)
            self._wait_for(snapshot.selection, snapshot.data, target)

    def clear(self, selection: str = CLIPBOARD) -> None:
        if self.tool == "xsel":
            self._run(["xsel", _xsel_flag(selection), "--clear"], b"")
        else:
            # xclip cannot disown; an empty string is the closest it can restore "nothing" to.
            self._write(selection, None, b"")

    def _wait_for(self, selection: str, data: bytes, target: str | None = None) -> None:
        """xclip/xsel fork before the child takes the selection: until it has, readers (and a paste
        keystroke) still get the previous owner's content."""
        deadline = time.monotonic() + self.timeout_s
        delay = 0.002
        while (self._read(selection, target) or b"") != data:
            if time.monotonic() > deadline:
                raise ClipboardUnavailable(f"{self.tool} did not take the {selection} selection; check DISPLAY")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # -- subprocesses --------------------------------------------------------------------------
    def _read(self, selection: str, target: str | None) -> bytes | None:
        if self.tool == "xclip":
            cmd = ["xclip", "-selection", selection, "-o"]
            if target:
                cmd += ["-t", target]
        else:
            cmd = ["xsel", _xsel_flag(selection), "--output"]
        try:
            proc = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                timeout=self.timeout_s, check=False,
            )
        except subprocess.TimeoutExpired:
            return None  # the owner does not answer: treat as empty
        if proc.returncode != 0:
            return None
        if self.tool == "xsel" and not proc.stdout:
            return None
        return proc.stdout

    def _write(self, selection: str, target: str | None, data: bytes) -> None:
        if self.tool == "xclip":
            cmd = ["xclip", "-selection", selection, "-i"]
            if target:
                cmd += ["-t", target]
        else:
            cmd = ["xsel", _xsel_flag(selection), "--input"]
        self._run(cmd, data)

    def _run(self, cmd: list[str], data: bytes) -> None:
        try:
            proc = subprocess.run(
                cmd, input=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=self.timeout_s, check=False, start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClipboardUnavailable(f"{cmd[0]} did not finish; check that the X display works") from exc
        if proc.returncode != 0:
            raise ClipboardUnavailable(f"{cmd[0]} failed (exit {proc.returncode}); check DISPLAY")


def _xsel_flag(selection: str) -> str:
    return "--primary" if selection == PRIMARY else "--clipboard"


def _find_tool() -> str:
    for tool in ("xclip", "xsel"):
        if shutil.which(tool):
            return tool
    raise ClipboardUnavailable("neither xclip nor xsel is installed: install xclip (apt install xclip)")
