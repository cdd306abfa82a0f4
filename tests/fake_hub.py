"""A local Hugging Face hub on 127.0.0.1 speaking what `huggingface_hub` asks (tests point HF_ENDPOINT here).

- `GET /api/models/{repo}[/revision/{rev}]` (`model_info`, with `?blobs=true` for sizes, LFS sha256 and
  git blob ids): `sha` and `siblings`. Errors carry the hub's `X-Error-Code` header (RepoNotFound,
  RevisionNotFound, GatedRepo), from which the library picks its exception class.
- `HEAD|GET /{repo}/resolve/{rev}/{path}`: `X-Repo-Commit`, `ETag` (git blob id) and `Content-Length`;
  LFS files (*.safetensors) answer 302 to a "CDN" path with `X-Linked-Etag` (sha256) and `X-Linked-Size`,
  as the real hub does.
- `GET /cdn/...`: the bytes, with HTTP Range (resume); a transfer can be cut off mid-file or corrupted.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "3f2b9c0d1e4a5b6c7d8e9f00112233445566778a"


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    auth: str | None
    host: str | None


_DIGESTS: dict[tuple[str, int], tuple[bytes, str]] = {}  # holds the buffer, so its id is never reused


def _digest(kind: str, data: bytes) -> str:
    """sha256 / sha1 / git blob id, computed once per buffer (benchmarks serve GB-sized weights)."""
    key = (kind, id(data))
    if key not in _DIGESTS:
        if kind == "git":
            h = hashlib.sha1(b"blob %d\0" % len(data))
            h.update(data)
        else:
            h = hashlib.new(kind, data)
        _DIGESTS[key] = (data, h.hexdigest())
    return _DIGESTS[key][1]


def git_blob_id(data: bytes) -> str:
    return _digest("git", data)


@dataclass
class FakeHub:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # private repo -> token it needs
    gated: dict[str, str] = field(default_factory=dict)  # gated repo -> token whose owner accepted the terms
    drop_after: dict[str, list[int]] = field(default_factory=dict)  # path -> bytes sent before each cut
    stall_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before going silent (once)
    stalled: threading.Event = field(default_factory=threading.Event)  # set when a transfer stalls
    corrupt: dict[str, int] = field(default_factory=dict)  # path -> how many transfers to corrupt
    status: int | None = None  # answer every request with this status
    advertised_size: dict[str, int] = field(default_factory=dict)  # path -> size the listing claims
    cdn_host: str = "127.0.0.1"  # host the resolve endpoint redirects LFS files to
    log: list[Logged] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def files_fetched(self) -> list[str]:
        """Paths whose bytes were requested (GET of a regular file or of the CDN copy)."""
        return [e.path.rsplit("/", 1)[-1] for e in self.log
                if e.method == "GET" and ("/cdn/" in e.path or ("/resolve/" in e.path and not e.path.endswith(".safetensors")))]

    def start(self) -> "FakeHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _handle(self, method: str) -> None:
                hub.log.append(Logged(method, self.path, self.headers.get("Range"),
                                      self.headers.get("Authorization"), self.headers.get("Host")))
                hub.handle(self, method)

            def do_GET(self):
                self._handle("GET")

            def do_HEAD(self):
                self._handle("HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------- routing

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        if self.status is not None:
            return self.send_json(h, method, {"error": "down"}, self.status)
        url = urllib.parse.urlsplit(h.path)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        if parts[:2] == ["api", "models"]:  # /api/models/{repo}[/revision/{rev}]
            i = parts.index("revision") if "revision" in parts else len(parts)
            return self.model_info(h, method, "/".join(parts[2:i]), "/".join(parts[i + 1:]) or "main")
        if "resolve" in parts:
            i = parts.index("resolve")
            return self.resolve(h, method, "/".join(parts[:i]), parts[i + 1], "/".join(parts[i + 2:]))
        if parts[:1] == ["cdn"]:
            return self.send_file(h, method, "/".join(parts[1:-1]), parts[-1])
        return self.send_json(h, method, {"error": "Not Found"}, 404)

    def access(self, h: BaseHTTPRequestHandler, method: str, repo: str, files: bool) -> bool:
        """False (after answering) when the request may not see the repo or its files."""
        auth = h.headers.get("Authorization")
        if repo not in self.repos or (repo in self.tokens and auth != f"Bearer {self.tokens[repo]}"):
            self.send_json(h, method, {"error": "Repository not found"}, 401 if repo in self.tokens else 404,
                           {"X-Error-Code": "RepoNotFound"})
            return False
        if files and repo in self.gated and auth != f"Bearer {self.gated[repo]}":
            self.send_json(h, method, {"error": "Access to model is restricted"}, 403,
                           {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"})
            return False
        return True

    def model_info(self, h: BaseHTTPRequestHandler, method: str, repo: str, revision: str) -> None:
        if not self.access(h, method, repo, files=False):
            return
        if revision not in ("main", COMMIT):
            return self.send_json(h, method, {"error": "Invalid rev id"}, 404, {"X-Error-Code": "RevisionNotFound"})
        siblings = []
        for path, data in self.repos[repo].items():
            size = self.advertised_size.get(path, len(data))
            sib = {"rfilename": path, "size": size, "blobId": git_blob_id(data)}
            if path.endswith(".safetensors"):
                sib["blobId"] = _digest("sha1", data)  # the pointer's blob, not the content's
                sib["lfs"] = {"sha256": _digest("sha256", data), "size": size, "pointerSize": 134}
            siblings.append(sib)
        self.send_json(h, method, {"id": repo, "modelId": repo, "sha": COMMIT, "private": repo in self.tokens,
                                   "siblings": siblings})

    def resolve(self, h: BaseHTTPRequestHandler, method: str, repo: str, revision: str, path: str) -> None:
        if not self.access(h, method, repo, files=True):
            return
        data = self.repos[repo].get(path)
        if data is None or revision not in ("main", COMMIT):
            return self.send_json(h, method, {"error": "Entry not found"}, 404,
                                  {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
        size = self.advertised_size.get(path, len(data))
        if path.endswith(".safetensors"):  # LFS: redirect to the "CDN"
            host, port = self.cdn_host, self.server.server_address[1]
            h.send_response(302)
            h.send_header("Location", f"http://{host}:{port}/cdn/{urllib.parse.quote(repo)}/{urllib.parse.quote(path)}")
            h.send_header("X-Repo-Commit", COMMIT)
            h.send_header("X-Linked-Etag", f'"{_digest("sha256", data)}"')
            h.send_header("X-Linked-Size", str(size))
            h.send_header("ETag", f'"{git_blob_id(data)}"')
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        self.send_file(h, method, repo, path, {"X-Repo-Commit": COMMIT, "ETag": f'"{git_blob_id(data)}"'})

    # ------------------------------------------------------------- responses

    def send_json(self, h: BaseHTTPRequestHandler, method: str, obj, status: int = 200,
                  headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(body)

    def send_file(self, h: BaseHTTPRequestHandler, method: str, repo: str, path: str,
                  headers: dict[str, str] | None = None) -> None:
        data = self.repos.get(repo, {}).get(path)
        if data is None:
            return self.send_json(h, method, {"error": "Entry not found"}, 404)
        if method == "GET" and self.corrupt.get(path, 0) > 0:
            self.corrupt[path] -= 1
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
            if start >= len(data):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(data)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            h.send_response(200)
        body = memoryview(data)[start:]
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        for key, value in (headers or {}).items():
            h.send_header(key, value)
        h.end_headers()
        if method == "HEAD":
            return
        if path in self.stall_after:  # send some bytes, then nothing until the client gives up
            h.wfile.write(body[:self.stall_after.pop(path)])
            h.wfile.flush()
            self.stalled.set()
            threading.Event().wait(30)
            h.close_connection = True
            return
        drops = self.drop_after.get(path)
        if drops:
            h.wfile.write(body[:drops.pop(0)])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)  # the transfer breaks off mid-file
            return
        h.wfile.write(body)
