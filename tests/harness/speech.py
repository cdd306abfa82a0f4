"""Speech files: espeak-ng speech, 16 kHz mono WAV read/write, silence padding."""

from __future__ import annotations

import atexit
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
SPEECH_WORDS = (
    "please write down the following notes about the quarterly planning meeting we discussed the budget "
    "for the new office the schedule for hiring two engineers and the design review for the mobile "
    "application next we talked about customer feedback on the latest release and agreed to fix the "
    "login problem before the end of the month finally everybody should send their travel plans to the "
    "team assistant by friday so that the bookings can be made in time for the conference in september"
).split()

_CACHE_DIR: Path | None = None


def _cache_dir() -> Path:
    global _CACHE_DIR
    if _CACHE_DIR is None:
        _CACHE_DIR = Path(tempfile.mkdtemp(prefix="qasr-speech-"))
        atexit.register(shutil.rmtree, _CACHE_DIR, True)
    return _CACHE_DIR


def load_wav(path: str | Path) -> np.ndarray:
    """float32 mono samples at 16 kHz (resampled if needed)."""
    import soundfile
    import soxr

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1).astype(np.float32)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return mono


def write_wav(path: str | Path, pcm: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    import soundfile

    soundfile.write(str(path), np.asarray(pcm, dtype=np.float32), rate, subtype="PCM_16")
    return Path(path)


def with_silence(pcm: np.ndarray, before_s: float, after_s: float) -> np.ndarray:
    return np.concatenate([np.zeros(int(before_s * SAMPLE_RATE), np.float32), pcm,
                           np.zeros(int(after_s * SAMPLE_RATE), np.float32)])


def _espeak(text: str, out: Path, voice: str = "en-us", speed: int | None = None) -> np.ndarray:
    cmd = ["espeak-ng", "-v", voice, *(["-s", str(speed)] if speed else []), "-w", str(out), text]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    pcm = load_wav(out)
    out.unlink()
    return pcm


def espeak_wav(text: str, voice: str = "en-us") -> Path:
    """espeak-ng speech as a 16 kHz mono 16-bit WAV (cached per text and voice for the process)."""
    key = hashlib.sha1(f"{voice}\0{text}".encode()).hexdigest()[:16]
    out = _cache_dir() / f"{key}.wav"
    if not out.exists():
        write_wav(out, _espeak(text, _cache_dir() / f"{key}.raw.wav", voice))
    return out


def trim_silence(pcm: np.ndarray, rel: float = 0.02) -> np.ndarray:
    loud = np.flatnonzero(np.abs(pcm) > rel * float(np.max(np.abs(pcm)) or 1.0))
    return pcm[loud[0]: loud[-1] + 1] if loud.size else pcm


def espeak_speech(seconds: float) -> np.ndarray:
    """About ``seconds`` of espeak-ng English speech (16 kHz float32, peak 0.5), leading/trailing silence
    removed: the speaking rate is adjusted until the duration is within 5 %."""
    words = max(3, int(round(seconds * 2.6)))
    text = " ".join(SPEECH_WORDS[i % len(SPEECH_WORDS)] for i in range(words))
    speed = 175.0
    pcm = np.zeros(0, np.float32)
    for _ in range(3):
        pcm = trim_silence(_espeak(text, _cache_dir() / "espeak-timed.wav", speed=int(speed)))
        got = pcm.size / SAMPLE_RATE
        if abs(got - seconds) / seconds < 0.05:
            break
        speed = min(450.0, max(80.0, speed * got / seconds))
    return (0.5 * pcm / max(1e-6, float(np.max(np.abs(pcm))))).astype(np.float32)


def synthetic_speech(seconds: float) -> np.ndarray:
    from qasr.daemon.bench.synthetic_audio import make_test_audio

    return make_test_audio(seconds, seed=int(seconds * 10), kind="speechlike")


class SpeechFile:
    """A WAV to play: ``lead_s`` of silence, the speech, ``tail_s`` of silence; ``speech_end_s`` is the
    offset of the last voiced sample in the file."""

    def __init__(self, path: Path, lead_s: float, speech_s: float, tail_s: float) -> None:
        self.path, self.lead_s, self.speech_s, self.tail_s = path, lead_s, speech_s, tail_s

    @property
    def speech_end_s(self) -> float:
        return self.lead_s + self.speech_s


def make_speech_file(seconds: float, folder: Path, kind: str = "espeak", lead_s: float = 0.3,
                     tail_s: float = 0.2) -> SpeechFile:
    """``seconds`` of espeak-ng (``kind="espeak"``) or synthetic speech-like audio with silence around it."""
    pcm = espeak_speech(seconds) if kind == "espeak" else synthetic_speech(seconds)
    path = write_wav(folder / f"speech-{kind}-{seconds:g}s.wav", with_silence(pcm, lead_s, tail_s))
    return SpeechFile(path, lead_s, pcm.size / SAMPLE_RATE, tail_s)
