"""Checkpoint → bundle conversion (needs the `convert` extra: torch, onnx, gguf)."""
