"""HTTP downloads of model checkpoints from Hugging Face and ModelScope, standard library only.

- `list_huggingface_files` / `list_modelscope_files` ask a hub for a repository's files with their
  size and checksum (HF: ``/api/models/{repo}/revision/{rev}?blobs=true``; LFS files carry a sha256,
  small files a git blob id; ModelScope: ``/api/v1/models/{repo}/repo/files``, every file a Sha256).
- `download_file` fetches one file into ``<dest>.part`` with HTTP Range, so an interrupted run (or a
  retry after a dropped connection) continues where it stopped; the file is renamed into place only
  after its size and checksum match. A mismatch deletes the bad bytes and fetches the file once more.
- Transient failures (connection errors, timeouts, 408/429/5xx) are retried with exponential back-off.
  Errors a user can act on are `DownloadError` (a `QasrError`) with one line saying what to do.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, TextIO

from qasr import __version__
from qasr.errors import QasrError

HUGGINGFACE = "huggingface"
MODELSCOPE = "modelscope"
SOURCES = (HUGGINGFACE, MODELSCOPE)

DEFAULT_ENDPOINTS = {HUGGINGFACE: "https://huggingface.co", MODELSCOPE: "https://www.modelscope.cn"}
DEFAULT_REVISIONS = {HUGGINGFACE: "main", MODELSCOPE: "master"}

USER_AGENT = f"qasr/{__version__} (+urllib)"
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class DownloadError(QasrError):
    """A download failed; the message says why and what to do."""

    # Worth trying the other hub (network trouble, missing repo, bad bytes) — unlike a full disk.
    try_other_source = True


class HttpStatusError(DownloadError):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class ChecksumError(DownloadError):
    pass


class DiskFullError(DownloadError):
    try_other_source = False


class _Transient(Exception):
    """Internal: a failure worth retrying (after back-off, resuming from the .part file)."""


@dataclass(frozen=True)
class DownloadOptions:
    timeout_s: float = 30.0  # per socket operation (connect, each read)
    retries: int = 4  # extra attempts after a transient failure
    backoff_s: float = 1.0  # first pause; doubles each retry
    backoff_max_s: float = 30.0
    chunk_bytes: int = 1 << 20
    headers: Mapping[str, str] = field(default_factory=dict)  # e.g. Authorization for HF_TOKEN


@dataclass(frozen=True)
class RemoteFile:
    path: str  # path inside the repository
    url: str
    size: int | None = None
    sha256: str | None = None
    git_sha1: str | None = None  # git blob id (HF non-LFS files): sha1 of b"blob <size>\0" + content


@dataclass(frozen=True)
class RepoListing:
    source: str
    repo: str
    revision: str  # commit hash when the hub reports one, else the requested revision
    files: list[RemoteFile]


# ------------------------------------------------------------------ endpoints and auth

def endpoint_for(source: str, override: str | None = None) -> str:
    """--endpoint, else HF_ENDPOINT / MODELSCOPE_ENDPOINT (or MODELSCOPE_DOMAIN), else the public hub."""
    if override:
        return override.rstrip("/")
    if source == HUGGINGFACE:
        value = os.environ.get("HF_ENDPOINT", "")
    else:
        value = os.environ.get("MODELSCOPE_ENDPOINT", "")
        domain = os.environ.get("MODELSCOPE_DOMAIN", "").strip()
        if not value and domain:
            value = domain if "://" in domain else f"https://{domain}"
    return (value or DEFAULT_ENDPOINTS[source]).rstrip("/")


def auth_headers(source: str) -> dict[str, str]:
    if source == HUGGINGFACE:
        token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
        if token:
            return {"Authorization": f"Bearer {token.strip()}"}
    return {}


class _StripAuthOnRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects (the hubs send files to a CDN) without handing the token to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 (urllib signature)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_StripAuthOnRedirect)


# ------------------------------------------------------------------ requests

def _describe_network_error(url: str, exc: BaseException) -> str:
    host = urllib.parse.urlsplit(url).netloc or url
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve {host} ({reason.strerror}); check your network or DNS, or use another --source"
    if isinstance(reason, ConnectionRefusedError):
        return f"{host} refused the connection; check the endpoint (HF_ENDPOINT/--endpoint) or use another --source"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"{host} did not answer in time; check your network or proxy, or use another --source"
    return f"network error talking to {host} ({reason}); check your network or proxy, or use another --source"


def _status_error(url: str, status: int, source_hint: str = "") -> HttpStatusError:
    where = urllib.parse.urlsplit(url)
    target = f"{where.netloc}{where.path}"
    if status in (401, 403):
        hint = "the repository is private, gated or does not exist"
        if source_hint == HUGGINGFACE:
            hint += "; check the name or set HF_TOKEN to a token that may read it"
        return HttpStatusError(f"HTTP {status} (access denied) for {target}: {hint}", status)
    if status == 404:
        return HttpStatusError(f"HTTP 404 (not found) for {target}: check the model name, --repo and --revision", status)
    return HttpStatusError(f"HTTP {status} from {target}; try again later or use another --source", status)


def _open(url: str, headers: Mapping[str, str], timeout: float, source_hint: str = ""):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    try:
        return _OPENER.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in TRANSIENT_STATUS:
            raise _Transient(f"HTTP {exc.code} from {urllib.parse.urlsplit(url).netloc}") from exc
        if exc.code == 416:
            raise  # handled by the caller (the .part file is already complete or larger)
        raise _status_error(url, exc.code, source_hint) from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):  # retrying will not fix a certificate problem
            host = urllib.parse.urlsplit(url).netloc
            raise DownloadError(f"TLS error talking to {host} ({exc.reason}); check the system clock, "
                                "CA certificates (ca-certificates package) or your proxy") from exc
        raise _Transient(_describe_network_error(url, exc)) from exc
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets while reading headers
        raise _Transient(_describe_network_error(url, exc)) from exc


def _with_retries(action: Callable[[], Any], options: DownloadOptions, what: str,
                  on_retry: Callable[[str, float], None] | None = None) -> Any:
    delay = options.backoff_s
    for attempt in range(options.retries + 1):
        try:
            return action()
        except _Transient as exc:
            if attempt == options.retries:
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise DownloadError(f"{what} failed{tries}: {exc}") from exc
            if on_retry is not None:
                on_retry(str(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, options.backoff_max_s)
    raise AssertionError("unreachable")


def fetch_json(url: str, options: DownloadOptions, source_hint: str = "") -> Any:
    def once() -> Any:
        with _open(url, options.headers, options.timeout_s, source_hint) as resp:
            try:
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise _Transient(_describe_network_error(url, exc)) from exc
        try:
            return json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DownloadError(f"{url} did not return JSON; check the endpoint (is it a {source_hint or 'hub'} API?)") from exc

    return _with_retries(once, options, f"request to {urllib.parse.urlsplit(url).netloc}")


# ------------------------------------------------------------------ hub listings

def list_huggingface_files(repo: str, revision: str, endpoint: str, options: DownloadOptions) -> RepoListing:
    quoted_repo = urllib.parse.quote(repo, safe="/")
    url = f"{endpoint}/api/models/{quoted_repo}/revision/{urllib.parse.quote(revision, safe='')}?blobs=true"
    data = fetch_json(url, options, HUGGINGFACE)
    if not isinstance(data, dict) or not isinstance(data.get("siblings"), list):
        raise DownloadError(f"{endpoint} returned no file list for {repo}; check HF_ENDPOINT/--endpoint")
    commit = str(data.get("sha") or revision)
    files = []
    for sib in data["siblings"]:
        path = sib.get("rfilename")
        if not isinstance(path, str):
            continue
        lfs = sib.get("lfs") or {}
        files.append(RemoteFile(
            path=path,
            url=f"{endpoint}/{quoted_repo}/resolve/{urllib.parse.quote(commit, safe='')}/{urllib.parse.quote(path)}",
            size=_int_or_none(lfs.get("size", sib.get("size"))),
            sha256=lfs.get("sha256") or None,
            git_sha1=None if lfs else (sib.get("blobId") or None),
        ))
    return RepoListing(HUGGINGFACE, repo, commit, files)


def list_modelscope_files(repo: str, revision: str, endpoint: str, options: DownloadOptions) -> RepoListing:
    quoted_repo = urllib.parse.quote(repo, safe="/")
    query = urllib.parse.urlencode({"Revision": revision, "Recursive": "true"})
    data = fetch_json(f"{endpoint}/api/v1/models/{quoted_repo}/repo/files?{query}", options, MODELSCOPE)
    if not isinstance(data, dict):
        raise DownloadError(f"{endpoint} returned no file list for {repo}; check MODELSCOPE_ENDPOINT/--endpoint")
    code = data.get("Code", 200)
    files_json = (data.get("Data") or {}).get("Files") if isinstance(data.get("Data"), dict) else None
    if code != 200 or not isinstance(files_json, list):
        message = data.get("Message") or "no file list"
        raise HttpStatusError(f"ModelScope has no model {repo} at revision {revision} ({message}); "
                              "check the model name, --repo and --revision", 404)
    files = []
    for item in files_json:
        if item.get("Type", "blob") != "blob":
            continue
        path = item.get("Path") or item.get("Name")
        if not isinstance(path, str):
            continue
        query = urllib.parse.urlencode({"Revision": item.get("Revision") or revision, "FilePath": path})
        files.append(RemoteFile(
            path=path,
            url=f"{endpoint}/api/v1/models/{quoted_repo}/repo?{query}",
            size=_int_or_none(item.get("Size")),
            sha256=(item.get("Sha256") or None),
        ))
    return RepoListing(MODELSCOPE, repo, revision, files)


def list_files(source: str, repo: str, revision: str | None, endpoint: str, options: DownloadOptions) -> RepoListing:
    revision = revision or DEFAULT_REVISIONS[source]
    lister = list_huggingface_files if source == HUGGINGFACE else list_modelscope_files
    return lister(repo, revision, endpoint, options)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# ------------------------------------------------------------------ progress

class TransferProgress(Protocol):
    def start(self, name: str, total: int | None, done: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def finish(self) -> None: ...
    def note(self, message: str) -> None: ...


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _format_eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class TerminalProgress:
    """Bytes, rate and ETA: a self-overwriting line on a TTY, a plain line every few seconds elsewhere."""

    def __init__(self, stream: TextIO | None = None, interval_s: float | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval_s = interval_s if interval_s is not None else (0.2 if self.tty else 5.0)
        self.name, self.total, self.done, self.resumed_at = "", None, 0, 0
        self.started = self.last_shown = 0.0
        self.line_open = False  # a TTY progress line without its newline yet

    def start(self, name: str, total: int | None, done: int) -> None:
        self.name, self.total, self.done, self.resumed_at = name, total, done, done
        self.started = self.last_shown = time.monotonic()
        resumed = f", resuming at {format_bytes(done)}" if done else ""
        if not self.tty:
            size = format_bytes(total) if total is not None else "unknown size"
            self._write(f"downloading {name} ({size}{resumed})\n")

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        now = time.monotonic()
        if now - self.last_shown >= self.interval_s:
            self.last_shown = now
            self._show(now, final=False)

    def finish(self) -> None:
        self._show(time.monotonic(), final=True)

    def note(self, message: str) -> None:
        self._write(("\n" if self.line_open else "") + message + "\n")
        self.line_open = False

    def _show(self, now: float, final: bool) -> None:
        elapsed = max(now - self.started, 1e-6)
        rate = (self.done - self.resumed_at) / elapsed
        parts = [self.name, format_bytes(self.done) + (f"/{format_bytes(self.total)}" if self.total else "")]
        if self.total:
            parts.insert(1, f"{100 * self.done / self.total:5.1f}%")
        parts.append(f"{format_bytes(rate)}/s")
        if not final and self.total and rate > 0:
            parts.append(f"ETA {_format_eta((self.total - self.done) / rate)}")
        line = "  ".join(parts)
        if self.tty:
            self._write(f"\r{line:<79}" + ("\n" if final else ""))
            self.line_open = not final
        else:
            self._write(("done " if final else "") + line + "\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class SilentProgress:
    def start(self, name: str, total: int | None, done: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def finish(self) -> None: ...
    def note(self, message: str) -> None: ...


# ------------------------------------------------------------------ integrity

class _Digests:
    def __init__(self, remote: RemoteFile):
        self.sha256 = hashlib.sha256() if remote.sha256 else None
        self.git = None
        if remote.git_sha1 and remote.size is not None:
            self.git = hashlib.sha1(usedforsecurity=False)
            self.git.update(b"blob %d\0" % remote.size)

    def update(self, block: bytes) -> None:
        if self.sha256 is not None:
            self.sha256.update(block)
        if self.git is not None:
            self.git.update(block)

    def feed_file(self, path: Path, chunk: int) -> None:
        if self.sha256 is None and self.git is None:
            return
        with open(path, "rb") as fh:
            while block := fh.read(chunk):
                self.update(block)


def _size_mismatch(path: Path, remote: RemoteFile) -> str | None:
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"{size} bytes, expected {remote.size}"
    return None


def file_mismatch(path: Path, remote: RemoteFile, chunk: int = 1 << 20) -> str | None:
    """None when the file has the remote's size and checksum, else what differs."""
    if (problem := _size_mismatch(path, remote)) is not None:
        return problem
    digests = _Digests(remote)
    digests.feed_file(path, chunk)
    return _digest_mismatch(digests, remote)


