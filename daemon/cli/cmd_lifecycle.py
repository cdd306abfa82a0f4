"""Daemon lifecycle commands: start, stop, status, devices, toggle, start-utterance, stop-utterance,
cancel, config path|check|init|default, install-service."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from qasr.config import paths
from qasr.errors import QasrError

STOP_TIMEOUT_S = 150.0  # the daemon may still be transcribing the utterance in flight
DEFAULT_START_TIMEOUT_S = 300.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("start", help="start the daemon (detached unless --foreground)")
    p.add_argument("--model", metavar="DIR", help="model bundle directory (overrides model.path)")
    p.add_argument("--config", metavar="FILE", help="config file (default: $XDG_CONFIG_HOME/qasr/config.toml)")
    p.add_argument("--device", metavar="NAME", help="input device name or index (overrides audio.device)")
    p.add_argument("--foreground", action="store_true", help="run in this process, logging to stderr too")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config option (repeatable)")
    p.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT_S, metavar="S",
                   help="seconds to wait for a detached daemon to report ready")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("stop", help="stop the daemon (it finishes the utterance in flight)")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("status", help="show what the daemon is doing (exit 3 when it is not running)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("devices", help="list audio input devices")
    p.set_defaults(func=cmd_devices)

    for name, text in (("toggle", "start/stop an utterance (toggle mode) or pause/resume listening (vad mode)"),
                       ("start-utterance", "start an utterance now (push to talk: key down)"),
                       ("stop-utterance", "end the utterance (push to talk: key up); its final still comes"),
                       ("cancel", "drop the utterance in progress without a result")):
        p = sub.add_parser(name, help=text)
        p.set_defaults(func=cmd_control, control_cmd=name)

    p = sub.add_parser("reload", help="re-read the config file (same as SIGHUP)")
    p.set_defaults(func=cmd_control, control_cmd="reload")

    p = sub.add_parser("config", help="config file: path, check, init, default")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser("path", help="print the config file's path")
    c.set_defaults(func=cmd_config_path)
    c = csub.add_parser("check", help="validate the config file (and --set overrides)")
    c.add_argument("--config", metavar="FILE")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    c.set_defaults(func=cmd_config_check)
    c = csub.add_parser("init", help="write the documented default config file")
    c.add_argument("--force", action="store_true", help="overwrite an existing file")
    c.set_defaults(func=cmd_config_init)
    c = csub.add_parser("default", help="print the documented default config")
    c.set_defaults(func=cmd_config_default)

    p = sub.add_parser("install-service", help="install the systemd user unit")
    p.add_argument("--print", dest="print_only", action="store_true", help="print the unit instead of writing it")
    p.set_defaults(func=cmd_install_service)


# ---------------------------------------------------------------- start / stop / status

def _forwarded_args(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    if args.model:
        out += ["--model", str(Path(args.model).expanduser().resolve())]
    if args.config:
        out += ["--config", str(Path(args.config).expanduser().resolve())]
    if args.device:
        out += ["--device", args.device]
    for item in args.overrides:
        out += ["--set", item]
    return out


def cmd_start(args: argparse.Namespace) -> int:
    from qasr.daemon import lifecycle
    from qasr.daemon.app import Daemon, DaemonOptions

    options = DaemonOptions(
        config_file=Path(args.config) if args.config else None, overrides=tuple(args.overrides),
        model=args.model, device=args.device,
    )
    if args.foreground:
        reporter = lifecycle.ReadyReporter()
        try:
            daemon = Daemon(options)
        except QasrError as exc:
            reporter.failed(str(exc))
            raise
        return daemon.run(reporter)

    # Detached: check what can be checked here, so the common mistakes fail fast and in this terminal.
    from qasr.config.loader import load_settings

    load_settings(options.config_file, options.overrides)
    if lifecycle.is_locked():
        pid = lifecycle.read_pid()
        raise lifecycle.AlreadyRunningError(
            f"qasr daemon is already running{f' (pid {pid})' if pid else ''}; stop it with `qasr-daemon stop` first"
        )
    info = lifecycle.start_detached(_forwarded_args(args), args.timeout, paths.state_dir() / "daemon.out")
    for warning in info.get("warnings") or ():
        print(f"qasr-daemon: warning: {warning}", file=sys.stderr)
    where = f", serving {info['ws_url']}" if info.get("ws_url") else ""
    print(f"qasr daemon started (pid {info['pid']}, {info.get('state')}{where})")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from qasr.daemon import lifecycle
    from qasr.daemon.server import control_socket as control

    try:
        result = control.request("stop")
        pid = int(result.get("pid") or 0)
    except control.DaemonNotRunningError:
        pid = lifecycle.read_pid() if lifecycle.is_locked() else None
        if not pid:
            print("qasr daemon is not running")
            return 0
        os.kill(pid, signal.SIGTERM)  # alive but its control socket is gone: ask the usual way
    if pid and not lifecycle.wait_for_exit(pid, STOP_TIMEOUT_S):
        raise QasrError(f"the daemon (pid {pid}) did not exit within {STOP_TIMEOUT_S:.0f} s; `kill {pid}` ends it")
    print(f"qasr daemon stopped (pid {pid})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from qasr.daemon.server import control_socket as control

    try:
        status = control.request("status")
    except control.DaemonNotRunningError:
        if args.json:
            print(json.dumps({"state": "stopped", "pid": None}))
        else:
            print("qasr daemon is not running")
        return 3
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
        return 0
    print(_format_status(status))
    return 0


def _profile_line(profile: dict[str, Any]) -> str:
    """``status``'s profile: the one in force for the focused window, or why none is."""
    if profile.get("name"):
        return f"{profile['name']} ({profile.get('window')})"
    return f"none ({profile.get('why', 'no [[profile]] tables')}; {profile.get('profiles', 0)} defined)"


