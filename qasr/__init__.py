"""qasr: local real-time streaming dictation for Qwen3-ASR."""

__version__ = "0.1.0"
