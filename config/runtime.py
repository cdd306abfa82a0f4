"""How the running daemon is found: its info file, its token, whether its process is alive.

Shared by the daemon (which writes these files) and every client (which reads them), so neither side
imports the other. Paths come from ``qasr.config.paths``:

- ``load_or_create_token(path)`` / ``write_private_json(path, data)``: the daemon's side (0600 files in a
  0700 folder).
- ``discover()`` -> ``ServerInfo`` (ws_url, http_url, pid, port, token): the clients' side; raises
  ``DaemonNotRunning`` with a one-line message when there is no live daemon.
- ``process_alive(pid)``: whether a process exists (a zombie child of ours is reaped and does not).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from qasr.config import paths
from qasr.errors import QasrError


class DaemonNotRunning(QasrError):
    """No daemon to talk to (no info file, stale pid, or nothing listening)."""


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one we may not signal counts; a zombie child of ours is reaped
    and does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != pid
    except ChildProcessError:
        return True


# ---------------------------------------------------------------------------------------------
# daemon side


def load_or_create_token(path: Path) -> str:
    """The daemon's secret: read ``path`` or create it (0600, in a 0700 folder) with a fresh random token."""
    path = Path(path)
    paths.ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        token = path.read_text(encoding="utf-8").strip()
        if not token:
            raise QasrError(f"the token file {path} is empty; delete it and restart the daemon") from None
        return token
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token


def write_private_json(path: Path, data: dict) -> None:
    """Atomically replace ``path`` with ``data`` as JSON, readable by this user only."""
    paths.ensure_private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# client side


@dataclass(frozen=True)
class ServerInfo:
    ws_url: str
    http_url: str
    pid: int
    port: int
    token: str


def discover(info_path: Path | None = None, token_path: Path | None = None) -> ServerInfo:
    """Read the running daemon's address (``server_info_file``) and token; DaemonNotRunning if none."""
    info_path = Path(info_path) if info_path else paths.server_info_file()
    hint = "start it with `qasr-daemon start`"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DaemonNotRunning(f"the qasr daemon is not running (no {info_path}); {hint}") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise DaemonNotRunning(f"cannot read {info_path} ({exc}); restart the daemon") from None
    try:
        pid = int(info.get("pid", 0))
        ws_url, http_url, port = str(info["ws_url"]), str(info.get("http_url", "")), int(info.get("port", 0))
        token_name = info.get("token_file")
    except (AttributeError, KeyError, TypeError, ValueError):
        raise DaemonNotRunning(f"{info_path} is not a qasr server info file; restart the daemon") from None
    if pid and not process_alive(pid):
        raise DaemonNotRunning(f"the qasr daemon is not running (stale {info_path}, pid {pid} is gone); {hint}")
    token_file = Path(token_path or token_name or paths.token_file())
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise DaemonNotRunning(f"cannot read the daemon's token {token_file}: {exc.strerror}; restart the daemon") from None
    return ServerInfo(ws_url, http_url, pid, port, token)
