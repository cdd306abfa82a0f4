"""Process lifecycle: single-instance lock, pid file, detached start with a readiness pipe, signals.

A detached ``start`` re-executes ``python -m qasr start --foreground ...`` in a new session with
the write end of a pipe whose number is in $QASR_READY_FD. The daemon writes one JSON line there
once it serves (``{"ok": true, ...}``) or when start-up fails (``{"ok": false, "error": "..."}``);
the parent waits for that line and prints the error, so ``qasr-daemon start`` exits non-zero with
the daemon's own one-line message.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from qasr.config import paths
from qasr.config.runtime import process_alive  # re-exported: the daemon and clients share it
from qasr.errors import QasrError

READY_FD_ENV = "QASR_READY_FD"


class AlreadyRunningError(QasrError):
    pass


class StartFailedError(QasrError):
    pass


class InstanceLock:
    """Exclusive ``flock`` on paths.lock_file(), held for the daemon's whole life."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.lock_file()
        self._fd: int | None = None

    def acquire(self) -> None:
        paths.ensure_private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                pid = read_pid()
                who = f" (pid {pid})" if pid else ""
                raise AlreadyRunningError(
                    f"qasr daemon is already running{who}; stop it with `qasr-daemon stop` first"
                ) from None
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def is_locked(path: Path | None = None) -> bool:
    """True when some process holds the instance lock (the daemon runs)."""
    path = path or paths.lock_file()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def write_pid_file(pid: int | None = None) -> Path:
    target = paths.pid_file()
    paths.ensure_private_dir(target.parent)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(f"{pid or os.getpid()}\n")
    tmp.replace(target)
    return target


def read_pid() -> int | None:
    try:
        return int(paths.pid_file().read_text().strip())
    except (OSError, ValueError):
        return None


def remove_runtime_file(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class ReadyReporter:
    """Daemon side of the readiness pipe (a no-op when not started by a detaching parent)."""

    def __init__(self) -> None:
        raw = os.environ.pop(READY_FD_ENV, "")
        self._fd = int(raw) if raw.isdigit() else None

    @property
    def detached(self) -> bool:
        return self._fd is not None

    def ready(self, info: dict[str, Any]) -> None:
        self._send({"ok": True, **info})

    def failed(self, message: str) -> None:
        self._send({"ok": False, "error": message})

    def _send(self, payload: dict[str, Any]) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, (json.dumps(payload) + "\n").encode())
        except OSError:
            pass  # the parent gave up waiting; nothing to tell
        finally:
            os.close(self._fd)
            self._fd = None


def start_detached(foreground_args: list[str], timeout_s: float, output_file: Path) -> dict[str, Any]:
    """Run ``qasr start --foreground <args>`` in its own session; wait for its readiness line.

    Returns the daemon's ready info; raises StartFailedError with the daemon's message otherwise.
    """
    read_fd, write_fd = os.pipe()
    output_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = dict(os.environ, **{READY_FD_ENV: str(write_fd)})
    with open(os.devnull, "rb") as devnull, open(output_file, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qasr", "start", "--foreground", *foreground_args],
            stdin=devnull, stdout=out, stderr=out, env=env, pass_fds=(write_fd,),
            start_new_session=True, close_fds=True,
        )
    os.close(write_fd)
    try:
        line = _read_line(read_fd, proc, timeout_s)
    finally:
        os.close(read_fd)
    if line is None:
        code = proc.poll()
        if code is None:
            raise StartFailedError(
                f"the daemon (pid {proc.pid}) did not report ready within {timeout_s:.0f} s; "
                f"see {output_file} and the log, or stop it with `qasr-daemon stop`"
            )
        raise StartFailedError(f"the daemon exited during start-up (exit code {code}); see {output_file}")
    try:
        payload = json.loads(line)
    except json.JSONDecodeError:
        raise StartFailedError(f"the daemon sent an unreadable start-up report; see {output_file}") from None
    if not payload.get("ok"):
        proc.wait(timeout=30)
        raise StartFailedError(str(payload.get("error") or "the daemon failed to start"))
    payload["pid"] = payload.get("pid", proc.pid)
    return payload


def _read_line(fd: int, proc: subprocess.Popen, timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:  # every write end closed: the daemon exited or closed without a word
                break
            data += chunk
            if b"\n" in data:
                return data.split(b"\n", 1)[0].decode("utf-8", "replace")
    try:  # the pipe closed without a report: let the exit code settle
        proc.wait(min(5.0, max(0.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        pass
    return None


def install_signal_handlers(on_terminate: Callable[[], None], on_reload: Callable[[], None]) -> None:
    """SIGTERM/SIGINT -> on_terminate (finish the utterance in flight, then exit); SIGHUP -> on_reload."""
    signal.signal(signal.SIGTERM, lambda *_: on_terminate())
    signal.signal(signal.SIGINT, lambda *_: on_terminate())
    signal.signal(signal.SIGHUP, lambda *_: on_reload())


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """True when process ``pid`` is gone within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return not process_alive(pid)
