"""Stopping the processes the harness starts: a child (terminate, then kill) or any pid (SIGKILL, wait)."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """terminate, then kill after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_pid(pid: int, timeout: float = 10) -> None:
    """SIGKILL ``pid`` (gone already is fine) and wait until it has exited."""
    from qasr.daemon.lifecycle import wait_for_exit

    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    wait_for_exit(pid, timeout)
