"""Quantize a GGUF with llama.cpp's own quantizer (through llama-cpp-python's C API)."""

from __future__ import annotations

import contextlib
import ctypes
from pathlib import Path

from qasr.errors import QasrError

GGML_TYPE_Q8_0 = 8
GGML_TYPE_Q6_K = 14
GGML_TYPE_Q4_K = 12
HEAD_TYPES = {"q8_0": GGML_TYPE_Q8_0, "q6_k": GGML_TYPE_Q6_K, "q4_k": GGML_TYPE_Q4_K}


class QuantizeError(QasrError):
    """llama.cpp failed to quantize the decoder."""


def _ftypes() -> dict[str, int]:
    import llama_cpp

    return {"q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "q4_k": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}


@contextlib.contextmanager
def _captured_llama_log(lines: list[str]):
    """Route llama.cpp's log into `lines` instead of stderr; restore llama-cpp-python's logger after."""
    import llama_cpp

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    try:
        yield
    finally:
        from llama_cpp import _logger

        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        del collect  # kept alive until llama.cpp no longer points at it


def quantize_gguf(src: Path, dst: Path, precision: str, threads: int = 0, head: str = "q8_0") -> Path:
    """q8_0: every matrix q8_0. q4_k: Q4_K_M mix with the token embedding / output head at `head`
    (q8_0 by default; llama.cpp's own Q4_K_M puts q6_k there; `qasr.daemon.bench.quant_bench` measures
    the choices as speed against top-1 agreement).

    Matrices whose rows are not a multiple of the k-quant block (256) fall back to llama.cpp's
    legacy types, which only matters for tiny test models.
    """
    import llama_cpp

    ftypes = _ftypes()
    if precision not in ftypes:
        raise ValueError(f"quantize_gguf makes {', '.join(ftypes)}, not {precision}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = threads
    params.ftype = ftypes[precision]
    if precision == "q4_k":
        # The tied embedding doubles as the output head; int4 there flips near-tie tokens.
        params.token_embedding_type = HEAD_TYPES[head]
        params.output_tensor_type = HEAD_TYPES[head]
    lines: list[str] = []
    with _captured_llama_log(lines):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        errors = [line.strip() for line in lines if "error" in line.lower() or "failed" in line.lower()]
        detail = errors[-1] if errors else f"return code {rc}"
        raise QuantizeError(f"llama.cpp could not quantize the decoder to {precision}: {detail}")
    return dst
