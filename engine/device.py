"""Where the engine computes: `device = auto | cpu | cuda | vulkan` → llama.cpp layer offload for the
decoder and onnxruntime execution providers for the encoder, with a CPU fallback.

    plan = plan_device("cuda")
    plan.decoder_gpu_layers   # llama.cpp n_gpu_layers: 0 (CPU) or every layer
    plan.encoder_providers    # e.g. ("CUDAExecutionProvider", "CPUExecutionProvider")
    plan.note                 # one line saying what fell back to the CPU and why ("" when nothing did)

The decoder offloads only if llama-cpp-python was built with a GPU backend (CUDA or Vulkan, see
`scripts/install.sh --gpu`) and that backend found a device (`llama_supports_gpu_offload`). The encoder
uses CUDA when the installed onnxruntime has the CUDA provider (the `onnxruntime-gpu` package); it has
no Vulkan provider, so with `vulkan` the encoder stays on the CPU (it is the smaller share of the work).
A device that was asked for by name and is missing is not an error: the engine runs on the CPU and the
note says why, once, in the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "vulkan")
ALL_LAYERS = 999  # llama.cpp clamps n_gpu_layers to the model's layer count (+ output layer)
_ORT_PROVIDER = {"cuda": "CUDAExecutionProvider"}
_INSTALL_HINT = "scripts/install.sh --gpu {backend}"


@dataclass(frozen=True)
class DevicePlan:
    requested: str
    decoder_backend: str  # "cpu", "cuda" or "vulkan": where the decoder's layers run
    decoder_gpu_layers: int  # llama.cpp n_gpu_layers
    encoder_providers: tuple[str, ...]  # onnxruntime providers, in order of preference
    note: str = ""  # what fell back to the CPU and why

    @property
    def encoder_backend(self) -> str:
        return "cuda" if self.encoder_providers[0] == "CUDAExecutionProvider" else "cpu"

    def describe(self) -> str:
        return f"decoder on {self.decoder_backend}, encoder on {self.encoder_backend}"


def llama_gpu_backend() -> str | None:
    """The GPU backend llama.cpp can offload to here ("cuda", "vulkan", another name) or None: none built
    in, or it found no device."""
    import llama_cpp

    if not llama_cpp.llama_supports_gpu_offload():
        return None
    info = llama_cpp.llama_print_system_info().decode("utf-8", "replace").upper()
    for name in ("CUDA", "VULKAN", "METAL", "SYCL", "HIP", "MUSA", "CANN", "OPENCL"):
        if f"{name} :" in info or f"{name}:" in info or f"{name} =" in info:
            return name.lower()
    return "gpu"


def ort_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def plan_device(device: str = "cpu", *, llama_backend=llama_gpu_backend, providers=ort_providers) -> DevicePlan:
    """Resolve a device setting against what this installation can do (the probes are injectable for tests)."""
    wanted = (device or "cpu").strip().lower()
    if wanted not in DEVICES:
        raise ValueError(f"unknown device {device!r}; use one of {', '.join(DEVICES)}")
    cpu = ("CPUExecutionProvider",)
    if wanted == "cpu":
        return DevicePlan("cpu", "cpu", 0, cpu)
    backend = llama_backend()
    available = providers()
    notes = []
    # the decoder
    if wanted == "auto":
        use_gpu = backend is not None
    else:
        use_gpu = backend == wanted
        if not use_gpu:
            why = ("llama-cpp-python was built without a GPU backend or found no GPU" if backend is None
                   else f"llama-cpp-python was built for {backend}, not {wanted}")
            notes.append(f"decoder on the CPU: {why} (install with `{_INSTALL_HINT.format(backend=wanted)}`)")
    decoder_backend = (backend if use_gpu else "cpu") or "cpu"
    # the encoder
    encoder_provider = _ORT_PROVIDER.get("cuda" if wanted == "auto" else wanted)
    if encoder_provider and encoder_provider in available:
        encoder = (encoder_provider, *cpu)
    else:
        encoder = cpu
        if wanted == "cuda":
            notes.append("encoder on the CPU: onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        elif wanted == "vulkan":
            notes.append("encoder on the CPU: onnxruntime has no Vulkan provider")
    note = "; ".join(notes)
    return DevicePlan(wanted, decoder_backend, ALL_LAYERS if use_gpu else 0, encoder, note)


def resolve_device(device: str = "cpu") -> DevicePlan:
    """plan_device() that logs its fallback note once (a warning when a named device was asked for)."""
    plan = plan_device(device)
    if plan.note:
        (log.info if plan.requested == "auto" else log.warning)("device %s: %s", plan.requested, plan.note)
    return plan
