"""Streaming conversion of device audio (any rate, any channel count) to 16 kHz mono float32.

``StreamResampler(in_rate, in_channels).process(block)`` takes a ``[frames]`` or
``[frames, channels]`` float32/int16 block and returns the 16 kHz mono float32 samples that are
ready; soxr keeps a few milliseconds of filter state between calls (``delay_samples``), and
``flush()`` returns that tail at the end of a stream. Channels are averaged before resampling
(one soxr channel instead of several). At 16 kHz input the samples pass through unchanged.
"""

from __future__ import annotations

import numpy as np
import soxr

from qasr.engine.audio_constants import SAMPLE_RATE



def to_mono_float32(block: np.ndarray) -> np.ndarray:
    """``[frames]`` or ``[frames, channels]`` of float or int16 → contiguous ``[frames]`` float32."""
    data = np.asarray(block)
    if data.dtype == np.int16:
        data = data.astype(np.float32) * (1.0 / 32768.0)
    elif data.dtype != np.float32:
        data = data.astype(np.float32)
    if data.ndim == 2:
        data = data[:, 0] if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float32)
    elif data.ndim != 1:
        raise ValueError(f"audio block must be 1-D or 2-D, got shape {data.shape}")
    return np.ascontiguousarray(data, dtype=np.float32)


class StreamResampler:
    """Stateful resampler for one continuous stream; ``reset()`` before an unrelated stream."""

    def __init__(self, in_rate: float, in_channels: int = 1, out_rate: int = SAMPLE_RATE,
                 quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} → {out_rate}")
        if in_channels < 1:
            raise ValueError(f"channel count must be at least 1, got {in_channels}")
        self.in_rate = float(in_rate)
        self.in_channels = int(in_channels)
        self.out_rate = int(out_rate)
        self._passthrough = abs(self.in_rate - self.out_rate) < 1e-9
        self._stream = None if self._passthrough else soxr.ResampleStream(
            self.in_rate, self.out_rate, 1, dtype="float32", quality=quality)

    @property
    def delay_samples(self) -> float:
        """Output samples held inside the filter (0 for pass-through)."""
        return 0.0 if self._stream is None else float(self._stream.delay())

    def process(self, block: np.ndarray) -> np.ndarray:
        mono = to_mono_float32(block)
        if self._stream is None:
            return np.array(mono, dtype=np.float32, copy=True)  # never a view of the caller's buffer
        return self._stream.resample_chunk(mono)

    def flush(self) -> np.ndarray:
        """The samples still inside the filter; the stream is finished afterwards (``reset()`` to reuse)."""
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)

    def reset(self) -> None:
        if self._stream is not None:
            self._stream.clear()
