"""Installed model bundles: the catalogue of known models, `pull` (download + convert + verify),
and look-ups for `models list`, `models path`, `models verify` and `models remove`.

Bundle naming rule (directories under ``models_dir()``):
  ``qwen3-asr-<size>``                     the default precisions (int8 encoder, int8-mixed recipe + q4_k decoder)
  ``qwen3-asr-<size>-<encoder>-<decoder>`` any other pair, e.g. ``qwen3-asr-0.6b-fp32-f32``
  ``qwen3-forcedaligner-0.6b``             the word-timestamp aligner (int8 encoder + q8_0 decoder), other
                                           pairs ``qwen3-forcedaligner-0.6b-<encoder>-<decoder>``
A checkpoint is downloaded into the shared Hugging Face cache (see download.py). A revision this pull
fetched is deleted from the cache after a successful conversion unless kept (``--keep-checkpoint``);
one that was already cached (another tool downloaded it) is left alone.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from qasr.config import paths
from qasr.daemon.models.catalogue import (ALIGNER_DECODER, ALIGNER_KEY, CATALOGUE, DEFAULT_DECODER,  # noqa: F401
                                          DEFAULT_ENCODER, CatalogueEntry, bundle_name, catalogue_entry)
from qasr.daemon.models.download import (
    Snapshot,
    download_checkpoint,
    format_bytes,
    remove_snapshot,
)
from qasr.engine.bundle import MANIFEST_NAME, BundleError, load_bundle, write_manifest
from qasr.errors import QasrError

ConvertProgress = Callable[[str, float], None]
Notes = Callable[[str], None]


# ------------------------------------------------------------------ pull

@dataclass(frozen=True)
class PullOptions:
    model: str = "0.6b"
    endpoint: str | None = None  # default: $HF_ENDPOINT or the public hub
    repo: str | None = None  # another repository with the same layout (a fine-tune, a mirror)
    revision: str | None = None
    encoder: str | None = None  # None: the catalogue entry's default (DEFAULT_ENCODER)
    decoder: str | None = None  # None: the entry's default (q4_k; q8_0 for the aligner)
    keep_checkpoint: bool = False
    force: bool = False  # re-convert even when the bundle is present
    progress_bars: bool = False  # huggingface_hub's transfer bars (on a terminal)


@dataclass(frozen=True)
class PullResult:
    bundle_dir: Path
    already_present: bool
    source: str | None = None
    repo: str | None = None
    revision: str | None = None
    encoder: str = ""
    decoder: str = ""
    is_aligner: bool = False


def pull(options: PullOptions, notes: Notes | None = None,
         convert_progress: ConvertProgress | None = None) -> PullResult:
    notes = notes or (lambda message: None)
    entry = catalogue_entry(options.model)
    options = dataclasses.replace(options, encoder=options.encoder or entry.encoder,
                                  decoder=options.decoder or entry.decoder)
    target = paths.models_dir() / bundle_name(entry, options.encoder, options.decoder)
    done = dict(encoder=options.encoder, decoder=options.decoder, is_aligner=entry.kind == "aligner")
    if target.exists() and not options.force:
        try:
            load_bundle(target, verify="size")
            return PullResult(target, already_present=True, **done)
        except BundleError as exc:
            notes(f"the installed bundle is not usable ({exc}); pulling it again")

    from qasr.engine.convert import check_dependencies

    check_dependencies()  # before a download of gigabytes that could not be converted
    repo = options.repo or entry.repo
    snap = download_checkpoint(repo, options.revision, options.endpoint, notes, options.progress_bars)
    _check_kind(snap, entry)
    notes(f"converting into {target} ({options.encoder} encoder, {options.decoder} decoder)")
    _convert(snap, target, options, convert_progress)
    _record_origin(target, snap, options)
    notes("verifying the bundle (sha256 of every file)")
    load_bundle(target, verify="sha256")
    if snap.fetched and not options.keep_checkpoint:
        remove_snapshot(snap)
    return PullResult(target, False, snap.source, snap.repo, snap.revision, **done)


def _check_kind(snap: Snapshot, entry: CatalogueEntry) -> None:
    """A repository passed with --repo must hold the kind of model the catalogue key names."""
    from qasr.engine.convert.checkpoint import checkpoint_kind

    kind = checkpoint_kind(snap.path)
    if kind != entry.kind:
        what = {"asr": "a Qwen3-ASR speech recognizer", "aligner": "a Qwen3-ForcedAligner"}
        raise QasrError(f"{snap.repo} holds {what[kind]}, not {what[entry.kind]}; "
                        f"pull it as `{'aligner' if kind == 'aligner' else '0.6b'}` or choose another --repo")


def _convert(snap: Snapshot, target: Path, options: PullOptions, progress: ConvertProgress | None) -> None:
    from qasr.engine.convert import convert_checkpoint

    convert_checkpoint(snap.path, target, encoder=options.encoder, decoder=options.decoder,
                       progress=progress, overwrite=True)


def _record_origin(target: Path, snap: Snapshot, options: PullOptions) -> None:
    """Say in the manifest where the weights came from (the converter records only a local folder)."""
    manifest = load_bundle(target, verify="none").manifest
    origin = f"{snap.source}:{snap.repo}@{snap.revision}"
    extra = {**manifest.extra, "pull": {"source": snap.source, "repo": snap.repo,
                                        "revision": snap.revision, "model": options.model}}
    write_manifest(target, dataclasses.replace(manifest, model={**manifest.model, "source": origin}, extra=extra))


# ------------------------------------------------------------------ installed bundles

@dataclass(frozen=True)
class BundleInfo:
    name: str
    path: Path
    model: str = ""
    encoder: str = ""
    decoder: str = ""
    size: int = 0
    source: str = ""  # "huggingface:Qwen/Qwen3-ASR-0.6B", or the folder a local conversion read
    revision: str = ""  # the source commit, when the bundle was pulled
    is_default: bool = False
    problem: str | None = None  # why the manifest cannot be read
    kind: str = ""  # "asr", "aligner" ("" when the manifest cannot be read)


def default_bundle_path() -> Path:
    """The bundle the daemon loads: [model] path from the config file, else its default."""
    from qasr.config.loader import load_settings
    from qasr.config.settings import ModelSettings

    try:
        settings, _ = load_settings()
        return settings.model.resolved_path()
    except QasrError:
        return ModelSettings().resolved_path()


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe_bundle(path: Path, default: Path | None = None) -> BundleInfo:
    is_default = default is not None and _same_path(path, default)
    try:
        m = load_bundle(path, verify="none").manifest
    except BundleError as exc:
        return BundleInfo(path.name, path, size=_dir_size(path), is_default=is_default, problem=str(exc))
    source, revision = split_source(str(m.model.get("source", "")), m.extra.get("pull"))
    return BundleInfo(
        name=path.name, path=path, model=str(m.model.get("name", "")),
        encoder=m.files["encoder_frontend"].precision, decoder=m.files["decoder"].precision,
        size=_dir_size(path), source=source, revision=revision, is_default=is_default,
        kind="aligner" if m.is_aligner else "asr",
    )


def split_source(source: str, pull_record: object = None) -> tuple[str, str]:
    """("hub:owner/name", revision) from a pulled bundle's "hub:owner/name@revision"; (folder, "") else."""
    if isinstance(pull_record, dict) and pull_record.get("revision"):
        revision = str(pull_record["revision"])
        return source.removesuffix(f"@{revision}"), revision
    head, at, revision = source.rpartition("@")
    if at and ":" in head and not head.startswith(("/", "~", ".")):
        return head, revision
    return source, ""


