"""`models pull|list|path|verify|remove`: real pulls from a local hub (download + convert + verify)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qasr.config import paths
from qasr.daemon.cli.main import main as cli_main
from qasr.daemon.models import download as md
from qasr.daemon.models import store as ms
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
from tests.fake_hub import COMMIT, FakeHub

REPO = "Qwen/Qwen3-ASR-0.6B"
HF_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
           "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME")


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
def xdg(tmp_path, monkeypatch) -> dict[str, str]:
    env = {
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in HF_VARS:
        monkeypatch.delenv(key, raising=False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 16_384)  # see test_model_download
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in HF_VARS}
    full_env.update(env)
    return subprocess.run([sys.executable, "-m", "qasr.daemon.cli.main", "models", *args],
                          capture_output=True, text=True, env=full_env, timeout=600)


def _set_default_model(name: str) -> None:
    paths.config_dir().mkdir(parents=True, exist_ok=True)
    paths.config_file().write_text(f'[model]\npath = "{name}"\n', encoding="utf-8")


def _snapshot_dir() -> Path:
    return md.hub_cache_dir() / "models--Qwen--Qwen3-ASR-0.6B" / "snapshots" / COMMIT


# ---------------------------------------------------------------- pull (download + convert + verify)

def test_pull_cli_end_to_end(hub, xdg):
    env = {**xdg, "HF_ENDPOINT": hub.url}
    done = run_cli("pull", "0.6b", env=env)
    assert done.returncode == 0, done.stderr
    bundle = paths.models_dir() / "qwen3-asr-0.6b"
    assert f"bundle written to {bundle} from huggingface {REPO}@{COMMIT[:12]}" in done.stdout
    assert f"huggingface: {REPO} @ {COMMIT[:12]}: 8 files" in done.stderr and "to fetch" in done.stderr
    assert "Traceback" not in done.stderr and "\r" not in done.stderr  # no progress bars off a terminal

    manifest = load_bundle(bundle, verify="sha256").manifest
    assert manifest.model["source"] == f"huggingface:{REPO}@{COMMIT}"
    assert manifest.model["name"] == "Qwen3-ASR-0.6B"
    assert (manifest.files["encoder_backend"].precision, manifest.files["decoder"].precision) == ("int8", "q4_k")
    assert manifest.extra["pull"]["revision"] == COMMIT
    assert not _snapshot_dir().exists()  # fetched by this pull: removed without --keep-checkpoint
    fetched = hub.files_fetched()
    assert "README.md" not in fetched and "figure.png" not in fetched and "model.safetensors" in fetched

    again = run_cli("pull", "0.6b", env=env)
    assert again.returncode == 0 and "already installed" in again.stdout

    _set_default_model("qwen3-asr-0.6b")
    listed = run_cli("list", env=env)
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()[0], next(line for line in listed.stdout.splitlines() if "qwen3-asr-0.6b" in line)
    assert header.split() == ["NAME", "KIND", "MODEL", "ENCODER", "DECODER", "SIZE", "REVISION", "SOURCE"]
    assert row.split()[2] == "asr"
    assert row.startswith("*") and "Qwen3-ASR-0.6B" in row and "int8" in row and "q4_k" in row
    assert COMMIT[:12] in row and row.rstrip().endswith(f"huggingface:{REPO}")

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

    removed = run_cli("remove", "0.6b", env=env)
    assert removed.returncode == 0 and f"removed {bundle}" in removed.stdout
    assert "it was the daemon's model" in removed.stderr and not bundle.exists()


def test_interrupted_pull_resumes_and_keeps_the_checkpoint_when_asked(hub, xdg):
    hub.drop_after["model.safetensors"] = [40_000]
    options = ms.PullOptions(model="0.6b", endpoint=hub.url, encoder="fp32", decoder="f32", keep_checkpoint=True)
    with pytest.raises(md.DownloadError, match="broke off while downloading .*run the command again to resume"):
        ms.pull(options)
    assert not paths.models_dir().exists() or not any(paths.models_dir().iterdir())

    notes = []
    result = ms.pull(options, notes.append)
    assert result.source == "huggingface" and result.revision == COMMIT and not result.already_present
    ranges = [e.range for e in hub.log if e.method == "GET" and "/cdn/" in e.path]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert result.bundle_dir == paths.models_dir() / "qwen3-asr-0.6b-fp32-f32"
    manifest = load_bundle(result.bundle_dir, verify="sha256").manifest
    assert manifest.files["decoder"].path == "decoder.f32.gguf"
    kept = sorted(p.name for p in _snapshot_dir().iterdir())  # --keep-checkpoint
    assert kept == sorted(n for n in hub.repos[REPO] if "/" not in n and n != "README.md")
    assert (_snapshot_dir() / "model.safetensors").read_bytes() == hub.repos[REPO]["model.safetensors"]


def test_a_checkpoint_already_in_the_hf_cache_is_used_and_kept(hub, xdg, monkeypatch):
    md.download_checkpoint(REPO, endpoint=hub.url)  # another tool downloaded it before
    hub.log.clear()
    result = ms.pull(ms.PullOptions(endpoint=hub.url, encoder="fp32", decoder="f32"))
    assert hub.files_fetched() == [] and not result.already_present
    assert _snapshot_dir().is_dir()  # not ours to delete
    # Offline: no request at all, the cached snapshot converts again.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.log.clear()
    again = ms.pull(ms.PullOptions(endpoint=hub.url, encoder="fp32", decoder="f32", force=True))
    assert hub.log == [] and again.revision == COMMIT
    assert load_bundle(again.bundle_dir).manifest.model["source"] == f"huggingface:{REPO}@{COMMIT}"


def test_missing_repo_fails_with_one_line(hub, xdg):
    env = {**xdg, "HF_ENDPOINT": hub.url}
    done = run_cli("pull", "0.6b", "--repo", "Qwen/nope", env=env)
    assert done.returncode == 1
    assert done.stderr.startswith("qasr-daemon: error: HTTP 404: no repository Qwen/nope") and done.stderr.count("\n") == 1
    hub.gated[REPO] = "token-of-someone-else"
    gated = run_cli("pull", "0.6b", env={**env, "HF_TOKEN": "mine"})
    last = gated.stderr.strip().splitlines()[-1]  # after the "N files, X to fetch" note
    assert gated.returncode == 1 and "Traceback" not in gated.stderr
    assert last.startswith("qasr-daemon: error: ") and "is gated (HTTP 403)" in last
    assert not paths.models_dir().exists() or not any(paths.models_dir().iterdir())


def test_no_network_fails_with_one_line(xdg, tmp_path):
    dead = FakeHub().start()
    url = dead.url
    dead.stop()
    done = run_cli("pull", "1.7b", env={**xdg, "HF_ENDPOINT": url})
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("qasr-daemon: error: cannot reach 127.0.0.1:")
    assert "Qwen3-ASR-1.7B" not in done.stdout


def test_ctrl_c_during_a_pull_is_one_line_and_the_next_pull_finishes(hub, xdg):
    import signal

    hub.stall_after["model.safetensors"] = 200_000
    env = {k: v for k, v in os.environ.items() if k not in HF_VARS}
    env.update(xdg, HF_ENDPOINT=hub.url)
    proc = subprocess.Popen([sys.executable, "-m", "qasr.daemon.cli.main", "models", "pull", "0.6b",
                             "--encoder", "fp32", "--decoder", "f32"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert hub.stalled.wait(60)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == (
        "qasr-daemon: error: interrupted; run the same command again to resume the download")
    assert "Traceback" not in err
    done = run_cli("pull", "0.6b", "--encoder", "fp32", "--decoder", "f32", env={**xdg, "HF_ENDPOINT": hub.url})
    assert done.returncode == 0, done.stderr
    # (Whether bytes are resumed here depends on the library's 10 MB write blocks, more than this
    # checkpoint; test_interrupted_pull_resumes_... shows the Range request with small blocks.)
    assert load_bundle(paths.models_dir() / "qwen3-asr-0.6b-fp32-f32", verify="sha256")


def test_pull_1_7b_works_the_same_way(checkpoint_files, xdg):
    # The tiny checkpoint served under the 1.7B repository name: same path through download and convert.
    hub = FakeHub(repos={"Qwen/Qwen3-ASR-1.7B": dict(checkpoint_files)}).start()
    try:
        result = ms.pull(ms.PullOptions(model="1.7b", endpoint=hub.url, encoder="fp32", decoder="q8_0"))
    finally:
        hub.stop()
    assert result.bundle_dir == paths.models_dir() / "qwen3-asr-1.7b-fp32-q8_0"
    manifest = load_bundle(result.bundle_dir, verify="sha256").manifest
    assert manifest.model["source"] == f"huggingface:Qwen/Qwen3-ASR-1.7B@{COMMIT}"
    assert ms.resolve_bundle("qwen3-asr-1.7b-fp32-q8_0") == result.bundle_dir


def test_not_enough_disk_space_stops_before_downloading(hub, xdg):
    hub.advertised_size["model.safetensors"] = 10**18
    with pytest.raises(md.DiskFullError, match="not enough disk space"):
        ms.pull(ms.PullOptions(endpoint=hub.url))
    assert hub.files_fetched() == []


# ---------------------------------------------------------------- naming, list, path, verify

def test_bundle_naming_rule():
    entry = ms.catalogue_entry("0.6b")
    assert ms.bundle_name(entry) == "qwen3-asr-0.6b"
    assert ms.bundle_name(entry, "fp32", "f32") == "qwen3-asr-0.6b-fp32-f32"
    assert ms.bundle_name(ms.catalogue_entry("1.7B"), "int8", "q8_0") == "qwen3-asr-1.7b-int8-q8_0"
    with pytest.raises(ms.QasrError, match="unknown model '4b'; choose one of 0.6b, 1.7b, aligner"):
        ms.catalogue_entry("4b")
    assert ms.catalogue_entry("1.7b").repo == "Qwen/Qwen3-ASR-1.7B"
    aligner = ms.catalogue_entry("Aligner")
    assert (aligner.repo, aligner.kind) == ("Qwen/Qwen3-ForcedAligner-0.6B", "aligner")
    assert ms.bundle_name(aligner) == ms.bundle_name(aligner, "int8", "q8_0") == "qwen3-forcedaligner-0.6b"
    assert ms.bundle_name(aligner, "int8", "q4_k") == "qwen3-forcedaligner-0.6b-int8-q4_k"
    assert ms.bundle_name(aligner, "fp32", "f32") == "qwen3-forcedaligner-0.6b-fp32-f32"


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
    other = _write_bundle(models / "qwen3-asr-0.6b-fp16-f16", "fp16", "f16", "/data/checkpoints/Qwen3-ASR-0.6B")
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
    assert "BROKEN:" in out
    fp16_row = next(line for line in out.splitlines() if "fp16" in line)
    assert fp16_row.startswith("*") and fp16_row.split()[-2:] == ["-", "/data/checkpoints/Qwen3-ASR-0.6B"]
    int8_row = next(line for line in out.splitlines() if "int8" in line)
    assert int8_row.split()[-2:] == ["abc", "huggingface:Qwen/Qwen3-ASR-0.6B"]
    assert (by_name["qwen3-asr-0.6b"].source, by_name["qwen3-asr-0.6b"].revision) == ("huggingface:Qwen/Qwen3-ASR-0.6B", "abc")

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


def test_remove(xdg, capsys):
    models = paths.models_dir()
    _write_bundle(models / "qwen3-asr-0.6b", "int8", "q4_k", "huggingface:Qwen/Qwen3-ASR-0.6B@abc")
    keep = _write_bundle(models / "qwen3-asr-0.6b-fp32-f32", "fp32", "f32", "/somewhere")
    (models / "notes").mkdir()
    for name, needle in (("nope", "no installed bundle nope"), ("notes", "is not a qasr bundle"),
                         ("../data", "no installed bundle ../data"), (str(keep), "no installed bundle /")):
        assert cli_main(["models", "remove", name]) == 1
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1
    assert cli_main(["models", "remove", "0.6b"]) == 0  # the catalogue key names the default pair
    assert "removed" in capsys.readouterr().out and not (models / "qwen3-asr-0.6b").exists()
    info = ms.remove_bundle("qwen3-asr-0.6b-fp32-f32")
    assert info.encoder == "fp32" and info.size > 0 and not keep.exists() and (models / "notes").is_dir()


def test_missing_packages_are_named_before_any_download(hub, xdg, monkeypatch):
    from qasr.engine.convert import pipeline

    hub_modules = md.HUB_MODULES
    monkeypatch.setattr(md, "HUB_MODULES", hub_modules + ("qasr_no_such_hub",))
    with pytest.raises(md.DownloadError, match="needs qasr_no_such_hub, which is not installed: pip install 'qasr.convert.'"):
        ms.pull(ms.PullOptions(endpoint=hub.url))
    monkeypatch.setattr(md, "HUB_MODULES", hub_modules)
    monkeypatch.setattr(pipeline, "REQUIRED_MODULES", pipeline.REQUIRED_MODULES + ("qasr_no_such_module",))
    with pytest.raises(ms.QasrError, match="qasr_no_such_module"):
        ms.pull(ms.PullOptions(endpoint=hub.url))
    assert hub.log == []


# ---------------------------------------------------------------- the forced aligner (issue 12)

ALIGNER_REPO = "Qwen/Qwen3-ForcedAligner-0.6B"


def test_pull_aligner_list_and_find(tiny_aligner_checkpoint, checkpoint_files, xdg, capsys):
    files = {p.name: p.read_bytes() for p in sorted(tiny_aligner_checkpoint.iterdir()) if p.is_file()}
    hub = FakeHub(repos={ALIGNER_REPO: files, REPO: dict(checkpoint_files)}).start()
    try:
        assert ms.find_aligner_bundle() is None  # nothing installed
        # --repo naming a speech recognizer: one line, nothing converted
        with pytest.raises(ms.QasrError, match=f"{REPO} holds a Qwen3-ASR speech recognizer, not a Qwen3-ForcedAligner"):
            ms.pull(ms.PullOptions(model="aligner", repo=REPO, endpoint=hub.url))
        assert not (paths.models_dir() / "qwen3-forcedaligner-0.6b").exists()

        assert cli_main(["models", "pull", "aligner", "--endpoint", hub.url]) == 0
        bundle = paths.models_dir() / "qwen3-forcedaligner-0.6b"
        out = capsys.readouterr().out
        assert out.startswith(f"aligner bundle written to {bundle} from huggingface {ALIGNER_REPO}@{COMMIT[:12]} "
                              "(int8 encoder, q8_0 decoder, ")
        manifest = load_bundle(bundle, verify="sha256").manifest
        assert manifest.is_aligner and manifest.files["decoder"].precision == "q8_0"
        assert manifest.files["encoder_backend"].precision == "int8"
        assert manifest.model["source"] == f"huggingface:{ALIGNER_REPO}@{COMMIT}"
        assert ms.pull(ms.PullOptions(model="aligner", endpoint=hub.url)).already_present
        assert ms.find_aligner_bundle() == bundle
        assert ms.resolve_bundle("aligner") == bundle
    finally:
        hub.stop()

    _write_bundle(paths.models_dir() / "qwen3-asr-0.6b", "int8", "q4_k", "huggingface:Qwen/Qwen3-ASR-0.6B@abc")
    _set_default_model("qwen3-asr-0.6b")
    assert cli_main(["models", "list"]) == 0
    rows = {line.lstrip("* ").split()[0]: line.lstrip("* ").split() for line in capsys.readouterr().out.splitlines()[1:]}
    assert rows["qwen3-forcedaligner-0.6b"][1:5] == ["aligner", "Qwen3-ForcedAligner-0.6B", "int8", "q8_0"]
    assert rows["qwen3-asr-0.6b"][1:3] == ["asr", "Qwen3-ASR-0.6B"]
    assert {b.name: b.kind for b in ms.list_bundles()} == {"qwen3-asr-0.6b": "asr", "qwen3-forcedaligner-0.6b": "aligner"}

    # Another precision pair is found when the default one is not installed; an ASR bundle never is.
    other = paths.models_dir() / "qwen3-forcedaligner-0.6b-fp32-f32"
    bundle.rename(other)
    assert ms.find_aligner_bundle() == other
    other.rename(paths.models_dir() / "zz-moved")
    assert ms.find_aligner_bundle() == paths.models_dir() / "zz-moved"
    ms.remove_bundle("zz-moved")
    assert ms.find_aligner_bundle() is None


def test_convert_says_it_wrote_an_aligner(tiny_aligner_checkpoint, tmp_path, capsys):
    out = tmp_path / "aligner"
    assert cli_main(["models", "convert", str(tiny_aligner_checkpoint), str(out), "--encoder", "int8",
                     "--decoder", "q8_0"]) == 0
    assert capsys.readouterr().out.startswith(f"aligner bundle written to {out} (int8 encoder, q8_0 decoder, ")
