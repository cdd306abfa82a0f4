"""Decode audio files to 16 kHz mono float32 (PyAV decoder, soxr resampler).

Any container/codec FFmpeg reads works (wav, flac, ogg/opus, ogg/vorbis, mp3, webm/opus, m4a ...), at
any sample rate and channel count. Channels are averaged to mono before resampling, as the official
qwen-asr loader does. Problems a user can fix raise `AudioFileError` with one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qasr.engine.audio_constants import SAMPLE_RATE
from qasr.errors import QasrError



class AudioFileError(QasrError):
    """An audio file is missing, empty, corrupt or in a format FFmpeg cannot decode."""


_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0, np.dtype(np.int64): 2.0**63}


def _frame_to_float(frame) -> np.ndarray:
    """One decoded AudioFrame -> float32 [n_samples, n_channels] in [-1, 1]."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        samples = data.T  # [n, channels]
    else:
        samples = data.reshape(-1, channels)
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    scale = _INT_SCALE.get(samples.dtype)
    if scale is not None:
        return (samples.astype(np.float64) / scale).astype(np.float32)
    return samples.astype(np.float32)


def resample(audio: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample mono float32 audio with soxr (high quality, the quality librosa uses by default)."""
    audio = np.asarray(audio, dtype=np.float32)
    if rate == target_rate or audio.size == 0:
        return audio
    import soxr

    return soxr.resample(audio, rate, target_rate, quality="HQ").astype(np.float32)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """[n, channels] (or [n]) -> [n] by averaging channels."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        return samples
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def decode_file(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of a file: (float32 [n, channels], sample_rate)."""
    import av

    path = Path(path)
    if not path.exists():
        raise AudioFileError(f"{path}: no such file")
    if path.is_dir():
        raise AudioFileError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioFileError(f"{path}: the file is empty (0 bytes)")
    chunks: list[np.ndarray] = []
    rate = 0
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                raise AudioFileError(f"{path}: contains no audio stream; pass an audio file")
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                if rate == 0:
                    rate = int(frame.sample_rate)
                elif int(frame.sample_rate) != rate:
                    raise AudioFileError(
                        f"{path}: the sample rate changes inside the stream; convert it with ffmpeg first"
                    )
                chunks.append(_frame_to_float(frame))
    except AudioFileError:
        raise
    except av.FFmpegError as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise AudioFileError(
            f"{path}: cannot decode ({reason}); the file is corrupt, truncated or not a supported audio format"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:  # odd metadata or layouts
        raise AudioFileError(f"{path}: cannot decode ({exc}); convert it to wav or flac first") from None
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32), rate or SAMPLE_RATE
    n_channels = chunks[0].shape[1]
    if any(c.shape[1] != n_channels for c in chunks):
        chunks = [c.mean(axis=1, keepdims=True) for c in chunks]
    return np.concatenate(chunks, axis=0), rate


def load_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a file to mono float32 at `target_rate`, clipped to [-1, 1]."""
    samples, rate = decode_file(path)
    mono = to_mono(samples)
    out = resample(mono, rate, target_rate)
    return np.clip(out, -1.0, 1.0, out=out)
