"""`qasr-daemon models ...`: model bundle commands.

Each subcommand is one `_add_<name>(msub)` function that adds its parser and sets
`func=cmd_<name>`; `register` calls them in order. To add a subcommand, write the two
functions and append `_add_<name>` to SUBCOMMANDS. Heavy imports stay inside handlers.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, TextIO

from qasr.engine.bundle import DECODER_PRECISIONS, ENCODER_PRECISIONS
from qasr.errors import QasrError

CONVERT_DEPS_HINT = "the converter needs extra packages: pip install 'qasr[convert]'"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="model bundles: convert (and pull, list, path, verify)")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    for add in SUBCOMMANDS:
        add(msub)


# ---------------------------------------------------------------- convert

def _add_convert(msub: argparse._SubParsersAction) -> None:
    c = msub.add_parser(
        "convert",
        help="convert a Hugging Face Qwen3-ASR checkpoint into a qasr bundle",
        description="Convert a Hugging Face Qwen3-ASR checkpoint folder into a qasr bundle "
        "(ONNX audio encoder + GGUF text decoder + manifest.json).",
    )
    c.add_argument("hf_dir", metavar="HF_DIR", help="folder with config.json, tokenizer files, model.safetensors")
    c.add_argument("out_dir", metavar="OUT_DIR", help="bundle folder to create")
    c.add_argument("--encoder", choices=ENCODER_PRECISIONS, default="fp32",
                   help="audio encoder precision (default: fp32)")
    c.add_argument("--decoder", choices=DECODER_PRECISIONS, default="f32",
                   help="text decoder precision (default: f32; q4_k keeps the embedding/output head at q8_0)")
    c.add_argument("--force", action="store_true", help="replace OUT_DIR if it already holds files")
    c.set_defaults(func=cmd_convert)


class ProgressLine:
    """One self-overwriting progress line on a TTY; one line per stage elsewhere (logs, pipes)."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = stream.isatty()
        self.stage = ""
        self.started = time.monotonic()

    def __call__(self, stage: str, fraction: float) -> None:
        if self.tty:
            bar = "#" * int(fraction * 30)
            self.stream.write(f"\r[{bar:<30}] {fraction * 100:5.1f}%  {stage:<32}")
            if stage == "done":
                self.stream.write("\n")
            self.stream.flush()
        elif stage != self.stage and stage != "done":
            self.stream.write(f"{stage}...\n")
            self.stream.flush()
        self.stage = stage


def _load_converter() -> Callable:
    try:
        from qasr.engine.convert import convert_checkpoint
    except ModuleNotFoundError as exc:
        raise QasrError(f"{CONVERT_DEPS_HINT} (missing module {exc.name})") from exc
    return convert_checkpoint


def cmd_convert(args: argparse.Namespace) -> int:
    convert_checkpoint = _load_converter()
    progress = ProgressLine(sys.stderr)
    out = convert_checkpoint(
        args.hf_dir, args.out_dir, encoder=args.encoder, decoder=args.decoder,
        progress=progress, overwrite=args.force,
    )
    elapsed = time.monotonic() - progress.started
    print(f"bundle written to {out} ({args.encoder} encoder, {args.decoder} decoder, {elapsed:.0f} s)")
    return 0


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_convert]