def _digest_mismatch(digests: _Digests, remote: RemoteFile) -> str | None:
    if digests.sha256 is not None and digests.sha256.hexdigest() != remote.sha256.lower():
        return f"sha256 {digests.sha256.hexdigest()[:16]}…, expected {remote.sha256[:16]}…"
    if digests.git is not None and digests.git.hexdigest() != remote.git_sha1.lower():
        return f"git blob id {digests.git.hexdigest()[:16]}…, expected {remote.git_sha1[:16]}…"
    return None


# ------------------------------------------------------------------ download

def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download_file(remote: RemoteFile, dest: Path, options: DownloadOptions = DownloadOptions(),
                  progress: TransferProgress | None = None) -> Path:
    """Fetch `remote` to `dest` (resuming `dest.part`), check size and checksum, rename into place.

    A file already at `dest` that matches is kept; one that does not is fetched again. A checksum
    mismatch after a transfer deletes the bytes and fetches once more before giving up.
    """
    progress = progress or SilentProgress()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if file_mismatch(dest, remote, options.chunk_bytes) is None:
            return dest
        progress.note(f"{dest.name} differs from the hub's copy; fetching it again")
        dest.unlink()
    part = part_path(dest)
    for attempt in (1, 2):
        digests = _with_retries(
            lambda: _transfer(remote, part, options, progress), options, f"download of {remote.path}",
            on_retry=lambda why, delay: progress.note(f"{why}; retrying in {delay:.0f} s"),
        )
        if digests is None:
            problem = file_mismatch(part, remote, options.chunk_bytes)
        else:
            problem = _size_mismatch(part, remote) or _digest_mismatch(digests, remote)
        if problem is None:
            part.replace(dest)
            return dest
        part.unlink(missing_ok=True)
        if attempt == 1:
            progress.note(f"{remote.path}: checksum mismatch ({problem}); deleted it, fetching it again")
    raise ChecksumError(
        f"{remote.path} from {urllib.parse.urlsplit(remote.url).netloc} failed its checksum twice ({problem}); "
        "the server or a proxy is corrupting it: try another --source or network"
    )


