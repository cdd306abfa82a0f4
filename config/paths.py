"""XDG locations for qasr's files. Every path honours the XDG variables at call time."""

from __future__ import annotations

import os
from pathlib import Path

APP = "qasr"


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var, "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / default


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / APP


def config_file() -> Path:
    return config_dir() / "config.toml"


def data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / APP


def models_dir() -> Path:
    return data_dir() / "models"


def transcripts_dir() -> Path:
    """Call transcripts (`qasr-daemon record-call`): $XDG_DATA_HOME/qasr/transcripts."""
    return data_dir() / "transcripts"


def cache_dir() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / APP


def state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / APP


def log_file() -> Path:
    return state_dir() / "qasr.log"


def journal_file() -> Path:
    return state_dir() / "journal.jsonl"


def runtime_dir() -> Path:
    """$XDG_RUNTIME_DIR/qasr, or a private per-user folder under /tmp when the variable is unset."""
    value = os.environ.get("XDG_RUNTIME_DIR", "")
    if value and os.path.isabs(value):
        return Path(value) / APP
    return Path(f"/tmp/{APP}-{os.getuid()}")


def pid_file() -> Path:
    return runtime_dir() / "qasr.pid"


def lock_file() -> Path:
    return runtime_dir() / "qasr.lock"


def control_socket() -> Path:
    return runtime_dir() / "control.sock"


def token_file() -> Path:
    return runtime_dir() / "token"


def server_info_file() -> Path:
    """JSON written by the running daemon: ws_url, pid, port (how clients find it)."""
    return runtime_dir() / "server.json"


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
