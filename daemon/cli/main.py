"""`qasr-daemon`: one command with subcommands. Each subcommand lives in its own `cmd_*` module."""

from __future__ import annotations

import argparse
import sys

from qasr import __version__
from qasr.daemon.cli import (cmd_align, cmd_batch, cmd_bench, cmd_captions, cmd_doctor, cmd_history, cmd_ime,
                             cmd_lifecycle, cmd_listen, cmd_models, cmd_system_audio, cmd_transcribe)
from qasr.errors import QasrError

# Modules that each provide `register(subparsers)`; handlers are set with `set_defaults(func=...)`
# and return an exit code. Keep module imports light (`qasr-daemon toggle` runs from a key binding):
# heavy imports belong inside the handlers.
COMMAND_MODULES = (cmd_lifecycle, cmd_models, cmd_transcribe, cmd_batch, cmd_align, cmd_bench, cmd_listen,
                   cmd_captions, cmd_doctor, cmd_history, cmd_ime, cmd_system_audio)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qasr-daemon",
        description="Local real-time streaming dictation with Qwen3-ASR.",
    )
    parser.add_argument("--version", action="version", version=f"qasr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
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
