"""`models pull|list|path|verify`: real pulls from a local hub (download + convert + verify) and the store."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qasr.config import paths
from qasr.daemon.models import download as md
from qasr.daemon.models import store as ms
from qasr.daemon.cli.main import main as cli_main
from qasr.engine.bundle import (
    SPECIAL_TOKENS,
    AudioParams,
    BundleError,
    Manifest,
    TextParams,
    describe_file,
    load_bundle,
    write_manifest,
)
from tests.test_model_download import COMMIT, FakeHub

REPO = "Qwen/Qwen3-ASR-0.6B"
QUIET = md.DownloadOptions(timeout_s=10, retries=0, backoff_s=0.01)


@pytest.fixture(scope="module")
def checkpoint_files(tiny_checkpoint: Path) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in sorted(tiny_checkpoint.iterdir()) if p.is_file()}
    assert "model.safetensors" in files and "config.json" in files
    # Files a real repository also has, which a pull must leave alone.
    files["README.md"] = b"# Qwen3-ASR\n"
    files["assets/figure.png"] = b"\x89PNG not really"
    return files


@pytest.fixture
def hub(checkpoint_files):
    hub = FakeHub(repos={REPO: dict(checkpoint_files)}).start()
    yield hub
    hub.stop()


@pytest.fixture
def dead_url() -> str:
    dead = FakeHub().start()
    url = dead.url
    dead.stop()
    return url


@pytest.fixture
def xdg(tmp_path, monkeypatch) -> dict[str, str]:
    env = {
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN"):
        monkeypatch.delenv(key, raising=False)
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MODELSCOPE_"))}
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "qasr.daemon.cli.main", "models", *args],
                          capture_output=True, text=True, env=full_env, timeout=600)


def _set_default_model(name: str) -> None:
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    paths.config_file().write_text(f'[model]\npath = "{name}"\n', encoding="utf-8")


# ---------------------------------------------------------------- pull (download + convert + verify)

def test_pull_cli_end_to_end(hub, xdg):
    env = {**xdg, "HF_ENDPOINT": hub.url}
    done = run_cli("pull", "0.6b", "--no-fallback", "--retries", "0", env=env)
    assert done.returncode == 0, done.stderr
    bundle = paths.models_dir() / "qwen3-asr-0.6b"
    assert f"bundle written to {bundle} from huggingface {REPO}@{COMMIT[:12]}" in done.stdout
    assert "downloading model.safetensors" in done.stderr  # plain progress lines (not a TTY)

    manifest = load_bundle(bundle, verify="sha256").manifest
    assert manifest.model["source"] == f"huggingface:{REPO}@{COMMIT}"
    assert manifest.model["name"] == "Qwen3-ASR-0.6B"
    assert (manifest.files["encoder_backend"].precision, manifest.files["decoder"].precision) == ("int8", "q4_k")
    assert manifest.extra["pull"]["revision"] == COMMIT
    assert not ms.checkpoint_dir("huggingface", REPO).exists()  # removed without --keep-checkpoint
    fetched = {e.path.rsplit("/", 1)[-1] for e in hub.log if "/resolve/" in e.path or "/cdn/" in e.path}
    assert "README.md" not in fetched and "figure.png" not in fetched and "model.safetensors" in fetched

    again = run_cli("pull", "0.6b", "--no-fallback", env=env)
    assert again.returncode == 0 and "already installed" in again.stdout

    _set_default_model("qwen3-asr-0.6b")
    listed = run_cli("list", env=env)
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if "qwen3-asr-0.6b" in line)
    assert row.startswith("*") and "int8" in row and "q4_k" in row and f"huggingface:{REPO}" in row

    shown = run_cli("path", "0.6b", env=env)
    assert shown.returncode == 0 and shown.stdout.strip() == str(bundle)
    assert run_cli("verify", env=env).returncode == 0

    decoder = bundle / manifest.files["decoder"].path
    data = bytearray(decoder.read_bytes())
    data[len(data) // 2] ^= 0x01
    decoder.write_bytes(bytes(data))
    bad = run_cli("verify", "qwen3-asr-0.6b", env=env)
    assert bad.returncode == 1
    assert "decoder.q4_k.gguf does not match its sha256" in bad.stderr


def test_pull_resumes_and_falls_back_to_modelscope(hub, xdg, dead_url, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
    hub.drop_after["model.safetensors"] = [40_000]
    options = ms.PullOptions(model="0.6b", endpoint=dead_url, encoder="fp32", decoder="f32",
                             keep_checkpoint=True, download=QUIET)
    notes = io.StringIO()
    with pytest.raises(md.DownloadError) as err:
        ms.pull(options, md.TerminalProgress(notes))
    message = str(err.value)
    assert message.startswith("could not download 0.6b from any source")
    assert "huggingface: " in message and "refused the connection" in message
    assert "modelscope: download of model.safetensors failed" in message and "closed after 40.0 KB" in message
    assert "huggingface failed" in notes.getvalue()
    ckpt = ms.checkpoint_dir("modelscope", REPO)
    assert md.part_path(ckpt / "model.safetensors").stat().st_size == 40_000

    result = ms.pull(options, md.TerminalProgress(notes))
    assert result.source == "modelscope" and not result.already_present
    ranges = [e.range for e in hub.log if "FilePath=model.safetensors" in e.path]
    assert ranges == [None, "bytes=40000-"]
    assert result.bundle_dir == paths.models_dir() / "qwen3-asr-0.6b-fp32-f32"
    manifest = load_bundle(result.bundle_dir, verify="sha256").manifest
    assert manifest.model["source"] == f"modelscope:{REPO}@master"
    assert manifest.files["decoder"].path == "decoder.f32.gguf"
    kept = sorted(p.name for p in ckpt.iterdir())  # --keep-checkpoint
    assert kept == sorted(n for n in hub.repos[REPO] if "/" not in n and n != "README.md")
    assert (ckpt / "model.safetensors").read_bytes() == hub.repos[REPO]["model.safetensors"]


def test_missing_repo_fails_with_one_line(hub, xdg):
    env = {**xdg, "HF_ENDPOINT": hub.url, "MODELSCOPE_ENDPOINT": hub.url}
    alone = run_cli("pull", "0.6b", "--repo", "Qwen/nope", "--no-fallback", "--retries", "0", env=env)
    assert alone.returncode == 1
    assert alone.stderr.startswith("qasr-daemon: error: HTTP 404 (not found)") and alone.stderr.count("\n") == 1
    both = run_cli("pull", "0.6b", "--repo", "Qwen/nope", "--retries", "0", env=env)
    assert both.returncode == 1
    last = both.stderr.strip().splitlines()[-1]
    assert last.startswith("qasr-daemon: error: could not download 0.6b from any source")
    assert "huggingface: HTTP 404" in last and "modelscope: HTTP 404" in last
    assert not (paths.models_dir()).exists() or not any(paths.models_dir().iterdir())


def test_checkpoint_download_repairs_corruption_and_keeps_only_checkpoint_files(hub, xdg):
    hub.corrupt["model.safetensors"] = 1
    hub.corrupt["config.json"] = 1
    target, listing = ms.download_checkpoint("huggingface", REPO, endpoint=hub.url, options=QUIET)
    assert listing.revision == COMMIT
    for name in ("model.safetensors", "config.json", "vocab.json"):
        assert (target / name).read_bytes() == hub.repos[REPO][name]
    assert not (target / "README.md").exists() and not (target / "assets").exists()
    assert not list(target.glob("*.part"))
    # A file altered on disk afterwards is detected and fetched again on the next run.
    (target / "config.json").write_bytes(b"{}")
    ms.download_checkpoint("huggingface", REPO, endpoint=hub.url, options=QUIET)
    assert (target / "config.json").read_bytes() == hub.repos[REPO]["config.json"]


def test_not_enough_disk_space_stops_before_downloading(hub, xdg, monkeypatch):
    hub.advertised_size["model.safetensors"] = 10**18
    hub.advertised_size["config.json"] = 10**18
    options = ms.PullOptions(endpoint=hub.url, download=QUIET)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
    with pytest.raises(md.DiskFullError, match="not enough disk space .*XDG_CACHE_HOME"):
        ms.pull(options)
    assert not [e for e in hub.log if "/resolve/" in e.path or "/cdn/" in e.path or "FilePath" in e.path]
    assert not [e for e in hub.log if "/api/v1/" in e.path]  # a full disk is no reason to try another hub


def test_repository_without_weights_is_rejected(hub, xdg):
    hub.repos["someone/not-asr"] = {"config.json": b"{}", "README.md": b"hi"}
    with pytest.raises(md.DownloadError, match="not a Hugging Face-layout Qwen3-ASR checkpoint"):
        ms.download_checkpoint("huggingface", "someone/not-asr", endpoint=hub.url, options=QUIET)


# ---------------------------------------------------------------- naming, list, path, verify

def test_bundle_naming_rule():
    entry = ms.catalogue_entry("0.6b")
    assert ms.bundle_name(entry) == "qwen3-asr-0.6b"
    assert ms.bundle_name(entry, "fp32", "f32") == "qwen3-asr-0.6b-fp32-f32"
    assert ms.bundle_name(ms.catalogue_entry("1.7B"), "int8", "q8_0") == "qwen3-asr-1.7b-int8-q8_0"
    with pytest.raises(ms.QasrError, match="unknown model '4b'; choose one of 0.6b, 1.7b"):
        ms.catalogue_entry("4b")
    with pytest.raises(ms.QasrError, match="unknown source"):
        ms.source_order("github", True)
    assert ms.source_order("modelscope", True) == ["modelscope", "huggingface"]


def _write_bundle(root: Path, encoder: str, decoder: str, source: str) -> Path:
    """A bundle whose files are arbitrary bytes: list/path/verify only read the manifest and checksums."""
    root.mkdir(parents=True)
    files = {}
    for role, name, precision in (("encoder_frontend", f"encoder_frontend.{encoder}.onnx", encoder),
                                  ("encoder_backend", f"encoder_backend.{encoder}.onnx", encoder),
                                  ("decoder", f"decoder.{decoder}.gguf", decoder)):
        (root / name).write_bytes(os.urandom(1000 + len(files) * 500))
        files[role] = describe_file(root, name, precision)
    manifest = Manifest(
        model={"name": "Qwen3-ASR-0.6B", "architecture": "Qwen3ASRForConditionalGeneration", "source": source},
        files=files, audio=AudioParams(), text=TextParams(hidden_size=64, num_layers=2, vocab_size=300),
        tokens={name: i for i, name in enumerate(SPECIAL_TOKENS)}, stop_token_ids=[1, 2], languages=["English"],
    )
    write_manifest(root, manifest)
    return root


def test_list_path_verify_in_process(xdg, capsys, monkeypatch):
    models = paths.models_dir()
    good = _write_bundle(models / "qwen3-asr-0.6b", "int8", "q4_k", "huggingface:Qwen/Qwen3-ASR-0.6B@abc")
    other = _write_bundle(models / "qwen3-asr-0.6b-fp16-f16", "fp16", "f16", "modelscope:Qwen/Qwen3-ASR-0.6B@master")
    broken = models / "half-copied"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    (models / ".qwen3-asr-0.6b.partial-x").mkdir()  # a conversion in progress is not listed
    (models / "notes").mkdir()  # no manifest: not a bundle

    _set_default_model("qwen3-asr-0.6b-fp16-f16")
    infos = ms.list_bundles()
    assert [b.name for b in infos] == ["half-copied", "qwen3-asr-0.6b", "qwen3-asr-0.6b-fp16-f16"]
    by_name = {b.name: b for b in infos}
    assert by_name["qwen3-asr-0.6b-fp16-f16"].is_default and not by_name["qwen3-asr-0.6b"].is_default
    assert (by_name["qwen3-asr-0.6b"].encoder, by_name["qwen3-asr-0.6b"].decoder) == ("int8", "q4_k")
    assert by_name["qwen3-asr-0.6b"].size == sum(p.stat().st_size for p in good.iterdir())
    assert by_name["half-copied"].problem and "unreadable" in by_name["half-copied"].problem

    assert cli_main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "BROKEN:" in out and "modelscope:Qwen/Qwen3-ASR-0.6B@master" in out
    assert next(line for line in out.splitlines() if "fp16" in line).startswith("*")

    assert ms.resolve_bundle("0.6b") == good
    assert ms.resolve_bundle(None) == other  # the daemon's model
    assert ms.resolve_bundle(str(other)) == other
    monkeypatch.chdir(models)
    assert ms.resolve_bundle("qwen3-asr-0.6b") == good  # a name under models_dir() first
    monkeypatch.chdir(models.parent)
    assert ms.resolve_bundle("models").resolve() == models.resolve()  # else a folder here
    with pytest.raises(ms.QasrError, match="no model bundle 1.7b at .*/qwen3-asr-1.7b; .*models pull 1.7b` installs one"):
        ms.resolve_bundle("1.7b")
    assert cli_main(["models", "path", "nope"]) == 1
    assert "no model bundle nope" in capsys.readouterr().err

    assert cli_main(["models", "verify", "qwen3-asr-0.6b"]) == 0
    assert f"ok  {good}" in capsys.readouterr().out
    (good / "encoder_backend.int8.onnx").write_bytes(os.urandom(1500))  # same size, other bytes
    with pytest.raises(BundleError, match="encoder_backend.int8.onnx does not match its sha256"):
        ms.verify_bundle_dir(good)
    assert cli_main(["models", "verify"]) == 1  # every bundle: the altered and the broken one fail
    err = capsys.readouterr().err
    assert "encoder_backend.int8.onnx" in err and "half-copied" in err
    assert cli_main(["models", "verify", str(other)]) == 0


def test_list_with_no_models(xdg, capsys):
    assert cli_main(["models", "list"]) == 0
    assert "no model bundles" in capsys.readouterr().out
    assert cli_main(["models", "verify"]) == 1
    assert "models pull 0.6b" in capsys.readouterr().err
