"""`qasr-daemon`: one command with subcommands. Each subcommand lives in its own `cmd_*` module."""

from __future__ import annotations

import argparse
import importlib
import sys

from qasr import __version__
from qasr.errors import QasrError

# Modules that each provide `register(subparsers)`; handlers are set with `set_defaults(func=...)`
# and return an exit code. Keep module imports light: heavy imports belong inside the handlers.
COMMAND_MODULES = (
    "qasr.daemon.cli.cmd_lifecycle",
    "qasr.daemon.cli.cmd_models",
    "qasr.daemon.cli.cmd_transcribe",
    "qasr.daemon.cli.cmd_bench",
    "qasr.daemon.cli.cmd_listen",
    "qasr.daemon.cli.cmd_captions",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qasr-daemon",
        description="Local real-time streaming dictation with Qwen3-ASR.",
    )
    parser.add_argument("--version", action="version", version=f"qasr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # command not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except QasrError as exc:
        print(f"qasr-daemon: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("qasr-daemon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
