"""llama.cpp's CMake CPU flags for the instruction sets this CPU reports, and nothing more.

A build for more than the CPU has dies with SIGILL (an AVX-512 build on an AVX2-only AMD EPYC); AMX stays
off even where /proc/cpuinfo lists it (machines that advertise AMX but trap it crash in ggml's AMX
kernels). `scripts/install.sh` runs this file with the system python before any venv exists, so it
imports nothing from qasr:

    python3 daemon/bench/cpu_build_flags.py      # prints the flags for CMAKE_ARGS
"""

from __future__ import annotations

from pathlib import Path

BASE = ("avx", "avx2", "fma", "f16c", "bmi2")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def cmake_args(flags: set[str] | None = None) -> list[str]:
    have = cpu_flags() if flags is None else flags
    args = ["-DGGML_NATIVE=OFF"]
    args += [f"-DGGML_{f.upper()}={'ON' if f in have else 'OFF'}" for f in BASE]
    if {"avx512f", "avx512bw", "avx512vl"} <= have:
        args.append("-DGGML_AVX512=ON")
        args += [f"-DGGML_{name}=ON" for flag, name in (("avx512_vnni", "AVX512_VNNI"), ("avx512_bf16", "AVX512_BF16"))
                 if flag in have]
    else:
        args.append("-DGGML_AVX512=OFF")
        if "avx_vnni" in have:
            args.append("-DGGML_AVX_VNNI=ON")
    return args


if __name__ == "__main__":
    print(" ".join(cmake_args()))
