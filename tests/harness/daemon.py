"""One daemon process under test with private XDG folders: the CLI, the control socket, status, logs, stop.

Without a pulse server in ``extra_env`` the daemon has no microphone (its documented ``no-device`` state).
The runtime folder (unix sockets: the path must stay short) lives directly under /tmp and is removed by
``stop()``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.harness import HarnessError
from tests.harness.processes import kill_pid
from tests.harness.pulse import no_pulse_env


def set_args(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """``["a.b=1", "c.d=2"]`` → ``["--set", "a.b=1", "--set", "c.d=2"]``."""
    return [arg for override in overrides for arg in ("--set", override)]


class DaemonProcess:
    def __init__(self, root: Path, extra_env: dict[str, str] | None = None, display: str | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.runtime = Path(tempfile.mkdtemp(prefix="qasr-rt-"))
        self.env = dict(os.environ)
        self.env.pop("DISPLAY", None)
        self.env.update({"XDG_CONFIG_HOME": str(root / "config"), "XDG_STATE_HOME": str(root / "state"),
                         "XDG_DATA_HOME": str(root / "data"), "XDG_CACHE_HOME": str(root / "cache"),
                         "XDG_RUNTIME_DIR": str(self.runtime)})
        self.env.update(no_pulse_env(root))
        self.env.update(extra_env or {})
        if display:
            self.env["DISPLAY"] = display

    # ------------------------------------------------------------------ files

    @property
    def config_dir(self) -> Path:
        return self.root / "config" / "qasr"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def journal_file(self) -> Path:
        return self.root / "state" / "qasr" / "journal.jsonl"

    @property
    def log_file(self) -> Path:
        return self.root / "state" / "qasr" / "qasr.log"

    @property
    def qasr_runtime(self) -> Path:
        return self.runtime / "qasr"

    @property
    def pid_file(self) -> Path:
        return self.qasr_runtime / "qasr.pid"

    def write_config(self, text: str, name: str = "config.toml") -> Path:
        path = self.config_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (OSError, ValueError):
            return None

    def server_info(self) -> dict:
        """server.json of the running daemon (``ws_url``, ``http_url``…)."""
        return json.loads((self.qasr_runtime / "server.json").read_text())

    def token(self) -> str:
        return (self.qasr_runtime / "token").read_text().strip()

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    # ------------------------------------------------------------------ the CLI

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "qasr", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self, bundle: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """``qasr start`` (detached) on a free port; raises HarnessError with the log if it fails."""
        result = self.cli("start", "--model", str(bundle), "--set", "server.port=0", *args, timeout=timeout)
        if result.returncode != 0:
            raise HarnessError(f"the daemon did not start: {result.stderr.strip()[-2000:]}\n{self.log_tail(40)}")
        return result

    def status(self) -> dict:
        """``qasr status --json`` (exit 0 running, 3 stopped)."""
        result = self.cli("status", "--json", timeout=30)
        if result.returncode not in (0, 3):
            raise HarnessError(f"qasr status failed ({result.returncode}): {result.stderr}")
        return json.loads(result.stdout)

    def wait_status(self, predicate, timeout: float = 30) -> dict:
        """Poll ``status()`` until ``predicate(status)``; returns the last status either way."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if predicate(status) or time.monotonic() > deadline:
                return status
            time.sleep(0.2)

    # ------------------------------------------------------------------ the control socket, /metrics

    def control(self, cmd: str, timeout: float = 30, **args) -> dict:
        """One command (with its ``args``) over the control socket; its result, or HarnessError if the
        daemon refuses it."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.qasr_runtime / "control.sock"))
            sock.sendall((json.dumps({"cmd": cmd, **args}) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
        if not reply.get("ok"):
            raise HarnessError(f"daemon refused {cmd}: {reply.get('error')}")
        return reply["result"]

    def wait_state(self, states: tuple[str, ...], timeout: float = 60) -> dict:
        """Poll the control socket's status until its state is one of ``states`` (HarnessError if not)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.control("status")
            if status["state"] in states:
                return status
            if time.monotonic() > deadline:
                raise HarnessError(f"daemon state is {status['state']!r}, expected {states}: "
                                   f"{status.get('device_error')}")
            time.sleep(0.1)

    def metrics(self) -> dict:
        url = self.server_info()["http_url"].rstrip("/") + "/metrics?format=json"
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """``qasr stop``, SIGKILL if it is still there after 30 s; removes the runtime folder."""
        from qasr.daemon.lifecycle import process_alive, wait_for_exit

        pid = self.pid()
        if pid and process_alive(pid):
            try:
                self.cli("stop", timeout=200)
            except subprocess.TimeoutExpired:
                pass
            if not wait_for_exit(pid, 30):
                print(f"# daemon {pid} did not stop; killing it", file=sys.stderr, flush=True)
                kill_pid(pid)
        shutil.rmtree(self.runtime, ignore_errors=True)

