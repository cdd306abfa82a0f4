"""PCM on binary frames: s16le/f32le interleaved little-endian bytes <-> float32 mono 16 kHz samples.

- ``PcmDecoder`` (server side) turns a stream of binary frames (any rate, 1-2 channels, frames split
  anywhere) into float32 mono 16 kHz numpy arrays; ``pcm_to_float32_16k`` is the one-shot form.
- ``encode_pcm`` (client side) turns a numpy array or raw bytes into the bytes and ``audio.start`` fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qasr.protocol.constants import PCM_FORMAT_NAMES, TARGET_SAMPLE_RATE, ErrorCode, ProtocolError

PCM_FORMATS = dict(zip(PCM_FORMAT_NAMES, (np.dtype("<i2"), np.dtype("<f4"))))


def decode_pcm(data: bytes, fmt: str, channels: int = 1) -> np.ndarray:
    """Interleaved little-endian PCM bytes -> float32 mono in [-1, 1]. ``len(data)`` must be whole frames."""
    dtype = PCM_FORMATS[fmt]
    frame_bytes = dtype.itemsize * channels
    if len(data) % frame_bytes:
        raise ProtocolError(ErrorCode.BAD_AUDIO, f"{len(data)} bytes is not a whole number of {fmt} frames")
    samples = np.frombuffer(data, dtype=dtype)
    if fmt == "s16le":
        samples = samples.astype(np.float32) / np.float32(32768.0)
    else:
        samples = samples.astype(np.float32)
        if not np.all(np.isfinite(samples)):
            raise ProtocolError(ErrorCode.BAD_AUDIO, "f32le audio contains NaN or infinite samples")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples


def encode_pcm(pcm: np.ndarray | bytes, fmt: str | None = None, channels: int = 1) -> tuple[bytes, str, int]:
    """Client side: samples -> (bytes, format, channels) for ``audio.start`` and the binary frames.

    float arrays become f32le, int16 arrays s16le; arrays shaped (n, channels) give their channel count;
    raw bytes need ``fmt``. Raises ProtocolError(bad_audio) with a one-line message otherwise.
    """
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        if fmt not in PCM_FORMATS:
            raise ProtocolError(ErrorCode.BAD_AUDIO, "raw PCM bytes need fmt='s16le' or fmt='f32le'")
        return bytes(pcm), fmt, channels
    array = np.asarray(pcm)
    if array.ndim == 2:
        channels = array.shape[1]
    elif array.ndim != 1:
        raise ProtocolError(ErrorCode.BAD_AUDIO, f"PCM must be shaped (samples,) or (samples, channels), not {array.shape}")
    if array.dtype == np.int16:
        return array.astype("<i2").tobytes(), "s16le", channels
    return array.astype("<f4").tobytes(), "f32le", channels


def frame_bytes(fmt: str, channels: int = 1) -> int:
    """Bytes per frame (one sample of every channel)."""
    return PCM_FORMATS[fmt].itemsize * channels


@dataclass(frozen=True)
class AudioFormat:
    format: str
    sample_rate: int
    channels: int = 1

    @classmethod
    def from_message(cls, msg: dict) -> AudioFormat:
        return cls(msg["format"], int(msg["sample_rate"]), int(msg.get("channels", 1)))


class PcmDecoder:
    """Streaming bytes -> float32 mono 16 kHz. Carries partial frames between chunks; resamples with soxr."""

    def __init__(self, audio: AudioFormat, target_rate: int = TARGET_SAMPLE_RATE):
        self.audio = audio
        self.target_rate = target_rate
        self._frame_bytes = frame_bytes(audio.format, audio.channels)
        self._pending = b""
        self._resampler = None
        if audio.sample_rate != target_rate:
            import soxr

            self._resampler = soxr.ResampleStream(audio.sample_rate, target_rate, 1, dtype="float32", quality="HQ")
        self.bytes_in = 0
        self.samples_out = 0

    def feed(self, data: bytes) -> np.ndarray:
        self.bytes_in += len(data)
        data = self._pending + bytes(data)
        whole = len(data) - len(data) % self._frame_bytes
        self._pending = data[whole:]
        samples = decode_pcm(data[:whole], self.audio.format, self.audio.channels)
        return self._out(samples, last=False)

    def flush(self) -> np.ndarray:
        """End of stream: returns the resampler's tail (a dangling partial frame is dropped)."""
        self._pending = b""
        return self._out(np.zeros(0, np.float32), last=True)

    def _out(self, samples: np.ndarray, last: bool) -> np.ndarray:
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=last)
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        self.samples_out += samples.size
        return samples


def pcm_to_float32_16k(data: bytes, fmt: str, sample_rate: int, channels: int = 1) -> np.ndarray:
    """One-shot: whole PCM buffer -> float32 mono 16 kHz."""
    samples = decode_pcm(data, fmt, channels)
    if sample_rate != TARGET_SAMPLE_RATE:
        import soxr

        samples = soxr.resample(samples, sample_rate, TARGET_SAMPLE_RATE, quality="HQ").astype(np.float32)
    return samples
