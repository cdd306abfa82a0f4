"""Checkpoint → bundle conversion (needs the `convert` extra: onnx, safetensors, gguf; no torch).

Public API: `convert_checkpoint(hf_dir, out_dir, encoder=..., decoder=..., progress=...)`.
Importing the package is cheap; onnx, safetensors and gguf load when a conversion runs.
"""

from qasr.engine.convert.pipeline import check_dependencies, convert_checkpoint

__all__ = ["check_dependencies", "convert_checkpoint"]
