"""Checkpoint → bundle conversion (needs the `convert` extra: torch, onnx, gguf).

Public API: `convert_checkpoint(hf_dir, out_dir, encoder=..., decoder=..., progress=...)`.
Importing this package imports torch; import it lazily from the CLI.
"""

from qasr.engine.convert.pipeline import convert_checkpoint

__all__ = ["convert_checkpoint"]
