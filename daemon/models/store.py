"""Installed model bundles: the catalogue of known models, `pull` (download + convert + verify),
and look-ups for `models list`, `models path` and `models verify`.

Bundle naming rule (directories under ``models_dir()``):
  ``qwen3-asr-<size>``                     the default precisions (int8 encoder + q4_k decoder)
  ``qwen3-asr-<size>-<encoder>-<decoder>`` any other pair, e.g. ``qwen3-asr-0.6b-fp32-f32``
A checkpoint is downloaded into ``downloads_dir()/<source>/<owner>/<name>/`` and deleted after a
successful conversion unless kept (``--keep-checkpoint``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from qasr.config import paths
from qasr.daemon.models.download import (
    HUGGINGFACE,
    SOURCES,
    DiskFullError,
    DownloadError,
    DownloadOptions,
    RemoteFile,
    RepoListing,
    SilentProgress,
    TransferProgress,
    auth_headers,
    download_file,
    endpoint_for,
    format_bytes,
    list_files,
    part_path,
)
from qasr.engine.bundle import MANIFEST_NAME, BundleError, load_bundle, write_manifest
from qasr.errors import QasrError

DEFAULT_ENCODER = "int8"
DEFAULT_DECODER = "q4_k"

# Files of a Hugging Face-layout checkpoint that the converter reads (top-level only).
CHECKPOINT_SUFFIXES = (".json", ".txt", ".safetensors")

ConvertProgress = Callable[[str, float], None]


@dataclass(frozen=True)
class CatalogueEntry:
    key: str  # what the user types: "0.6b"
    repos: dict[str, str]  # source -> repository id
    download_gb: float  # approximate checkpoint size, for messages

    @property
    def stem(self) -> str:
        return f"qwen3-asr-{self.key}"


CATALOGUE: dict[str, CatalogueEntry] = {
    "0.6b": CatalogueEntry("0.6b", {HUGGINGFACE: "Qwen/Qwen3-ASR-0.6B", "modelscope": "Qwen/Qwen3-ASR-0.6B"}, 1.9),
    "1.7b": CatalogueEntry("1.7b", {HUGGINGFACE: "Qwen/Qwen3-ASR-1.7B", "modelscope": "Qwen/Qwen3-ASR-1.7B"}, 4.7),
}


def catalogue_entry(key: str) -> CatalogueEntry:
    entry = CATALOGUE.get(key.lower())
    if entry is None:
        raise QasrError(f"unknown model {key!r}; choose one of {', '.join(CATALOGUE)}")
    return entry


def bundle_name(entry: CatalogueEntry, encoder: str = DEFAULT_ENCODER, decoder: str = DEFAULT_DECODER) -> str:
    if (encoder, decoder) == (DEFAULT_ENCODER, DEFAULT_DECODER):
        return entry.stem
    return f"{entry.stem}-{encoder}-{decoder}"


def checkpoint_dir(source: str, repo: str) -> Path:
    return paths.downloads_dir().joinpath(source, *repo.split("/"))


# ------------------------------------------------------------------ download

def select_checkpoint_files(listing: RepoListing) -> list[RemoteFile]:
    files = [f for f in listing.files if "/" not in f.path and f.path.endswith(CHECKPOINT_SUFFIXES)]
    names = {f.path for f in files}
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise DownloadError(
            f"{listing.repo} on {listing.source} has no config.json and .safetensors weights: it is not a "
            "Hugging Face-layout Qwen3-ASR checkpoint; check --repo"
        )
    return files


def _bytes_still_needed(files: list[RemoteFile], target: Path) -> int:
    needed = 0
    for f in files:
        if f.size is None:
            continue
        have = 0
        for candidate in (target / f.path, part_path(target / f.path)):
            if candidate.is_file():
                have = max(have, min(candidate.stat().st_size, f.size))
        needed += f.size - have
    return needed


def check_free_space(directory: Path, needed: int) -> None:
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise DiskFullError(
            f"not enough disk space in {probe}: the download needs {format_bytes(needed)} more, "
            f"{format_bytes(free)} is free; free some space or point XDG_CACHE_HOME at a larger disk"
        )


def download_checkpoint(source: str, repo: str, revision: str | None = None, endpoint: str | None = None,
                        options: DownloadOptions | None = None,
                        progress: TransferProgress | None = None) -> tuple[Path, RepoListing]:
    """Download (or finish downloading) a checkpoint into `checkpoint_dir(source, repo)`; every file checked."""
    progress = progress or SilentProgress()
    options = options or DownloadOptions()
    options = dataclasses.replace(options, headers={**auth_headers(source), **options.headers})
    base = endpoint_for(source, endpoint)
    listing = list_files(source, repo, revision, base, options)
    files = select_checkpoint_files(listing)
    target = checkpoint_dir(source, repo)
    check_free_space(target, _bytes_still_needed(files, target))
    total = sum(f.size or 0 for f in files)
    progress.note(f"{source}: {repo} @ {listing.revision[:12]}: {len(files)} files, {format_bytes(total)}")
    for remote in files:
        download_file(remote, target / remote.path, options, progress)
    return target, listing


# ------------------------------------------------------------------ pull

@dataclass(frozen=True)
class PullOptions:
    model: str = "0.6b"
    source: str = HUGGINGFACE  # tried first
    fallback: bool = True  # then the other source, when the first fails
    endpoint: str | None = None  # for the first source; the fallback uses its variable or default
    repo: str | None = None  # another repository with the same layout (a fine-tune, a mirror)
    revision: str | None = None
    encoder: str = DEFAULT_ENCODER
    decoder: str = DEFAULT_DECODER
    keep_checkpoint: bool = False
    force: bool = False  # re-download and re-convert even when the bundle is present
    download: DownloadOptions = DownloadOptions()


@dataclass(frozen=True)
class PullResult:
    bundle_dir: Path
    already_present: bool
    source: str | None = None
    repo: str | None = None
    revision: str | None = None


def source_order(first: str, fallback: bool) -> list[str]:
    if first not in SOURCES:
        raise QasrError(f"unknown source {first!r}; choose one of {', '.join(SOURCES)}")
    return [first] + ([s for s in SOURCES if s != first] if fallback else [])


def pull(options: PullOptions, progress: TransferProgress | None = None,
         convert_progress: ConvertProgress | None = None) -> PullResult:
    progress = progress or SilentProgress()
    entry = catalogue_entry(options.model)
    target = paths.models_dir() / bundle_name(entry, options.encoder, options.decoder)
    if target.exists() and not options.force:
        try:
            load_bundle(target, verify="size")
            return PullResult(target, already_present=True)
        except BundleError as exc:
            progress.note(f"the installed bundle is not usable ({exc}); pulling it again")

    failures: list[str] = []
    sources = source_order(options.source, options.fallback)
    for i, source in enumerate(sources):
        repo = options.repo or entry.repos[source]
        try:
            ckpt, listing = download_checkpoint(
                source, repo, options.revision, options.endpoint if i == 0 else None,
                options.download, progress)
            break
        except DownloadError as exc:
            failures.append(f"{source}: {exc}")
            if not exc.try_other_source or i == len(sources) - 1:
                if len(failures) == 1:
                    raise
                raise DownloadError(f"could not download {entry.key} from any source — " + " | ".join(failures)) from exc
            progress.note(f"{source} failed ({exc}); trying {sources[i + 1]}")

    progress.note(f"converting into {target} ({options.encoder} encoder, {options.decoder} decoder)")
    _convert(ckpt, target, options, convert_progress)
    _record_origin(target, listing, options)
    progress.note("verifying the bundle (sha256 of every file)")
    load_bundle(target, verify="sha256")
    if not options.keep_checkpoint:
        _remove_checkpoint(ckpt)
    return PullResult(target, False, listing.source, listing.repo, listing.revision)


def _convert(ckpt: Path, target: Path, options: PullOptions, progress: ConvertProgress | None) -> None:
    from qasr.engine.convert import check_dependencies, convert_checkpoint

    try:
        check_dependencies()
    except QasrError as exc:
        raise QasrError(f"{exc}; the checkpoint stays in {ckpt}, so re-running pull will not download it again") from exc
    convert_checkpoint(ckpt, target, encoder=options.encoder, decoder=options.decoder,
                       progress=progress, overwrite=True)


def _record_origin(target: Path, listing: RepoListing, options: PullOptions) -> None:
    """Say in the manifest where the weights came from (the converter records only a local folder)."""
    manifest = load_bundle(target, verify="none").manifest
    origin = f"{listing.source}:{listing.repo}@{listing.revision}"
    extra = {**manifest.extra, "pull": {"source": listing.source, "repo": listing.repo,
                                        "revision": listing.revision, "model": options.model}}
    write_manifest(target, dataclasses.replace(manifest, model={**manifest.model, "source": origin}, extra=extra))


def _remove_checkpoint(ckpt: Path) -> None:
    shutil.rmtree(ckpt, ignore_errors=True)
    downloads = paths.downloads_dir()
    parent = ckpt.parent
    while parent != downloads and downloads in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent


# ------------------------------------------------------------------ installed bundles

@dataclass(frozen=True)
class BundleInfo:
    name: str
    path: Path
    model: str = ""
    encoder: str = ""
    decoder: str = ""
    size: int = 0
    source: str = ""
    is_default: bool = False
    problem: str | None = None  # why the manifest cannot be read


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
    return BundleInfo(
        name=path.name, path=path, model=str(m.model.get("name", "")),
        encoder=m.files["encoder_frontend"].precision, decoder=m.files["decoder"].precision,
        size=_dir_size(path), source=str(m.model.get("source", "")), is_default=is_default,
    )


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


def verify_bundle_dir(path: Path) -> None:
    """Full sha256 check of every file; raises BundleError naming the first bad file."""
    load_bundle(path, verify="sha256")
