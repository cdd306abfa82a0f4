"""Checkpoint downloads through `huggingface_hub` (the `convert` extra), into the shared Hugging Face cache.

The library does the transfer: resumable `.incomplete` blobs, retries of dropped connections, size
checks, Xet storage, progress bars, `HF_TOKEN`, and a cache shared with every other tool
(`$HF_HUB_CACHE`, default `~/.cache/huggingface/hub`): a checkpoint already there is used without
downloading. qasr adds what it needs around it:
- the file list and sizes first (`model_info(files_metadata=True)`), only the top-level files the
  converter reads, and a free-space check before any byte moves;
- a checksum of every file after the transfer (LFS sha256 / git blob id from the listing), a bad
  file fetched once more;
- environment read at call time (`HF_ENDPOINT`, `HF_HUB_OFFLINE`, `HF_HUB_CACHE`/`HF_HOME`/
  `XDG_CACHE_HOME`), since the library reads its own copies once at import;
- one line of error for every failure a user can act on (`DownloadError`, a `QasrError`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from qasr.errors import QasrError

HUGGINGFACE = "huggingface"
DEFAULT_ENDPOINT = "https://huggingface.co"
# Files of a Hugging Face-layout checkpoint that the converter reads (top level only).
CHECKPOINT_SUFFIXES = (".json", ".txt", ".safetensors")
_TRUE = {"1", "on", "yes", "true"}

Notes = Callable[[str], None]
# Installed by the `convert` extra; the runtime alone can load bundles but not pull them.
HUB_MODULES = ("huggingface_hub", "requests")


class DownloadError(QasrError):
    """A download failed; the message says why and what to do."""


class DiskFullError(DownloadError):
    pass


class ChecksumError(DownloadError):
    pass


class Interrupted(DownloadError):
    """Ctrl+C during a pull: the partial download stays in the cache and resumes next time."""

    exit_code = 130


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int | None
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob id (sha1 of b"blob <size>\0" + content), regular files


@dataclass(frozen=True)
class Snapshot:
    source: str
    repo: str
    revision: str  # commit hash
    path: Path  # the snapshot folder in the Hugging Face cache
    fetched: int  # bytes downloaded by this call (0: everything was cached)
    cache_dir: Path


def require_hub() -> None:
    import importlib.util

    missing = [name for name in HUB_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise DownloadError(f"models pull needs {', '.join(missing)}, which is not installed: "
                            "pip install 'qasr[convert]' (or run scripts/install.sh)")


# ------------------------------------------------------------------ environment (read at call time)

def endpoint_for(override: str | None = None) -> str:
    return (override or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, by the library's own rules but read now."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower() in _TRUE


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


# ------------------------------------------------------------------ errors -> one line

@contextlib.contextmanager
def hub_errors(repo: str, endpoint: str, revision: str | None, transfer: bool = False) -> Iterator[None]:
    """Turn huggingface_hub / requests / OS errors into one DownloadError line saying what to do.

    `transfer`: the listing already worked, so a network error now is a broken-off download.
    """
    import requests
    from huggingface_hub import errors as hf

    host = urllib.parse.urlsplit(endpoint).netloc or endpoint
    try:
        yield
    except hf.GatedRepoError as exc:
        raise DownloadError(f"{repo} on {host} is gated (HTTP {_status(exc)}): accept its terms on the model page "
                            "and set HF_TOKEN to a token of that account") from None
    except hf.RepositoryNotFoundError as exc:
        raise DownloadError(f"HTTP {_status(exc)}: no repository {repo} on {host} (or it is private): check the "
                            "model name and --repo, or set HF_TOKEN to a token that may read it") from None
    except hf.RevisionNotFoundError:
        raise DownloadError(f"{repo} on {host} has no revision {revision!r}; check --revision") from None
    except hf.EntryNotFoundError as exc:
        if isinstance(exc, hf.LocalEntryNotFoundError):  # the library's "network down, not cached"
            if transfer:
                raise DownloadError(f"lost the connection to {host} while downloading {repo}; run the command "
                                    "again to resume") from None
            raise DownloadError(_unreachable(host, exc)) from None
        raise DownloadError(f"HTTP 404: a file of {repo} vanished from {host} during the download; run the "
                            "command again") from None
    except hf.HfHubHTTPError as exc:
        status = _status(exc)
        if status in (401, 403):
            raise DownloadError(f"HTTP {status} (access denied) for {repo} on {host}: set HF_TOKEN to a token "
                                "that may read it") from None
        raise DownloadError(f"HTTP {status} from {host} for {repo}; try again later or use a mirror (HF_ENDPOINT)") from None
    except requests.RequestException as exc:
        if transfer:
            raise DownloadError(f"the connection to {host} broke off while downloading {repo} "
                                f"({type(exc).__name__}); run the command again to resume") from None
        raise DownloadError(_unreachable(host, exc)) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"disk full while downloading {repo} into {hub_cache_dir()}: free some space "
                                "and run the command again (the download resumes)") from None
        if "Consistency check failed" in str(exc):
            raise ChecksumError(f"a file of {repo} from {host} arrived with the wrong size; run the command "
                                "again (a proxy may be truncating it)") from None
        raise


def _status(exc: BaseException) -> int | str:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) or "error"


def _unreachable(host: str, exc: BaseException) -> str:
    return (f"cannot reach {host} and the checkpoint is not in the Hugging Face cache ({hub_cache_dir()}); "
            "check your network or proxy, or set HF_ENDPOINT to a mirror")


# ------------------------------------------------------------------ listing, space, integrity

def select_checkpoint_files(repo: str, siblings) -> list[RemoteFile]:
    files = []
    for sib in siblings or []:
        name = sib.rfilename
        if "/" in name or not name.endswith(CHECKPOINT_SUFFIXES):
            continue
        lfs = sib.lfs
        files.append(RemoteFile(name, sib.size if sib.size is not None else (lfs.size if lfs else None),
                                lfs.sha256 if lfs else None, None if lfs else sib.blob_id))
    names = {f.path for f in files}
    if "config.json" not in names or not any(n.endswith(".safetensors") for n in names):
        raise DownloadError(f"{repo} has no config.json and .safetensors weights: it is not a Hugging Face-layout "
                            "Qwen3-ASR checkpoint; check --repo")
    return files


def _missing_bytes(files: list[RemoteFile], snapshot: Path) -> int:
    return sum(f.size or 0 for f in files if not (snapshot / f.path).is_file())


def check_free_space(directory: Path, needed: int) -> None:
    probe = directory
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise DiskFullError(
            f"not enough disk space in {probe}: the download needs {format_bytes(needed)} more, "
            f"{format_bytes(free)} is free; free some space or point HF_HUB_CACHE at a larger disk"
        )


def file_mismatch(path: Path, remote: RemoteFile, chunk: int = 1 << 22) -> str | None:
    """None when the file has the listing's size and checksum, else what differs."""
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{size} bytes, expected {remote.size}"
    if remote.sha256:
        digest, want, what = hashlib.sha256(), remote.sha256, "sha256"
    elif remote.blob_id:
        digest, want, what = hashlib.sha1(usedforsecurity=False), remote.blob_id, "git blob id"
        digest.update(b"blob %d\0" % size)
    else:
        return None
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    if digest.hexdigest() != want.lower():
        return f"{what} {digest.hexdigest()[:16]}…, expected {want[:16]}…"
    return None


