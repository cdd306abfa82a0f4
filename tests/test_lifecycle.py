"""The daemon as a real process: detached start, status, single instance, stop, signals, failures.

Every test isolates the XDG folders (tests/harness/daemon.py); without a pulse server the daemon has no
microphone, which is its documented `no-device` state (it keeps serving status, commands and WebSocket audio).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from qasr.daemon.lifecycle import wait_for_exit
from tests.harness.daemon import DaemonProcess

STATUS_KEYS = {"pid", "state", "model", "input_device", "ws_url", "token_file", "last_latency_ms", "language",
               "mode", "config_file", "log_file", "journal_file", "warnings"}


@pytest.fixture
def daemon_env(tmp_path):
    env = DaemonProcess(tmp_path)
    yield env
    env.stop()


# ---------------------------------------------------------------------------------------- tests

def test_missing_model_is_one_clear_line_and_nonzero(daemon_env, tmp_path):
    missing = tmp_path / "no-such-model"
    for extra in ([], ["--foreground"]):
        result = daemon_env.cli("start", "--model", str(missing), *extra, timeout=60)
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if line.startswith("qasr-daemon: error:")]
        assert len(lines) == 1, result.stderr
        assert str(missing) in lines[0] and "does not exist" in lines[0] and "models pull" in lines[0]
    assert daemon_env.status() == {"state": "stopped", "pid": None}
    assert daemon_env.cli("status").returncode == 3


def test_bad_config_names_key_and_line_before_starting(daemon_env):
    daemon_env.write_config('[engine]\nlanguage = "English"\n\n[vad]\nmode = "sometimes"\n')
    result = daemon_env.cli("start", timeout=60)
    assert result.returncode == 2
    assert f"{daemon_env.config_file}:line 5: vad.mode = 'sometimes'" in result.stderr
    check = daemon_env.cli("config", "check")
    assert check.returncode == 2 and "line 5" in check.stderr
    daemon_env.write_config('[vad]\nmdoe = "ptt"\naggressiveness = 9\n[engine]\nthreads = "two"\n')
    every = daemon_env.cli("config", "check")  # every problem of the file, one line each
    assert every.returncode == 2 and "Traceback" not in every.stderr
    lines = every.stderr.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("qasr-daemon: error: "), lines
    assert "line 2: unknown key vad.mdoe; did you mean vad.mode?" in lines[0]
    assert "line 3: vad.aggressiveness" in lines[1] and "line 5: engine.threads" in lines[2]
    daemon_env.write_config('[engine]\nlanguage = "English"\n')
    assert daemon_env.cli("config", "check").returncode == 0
    bad_set = daemon_env.cli("config", "check", "--set", "server.prot=1")
    assert bad_set.returncode == 2 and "did you mean server.port" in bad_set.stderr


def test_start_status_double_start_stop(daemon_env, tiny_bundle):
    started = daemon_env.start(tiny_bundle)
    pid = daemon_env.pid()
    assert pid and f"pid {pid}" in started.stdout
    status = daemon_env.status()
    assert STATUS_KEYS <= set(status)
    assert status["pid"] == pid
    assert status["model"] and status["ws_url"].startswith("ws://127.0.0.1:")
    assert Path(status["token_file"]).is_file()
    assert status["state"] in ("listening", "no-device")
    sock = daemon_env.runtime / "qasr" / "control.sock"
    assert oct(sock.stat().st_mode & 0o777) == "0o600"

    again = daemon_env.cli("start", "--model", str(tiny_bundle), "--set", "server.port=0")
    assert again.returncode != 0
    assert f"already running (pid {pid})" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert daemon_env.status()["pid"] == pid  # the first daemon is untouched

    human = daemon_env.cli("status")
    assert human.returncode == 0 and "state:" in human.stdout and str(pid) in human.stdout
    # the desktop lines --json has (no desktop session in this environment)
    assert "      desktop: no desktop session\n" in human.stdout and "         sink: " in human.stdout

    stopped = daemon_env.cli("stop")
    assert stopped.returncode == 0 and f"pid {pid}" in stopped.stdout
    assert wait_for_exit(pid, 60)
    assert not daemon_env.pid_file.exists() and not sock.exists()
    assert daemon_env.cli("status").returncode == 3
    assert daemon_env.cli("stop").stdout.strip() == "qasr daemon is not running"


def test_no_input_device_keeps_serving(daemon_env, tiny_bundle):
    started = daemon_env.start(tiny_bundle)
    assert "warning: no input device" in started.stderr  # told at start, on the terminal
    status = daemon_env.status()
    assert status["state"] == "no-device"
    assert status["input_device"] is None
    assert "no audio input device" in status["device_error"]
    assert any("WebSocket" in w for w in status["warnings"])
    toggled = daemon_env.cli("toggle")
    assert toggled.returncode == 1
    assert "no microphone is open" in toggled.stderr and len(toggled.stderr.strip().splitlines()) == 1
    # the WebSocket server answers /health
    import urllib.request

    health_url = status["ws_url"].replace("ws://", "http://").rstrip("/") + "/health"
    with urllib.request.urlopen(health_url, timeout=10) as reply:
        health = json.loads(reply.read())
    assert health["state"] == "no-device"


def test_sighup_reloads_the_config(daemon_env, tiny_bundle):
    daemon_env.write_config('[engine]\nlanguage = "English"\n')
    daemon_env.start(tiny_bundle)
    pid = daemon_env.pid()
    before = daemon_env.status()
    assert before["language"] == "English"

    daemon_env.write_config('[engine]\nlanguage = "Chinese"\n\n[audio]\nblock_ms = 20\n')
    os.kill(pid, signal.SIGHUP)
    status = daemon_env.wait_status(lambda s: s["language"] == "Chinese")
    assert status["language"] == "Chinese"
    assert status["ws_url"] == before["ws_url"]
    assert "apply after a restart: audio.block_ms" in daemon_env.log()

    # a broken file is refused and the running settings stay
    daemon_env.write_config('[engine]\nlanguage = "Klingon"\n')
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 20
    while "reload refused" not in daemon_env.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "reload refused" in daemon_env.log() and "Klingon" in daemon_env.log()
    assert daemon_env.status()["language"] == "Chinese"
    assert daemon_env.status()["pid"] == pid

    # `qasr-daemon reload`: a refused file prints every reason and exits non-zero
    daemon_env.write_config('[vad]\nmdoe = "ptt"\n\n[engine]\nthreads = "two"\n')
    refused = daemon_env.cli("reload", timeout=60)
    assert refused.returncode == 1 and refused.stdout == "" and "Traceback" not in refused.stderr
    assert "reload refused, keeping the running settings" in refused.stderr
    assert "line 2: unknown key vad.mdoe; did you mean vad.mode?" in refused.stderr
    assert "line 5: engine.threads must be an integer" in refused.stderr
    daemon_env.write_config('[engine]\nlanguage = "English"\n')
    reloaded = daemon_env.cli("reload", timeout=60)
    assert reloaded.returncode == 0 and reloaded.stdout.strip() == "reloaded: True", reloaded.stderr
    assert daemon_env.status()["language"] == "English"


def test_sigterm_mid_utterance_finishes_it(tmp_path, tiny_bundle, pulse_server):
    from tests.fixtures.desktop import espeak_wav

    env = DaemonProcess(tmp_path, extra_env=pulse_server.client_env)
    try:
        saved = tmp_path / "utterances"
        env.start(tiny_bundle, "--set", "vad.mode=ptt", "--set", f"debug.save_audio_dir={saved}")
        status = env.wait_status(lambda s: s["state"] == "listening")
        assert status["state"] == "listening", status
        pid = env.pid()
        # a stop takes the release tail and then ends: the CLI says so rather than "recording: True"
        # (this one hears no speech, so it ends without a final)
        started = env.cli("start-utterance")
        assert started.returncode == 0 and started.stdout.strip() == "recording: True"
        stopped = env.cli("stop-utterance")
        assert stopped.returncode == 0 and stopped.stdout.strip() == "recording: False, ending: True"
        assert env.wait_status(lambda s: s["state"] == "listening")["state"] == "listening"
        assert env.cli("start-utterance").returncode == 0
        pulse_server.play(espeak_wav("the quick brown fox jumps over the lazy dog"))
        os.kill(pid, signal.SIGTERM)
        assert wait_for_exit(pid, 120), env.log()
        entries = [json.loads(line) for line in env.journal_file.read_text().splitlines()]
        assert len(entries) == 1, env.log()
        assert entries[0]["source"] == "mic"
        assert entries[0]["audio_end"] - entries[0]["audio_start"] > 1.0
        assert len(list(saved.glob("*.wav"))) == 1
        assert "stopped" in env.log()
    finally:
        env.stop()


def test_install_service_points_at_this_python(daemon_env):
    printed = daemon_env.cli("install-service", "--print")
    assert printed.returncode == 0
    assert f"ExecStart={sys.executable} -m qasr start --foreground" in printed.stdout
    assert "WantedBy=graphical-session.target" in printed.stdout and "Restart=on-failure" in printed.stdout
    written = daemon_env.cli("install-service")
    unit = daemon_env.root / "config" / "systemd" / "user" / "qasr.service"
    assert written.returncode == 0 and unit.read_text() == printed.stdout
    assert "WAYLAND_DISPLAY" in unit.read_text()  # the unit's comment says what to import on Wayland


def test_install_service_names_the_session_variables_to_import():
    from qasr.daemon.cli.cmd_lifecycle import session_variables

    sway = {"WAYLAND_DISPLAY": "wayland-1", "SWAYSOCK": "/run/sway.sock", "XDG_CURRENT_DESKTOP": "sway",
            "DISPLAY": ":0", "HOME": "/h"}
    assert session_variables(sway) == ["WAYLAND_DISPLAY", "XDG_CURRENT_DESKTOP", "SWAYSOCK", "DISPLAY"]
    hypr = {"WAYLAND_DISPLAY": "wayland-1", "HYPRLAND_INSTANCE_SIGNATURE": "abc"}
    assert session_variables(hypr) == ["WAYLAND_DISPLAY", "HYPRLAND_INSTANCE_SIGNATURE"]
    assert session_variables({"DISPLAY": ":1", "XAUTHORITY": "/x"}) == ["DISPLAY", "XAUTHORITY"]
    assert session_variables({}) == ["DISPLAY", "XAUTHORITY"]
