"""Test audio: the package's deterministic synthetic signals (also used by `qasr-daemon bench`)."""

from qasr.daemon.bench.synthetic_audio import KINDS, SAMPLE_RATE, make_test_audio

__all__ = ["KINDS", "SAMPLE_RATE", "make_test_audio"]
