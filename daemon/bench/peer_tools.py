"""llama.cpp's own tools, built from the llama.cpp source that llama-cpp-python vendors in its sdist.

    python -m qasr.daemon.bench.peer_tools build            # both sources, cached in ~/.cache/qasr/peers

Two sources, because one does not do both jobs:
- the sdist of the llama-cpp-python qasr runs (0.3.16): its `llama-bench` runs the very kernels qasr's
  decoder runs, so it is the yardstick for the decoder (same GGUF, same threads);
- the newest sdist (0.3.36): its llama.cpp has Qwen3-ASR (converter `Qwen3ASRForConditionalGeneration`
  → arch `qwen3vl` text model + a `qwen3a` audio projector) and `llama-mtmd-cli` runs the whole pipeline;
  0.3.16's llama.cpp predates Qwen3-ASR (and the qwen3vl arch).

Sources come from PyPI with pip (`pip download --no-deps --no-binary ...`), are built with cmake + the
CPU flags `scripts/install.sh` uses for llama-cpp-python (override with CMAKE_ARGS), and are cached:
a second call finds the binaries and does nothing. Never called from the test suite.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path

from qasr.daemon.bench import cpu_build_flags

RUNTIME_VERSION = "0.3.16"  # the llama-cpp-python qasr depends on (pyproject.toml)
PIPELINE_VERSION = "0.3.36"  # the first one we found with Qwen3-ASR in its vendored llama.cpp
TARGETS = {RUNTIME_VERSION: ("llama-bench",), PIPELINE_VERSION: ("llama-bench", "llama-mtmd-cli", "llama-quantize")}


def peers_dir() -> Path:
    from qasr.config import paths

    return paths.cache_dir() / "peers"


def source_dir(version: str) -> Path:
    return peers_dir() / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"


def build_dir(version: str) -> Path:
    return peers_dir() / f"build-{version}"


def tool(version: str, name: str) -> Path:
    return build_dir(version) / "bin" / name


def _log(msg: str) -> None:
    print(f"peers: {msg}", file=sys.stderr, flush=True)


def fetch_source(version: str) -> Path:
    src = source_dir(version)
    if (src / "CMakeLists.txt").is_file():
        return src
    peers_dir().mkdir(parents=True, exist_ok=True)
    sdist = peers_dir() / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.is_file():
        _log(f"downloading the llama-cpp-python {version} sdist from PyPI ...")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", "llama-cpp-python",
                        f"llama-cpp-python=={version}", "-d", str(peers_dir())], check=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(peers_dir(), filter="data")
    return src


def build(version: str, jobs: int = 0) -> dict[str, Path]:
    """Build (or find) the tools of one version; returns {name: path}."""
    names = TARGETS[version]
    found = {name: tool(version, name) for name in names}
    if all(p.is_file() for p in found.values()):
        return found
    src = fetch_source(version)
    # as scripts/install.sh builds llama-cpp-python: this CPU's instruction sets, AMX off
    flags = shlex.split(os.environ.get("CMAKE_ARGS", "")) or cpu_build_flags.cmake_args()
    configure = ["cmake", "-S", str(src), "-B", str(build_dir(version)), "-DCMAKE_BUILD_TYPE=Release",
                 "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                 "-DLLAMA_BUILD_SERVER=OFF", "-DBUILD_SHARED_LIBS=OFF", *flags]
    if _has("ninja"):
        configure += ["-G", "Ninja"]
    _log(f"building {', '.join(names)} of llama.cpp from llama-cpp-python {version} (several minutes) ...")
    subprocess.run(configure, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build_dir(version)), "--target", *names,
                    "-j", str(jobs or os.cpu_count() or 2)], check=True, stdout=subprocess.DEVNULL)
    return found


def _has(program: str) -> bool:
    return any((Path(d) / program).is_file() for d in os.environ.get("PATH", "").split(os.pathsep))


def build_all(jobs: int = 0) -> dict[str, dict[str, Path]]:
    return {version: build(version, jobs) for version in TARGETS}


if __name__ == "__main__":
    if sys.argv[1:2] != ["build"]:
        raise SystemExit("usage: python -m qasr.daemon.bench.peer_tools build")
    for version, tools in build_all().items():
        for name, path in tools.items():
            print(f"{version} {name}: {path}")