def _desktop_rows(desktop: dict[str, Any], sink: str | None) -> list[tuple[str, Any]]:
    """The desktop session, the sink, the typing tools and the hotkey the daemon chose (``--json``: ``desktop``)."""
    session = desktop.get("session") or {}
    kind = session.get("kind")
    if kind == "wayland":
        where = f"Wayland ({session.get('compositor') or 'unknown compositor'}"
        where += ", XWayland available)" if session.get("xwayland") else ")"
    elif kind == "x11":
        where = f"X11 ({session.get('display')})"
    else:
        where = "no desktop session"
    output = desktop.get("output") or {}
    rows: list[tuple[str, Any]] = [("desktop", where), ("sink", sink or output.get("sink") or "none")]
    if output.get("why"):
        rows.append(("output", f"off: {output['why']}"))
    if "typing" in output:
        tools = ", ".join(output["typing"]) or "none"
        unusable = "; ".join(f"{name}: {why}" for name, why in (output.get("unusable") or {}).items())
        rows.append(("typing tools", f"{tools}{f' (not usable: {unusable})' if unusable else ''}"))
    if output.get("clipboard"):
        rows.append(("clipboard", output["clipboard"]))
    if output.get("focus") or session.get("focus_note"):
        rows.append(("focus", output.get("focus") or f"none: {session.get('focus_note')}"))
    hotkey = desktop.get("hotkey")
    if hotkey:
        rows.append(("hotkey", f"{hotkey.get('backend')} ({hotkey.get('why')})" if hotkey.get("why")
                     else hotkey.get("backend")))
    return rows


def _system_line(system: dict[str, Any]) -> str:
    """``status``'s system audio captions: off, or the monitor recorded (and a call being recorded)."""
    if not system.get("on"):
        return "off"
    where = system.get("monitor") if system.get("state") == "running" else system.get("state")
    return f"{where}{' (recording a call)' if system.get('call') else ''}"


def _format_status(status: dict[str, Any]) -> str:
    rows = [
        ("state", status.get("state")),
        ("pid", status.get("pid")),
        ("model", f"{status.get('model')} ({status.get('model_path')})"),
        ("input device", status.get("input_device") or f"none: {status.get('device_error')}"),
        ("mode", status.get("mode")),
        ("language", status.get("language") or "detect"),
        ("websocket", status.get("ws_url") or "off"),
        ("token file", status.get("token_file")),
        ("last latency", f"{status['last_latency_ms']:.0f} ms" if status.get("last_latency_ms") is not None else "-"),
        ("utterances", status.get("utterances")),
        ("config", status.get("config_file")),
        ("log", status.get("log_file")),
        ("journal", status.get("journal_file") or "off"),
        ("profile", _profile_line(status.get("profile") or {})),
        *_desktop_rows(status.get("desktop") or {}, status.get("output")),
        ("system audio", _system_line(status.get("system_audio") or {})),
    ]
    lines = [f"{name:>13}: {value}" for name, value in rows]
    lines += [f"{'warning':>13}: {w}" for w in status.get("warnings") or ()]
    return "\n".join(lines)


