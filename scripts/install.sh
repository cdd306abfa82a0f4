#!/usr/bin/env bash
# Install qasr into ./.venv with everything it needs, system packages included.
#   scripts/install.sh          runtime + the `convert` extra (huggingface_hub, onnx, gguf, safetensors) to
#                               pull and convert models: no torch, no transformers
#   scripts/install.sh --dev    everything the test suite needs too (torch, transformers and the official
#                               model code as test oracles, X/audio tools; Ray for the batch tests)
#   scripts/install.sh --batch  also Ray, for `qasr-daemon batch --ray` (the `batch` extra)
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
BATCH=0
GPU=""  # --gpu cuda|vulkan: llama.cpp with that GPU backend (the engine's `device` setting picks it up)
while (($#)); do
    case "$1" in
        --dev) DEV=1 ;;
        --batch) BATCH=1 ;;
        --gpu) GPU="${2:-}"; shift ;;
        --gpu=*) GPU="${1#--gpu=}" ;;
        *) echo "usage: scripts/install.sh [--dev] [--batch] [--gpu cuda|vulkan]" >&2; exit 2 ;;
    esac
    shift
done
[[ -z "$GPU" || "$GPU" == cuda || "$GPU" == vulkan ]] || { echo "--gpu takes cuda or vulkan, not '$GPU'" >&2; exit 2; }

RUNTIME_APT=(libportaudio2 pulseaudio-utils xclip xsel wtype wl-clipboard
             python3-gi gir1.2-ibus-1.0)  # the IBus engine runs under /usr/bin/python3 (qasr-daemon ime install)
DEV_APT=(pulseaudio libasound2-plugins espeak-ng sox ffmpeg xvfb xdotool xterm x11-utils x11-xserver-utils
         fonts-noto-cjk imagemagick chromium python3-tk tk
         sway foot xwayland grim python3-gi gir1.2-gtk-3.0   # Wayland tests: headless sway, foot, a GTK entry
         ibus ibus-gtk3 dbus dbus-x11 x11-xkb-utils)  # input-method tests: ibus-daemon + GTK 3 under Xvfb
# Wayland typing through /dev/uinput (GNOME, KDE): ydotool, where the distribution packages it.
WHERE_PACKAGED_APT=(ydotool)

if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    pkgs=("${RUNTIME_APT[@]}"); [[ $DEV -eq 1 ]] && pkgs+=("${DEV_APT[@]}")
    for p in "${WHERE_PACKAGED_APT[@]}"; do apt-cache show "$p" >/dev/null 2>&1 && pkgs+=("$p"); done
    missing=()
    # installed means "install ok installed": a package removed but not purged still answers dpkg -s
    for p in "${pkgs[@]}"; do
        [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
    done
    if ((${#missing[@]})); then
        echo "==> apt-get install ${missing[*]}"
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
    fi
fi

PY=${PYTHON:-python3}
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip wheel setuptools

# llama.cpp is compiled from the llama-cpp-python sdist (~8 min on 2 cores) for the instruction sets this
# CPU reports: a build with AVX-512 dies with SIGILL on an AVX2-only CPU (AMD EPYC Zen 2/3). AMX stays off:
# machines that advertise AMX but trap its instructions crash in ggml's AMX kernels.
# The wheel is kept per flag set (pip's own cache ignores CMAKE_ARGS and would hand back a wheel built for
# another CPU). Set CMAKE_ARGS yourself to build for another target (e.g. "-DGGML_NATIVE=ON").
LLAMA_CPP_VERSION=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' pyproject.toml)
CMAKE_ARGS="${CMAKE_ARGS:-$(python3 daemon/bench/cpu_build_flags.py)}"
export CMAKE_ARGS
LLAMA_WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/qasr/llama-cpp-wheels/$LLAMA_CPP_VERSION-$(printf '%s' "$CMAKE_ARGS" | sha1sum | cut -c1-12)"
built_for=".venv/.llama-cpp-cmake-args"
if ! ls "$LLAMA_WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "==> building llama-cpp-python $LLAMA_CPP_VERSION ($CMAKE_ARGS)"
    .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir -w "$LLAMA_WHEELS" "llama-cpp-python==$LLAMA_CPP_VERSION"
fi
if [[ "$(cat "$built_for" 2>/dev/null)" != "$CMAKE_ARGS" ]]; then
    .venv/bin/python -m pip install -q --force-reinstall --no-deps "$LLAMA_WHEELS"/llama_cpp_python-*.whl
    .venv/bin/python -m pip install -q "$LLAMA_WHEELS"/llama_cpp_python-*.whl  # its own dependencies
    printf '%s' "$CMAKE_ARGS" > "$built_for"
fi

if [[ $DEV -eq 1 ]]; then
    .venv/bin/python -m pip install -q -e ".[dev]"  # dev includes the batch extra
    # Official Qwen3-ASR model code: reference for the exactness tests only (its deps are not wanted).
    .venv/bin/python -m pip install -q --no-deps "qwen-asr==0.0.6"
elif [[ $BATCH -eq 1 ]]; then
    .venv/bin/python -m pip install -q -e ".[convert,batch]"
else
    .venv/bin/python -m pip install -q -e ".[convert]"
fi

# --gpu: rebuild llama-cpp-python with the GPU backend (not from pip's cached CPU wheel). Needs the CUDA
# toolkit (nvcc) or the Vulkan headers + glslc. Without a usable GPU at run time the engine says so in one
# line and runs on the CPU.
if [[ -n "$GPU" ]]; then
    case "$GPU" in
        cuda) need=nvcc; flag=-DGGML_CUDA=ON ;;
        vulkan) need=glslc; flag=-DGGML_VULKAN=ON ;;
        *) echo "--gpu takes cuda or vulkan, not '$GPU'" >&2; exit 2 ;;
    esac
    command -v "$need" >/dev/null || { echo "--gpu $GPU needs $need on PATH (CUDA toolkit / libvulkan-dev + glslc)" >&2; exit 1; }
    echo "==> building llama-cpp-python with $flag"
    CMAKE_ARGS="$CMAKE_ARGS $flag" .venv/bin/python -m pip install -q --force-reinstall --no-deps --no-cache-dir \
        "llama-cpp-python==$(.venv/bin/python -c 'import llama_cpp; print(llama_cpp.__version__)')"
    printf '%s' "$CMAKE_ARGS $flag" > "$built_for"
    if [[ "$GPU" == cuda ]]; then  # the encoder's CUDA provider; same module name as the CPU package
        .venv/bin/python -m pip uninstall -q -y onnxruntime && .venv/bin/python -m pip install -q onnxruntime-gpu
    fi
fi
echo "==> installed: $(.venv/bin/qasr-daemon --version)"
