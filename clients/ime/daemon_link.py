"""An input-method engine's connection to the daemon: the control socket, one JSON object per line.

Standard library only: the IBus engine runs under the system Python (``/usr/bin/python3``, which has
Debian's python3-gi), not in qasr's virtual environment. The protocol is described in
daemon/desktop/ime_link.py; the socket path follows config/paths.py (a test keeps the two in step).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

VERSION = 1
MAX_LINE_BYTES = 65536


def control_socket_path() -> Path:
    """$XDG_RUNTIME_DIR/qasr/control.sock, or /tmp/qasr-UID/control.sock (as config/paths.py)."""
    value = os.environ.get("XDG_RUNTIME_DIR", "")
    base = Path(value) / "qasr" if value and os.path.isabs(value) else Path(f"/tmp/qasr-{os.getuid()}")
    return base / "control.sock"


class DaemonLink:
    """Connect, send, and read what arrived (non-blocking after the handshake)."""

    def __init__(self, engine: str, path: Path | None = None) -> None:
        self.engine = engine
        self.path = path or control_socket_path()
        self.sock: socket.socket | None = None
        self.welcome: dict = {}
        self._buffer = b""

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self, timeout_s: float = 2.0) -> bool:
        """Attach to the daemon; False when it is not running (or refuses: then ``error`` says why)."""
        self.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(self.path))
            sock.sendall((json.dumps({"cmd": "ime", "engine": self.engine, "version": VERSION}) + "\n").encode())
            self.sock, self._buffer = sock, b""
            first = self._read_line_blocking()
        except (OSError, ValueError):
            sock.close()
            self.sock = None
            return False
        if first.get("type") != "welcome":
            self.close()
            return False
        self.welcome = first
        sock.setblocking(False)
        return True

    def _read_line_blocking(self) -> dict:
        while b"\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ValueError("closed")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def send(self, message: dict) -> bool:
        if self.sock is None:
            return False
        data = (json.dumps(message, ensure_ascii=False) + "\n").encode()
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(2.0)
            self.sock.sendall(data)
            self.sock.setblocking(False)
            return True
        except OSError:
            self.close()
            return False

    def receive(self) -> list[dict] | None:
        """The messages that arrived; None when the daemon closed the connection (then we are closed)."""
        if self.sock is None:
            return None
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    self.close()
                    break
                self._buffer += chunk
                if len(self._buffer) > 4 * MAX_LINE_BYTES and b"\n" not in self._buffer:
                    self.close()
                    return None
        except BlockingIOError:
            pass
        except OSError:
            self.close()
        messages = []
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                messages.append(message)
        if self.sock is None:
            return messages or None
        return messages

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