def cmd_devices(args: argparse.Namespace) -> int:
    from qasr.daemon.audio.devices import list_input_devices

    devices = list_input_devices()
    if not devices:
        print("no audio input devices (is PulseAudio/PipeWire running and a microphone connected?)")
        return 1
    for device in devices:
        print(_format_device(device))
    return 0


def _format_device(device: Any) -> str:
    if isinstance(device, dict):
        index, name = device.get("index"), device.get("name")
        default = device.get("default") or device.get("is_default")
        rate = device.get("default_samplerate") or device.get("sample_rate")
    else:
        index, name = getattr(device, "index", None), getattr(device, "name", str(device))
        default = getattr(device, "default", False) or getattr(device, "is_default", False)
        rate = getattr(device, "default_samplerate", None) or getattr(device, "sample_rate", None)
    rate_text = f"  ({int(rate)} Hz)" if rate else ""
    return f"{'*' if default else ' '} {index if index is not None else '-':>3}  {name}{rate_text}"


def cmd_control(args: argparse.Namespace) -> int:
    from qasr.daemon.server import control_socket as control

    result = control.request(args.control_cmd)
    print(", ".join(f"{k}: {v}" for k, v in result.items()) or "ok")
    return 0


# ---------------------------------------------------------------- config

def cmd_config_path(args: argparse.Namespace) -> int:
    target = paths.config_file()
    print(target)
    if not target.exists():
        print("(no file there: defaults are used; `qasr-daemon config init` writes one)", file=sys.stderr)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from qasr.config.loader import load_settings

    _, path = load_settings(Path(args.config) if args.config else None, args.overrides)
    if path.exists():
        print(f"{path}: ok")
    else:
        print(f"{path} does not exist: the defaults are used (ok)")
    return 0


def cmd_config_init(args: argparse.Namespace) -> int:
    from qasr.config.loader import default_toml_text

    target = paths.config_file()
    if target.exists() and not args.force:
        raise QasrError(f"{target} already exists; edit it, or pass --force to overwrite it with the defaults")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(default_toml_text(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


def cmd_config_default(args: argparse.Namespace) -> int:
    from qasr.config.loader import default_toml_text

    sys.stdout.write(default_toml_text())
    return 0


# ---------------------------------------------------------------- systemd

def service_unit_text() -> str:
    """The shipped unit with ExecStart pointing at this interpreter's qasr."""
    from importlib import resources

    text = resources.files("qasr.config").joinpath("qasr.service").read_text(encoding="utf-8")
    exec_start = f"ExecStart={shlex.quote(sys.executable)} -m qasr start --foreground"
    return "\n".join(exec_start if line.startswith("ExecStart=") else line for line in text.splitlines()) + "\n"


def cmd_install_service(args: argparse.Namespace) -> int:
    text = service_unit_text()
    if args.print_only:
        sys.stdout.write(text)
        return 0
    target = paths.config_dir().parent / "systemd" / "user" / "qasr.service"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    print(f"first, in your session: systemctl --user import-environment {' '.join(session_variables())}")
    print("then enable it with: systemctl --user daemon-reload && systemctl --user enable --now qasr")
    return 0


SESSION_VARIABLES = ("WAYLAND_DISPLAY", "XDG_CURRENT_DESKTOP", "SWAYSOCK", "HYPRLAND_INSTANCE_SIGNATURE",
                     "DISPLAY", "XAUTHORITY")


def session_variables(env: dict[str, str] | None = None) -> list[str]:
    """The desktop variables the service needs from this session (it picks Wayland or X11 by them)."""
    env = os.environ if env is None else env
    found = [name for name in SESSION_VARIABLES if env.get(name)]
    return found or ["DISPLAY", "XAUTHORITY"]
