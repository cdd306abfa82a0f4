"""Downloads against a local hub on 127.0.0.1 that speaks the Hugging Face and ModelScope file APIs.

`FakeHub` (also used by test_model_store.py) serves repositories from memory with HTTP Range support,
redirects LFS files to a "CDN" path like the real hub, and can drop a connection mid-file, corrupt a
transfer, require a token, or answer with an error status.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from qasr.daemon.models import download as md

COMMIT = "3f2b9c0d1e4a5b6c7d8e9f00112233445566778a"


@dataclass
class Logged:
    method: str
    path: str
    range: str | None
    auth: str | None
    host: str | None


@dataclass
class FakeHub:
    """Serves {repo: {path: bytes}} at /api/models/... (HF) and /api/v1/models/... (ModelScope)."""

    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # repo -> token it needs (HF)
    drop_after: dict[str, list[int]] = field(default_factory=dict)  # path -> bytes sent before each drop
    corrupt: dict[str, int] = field(default_factory=dict)  # path -> how many transfers to corrupt
    status: int | None = None  # answer every request with this status
    advertised_size: dict[str, int] = field(default_factory=dict)  # path -> size the listing claims
    cdn_host: str = "127.0.0.1"  # host the HF resolve endpoint redirects LFS files to
    log: list[Logged] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                hub.log.append(Logged("GET", self.path, self.headers.get("Range"),
                                      self.headers.get("Authorization"), self.headers.get("Host")))
                hub.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------- routing

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        if self.status is not None:
            return self.send_json(h, {"error": "down"}, self.status)
        url = urllib.parse.urlsplit(h.path)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        query = dict(urllib.parse.parse_qsl(url.query))
        if parts[:2] == ["api", "models"] and "revision" in parts:  # HF revision API
            i = parts.index("revision")
            return self.hf_listing(h, "/".join(parts[2:i]))
        if parts[:3] == ["api", "v1", "models"] and parts[-2:] == ["repo", "files"]:
            return self.ms_listing(h, "/".join(parts[3:-2]))
        if parts[:3] == ["api", "v1", "models"] and parts[-1] == "repo":
            return self.send_file(h, "/".join(parts[3:-1]), query.get("FilePath", ""))
        if "resolve" in parts:
            i = parts.index("resolve")
            repo, path = "/".join(parts[:i]), "/".join(parts[i + 2:])
            if not self.authorized(h, repo):
                return self.send_json(h, {"error": "Invalid credentials"}, 401)
            if path.endswith(".safetensors") and repo in self.repos:  # LFS: redirect to the "CDN"
                host, port = self.cdn_host, self.server.server_address[1]
                location = f"http://{host}:{port}/cdn/{urllib.parse.quote(repo)}/{urllib.parse.quote(path)}"
                h.send_response(302)
                h.send_header("Location", location)
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            return self.send_file(h, repo, path)
        if parts[:1] == ["cdn"]:
            return self.send_file(h, "/".join(parts[1:-1]), parts[-1])
        return self.send_json(h, {"error": "Not Found"}, 404)

    def authorized(self, h: BaseHTTPRequestHandler, repo: str) -> bool:
        need = self.tokens.get(repo)
        return need is None or h.headers.get("Authorization") == f"Bearer {need}"

    def hf_listing(self, h: BaseHTTPRequestHandler, repo: str) -> None:
        if repo not in self.repos:
            return self.send_json(h, {"error": "Repository not found"}, 404)
        if not self.authorized(h, repo):
            return self.send_json(h, {"error": "Invalid credentials"}, 401)
        siblings = []
        for path, data in self.repos[repo].items():
            size = self.advertised_size.get(path, len(data))
            sib = {"rfilename": path, "size": size}
            if path.endswith(".safetensors"):
                sib["blobId"] = hashlib.sha1(data).hexdigest()
                sib["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": size, "pointerSize": 134}
            else:
                sib["blobId"] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            siblings.append(sib)
        self.send_json(h, {"id": repo, "sha": COMMIT, "siblings": siblings})

    def ms_listing(self, h: BaseHTTPRequestHandler, repo: str) -> None:
        if repo not in self.repos:
            return self.send_json(h, {"Code": 10010205, "Message": "model not found", "Success": False}, 404)
        files = [{"Name": "assets", "Path": "assets", "Type": "tree", "Size": 0, "Sha256": ""}]
        for path, data in self.repos[repo].items():
            files.append({"Name": path.rsplit("/", 1)[-1], "Path": path, "Type": "blob", "Revision": COMMIT,
                          "Size": self.advertised_size.get(path, len(data)),
                          "Sha256": hashlib.sha256(data).hexdigest()})
        self.send_json(h, {"Code": 200, "Data": {"Files": files}, "Message": "success", "Success": True})

    # ------------------------------------------------------------- responses

    def send_json(self, h: BaseHTTPRequestHandler, obj, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def send_file(self, h: BaseHTTPRequestHandler, repo: str, path: str) -> None:
        data = self.repos.get(repo, {}).get(path)
        if data is None:
            return self.send_json(h, {"error": "Entry not found"}, 404)
        if self.corrupt.get(path, 0) > 0:
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
        body = data[start:]
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        h.end_headers()
        drops = self.drop_after.get(path)
        if drops:
            h.wfile.write(body[:drops.pop(0)])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)  # the transfer breaks off mid-file
            return
        h.wfile.write(body)


def sample_repo(size: int = 300_000) -> dict[str, bytes]:
    weights = hashlib.sha256(b"seed").digest() * (size // 32)
    return {
        "config.json": json.dumps({"architectures": ["Qwen3ASRForConditionalGeneration"]}).encode(),
        "vocab.json": json.dumps({"a": 0, "b": 1}).encode(),
        "model.safetensors": weights,
        "README.md": b"# readme\n",
    }


@pytest.fixture
def hub():
    hub = FakeHub(repos={"Qwen/Qwen3-ASR-0.6B": sample_repo()}).start()
    yield hub
    hub.stop()


FAST = md.DownloadOptions(timeout_s=5, retries=0, backoff_s=0.01, chunk_bytes=16_384)
REPO = "Qwen/Qwen3-ASR-0.6B"


def _remote(hub: FakeHub, path: str, source: str = md.HUGGINGFACE) -> md.RemoteFile:
    listing = md.list_files(source, REPO, None, hub.url, FAST)
    return next(f for f in listing.files if f.path == path)


def test_huggingface_listing_gives_sizes_and_checksums(hub):
    listing = md.list_huggingface_files(REPO, "main", hub.url, FAST)
    assert listing.revision == COMMIT
    by_path = {f.path: f for f in listing.files}
    weights = hub.repos[REPO]["model.safetensors"]
    assert by_path["model.safetensors"].sha256 == hashlib.sha256(weights).hexdigest()
    assert by_path["model.safetensors"].size == len(weights)
    assert by_path["config.json"].sha256 is None and by_path["config.json"].git_sha1
    assert f"/resolve/{COMMIT}/" in by_path["config.json"].url  # pinned to the listed commit


def test_download_checks_git_blob_id_and_lfs_sha256(hub, tmp_path):
    for name in ("config.json", "model.safetensors"):
        out = md.download_file(_remote(hub, name), tmp_path / name, FAST)
        assert out.read_bytes() == hub.repos[REPO][name]
        assert not md.part_path(out).exists()


def test_interrupted_download_resumes_with_range(hub, tmp_path):
    data = hub.repos[REPO]["model.safetensors"]
    hub.drop_after["model.safetensors"] = [100_000]
    remote = _remote(hub, "model.safetensors")
    dest = tmp_path / "model.safetensors"
    with pytest.raises(md.DownloadError, match="connection"):
        md.download_file(remote, dest, FAST)
    part = md.part_path(dest)
    assert not dest.exists() and part.stat().st_size == 100_000

    md.download_file(remote, dest, FAST)  # a second run continues
    resumed = [e for e in hub.log if "/cdn/" in e.path][-1]
    assert resumed.range == "bytes=100000-"
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert not part.exists()


def test_dropped_connection_is_retried_within_one_run(hub, tmp_path):
    hub.drop_after["model.safetensors"] = [50_000, 120_000]
    dest = tmp_path / "w.safetensors"
    opts = md.DownloadOptions(timeout_s=5, retries=3, backoff_s=0.01, chunk_bytes=16_384)
    md.download_file(_remote(hub, "model.safetensors"), dest, opts)
    ranges = [e.range for e in hub.log if "/cdn/" in e.path]
    assert ranges == [None, "bytes=50000-", "bytes=170000-"]
    assert dest.read_bytes() == hub.repos[REPO]["model.safetensors"]


def test_corrupt_transfer_is_deleted_and_fetched_again(hub, tmp_path):
    hub.corrupt["model.safetensors"] = 1
    notes = io.StringIO()
    dest = md.download_file(_remote(hub, "model.safetensors"), tmp_path / "m.safetensors", FAST,
                            md.TerminalProgress(notes))
    assert dest.read_bytes() == hub.repos[REPO]["model.safetensors"]
    assert len([e for e in hub.log if "/cdn/" in e.path]) == 2
    assert "checksum mismatch" in notes.getvalue()


def test_corruption_that_persists_is_an_error(hub, tmp_path):
    hub.corrupt["config.json"] = 5
    dest = tmp_path / "config.json"
    with pytest.raises(md.ChecksumError, match="config.json .*checksum twice"):
        md.download_file(_remote(hub, "config.json"), dest, FAST)
    assert not dest.exists() and not md.part_path(dest).exists()


def test_altered_local_file_is_fetched_again(hub, tmp_path):
    remote = _remote(hub, "vocab.json")
    dest = md.download_file(remote, tmp_path / "vocab.json", FAST)
    dest.write_bytes(b'{"a": 9, "b": 1}')  # same size class, different content
    before = len(hub.log)
    md.download_file(remote, dest, FAST)
    assert dest.read_bytes() == hub.repos[REPO]["vocab.json"]
    assert len(hub.log) == before + 1
    md.download_file(remote, dest, FAST)  # intact now: nothing fetched
    assert len(hub.log) == before + 1


def test_modelscope_listing_and_download(hub, tmp_path):
    listing = md.list_modelscope_files(REPO, "master", hub.url, FAST)
    assert {f.path for f in listing.files} == set(hub.repos[REPO])  # folders ("tree") left out
    remote = next(f for f in listing.files if f.path == "model.safetensors")
    assert remote.sha256 == hashlib.sha256(hub.repos[REPO]["model.safetensors"]).hexdigest()
    hub.drop_after["model.safetensors"] = [70_000]
    dest = tmp_path / "m.safetensors"
    with pytest.raises(md.DownloadError):
        md.download_file(remote, dest, FAST)
    md.download_file(remote, dest, FAST)
    assert [e.range for e in hub.log if "FilePath=" in e.path] == [None, "bytes=70000-"]
    assert dest.read_bytes() == hub.repos[REPO]["model.safetensors"]


def test_missing_repo_is_a_clear_404(hub):
    with pytest.raises(md.HttpStatusError, match="HTTP 404 .*check the model name") as err:
        md.list_huggingface_files("Qwen/nope", "main", hub.url, FAST)
    assert err.value.status == 404 and "\n" not in str(err.value)
    with pytest.raises(md.HttpStatusError, match="HTTP 404 .*/api/v1/models/Qwen/nope/repo/files"):
        md.list_modelscope_files("Qwen/nope", "master", hub.url, FAST)


def test_hf_token_is_sent_and_not_leaked_to_another_host(hub, tmp_path, monkeypatch):
    hub.tokens[REPO] = "secret-token"
    hub.cdn_host = "localhost"  # LFS redirect goes to a different host name
    with pytest.raises(md.HttpStatusError, match="HTTP 401 .*set HF_TOKEN"):
        md.list_huggingface_files(REPO, "main", hub.url, FAST)
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    opts = md.DownloadOptions(timeout_s=5, retries=0, headers=md.auth_headers(md.HUGGINGFACE))
    listing = md.list_huggingface_files(REPO, "main", hub.url, opts)
    remote = next(f for f in listing.files if f.path == "model.safetensors")
    md.download_file(remote, tmp_path / "m.safetensors", opts)
    resolve = [e for e in hub.log if "/resolve/" in e.path][-1]
    cdn = [e for e in hub.log if "/cdn/" in e.path][-1]
    assert resolve.auth == "Bearer secret-token"
    assert cdn.host.startswith("localhost") and cdn.auth is None


def test_unreachable_server_and_server_errors(hub):
    dead = FakeHub().start()
    port = dead.server.server_address[1]
    dead.stop()  # nothing listens on this port now
    with pytest.raises(md.DownloadError, match="refused the connection"):
        md.fetch_json(f"http://127.0.0.1:{port}/api/models/x/revision/main", FAST)

    flaky = FakeHub(status=503).start()
    try:
        opts = md.DownloadOptions(timeout_s=5, retries=2, backoff_s=0.01)
        with pytest.raises(md.DownloadError, match="failed after 3 attempts: HTTP 503"):
            md.list_huggingface_files(REPO, "main", flaky.url, opts)
        assert len(flaky.log) == 3
    finally:
        flaky.stop()


def test_endpoint_variables(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    monkeypatch.delenv("MODELSCOPE_ENDPOINT", raising=False)
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "mirror.example")
    assert md.endpoint_for(md.HUGGINGFACE) == "http://127.0.0.1:9"
    assert md.endpoint_for(md.MODELSCOPE) == "https://mirror.example"
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:10")
    assert md.endpoint_for(md.MODELSCOPE) == "http://127.0.0.1:10"
    assert md.endpoint_for(md.HUGGINGFACE, "http://x:1/") == "http://x:1"


def test_progress_plain_lines_when_not_a_tty(hub, tmp_path):
    out = io.StringIO()
    progress = md.TerminalProgress(out, interval_s=0.0)
    md.download_file(_remote(hub, "model.safetensors"), tmp_path / "m.safetensors", FAST, progress)
    lines = out.getvalue().splitlines()
    size = len(hub.repos[REPO]["model.safetensors"])
    assert lines[0] == f"downloading model.safetensors ({md.format_bytes(size)})"
    assert "\r" not in out.getvalue()
    assert any("ETA" in line and "/s" in line for line in lines[1:-1])
    assert lines[-1].startswith("done model.safetensors  100.0%")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_overwrites_one_line_on_a_tty(hub, tmp_path):
    out = _Tty()
    progress = md.TerminalProgress(out, interval_s=0.0)
    hub.drop_after["model.safetensors"] = [64_000]
    opts = md.DownloadOptions(timeout_s=5, retries=1, backoff_s=0.01, chunk_bytes=16_384)
    md.download_file(_remote(hub, "model.safetensors"), tmp_path / "m.safetensors", opts, progress)
    text = out.getvalue()
    assert text.startswith("\rmodel.safetensors")
    assert "ETA " in text and "\ndownloading" not in text
    # The retry note ends the open progress line first, then the resumed transfer overwrites again.
    assert "\nmodel.safetensors: connection closed after 64.0 KB; retrying in 0 s\n\r" in text
    assert text.endswith("\n") and text.count("\n") == 3  # note: before and after; the final line


def test_certificate_error_is_not_retried(hub, tmp_path):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    hub.server.socket = context.wrap_socket(hub.server.socket, server_side=True)
    url = hub.url.replace("http://", "https://")
    opts = md.DownloadOptions(timeout_s=5, retries=3, backoff_s=5.0)  # a retry would take seconds
    with pytest.raises(md.DownloadError, match="TLS error talking to 127.0.0.1.*CA certificates") as err:
        md.list_huggingface_files(REPO, "main", url, opts)
    assert "attempts" not in str(err.value)