def _transfer(remote: RemoteFile, part: Path, options: DownloadOptions, progress: TransferProgress) -> _Digests | None:
    """One attempt: append to `part` from its current size. Returns the running digests of the whole file."""
    offset = part.stat().st_size if part.is_file() else 0
    if remote.size is not None and offset > remote.size:
        part.unlink()
        offset = 0
    if remote.size is not None and offset == remote.size:
        return None  # complete from an earlier run; the caller checks the whole file
    headers = dict(options.headers)
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = _open(remote.url, headers, options.timeout_s)
    except urllib.error.HTTPError:  # 416: the server says our .part already holds everything
        return None
    with resp:
        if offset and resp.status != 206:
            offset = 0  # the server ignored Range: start over
        elif offset and not _content_range_starts_at(resp.headers.get("Content-Range"), offset):
            raise _Transient(f"{remote.path}: the server answered a different byte range")
        digests = _Digests(remote)
        if offset:
            digests.feed_file(part, options.chunk_bytes)
        expected = _int_or_none(resp.headers.get("Content-Length"))
        progress.start(remote.path, remote.size if remote.size is not None else
                       (offset + expected if expected is not None else None), offset)
        received = 0
        try:
            with open(part, "ab" if offset else "wb") as out:
                while True:
                    try:
                        block = resp.read(options.chunk_bytes)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Transient(f"{remote.path}: connection lost after {format_bytes(offset + received)} "
                                         f"({exc.__class__.__name__})") from exc
                    if not block:
                        break
                    out.write(block)
                    digests.update(block)
                    received += len(block)
                    progress.advance(len(block))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFullError(
                    f"disk full while writing {part}: free some space in {part.parent} and run the command "
                    "again (the download resumes)") from exc
            raise
        if expected is not None and received < expected:
            raise _Transient(f"{remote.path}: connection closed after {format_bytes(offset + received)}")
        progress.finish()
    return digests


def _content_range_starts_at(header: str | None, offset: int) -> bool:
    # "bytes 100-999/1000"
    if not header or not header.startswith("bytes "):
        return False
    try:
        return int(header[6:].split("-", 1)[0]) == offset
    except ValueError:
        return False
