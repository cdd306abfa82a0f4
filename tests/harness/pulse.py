"""A private PulseAudio server: null sink ``vsink`` whose monitor is the default source, so whatever is
played into ``vsink`` is what the "microphone" hears. libpulse writes its cookie/config under the server's
folder, never into $HOME, and never autospawns.

``PulseServer(root, outputs=("speakers", "headset"))`` adds null sinks as the computer's outputs; the
first is the default sink, so its monitor is what system audio captures (``play(path, sink)``,
``set_default_sink(name)``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import HarnessError
from tests.harness.processes import kill_pid

SINK = "vsink"
SOURCE = "vsink.monitor"


def no_pulse_env(root: Path) -> dict[str, str]:
    """PULSE_* variables that point libpulse at no server (and forbid autospawn): no microphone at all."""
    client_conf = root / "no-pulse-client.conf"
    client_conf.write_text("autospawn = no\n")
    return {"PULSE_SERVER": f"unix:{root}/no-pulse-here", "PULSE_CLIENTCONFIG": str(client_conf),
            "PULSE_COOKIE": str(root / "no-pulse-cookie"), "PULSE_RUNTIME_PATH": str(root / "no-pulse-runtime")}


class PulseServer:
    """A private pulseaudio daemon (null sink ``vsink``) living in ``root``."""

    def __init__(self, root: Path, outputs: tuple[str, ...] = ()) -> None:
        self.root = root
        self.outputs = tuple(outputs)
        self.runtime_dir = root / "xdg"
        self.pulse_dir = self.runtime_dir / "pulse"
        self.socket = self.pulse_dir / "native"
        self.log = root / "pulseaudio.log"
        self.server = f"unix:{self.socket}"
        self.sink, self.source = SINK, SOURCE
        home, config = root / "home", root / "config"
        for d in (self.runtime_dir, home, config):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        client_conf = root / "client.conf"
        client_conf.write_text("autospawn = no\n")
        # what a client (this process, paplay, a daemon under test) needs: the server, tmp files not $HOME
        self.client_env = {"PULSE_SERVER": self.server, "PULSE_RUNTIME_PATH": str(self.pulse_dir),
                           "PULSE_COOKIE": str(root / "cookie"), "PULSE_CLIENTCONFIG": str(client_conf)}
        # the server process alone also gets its own HOME / XDG dirs
        self._server_env_extra = {"HOME": str(home), "XDG_RUNTIME_DIR": str(self.runtime_dir),
                                  "XDG_CONFIG_HOME": str(config)}

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client subprocess: this process's + PULSE_*."""
        return dict(os.environ, **self.client_env)

    @property
    def server_env(self) -> dict[str, str]:
        # No session bus: with DISPLAY set, D-Bus autolaunches one bus per X display and a second server
        # there fails with "D-Bus name org.PulseAudio1 already taken" (two servers under one Xvfb).
        env = {k: v for k, v in self.env.items() if k != "DISPLAY"}
        return dict(env, DBUS_SESSION_BUS_ADDRESS="disabled:", **self._server_env_extra)

    def start(self) -> None:
        with open(self.log, "ab") as log:  # a file, not a pipe: the daemon keeps its stderr open
            started = subprocess.run(["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--disallow-exit",
                                      "-L", "module-native-protocol-unix", "-L", f"module-null-sink sink_name={SINK}",
                                      *[a for name in self.outputs for a in ("-L", f"module-null-sink sink_name={name}")],
                                      "-L", "module-always-sink", "--log-target=stderr", "-v"],
                                     env=self.server_env, stdout=subprocess.DEVNULL, stderr=log, timeout=60)
        if started.returncode != 0:
            raise HarnessError(f"pulseaudio did not start: {self.log.read_text(errors='replace')[-1500:]}")
        deadline = time.monotonic() + 20
        while subprocess.run(["pactl", "info"], env=self.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, timeout=20).returncode != 0:
            if time.monotonic() > deadline:
                raise HarnessError("the private pulseaudio did not come up")
            time.sleep(0.1)
        self.pactl("set-default-sink", self.outputs[0] if self.outputs else SINK)
        self.pactl("set-default-source", SOURCE)
        _refresh_portaudio()

    def pid(self) -> int | None:
        try:
            return int((self.pulse_dir / "pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_running(self) -> bool:
        from qasr.daemon.lifecycle import process_alive

        pid = self.pid()
        return pid is not None and process_alive(pid)

    def kill(self) -> None:
        """Kill the server abruptly (a lost device for whoever records from it)."""
        pid = self.pid()
        if pid is None:
            return
        kill_pid(pid)
        for stale in (self.pulse_dir / "pid", self.socket):
            stale.unlink(missing_ok=True)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        try:
            subprocess.run(["pulseaudio", "--kill"], env=self.server_env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=15)
        except (OSError, subprocess.SubprocessError):
            pass
        if self.is_running():
            self.kill()

    def pactl(self, *args: str) -> str:
        return subprocess.run(["pactl", *args], env=self.env, check=True, capture_output=True,
                              text=True, timeout=20).stdout

    def set_default_sink(self, name: str) -> None:
        self.pactl("set-default-sink", name)

    def play(self, path: str | Path, wait: bool = True, sink: str = SINK) -> subprocess.Popen | None:
        """``paplay`` a sound file into the virtual microphone (or ``sink``: one of the outputs);
        ``wait=False`` returns the player process."""
        cmd = ["paplay", f"--device={sink}", str(path)]
        if wait:
            subprocess.run(cmd, env=self.env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=120)
            return None
        return subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _refresh_portaudio() -> None:
    """Re-read PortAudio's device list if this process already initialised it."""
    if "sounddevice" in sys.modules:
        from qasr.daemon.audio.devices import refresh_devices

        refresh_devices()
