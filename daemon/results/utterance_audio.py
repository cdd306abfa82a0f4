"""``debug.save_audio_dir``: every utterance's audio, exactly as the engine got it, as a float32 WAV."""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import numpy as np

from qasr.engine.audio_constants import SAMPLE_RATE


class UtteranceAudioSaver:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._chunks: dict[str, list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def add(self, utterance_id: str, pcm: np.ndarray) -> None:
        with self._lock:
            self._chunks.setdefault(utterance_id, []).append(pcm.copy())

    def drop(self, utterance_id: str) -> None:
        with self._lock:
            self._chunks.pop(utterance_id, None)

    def save(self, utterance_id: str) -> Path | None:
        with self._lock:
            chunks = self._chunks.pop(utterance_id, None)
        if not chunks:
            return None
        target = self.folder / f"utterance-{os.getpid()}-{int(utterance_id):04d}.wav"
        write_wav_float32(target, np.concatenate(chunks))
        return target


def write_wav_float32(path: Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Mono IEEE-float WAV (format 3): keeps the samples bit-exact."""
    data = np.asarray(audio, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, sample_rate, sample_rate * 4, 4, 32, 0)
    fact = struct.pack("<I", len(data) // 4)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
            + b"data" + struct.pack("<I", len(data)) + data)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    tmp.replace(path)
