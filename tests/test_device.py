"""engine.device: the device setting maps onto llama.cpp layer offload and onnxruntime providers, and a
missing GPU (or a CPU-only build) falls back to the CPU with one clear line."""

from __future__ import annotations

import logging

import pytest

from qasr.engine.device import ALL_LAYERS, plan_device, resolve_device

CPU = ("CPUExecutionProvider",)
CUDA_ORT = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def plan(device, backend=None, providers=("CPUExecutionProvider",)):
    return plan_device(device, llama_backend=lambda: backend, providers=lambda: list(providers))


def test_cpu_never_probes_and_offloads_nothing():
    p = plan_device("cpu", llama_backend=lambda: pytest.fail("probed"), providers=lambda: pytest.fail("probed"))
    assert (p.decoder_gpu_layers, p.encoder_providers, p.note) == (0, CPU, "")


def test_cuda_with_a_cuda_build_and_onnxruntime_gpu_offloads_both():
    p = plan("cuda", backend="cuda", providers=CUDA_ORT)
    assert p.decoder_gpu_layers == ALL_LAYERS and p.decoder_backend == "cuda"
    assert p.encoder_providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert p.note == "" and p.describe() == "decoder on cuda, encoder on cuda"


def test_cuda_without_a_gpu_build_falls_back_with_one_line_saying_how_to_fix_it():
    p = plan("cuda")
    assert (p.decoder_gpu_layers, p.encoder_providers, p.decoder_backend) == (0, CPU, "cpu")
    assert "\n" not in p.note
    assert "scripts/install.sh --gpu cuda" in p.note and "onnxruntime-gpu" in p.note


def test_vulkan_offloads_the_decoder_and_keeps_the_encoder_on_the_cpu():
    p = plan("vulkan", backend="vulkan", providers=CUDA_ORT)
    assert p.decoder_gpu_layers == ALL_LAYERS and p.encoder_providers == CPU
    assert "no Vulkan provider" in p.note


def test_a_build_for_the_other_backend_is_not_used():
    p = plan("vulkan", backend="cuda")
    assert p.decoder_gpu_layers == 0 and "built for cuda, not vulkan" in p.note


def test_auto_uses_what_is_there_and_is_quiet_about_a_cpu_only_machine():
    assert plan("auto") == plan("auto", backend=None)
    p = plan("auto")
    assert (p.decoder_gpu_layers, p.encoder_providers, p.note) == (0, CPU, "")
    p = plan("auto", backend="vulkan", providers=CUDA_ORT)
    assert p.decoder_backend == "vulkan" and p.encoder_providers[0] == "CUDAExecutionProvider"


def test_unknown_device_is_an_error():
    with pytest.raises(ValueError, match="auto, cpu, cuda, vulkan"):
        plan_device("tpu")


def test_this_machine_resolves_and_warns_once_when_a_named_gpu_is_missing(caplog):
    """The real probes (llama_supports_gpu_offload, onnxruntime providers) on this installation."""
    caplog.set_level(logging.INFO, logger="qasr.engine.device")
    p = resolve_device("cuda")
    if p.decoder_gpu_layers == 0:
        assert [r.levelno for r in caplog.records] == [logging.WARNING]
        assert "decoder on the CPU" in caplog.records[0].getMessage()


def test_transcriber_takes_the_device_option(tiny_bundle):
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    with Transcriber(tiny_bundle, TranscribeOptions(threads=1, device="auto")) as t:
        assert t.device.requested == "auto"
        assert t.decoder.options.n_gpu_layers == t.device.decoder_gpu_layers
