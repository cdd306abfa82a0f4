"""The bench's private world under one temp folder: a PulseAudio server (the microphone), an Xvfb display
with the Tk target and the XTEST keyboard, one daemon at a time and its WebSocket subscribers."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from bench.report import log
from bench.typing_target import Keyboard, TkTarget
from tests.harness.daemon import DaemonProcess, set_args
from tests.harness.events import Subscribers
from tests.harness.pulse import PulseServer
from tests.harness.xvfb import Xvfb


def missing_tools(names: tuple[str, ...]) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


class BenchEnv:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="qasr-bd-", dir="/tmp"))  # short: unix socket paths
        self.pulse = PulseServer(self.root / "pulse")
        self.xvfb = Xvfb()
        self.tk: TkTarget | None = None
        self.keyboard: Keyboard | None = None
        self.daemon: DaemonProcess | None = None
        self.subscribers: list[Subscribers] = []
        self.warmed: set[int] = set()  # pids of the daemons whose warm-up utterance is done
        self.count = 0

    def base_overrides(self) -> list[str]:
        sets = ["server.max_clients=64", "journal.enabled=false"]
        if self.args.threads:
            sets.append(f"engine.threads={self.args.threads}")
        return sets + list(self.args.daemon_set)

    def new_daemon(self, overrides: list[str], display: str | None = None,
                   replacements: str | None = None) -> DaemonProcess:
        self.stop_daemon()
        self.count += 1
        daemon = DaemonProcess(self.root / f"d{self.count}", self.pulse.client_env, display)
        if replacements is not None:
            daemon.write_config(f"(?s)\\A.*\\Z = \"{replacements}\"\n", name="replacements.txt")
        self.daemon = daemon
        t0 = time.monotonic()
        daemon.start(Path(self.args.model), *set_args(self.base_overrides() + overrides))
        log(f"daemon {daemon.pid()} ready in {time.monotonic() - t0:.1f} s ({' '.join(overrides)})")
        return daemon

    def start_desktop(self, key: str) -> None:
        self.xvfb.start()
        self.tk = TkTarget(self.xvfb.display)
        self.keyboard = Keyboard(self.xvfb.display, key)

    def subscribe(self, daemon: DaemonProcess, n: int = 1) -> Subscribers:
        subs = Subscribers.of(daemon, n)
        self.subscribers.append(subs)
        return subs

    def stop_daemon(self) -> None:
        for subs in self.subscribers:
            subs.close()
        self.subscribers.clear()
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_daemon()
        if self.tk is not None:
            self.tk.close()
        if self.keyboard is not None:
            self.keyboard.close()
        self.xvfb.stop()
        self.pulse.stop()
        if self.args.keep:
            log(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)
