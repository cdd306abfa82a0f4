"""Log-mel features in numpy, identical to the Whisper-style extractor Qwen3-ASR was trained with.

STFT (n_fft 400, hop 160, periodic Hann, centred with reflect padding, last frame dropped) -> power
spectrum -> 128 Slaney-scale, Slaney-normalised mel filters over 0-8000 Hz -> log10(max(x, 1e-10)) ->
clamp to (global max - 8) -> (x + 4) / 4.  A clip of n samples gives n // hop frames.

The clamp depends on the maximum over the whole clip, so the pipeline is split in two: `log10_mel`
(per-frame, no global state) and `normalize_log_mel` (the clamp with an explicit `max_log`). A streaming
caller can keep a running maximum and call the second part itself.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from qasr.engine.bundle import AudioParams

LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0  # log10 units kept below the maximum


def _hz_to_mel_slaney(freq: np.ndarray) -> np.ndarray:
    freq = np.asarray(freq, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mels = freq / f_sp
    above = freq >= min_log_hz
    mels = np.where(above, min_log_mel + np.log(np.maximum(freq, 1e-12) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz_slaney(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3.0
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    freqs = mels * f_sp
    above = mels >= min_log_mel
    return np.where(above, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freqs)


@lru_cache(maxsize=8)
def mel_filters(params: AudioParams = AudioParams()) -> np.ndarray:
    """Slaney mel filterbank, shape [n_fft // 2 + 1, num_mel_bins], float64 (read-only)."""
    n_freqs = params.n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, params.sample_rate / 2.0, n_freqs)
    mel_points = np.linspace(
        _hz_to_mel_slaney(0.0), _hz_to_mel_slaney(params.sample_rate / 2.0), params.num_mel_bins + 2
    )
    filter_freqs = _mel_to_hz_slaney(mel_points)
    diffs = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / diffs[:-1]
    up = slopes[:, 2:] / diffs[1:]
    banks = np.maximum(0.0, np.minimum(down, up))
    enorm = 2.0 / (filter_freqs[2:] - filter_freqs[:-2])  # Slaney area normalisation
    banks = banks * enorm[None, :]
    banks.setflags(write=False)
    return banks


@lru_cache(maxsize=8)
def _periodic_hann(n: int) -> np.ndarray:
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    window.setflags(write=False)
    return window


def num_frames(n_samples: int, params: AudioParams = AudioParams()) -> int:
    return n_samples // params.hop_length


def power_frames(padded: np.ndarray, n_frames: int, params: AudioParams = AudioParams()) -> np.ndarray:
    """Power spectrum of `n_frames` frames of an already padded signal (frame t starts at t * hop).

    Returns [n_frames, n_fft // 2 + 1] float64.
    """
    if n_frames <= 0:
        return np.zeros((0, params.n_fft // 2 + 1), dtype=np.float64)
    padded = np.ascontiguousarray(padded, dtype=np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(padded, params.n_fft)[:: params.hop_length][:n_frames]
    spectrum = np.fft.rfft(frames * _periodic_hann(params.n_fft), axis=-1)
    return spectrum.real**2 + spectrum.imag**2


def log10_mel(audio: np.ndarray, params: AudioParams = AudioParams()) -> np.ndarray:
    """Unclamped log10 mel energies of a whole clip, [num_mel_bins, n_samples // hop] float64."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    n_frames = num_frames(audio.shape[0], params)
    if n_frames == 0:
        return np.zeros((params.num_mel_bins, 0), dtype=np.float64)
    half = params.n_fft // 2
    # For clips shorter than half a window numpy repeats the reflection (torch.stft would refuse).
    padded = np.pad(audio.astype(np.float64), (half, half), mode="reflect")
    power = power_frames(padded, n_frames, params)
    mel = power @ mel_filters(params)
    return np.log10(np.maximum(mel, LOG_FLOOR)).T


def log10_mel_range(
    audio: np.ndarray, start: int, stop: int, params: AudioParams = AudioParams()
) -> np.ndarray:
    """Frames [start, stop) of `log10_mel(audio)` without computing the others (for streaming).

    Frame t looks at samples [t*hop - n_fft/2, t*hop + n_fft/2); outside the clip the samples are
    reflected as the whole-clip path does, so a frame whose window reaches past the current end of a
    growing buffer is not final until `final_frames(len(audio) + more)` includes it.
    """
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    n = audio.shape[0]
    stop = min(stop, num_frames(n, params))
    if stop <= start:
        return np.zeros((params.num_mel_bins, 0), dtype=np.float64)
    half = params.n_fft // 2
    index = np.arange(start * params.hop_length - half, (stop - 1) * params.hop_length + half)
    index = np.abs(index)  # reflect at the start (no edge repeat), as np.pad(mode="reflect")
    over = index >= n
    index[over] = 2 * (n - 1) - index[over]  # reflect at the end
    padded = audio.astype(np.float64)[index]
    power = power_frames(padded, stop - start, params)
    return np.log10(np.maximum(power @ mel_filters(params), LOG_FLOOR)).T


def final_frames(n_samples: int, params: AudioParams = AudioParams()) -> int:
    """How many leading frames of a growing buffer no longer depend on samples still to come."""
    half = params.n_fft // 2
    if n_samples < half:
        return 0
    return min(num_frames(n_samples, params), (n_samples - half) // params.hop_length + 1)


def normalize_log_mel(log_mel: np.ndarray, max_log: float | None = None) -> np.ndarray:
    """Clamp to (max_log - 8) and scale to (x + 4) / 4; max_log defaults to the array's own maximum."""
    if log_mel.size == 0:
        return log_mel.astype(np.float32)
    if max_log is None:
        max_log = float(log_mel.max())
    return ((np.maximum(log_mel, max_log - DYNAMIC_RANGE) + 4.0) / 4.0).astype(np.float32)


def log_mel_features(
    audio: np.ndarray, params: AudioParams = AudioParams(), max_log: float | None = None
) -> np.ndarray:
    """Model input features of a 16 kHz mono clip: float32 [num_mel_bins, n_samples // hop]."""
    return normalize_log_mel(log10_mel(audio, params), max_log)
