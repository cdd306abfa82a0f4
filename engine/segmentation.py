"""Cut long audio into pieces at low-energy points, and the silence gate.

A piece is at most `max_piece_s` long: the cut is the quietest `window_ms` stretch within the last
`search_s` seconds before that limit (its quietest sample), so words are rarely split. Pieces tile the
input exactly (no gaps, no overlap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qasr.engine.audio_constants import SAMPLE_RATE



@dataclass(frozen=True)
class SegmentationOptions:
    max_piece_s: float = 30.0
    search_s: float = 5.0  # look this far back from the limit for a quiet point
    window_ms: float = 100.0  # energy is summed over windows this long
    sample_rate: int = SAMPLE_RATE


@dataclass(frozen=True)
class Piece:
    start: int  # sample offsets in the input
    end: int

    def start_s(self, rate: int = SAMPLE_RATE) -> float:
        return self.start / rate

    def end_s(self, rate: int = SAMPLE_RATE) -> float:
        return self.end / rate


def cut_points(audio: np.ndarray, options: SegmentationOptions = SegmentationOptions()) -> list[Piece]:
    total = int(audio.shape[0])
    rate = options.sample_rate
    max_len = max(1, int(options.max_piece_s * rate))
    search = int(options.search_s * rate)
    win = max(4, int(options.window_ms / 1000.0 * rate))
    magnitude = np.abs(np.asarray(audio, dtype=np.float32))
    pieces: list[Piece] = []
    start = 0
    while total - start > max_len:
        limit = start + max_len
        left = max(start + 1, limit - search)
        if limit - left <= win:
            boundary = limit
        else:
            sums = np.convolve(magnitude[left:limit], np.ones(win, dtype=np.float32), mode="valid")
            quiet = int(np.argmin(sums))
            boundary = left + quiet + int(np.argmin(magnitude[left + quiet : left + quiet + win]))
        boundary = min(max(boundary, start + 1), limit)
        pieces.append(Piece(start, boundary))
        start = boundary
    pieces.append(Piece(start, total))
    return pieces


# --- silence gate --------------------------------------------------------------------------------

# A piece whose loudest 30 ms has an RMS below -60 dBFS (0.001 of full scale) is not decoded: that is
# 20-30 dB under the quietest speech a desk microphone picks up, and well above digital silence or
# 16-bit dither (about -90 dBFS). Undecoded pieces give empty text, so the model never invents words
# for them.
SILENCE_RMS_DBFS = -60.0
GATE_WINDOW_MS = 30.0


def peak_window_rms(audio: np.ndarray, rate: int = SAMPLE_RATE, window_ms: float = GATE_WINDOW_MS) -> float:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        return 0.0
    win = max(1, int(window_ms / 1000.0 * rate))
    if audio.size <= win:
        return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    squares = np.square(audio, dtype=np.float64)
    csum = np.concatenate(([0.0], np.cumsum(squares)))
    energy = (csum[win:] - csum[:-win]) / win
    return float(np.sqrt(max(energy.max(), 0.0)))


def is_silent(audio: np.ndarray, rate: int = SAMPLE_RATE, threshold_dbfs: float = SILENCE_RMS_DBFS) -> bool:
    return peak_window_rms(audio, rate) < 10.0 ** (threshold_dbfs / 20.0)