def _drop_cached_file(snapshot: Path, name: str) -> None:
    link = snapshot / name
    target = link.resolve()
    link.unlink(missing_ok=True)
    if target != link and target.is_file():
        target.unlink()


# ------------------------------------------------------------------ download

def _cached_snapshot(repo: str, revision: str | None, cache: Path) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub import errors as hf

    try:
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache, local_files_only=True,
                                      allow_patterns=[f"*{s}" for s in CHECKPOINT_SUFFIXES]))
    except (hf.LocalEntryNotFoundError, FileNotFoundError, ValueError):
        return None


@contextlib.contextmanager
def _library_output(bars: bool) -> Iterator[None]:
    """The library's progress bars only when asked (a terminal); its retry warnings never (qasr says
    what failed in one line)."""
    import logging

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not bars and not was_disabled:
        disable_progress_bars()
    log = logging.getLogger("huggingface_hub")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
        if not bars and not was_disabled:
            enable_progress_bars()


def download_checkpoint(repo: str, revision: str | None = None, endpoint: str | None = None,
                        notes: Notes | None = None, progress_bars: bool = False) -> Snapshot:
    """The checkpoint's top-level files in the Hugging Face cache, fetched only where missing, all checked."""
    require_hub()
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    notes = notes or (lambda message: None)
    base = endpoint_for(endpoint)
    cache = hub_cache_dir()
    if offline():
        found = _cached_snapshot(repo, revision, cache)
        if found is None:
            raise DownloadError(f"HF_HUB_OFFLINE is set and {repo} is not in the Hugging Face cache ({cache}); "
                                "unset HF_HUB_OFFLINE to download it")
        notes(f"HF_HUB_OFFLINE: using the cached {repo} snapshot {found.name[:12]}")
        return Snapshot(HUGGINGFACE, repo, found.name, found, 0, cache)

    import requests

    try:
        with hub_errors(repo, base, revision), _library_output(False):
            info = HfApi(endpoint=base).model_info(repo, revision=revision, files_metadata=True)
    except DownloadError as exc:
        if not isinstance(exc.__context__, (requests.ConnectionError, requests.Timeout)):
            raise
        found = _cached_snapshot(repo, revision, cache)
        if found is None:
            raise
        notes(f"{urllib.parse.urlsplit(base).netloc} is unreachable; using the cached {repo} snapshot {found.name[:12]}")
        return Snapshot(HUGGINGFACE, repo, found.name, found, 0, cache)

    files = select_checkpoint_files(repo, info.siblings)
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / info.sha
    missing = _missing_bytes(files, snapshot)
    check_free_space(cache, missing)
    total = sum(f.size or 0 for f in files)
    state = f"{format_bytes(missing)} to fetch" if missing else "already in the Hugging Face cache"
    notes(f"{HUGGINGFACE}: {repo} @ {info.sha[:12]}: {len(files)} files, {format_bytes(total)}, {state}")
    kwargs = dict(revision=info.sha, cache_dir=cache, endpoint=base)
    with hub_errors(repo, base, revision, transfer=True), _library_output(progress_bars):
        # By the requested revision (not the commit), so the library records refs/<revision> for
        # later offline use; the commit it resolves must be the one listed.
        path = Path(snapshot_download(repo, revision=revision, cache_dir=cache, endpoint=base,
                                      allow_patterns=[f.path for f in files]))
        if path.name != info.sha:
            raise DownloadError(f"{repo} changed on the hub during the download (now {path.name[:12]}); "
                                "run the command again")
        for remote in files:
            problem = file_mismatch(path / remote.path, remote)
            if problem is None:
                continue
            notes(f"{remote.path}: checksum mismatch ({problem}); deleted it, fetching it again")
            _drop_cached_file(path, remote.path)
            hf_hub_download(repo, remote.path, force_download=True, **kwargs)
            problem = file_mismatch(path / remote.path, remote)
            if problem is not None:
                _drop_cached_file(path, remote.path)
                raise ChecksumError(f"{remote.path} of {repo} failed its checksum twice ({problem}); the server or "
                                    "a proxy is corrupting it: try another network or mirror (HF_ENDPOINT)")
    return Snapshot(HUGGINGFACE, repo, info.sha, path, missing, cache)


def remove_snapshot(snapshot: Snapshot) -> None:
    """Delete this revision from the Hugging Face cache (blobs other revisions use are kept)."""
    from huggingface_hub import scan_cache_dir

    try:
        info = scan_cache_dir(snapshot.cache_dir)
        strategy = info.delete_revisions(snapshot.revision)
        strategy.execute()
    except Exception:  # the cache scanner raises its own types on oddities; the bundle is fine anyway
        shutil.rmtree(snapshot.path, ignore_errors=True)
