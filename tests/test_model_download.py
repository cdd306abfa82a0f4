"""Checkpoint downloads through huggingface_hub against a local hub on 127.0.0.1 (tests/fake_hub.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from qasr.daemon.models import download as md
from tests.fake_hub import COMMIT, FakeHub

REPO = "Qwen/Qwen3-ASR-0.6B"


def sample_repo(size: int = 300_000) -> dict[str, bytes]:
    weights = hashlib.sha256(b"seed").digest() * (size // 32)
    return {
        "config.json": json.dumps({"architectures": ["Qwen3ASRForConditionalGeneration"]}).encode(),
        "vocab.json": json.dumps({"a": 0, "b": 1}).encode(),
        "model.safetensors": weights,
        "README.md": b"# readme\n",
        "assets/figure.png": b"\x89PNG not really",
    }


@pytest.fixture
def hub():
    hub = FakeHub(repos={REPO: sample_repo()}).start()
    yield hub
    hub.stop()


@pytest.fixture
def dead_url() -> str:
    dead = FakeHub().start()
    url = dead.url
    dead.stop()
    return url


@pytest.fixture(autouse=True)
def hf_env(tmp_path, monkeypatch):
    """A private Hugging Face cache per test; no token, endpoint or offline switch from outside."""
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # Small transfer blocks, so a connection cut after 100 KB leaves bytes on disk to resume from
    # (the library writes in blocks of DOWNLOAD_CHUNK_SIZE, 10 MB by default).
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 16_384)


def _data(hub: FakeHub, name: str) -> bytes:
    return hub.repos[REPO][name]


def test_checkpoint_files_land_in_the_shared_cache_checked(hub, tmp_path):
    notes = []
    snap = md.download_checkpoint(REPO, endpoint=hub.url, notes=notes.append)
    assert snap.revision == COMMIT
    assert snap.path == tmp_path / "cache/huggingface/hub/models--Qwen--Qwen3-ASR-0.6B/snapshots" / COMMIT
    assert sorted(p.name for p in snap.path.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    for name in ("config.json", "vocab.json", "model.safetensors"):
        assert (snap.path / name).read_bytes() == _data(hub, name)
    assert snap.fetched == sum(len(_data(hub, n)) for n in ("config.json", "vocab.json", "model.safetensors"))
    assert sorted(hub.files_fetched()) == ["config.json", "model.safetensors", "vocab.json"]  # no README, assets
    assert notes == [f"huggingface: {REPO} @ {COMMIT[:12]}: 3 files, 300.1 KB, 300.1 KB to fetch"]


def test_a_cached_checkpoint_is_not_downloaded_again(hub):
    md.download_checkpoint(REPO, endpoint=hub.url)
    hub.log.clear()
    notes = []
    snap = md.download_checkpoint(REPO, endpoint=hub.url, notes=notes.append)
    assert snap.fetched == 0 and "already in the Hugging Face cache" in notes[0]
    assert hub.files_fetched() == [] and all("/api/models/" in e.path for e in hub.log)


def test_hf_hub_offline_uses_the_cache_without_any_request(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(md.DownloadError, match="HF_HUB_OFFLINE is set and .* is not in the Hugging Face cache"):
        md.download_checkpoint(REPO, endpoint=hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    first = md.download_checkpoint(REPO, endpoint=hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.log.clear()
    snap = md.download_checkpoint(REPO, endpoint=hub.url)
    assert snap.path == first.path and snap.revision == COMMIT and hub.log == []


def test_an_unreachable_hub_falls_back_to_the_cache(hub, dead_url):
    with pytest.raises(md.DownloadError) as err:
        md.download_checkpoint(REPO, endpoint=dead_url)
    assert str(err.value).startswith("cannot reach 127.0.0.1:") and "HF_ENDPOINT" in str(err.value)
    assert "\n" not in str(err.value)
    cached = md.download_checkpoint(REPO, endpoint=hub.url)
    notes = []
    snap = md.download_checkpoint(REPO, endpoint=dead_url, notes=notes.append)
    assert snap.path == cached.path and "unreachable; using the cached" in notes[0]


def test_an_interrupted_download_resumes_where_it_stopped(hub):
    hub.drop_after["model.safetensors"] = [100_000]
    with pytest.raises(md.DownloadError, match="broke off while downloading .*run the command again to resume"):
        md.download_checkpoint(REPO, endpoint=hub.url)
    snap = md.download_checkpoint(REPO, endpoint=hub.url)
    ranges = [e.range for e in hub.log if e.method == "GET" and "/cdn/" in e.path]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and 60_000 <= int(ranges[1][6:-1]) <= 100_000
    assert (snap.path / "model.safetensors").read_bytes() == _data(hub, "model.safetensors")


def test_a_corrupt_transfer_is_fetched_again_once(hub):
    hub.corrupt["model.safetensors"] = 1
    hub.corrupt["config.json"] = 1
    notes = []
    snap = md.download_checkpoint(REPO, endpoint=hub.url, notes=notes.append)
    for name in ("model.safetensors", "config.json"):
        assert (snap.path / name).read_bytes() == _data(hub, name)
    assert sum("checksum mismatch" in n for n in notes) == 2
    assert hub.files_fetched().count("model.safetensors") == 2


def test_corruption_that_persists_is_one_line(hub):
    hub.corrupt["model.safetensors"] = 5
    with pytest.raises(md.ChecksumError, match="model.safetensors of .* failed its checksum twice .*sha256"):
        md.download_checkpoint(REPO, endpoint=hub.url)
    snapshot = md.hub_cache_dir() / "models--Qwen--Qwen3-ASR-0.6B/snapshots" / COMMIT
    assert not (snapshot / "model.safetensors").exists()  # the bad bytes are not left to be "cached"


def test_a_file_altered_in_the_cache_is_noticed(hub):
    snap = md.download_checkpoint(REPO, endpoint=hub.url)
    blob = (snap.path / "config.json").resolve()
    blob.write_bytes(b'{"architectures": ["Qwen3ASRForConditionalGenerationX"]}'[: blob.stat().st_size])
    notes = []
    md.download_checkpoint(REPO, endpoint=hub.url, notes=notes.append)
    assert any("config.json: checksum mismatch (git blob id" in n for n in notes)
    assert (snap.path / "config.json").read_bytes() == _data(hub, "config.json")


@pytest.mark.parametrize("case,needle", [
    ("missing", "HTTP 404: no repository Qwen/nope on 127.0.0.1"),
    ("revision", "has no revision 'v9'; check --revision"),
    ("gated", "is gated (HTTP 403): accept its terms on the model page and set HF_TOKEN"),
    ("private", "HTTP 401: no repository Qwen/Qwen3-ASR-0.6B on 127.0.0.1:"),
    ("server", "HTTP 503 from 127.0.0.1"),
    ("not-asr", "has no config.json and .safetensors weights"),
])
def test_failures_are_one_line(hub, case, needle):
    repo, revision = REPO, None
    if case == "missing":
        repo = "Qwen/nope"
    elif case == "revision":
        revision = "v9"
    elif case == "gated":
        hub.gated[REPO] = "secret"
    elif case == "private":
        hub.tokens[REPO] = "secret"
    elif case == "server":
        hub.status = 503
    else:
        hub.repos[REPO] = {"README.md": b"hi", "config.json": b"{}"}
    with pytest.raises(md.DownloadError) as err:
        md.download_checkpoint(repo, revision, endpoint=hub.url)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert hub.files_fetched() == []


def test_hf_token_reaches_the_hub_but_not_the_cdn_host(hub, monkeypatch):
    hub.gated[REPO] = "secret-token"
    hub.cdn_host = "localhost"  # LFS redirect goes to a different host name
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    snap = md.download_checkpoint(REPO, endpoint=hub.url)
    assert (snap.path / "model.safetensors").read_bytes() == _data(hub, "model.safetensors")
    resolve = [e for e in hub.log if "/resolve/" in e.path]
    cdn = [e for e in hub.log if "/cdn/" in e.path]
    assert resolve and all(e.auth == "Bearer secret-token" for e in resolve)
    assert cdn and all(e.host.startswith("localhost") and e.auth is None for e in cdn)


def test_hf_endpoint_and_cache_variables_are_read_at_call_time(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", hub.url + "/")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert md.endpoint_for() == hub.url and md.endpoint_for("http://x:1/") == "http://x:1"
    snap = md.download_checkpoint(REPO)
    assert snap.cache_dir == tmp_path / "hf-home/hub" and snap.path.is_dir()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert md.hub_cache_dir() == tmp_path / "elsewhere"


def test_not_enough_disk_space_stops_before_downloading(hub):
    hub.advertised_size["model.safetensors"] = 10**18
    with pytest.raises(md.DiskFullError, match="not enough disk space .*point HF_HUB_CACHE at a larger disk"):
        md.download_checkpoint(REPO, endpoint=hub.url)
    assert hub.files_fetched() == []


def test_disk_full_while_writing_is_one_line(hub, monkeypatch):
    import errno

    from huggingface_hub import file_download

    real = file_download.http_get

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(file_download, "http_get", full_disk)
    with pytest.raises(md.DiskFullError, match="disk full while downloading .*the download resumes"):
        md.download_checkpoint(REPO, endpoint=hub.url)
    monkeypatch.setattr(file_download, "http_get", real)
    assert md.download_checkpoint(REPO, endpoint=hub.url).path.is_dir()


def test_remove_snapshot_deletes_only_that_revision(hub):
    snap = md.download_checkpoint(REPO, endpoint=hub.url)
    md.remove_snapshot(snap)
    assert not snap.path.exists()
    assert not list((snap.cache_dir / "models--Qwen--Qwen3-ASR-0.6B" / "blobs").glob("*"))
    assert md.format_bytes(1_900_000_000) == "1.9 GB" and md.format_bytes(999) == "999 B"
    assert os.path.isdir(snap.cache_dir)
    assert isinstance(snap.path, Path)
