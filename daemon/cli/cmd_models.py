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

from qasr.daemon.models.catalogue import DECODER_CHOICES, ENCODER_CHOICES
from qasr.errors import QasrError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="model bundles: pull, convert, list, path, verify, remove")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    for add in SUBCOMMANDS:
        add(msub)


# ---------------------------------------------------------------- convert

def _add_convert(msub: argparse._SubParsersAction) -> None:
    c = msub.add_parser(
        "convert",
        help="convert a Hugging Face Qwen3-ASR (or Qwen3-ForcedAligner) checkpoint into a qasr bundle",
        description="Convert a Hugging Face Qwen3-ASR checkpoint folder into a qasr bundle "
        "(ONNX audio encoder + GGUF text decoder + manifest.json). A Qwen3-ForcedAligner checkpoint is "
        "recognised by its config.json and becomes an aligner bundle (word timestamps).",
    )
    c.add_argument("hf_dir", metavar="HF_DIR", help="folder with config.json, tokenizer files, model.safetensors")
    c.add_argument("out_dir", metavar="OUT_DIR", help="bundle folder to create")
    c.add_argument("--encoder", choices=ENCODER_CHOICES, default="fp32",
                   help="audio encoder precision (default: fp32, the accuracy-first choice; int8 = int8-mixed "
                   "recipe: int8 weights, the front-end projection and output head in fp32)")
    c.add_argument("--decoder", choices=DECODER_CHOICES, default="f32",
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


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        from qasr.engine.convert import check_dependencies, convert_checkpoint
    except ModuleNotFoundError as exc:  # a broken install; the converter itself imports lazily
        raise QasrError(f"the converter cannot load ({exc}); reinstall with pip install 'qasr[convert]'") from exc
    check_dependencies()  # one line naming what to pip install, before the progress output starts
    progress = ProgressLine(sys.stderr)
    out = convert_checkpoint(
        args.hf_dir, args.out_dir, encoder=args.encoder, decoder=args.decoder,
        progress=progress, overwrite=args.force,
    )
    elapsed = time.monotonic() - progress.started
    from qasr.engine.bundle import load_bundle

    what = "aligner bundle" if load_bundle(out, verify="none").manifest.is_aligner else "bundle"
    print(f"{what} written to {out} ({args.encoder} encoder, {args.decoder} decoder, {elapsed:.0f} s)")
    return 0


# ---------------------------------------------------------------- pull, list, path, verify, remove
# (download and store logic: daemon/models/download.py, daemon/models/store.py)

def _add_pull(msub: argparse._SubParsersAction) -> None:
    from qasr.daemon.models.catalogue import ALIGNER_DECODER, CATALOGUE, DEFAULT_DECODER, DEFAULT_ENCODER

    c = msub.add_parser(
        "pull",
        help="download an official Qwen3-ASR checkpoint (or the forced aligner) and convert it into a bundle",
        description="Download Qwen/Qwen3-ASR-<size> from Hugging Face into the shared Hugging Face cache "
        "(a checkpoint already there is not downloaded again), check every file's checksum, convert it into "
        "$XDG_DATA_HOME/qasr/models/qwen3-asr-<size> (other precisions: qwen3-asr-<size>-<encoder>-<decoder>) "
        "and verify the bundle. `pull aligner` does the same for Qwen/Qwen3-ForcedAligner-0.6B (word "
        "timestamps, about 1.8 GB) into qwen3-forcedaligner-0.6b. An interrupted download resumes when the "
        "command is run again. HF_ENDPOINT (a mirror), HF_TOKEN, HF_HUB_OFFLINE and HF_HUB_CACHE are honoured.",
    )
    c.add_argument("model", metavar="MODEL", choices=list(CATALOGUE), help=f"one of {', '.join(CATALOGUE)}")
    c.add_argument("--endpoint", metavar="URL", help="hub base URL (default: $HF_ENDPOINT or https://huggingface.co)")
    c.add_argument("--repo", metavar="OWNER/NAME", help="another repository with the same layout")
    c.add_argument("--revision", metavar="REV", help="branch, tag or commit (default: main)")
    c.add_argument("--encoder", choices=ENCODER_CHOICES, default=None,
                   help=f"audio encoder precision (default: {DEFAULT_ENCODER}, the int8-mixed recipe: int8 weights "
                   "with the front-end projection and output head in fp32; "
                   "--encoder fp32 is the accuracy-first choice, no quantization error, slower)")
    c.add_argument("--decoder", choices=DECODER_CHOICES, default=None,
                   help=f"text decoder precision (default: {DEFAULT_DECODER}; {ALIGNER_DECODER} for the aligner)")
    c.add_argument("--keep-checkpoint", action="store_true",
                   help="keep a checkpoint this pull downloaded in the Hugging Face cache after converting "
                   "(one that was already cached is always kept)")
    c.add_argument("--force", action="store_true", help="convert again even if the bundle is installed")
    c.set_defaults(func=cmd_pull)


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_pull(args: argparse.Namespace) -> int:
    from qasr.daemon.models.store import PullOptions, pull

    options = PullOptions(
        model=args.model, endpoint=args.endpoint, repo=args.repo, revision=args.revision,
        encoder=args.encoder, decoder=args.decoder, keep_checkpoint=args.keep_checkpoint, force=args.force,
        progress_bars=sys.stderr.isatty(),
    )
    started = time.monotonic()
    try:
        result = pull(options, _note, ProgressLine(sys.stderr))
    except KeyboardInterrupt:
        from qasr.daemon.models.download import Interrupted

        raise Interrupted("interrupted; run the same command again to resume the download") from None
    if result.already_present:
        print(f"{result.bundle_dir} is already installed (use --force to pull it again)")
    else:
        elapsed = time.monotonic() - started
        what = "aligner bundle" if result.is_aligner else "bundle"
        print(f"{what} written to {result.bundle_dir} from {result.source} {result.repo}@{result.revision[:12]} "
              f"({result.encoder} encoder, {result.decoder} decoder, {elapsed:.0f} s)")
    return 0


def _add_list(msub: argparse._SubParsersAction) -> None:
    c = msub.add_parser("list", help="list installed model bundles",
                        description="List the bundles in $XDG_DATA_HOME/qasr/models with their kind (asr: speech "
                        "recognizer, aligner: word timestamps), model, precisions, size and source revision; "
                        "* marks the one the daemon loads.")
    c.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from qasr.config import paths
    from qasr.daemon.models.download import format_bytes
    from qasr.daemon.models.store import default_bundle_path, list_bundles

    default = default_bundle_path()
    bundles = list_bundles(default=default)
    if not bundles:
        print(f"no model bundles in {paths.models_dir()}; install one with `qasr-daemon models pull 0.6b`")
        return 0
    rows = [("", "NAME", "KIND", "MODEL", "ENCODER", "DECODER", "SIZE", "REVISION", "SOURCE")]
    for b in bundles:
        rows.append(("*" if b.is_default else "", b.name, b.kind or "?", b.model or "?", b.encoder or "?", b.decoder or "?",
                     format_bytes(b.size), b.revision[:12] or "-",
                     b.source if b.problem is None else f"BROKEN: {b.problem}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
    if not any(b.is_default for b in bundles):
        print(f"(the daemon's model {default} is not installed)")
    return 0


def _add_remove(msub: argparse._SubParsersAction) -> None:
    c = msub.add_parser("remove", help="delete an installed bundle",
                        description="Delete an installed bundle from $XDG_DATA_HOME/qasr/models "
                        "(the Hugging Face cache is not touched).")
    c.add_argument("name", metavar="NAME", help="bundle name (see `models list`) or 0.6b / 1.7b / aligner")
    c.set_defaults(func=cmd_remove)


def cmd_remove(args: argparse.Namespace) -> int:
    from qasr.daemon.models.download import format_bytes
    from qasr.daemon.models.store import remove_bundle

    info = remove_bundle(args.name)
    print(f"removed {info.path} ({format_bytes(info.size)})")
    if info.is_default:
        print("it was the daemon's model: pull it again or set [model] path in the config file", file=sys.stderr)
    return 0


def _add_path(msub: argparse._SubParsersAction) -> None:
    c = msub.add_parser("path", help="print a bundle's folder",
                        description="Print the folder of an installed bundle (default: the daemon's model).")
    c.add_argument("name", metavar="NAME", nargs="?", help="bundle name (see `models list`) or 0.6b / 1.7b / aligner")
    c.set_defaults(func=cmd_path)


def cmd_path(args: argparse.Namespace) -> int:
    from qasr.daemon.models.store import resolve_bundle

    print(resolve_bundle(args.name))
    return 0


def _add_verify(msub: argparse._SubParsersAction) -> None:
    c = msub.add_parser("verify", help="check every file of a bundle against its sha256",
                        description="Check every file of a bundle against the sha256 in its manifest "
                        "(default: every installed bundle). Exits non-zero naming the bad file.")
    c.add_argument("target", metavar="NAME|DIR", nargs="?", help="bundle name, 0.6b / 1.7b / aligner, or a folder")
    c.set_defaults(func=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    from qasr.config import paths
    from qasr.daemon.models.store import list_bundles, resolve_bundle, verify_bundle_dir
    from qasr.engine.bundle import BundleError

    if args.target:
        targets = [resolve_bundle(args.target)]
    else:
        targets = [b.path for b in list_bundles()]
        if not targets:
            raise QasrError(f"no model bundles in {paths.models_dir()}; install one with `qasr-daemon models pull 0.6b`")
    bad = 0
    for target in targets:
        try:
            verify_bundle_dir(target)
            print(f"ok  {target}")
        except BundleError as exc:
            bad += 1
            print(f"BAD {target}: {exc}", file=sys.stderr)
    return 1 if bad else 0


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_convert, _add_pull, _add_list, _add_path, _add_verify, _add_remove,
]