def list_bundles(root: Path | None = None, default: Path | None = None) -> list[BundleInfo]:
    """Bundles (folders with a manifest) under `root` (default: models_dir()), sorted by name."""
    root = root or paths.models_dir()
    if default is None:
        default = default_bundle_path()
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()]
    return [describe_bundle(p, default) for p in sorted(found)]


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def resolve_bundle(name: str | None) -> Path:
    """A bundle folder from a name under models_dir(), a catalogue key ("0.6b"), a path, or None (the default)."""
    if not name:
        path = default_bundle_path()
    elif os.sep in name or name.startswith(("~", ".")):
        path = Path(name).expanduser()
    elif name.lower() in CATALOGUE:
        path = paths.models_dir() / bundle_name(CATALOGUE[name.lower()])
    else:
        path = paths.models_dir() / name
        if not path.is_dir() and Path(name).is_dir():  # a folder in the working directory
            path = Path(name)
    if not path.is_dir():
        shown = name or "the default model"
        key = name.lower() if name and name.lower() in CATALOGUE else "0.6b"
        raise QasrError(
            f"no model bundle {shown} at {path}; `qasr-daemon models list` shows the installed ones, "
            f"`qasr-daemon models pull {key}` installs one"
        )
    return path


def find_aligner_bundle(root: Path | None = None) -> Path | None:
    """The installed aligner: `qwen3-forcedaligner-0.6b` (the default precisions) if it is there, else the
    first other installed aligner bundle by name (e.g. one pulled with --encoder fp32), else None."""
    root = root or paths.models_dir()
    default = root / CATALOGUE[ALIGNER_KEY].stem
    candidates = [default] + ([p for p in sorted(root.iterdir()) if p != default] if root.is_dir() else [])
    for path in candidates:
        if path.name.startswith(".") or not (path / MANIFEST_NAME).is_file():
            continue
        try:
            if load_bundle(path, verify="none").manifest.is_aligner:
                return path
        except BundleError:
            continue
    return None


def verify_bundle_dir(path: Path) -> None:
    """Full sha256 check of every file; raises BundleError naming the first bad file."""
    load_bundle(path, verify="sha256")


def remove_bundle(name: str) -> BundleInfo:
    """Delete an installed bundle (a folder with a manifest under models_dir()); returns what it was."""
    root = paths.models_dir()
    key = name.lower()
    folder = root / (bundle_name(CATALOGUE[key]) if key in CATALOGUE else name)
    if os.sep in name or name.startswith(".") or not folder.is_dir():
        raise QasrError(f"no installed bundle {name} in {root}; `qasr-daemon models list` shows the installed ones")
    if not (folder / MANIFEST_NAME).is_file():
        raise QasrError(f"{folder} has no {MANIFEST_NAME}, so it is not a qasr bundle; remove it yourself if you meant it")
    info = describe_bundle(folder, default_bundle_path())
    shutil.rmtree(folder)
    return info
