"""Control socket: a unix socket (mode 0600) at paths.control_socket() speaking JSON lines.

Request ``{"cmd": "status"}`` (plus arguments), reply ``{"ok": true, "result": {...}}`` or
``{"ok": false, "error": "one line"}``. One request per connection. Used by the CLI's
``stop / status / toggle / start-utterance / stop-utterance / cancel / reload``.
A *stream* command (``ime``: an input-method engine attaching, see daemon/desktop/ime_link.py) keeps
the connection: its handler owns it from the first line on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable

from qasr.config import paths
from qasr.errors import QasrError

log = logging.getLogger("qasr.control")

COMMANDS = ("status", "stop", "toggle", "start-utterance", "stop-utterance", "cancel", "reload",
            "history", "history-copy", "history-clear", "paste-last", "undo", "system-audio", "record-call")
MAX_REQUEST_BYTES = 65536


class DaemonNotRunningError(QasrError):
    pass


class ControlCommandError(QasrError):
    pass


Handler = Callable[[dict[str, Any]], dict[str, Any]]
StreamHandler = Callable[[socket.socket, dict[str, Any]], None]


class ControlServer:
    """Accepts connections on a thread; ``handler(request) -> result`` runs on a per-connection thread.

    The handler raises QasrError (or ValueError) for a request it refuses; the message goes back as the error.
    """

    def __init__(self, handler: Handler, path: Path | None = None,
                 streams: dict[str, StreamHandler] | None = None) -> None:
        self.path = path or paths.control_socket()
        self._handler = handler
        self._streams = dict(streams or {})
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def start(self) -> None:
        paths.ensure_private_dir(self.path.parent)
        # We hold the instance lock, so a socket file left here belongs to a dead daemon.
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # created 0600: no window where others could connect
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        self._sock = sock  # accept() blocks (no polling while idle); stop() shuts it down to wake it
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._closing.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:  # shut down by stop()
                break
            threading.Thread(target=self._answer, args=(conn,), name="control-conn", daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                request = json.loads(_read_line(conn))
                if isinstance(request, dict) and request.get("cmd") in self._streams:
                    self._streams[request["cmd"]](conn, request)
                    return
                if not isinstance(request, dict) or request.get("cmd") not in COMMANDS:
                    raise ValueError(f"unknown command; use one of {', '.join(COMMANDS)}")
                reply = {"ok": True, "result": self._handler(request)}
            except (QasrError, ValueError) as exc:
                reply = {"ok": False, "error": str(exc)}
            except Exception as exc:  # a bug: report it, keep serving
                log.exception("control request failed")
                reply = {"ok": False, "error": f"internal error: {exc}"}
            try:
                conn.sendall((json.dumps(reply, ensure_ascii=False) + "\n").encode())
            except OSError:
                pass


def _read_line(conn: socket.socket) -> str:
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise ValueError("request too large")
    return data.split(b"\n", 1)[0].decode("utf-8")


def request(cmd: str, timeout_s: float = 10.0, **args: Any) -> dict[str, Any]:
    """Send one command to the running daemon; return its result or raise a one-line QasrError."""
    path = paths.control_socket()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonNotRunningError(
                "the qasr daemon is not running; start it with `qasr-daemon start`"
            ) from None
        sock.sendall((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        line = _read_line(sock)
    except socket.timeout:
        raise ControlCommandError(f"the daemon did not answer `{cmd}` within {timeout_s:.0f} s; see its log") from None
    finally:
        sock.close()
    if not line:
        raise ControlCommandError(f"the daemon closed the connection without answering `{cmd}`; see its log")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise ControlCommandError(str(reply.get("error")))
    return reply.get("result") or {}
