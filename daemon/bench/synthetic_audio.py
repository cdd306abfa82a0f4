"""Deterministic synthetic audio (16 kHz mono float32) that excites a random model: tests and benchmarks.

``speechlike``: syllable-sized voiced segments (a harmonic tone whose pitch glides and whose
harmonics are shaped by moving formant-like peaks), unvoiced noise bursts and short pauses, so
the log-mel varies in time and frequency the way speech does. Other kinds: ``tones`` (steady
chords), ``noise`` (white noise), ``silence`` (all zeros).
"""

from __future__ import annotations

import numpy as np

from qasr.engine.audio_constants import SAMPLE_RATE

KINDS = ("speechlike", "tones", "noise", "silence")


def make_test_audio(seconds: float, seed: int = 0, kind: str = "speechlike", peak: float = 0.5) -> np.ndarray:
    """Return ``seconds`` of deterministic float32 audio at 16 kHz with the given peak level."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS}")
    n = int(round(seconds * SAMPLE_RATE))
    rng = np.random.default_rng(seed)
    if n == 0 or kind == "silence":
        return np.zeros(n, dtype=np.float32)
    if kind == "noise":
        x = rng.standard_normal(n)
    elif kind == "tones":
        t = np.arange(n) / SAMPLE_RATE
        x = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in rng.uniform(150, 3000, size=3))
    else:
        x = _speechlike(n, rng)
    x = np.asarray(x, dtype=np.float64)
    top = float(np.max(np.abs(x)))
    if top > 0:
        x = x / top * peak
    return x.astype(np.float32)


def _speechlike(n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    pos = 0
    base_f0 = rng.uniform(95, 230)
    while pos < n:
        choice = rng.random()
        length = int(rng.uniform(0.08, 0.35) * SAMPLE_RATE)
        length = min(length, n - pos)
        if choice < 0.62:
            seg = _voiced(length, base_f0, rng)
        elif choice < 0.85:
            seg = _burst(length, rng)
        else:
            seg = 0.003 * rng.standard_normal(length)  # pause with a noise floor
        out[pos:pos + length] = seg
        pos += length
    return out


def _voiced(length: int, base_f0: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(length) / SAMPLE_RATE
    f0 = base_f0 * rng.uniform(0.8, 1.3) * (1 + rng.uniform(-0.15, 0.15) * t / max(t[-1], 1e-3))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    formants = rng.uniform([300, 900, 2200], [900, 2200, 3400])
    glide = rng.uniform(0.85, 1.15, size=3)
    seg = np.zeros(length)
    for k in range(1, int(4000 / f0.max())):
        freq = k * f0
        gain = np.zeros(length)
        for formant, g in zip(formants, glide):
            centre = formant * (1 + (g - 1) * t / max(t[-1], 1e-3))
            gain += np.exp(-((freq - centre) / 180.0) ** 2)
        seg += gain / k**0.5 * np.sin(k * phase)
    return seg * _envelope(length)


def _burst(length: int, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(length)
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(length, 1 / SAMPLE_RATE)
    centre = rng.uniform(2500, 6500)
    spectrum *= np.exp(-((freqs - centre) / rng.uniform(600, 2000)) ** 2)
    shaped = np.fft.irfft(spectrum, n=length)
    shaped /= max(float(np.max(np.abs(shaped))), 1e-9)
    return 0.6 * shaped * _envelope(length)


def _envelope(length: int) -> np.ndarray:
    ramp = max(1, min(length // 4, int(0.02 * SAMPLE_RATE)))
    env = np.ones(length)
    env[:ramp] = np.linspace(0, 1, ramp)
    env[-ramp:] = np.minimum(env[-ramp:], np.linspace(1, 0, ramp))
    return env
