"""llama.cpp's build flags follow the CPU: never an instruction set it lacks, never AMX."""

import subprocess
import sys

from qasr.daemon.bench.cpu_build_flags import cmake_args, cpu_flags

ZEN2 = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma f16c bmi2 sha_ni\n"
ICELAKE = "flags\t: avx avx2 fma f16c bmi2 avx512f avx512bw avx512vl avx512_vnni amx_tile amx_int8\n"


def test_avx2_only_cpu_gets_no_avx512():
    args = cmake_args(cpu_flags(ZEN2))
    assert "-DGGML_AVX2=ON" in args and "-DGGML_AVX512=OFF" in args
    assert not any("AVX512_" in a or "AMX" in a for a in args)


def test_avx512_cpu_gets_what_it_has_and_never_amx():
    args = cmake_args(cpu_flags(ICELAKE))
    assert {"-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON"} <= set(args)
    assert "-DGGML_AVX512_BF16=ON" not in args and not any("AMX" in a for a in args)


def test_alder_lake_style_avx_vnni_and_no_cpuinfo():
    assert "-DGGML_AVX_VNNI=ON" in cmake_args({"avx", "avx2", "fma", "f16c", "avx_vnni"})
    assert cmake_args(set()) == ["-DGGML_NATIVE=OFF", *(f"-DGGML_{f}=OFF" for f in ("AVX", "AVX2", "FMA", "F16C", "BMI2")),
                                 "-DGGML_AVX512=OFF"]


def test_install_script_runs_it_without_the_package():
    out = subprocess.run([sys.executable, "-I", "daemon/bench/cpu_build_flags.py"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    assert out.startswith("-DGGML_NATIVE=OFF") and "AMX" not in out
