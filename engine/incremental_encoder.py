"""Incremental audio encoding for one utterance: audio arrives in pieces, embeddings come out.

What is final and what is not (Qwen3-ASR's encoder is chunked and windowed):
- a log-mel frame is final once its 400-sample window lies inside the audio received;
- a 1 s chunk (100 frames) is final once its frames are, so its conv front-end runs exactly once;
- an 8 s window (8 chunks, 104 tokens) is final once its chunks are, so its transformer output is
  cached and never recomputed; only the open window (the last < 8 s) is recomputed at each step.

The log-mel clamp uses the maximum over the whole clip. While streaming, the maximum seen so far is
used; a chunk encoded before a louder moment may differ slightly from the offline features. Partials
accept that; `exact_embeddings` (used for the final) recomputes the features with the global maximum
and re-runs the front-end for exactly the chunks whose features changed, so the final embeddings are
those of the offline encoder for the same audio.
"""

from __future__ import annotations

import numpy as np

from qasr.engine.encoder import EncoderRunner, chunk_tokens
from qasr.engine.bundle import AudioParams
from qasr.engine.features import (
    log10_mel,
    mel_filters,
    normalize_log_mel,
    num_frames,
    power_frames,
)
from qasr.engine.transcribe import normalize_waveform


class IncrementalEncoder:
    def __init__(self, encoder: EncoderRunner, params: AudioParams, min_audio_s: float = 0.5):
        self.encoder = encoder
        self.params = params
        self.audio_params = encoder.audio
        self.min_samples = int(round(min_audio_s * params.sample_rate))
        self._audio = np.zeros(params.sample_rate * 8, dtype=np.float32)
        self.n_samples = 0
        self._log_mel = np.zeros((params.num_mel_bins, 0), dtype=np.float64)  # final frames only
        self.max_log = -np.inf  # running maximum of the log-mel over every frame seen
        self._chunk_feats: list[np.ndarray] = []  # normalized features each finished chunk was encoded with
        self._chunk_hidden: list[np.ndarray] = []  # front-end output per finished chunk [13, d_model]
        self._window_embeds: list[np.ndarray] = []  # back-end output per finished window [104, output_dim]
        self._encoded_max = -np.inf  # the maximum the finished chunks' features are clamped with
        # Lowest finished window recomputed since the decoder last synced (it must drop that audio from its
        # cache); a large number when nothing changed.
        self.changed_from_window = 1 << 30

    # --- audio in -------------------------------------------------------------------------------

    @property
    def audio(self) -> np.ndarray:
        return self._audio[: self.n_samples]

    @property
    def audio_s(self) -> float:
        return self.n_samples / self.params.sample_rate

    def push(self, pcm: np.ndarray) -> None:
        """Append audio; run the front-end of newly finished chunks and the back-end of finished windows."""
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        need = self.n_samples + pcm.shape[0]
        if need > self._audio.shape[0]:
            grown = np.zeros(max(need, 2 * self._audio.shape[0]), dtype=np.float32)
            grown[: self.n_samples] = self._audio[: self.n_samples]
            self._audio = grown
        self._audio[self.n_samples : need] = pcm
        self.n_samples = need
        self._extend_final_frames()
        self._encode_finished_chunks()

    def _padded(self) -> np.ndarray:
        half = self.params.n_fft // 2
        return np.pad(self.audio.astype(np.float64), (half, half), mode="reflect")

    def _log_mel_frames(self, padded: np.ndarray, first: int, last: int) -> np.ndarray:
        hop = self.params.hop_length
        power = power_frames(padded[first * hop :], last - first, self.params)
        return np.log10(np.maximum(power @ mel_filters(self.params), 1e-10)).T

    def _n_final_frames(self) -> int:
        # frame t covers padded[t*hop : t*hop + n_fft] = audio[t*hop - n_fft/2 : t*hop + n_fft/2]
        n_total = num_frames(self.n_samples, self.params)
        n_inside = (self.n_samples - self.params.n_fft // 2) // self.params.hop_length + 1
        return max(0, min(n_total, n_inside))

    def _extend_final_frames(self) -> None:
        first, last = self._log_mel.shape[1], self._n_final_frames()
        if last <= first or self.n_samples <= self.params.n_fft // 2:
            return
        new = self._log_mel_frames(self._padded(), first, last)
        self.max_log = max(self.max_log, float(new.max()))
        self._log_mel = np.concatenate([self._log_mel, new], axis=1)

    def _refresh_for_new_maximum(self) -> None:
        """A louder moment raised the clip maximum: re-encode the finished chunks whose clamped features
        change, now (during speech, within the step budget) rather than at the final; their windows are
        recomputed and `changed_from_window` tells the decoder which cached audio to drop."""
        a = self.audio_params
        if not self._chunk_feats or self.max_log <= self._encoded_max:
            return
        self._encoded_max = self.max_log
        stale = []
        for k, old in enumerate(self._chunk_feats):
            raw = self._log_mel[:, k * a.chunk_frames : (k + 1) * a.chunk_frames]
            new = normalize_log_mel(raw, self.max_log)
            if not np.array_equal(new, old):
                stale.append((k, new))
        if not stale:
            return
        hidden = self.encoder.frontend_chunks(np.stack([new for _, new in stale]))
        for (k, new), out in zip(stale, hidden):
            self._chunk_feats[k] = new
            self._chunk_hidden[k] = out
        per_window = a.window_tokens // a.tokens_per_chunk
        first_window = stale[0][0] // per_window
        if first_window < len(self._window_embeds):
            del self._window_embeds[first_window:]
            self.changed_from_window = min(self.changed_from_window, first_window)

    def _encode_finished_chunks(self) -> None:
        self._refresh_for_new_maximum()
        a = self.audio_params
        done = len(self._chunk_hidden)
        finished = self._log_mel.shape[1] // a.chunk_frames
        if finished > done:
            self._encoded_max = self.max_log
            feats = normalize_log_mel(self._log_mel[:, done * a.chunk_frames : finished * a.chunk_frames], self.max_log)
            chunks = feats.reshape(a.num_mel_bins, finished - done, a.chunk_frames).transpose(1, 0, 2)
            hidden = self.encoder.frontend_chunks(np.ascontiguousarray(chunks))
            for i in range(finished - done):
                self._chunk_feats.append(chunks[i])
                self._chunk_hidden.append(hidden[i])
        per_window = a.window_tokens // a.tokens_per_chunk
        n_windows = len(self._chunk_hidden) // per_window
        if n_windows > len(self._window_embeds):
            first = len(self._window_embeds)
            stacked = np.stack(
                [np.concatenate(self._chunk_hidden[w * per_window : (w + 1) * per_window]) for w in range(first, n_windows)]
            )
            for embeds in self.encoder.backend_windows(stacked):
                self._window_embeds.append(embeds)

    # --- embeddings out -------------------------------------------------------------------------

    @property
    def finished_windows(self) -> list[np.ndarray]:
        """Back-end output of every finished 8 s window (never changes once there)."""
        return list(self._window_embeds)

    def open_window(self) -> np.ndarray:
        """Embeddings of the audio after the last finished window, as encoded from what arrived so far."""
        a = self.audio_params
        per_window = a.window_tokens // a.tokens_per_chunk
        first_chunk = len(self._window_embeds) * per_window
        hidden = list(self._chunk_hidden[first_chunk:])
        n_frames = num_frames(self.n_samples, self.params)
        done_frames = len(self._chunk_hidden) * a.chunk_frames
        tail_frames = n_frames - done_frames
        if tail_frames > 0:
            padded = self._padded()
            log_tail = np.concatenate(
                [self._log_mel[:, done_frames:], self._log_mel_frames(padded, self._log_mel.shape[1], n_frames)], axis=1
            )
            max_log = max(self.max_log, float(log_tail.max()))
            feats = normalize_log_mel(log_tail, max_log)
            if done_frames == 0 and self.encoder.frontend_dynamic_time:
                tail_hidden = self.encoder.frontend_chunks(feats[None])[0]
            else:
                chunk = np.zeros((1, a.num_mel_bins, a.chunk_frames), dtype=np.float32)
                chunk[0, :, :tail_frames] = feats
                tail_hidden = self.encoder.frontend_chunks(chunk)[0]
            hidden.append(tail_hidden[: (tail_frames + 7) // 8])
        if not hidden:
            return np.zeros((0, a.output_dim), dtype=np.float32)
        return self.encoder.backend_windows(np.concatenate(hidden)[None])[0]

    def exact_embeddings(self) -> tuple[np.ndarray, int]:
        """Embeddings equal to the offline encoder's for this audio, and how many leading finished
        windows are unchanged from `finished_windows` (so a decoder can keep them in its cache)."""
        a = self.audio_params
        audio = normalize_waveform(self.audio)
        if audio.shape[0] < self.min_samples:
            audio = np.pad(audio, (0, self.min_samples - audio.shape[0]))
        feats = normalize_log_mel(log10_mel(audio, self.params))
        n_frames = feats.shape[1]
        full, tail = divmod(n_frames, a.chunk_frames)
        if full == 0:
            return self.encoder.encode(feats), 0
        hidden: list[np.ndarray] = []
        changed: list[int] = []
        for k in range(full):
            chunk = feats[:, k * a.chunk_frames : (k + 1) * a.chunk_frames]
            if k < len(self._chunk_feats) and np.array_equal(chunk, self._chunk_feats[k]):
                hidden.append(self._chunk_hidden[k])
            else:
                changed.append(k)
                hidden.append(None)  # type: ignore[arg-type]
        if changed:
            batch = np.stack([feats[:, k * a.chunk_frames : (k + 1) * a.chunk_frames] for k in changed])
            for k, out in zip(changed, self.encoder.frontend_chunks(batch)):
                hidden[k] = out
        if tail:
            chunk = np.zeros((1, a.num_mel_bins, a.chunk_frames), dtype=np.float32)
            chunk[0, :, :tail] = feats[:, full * a.chunk_frames :]
            hidden.append(self.encoder.frontend_chunks(chunk)[0][: (tail + 7) // 8])
        flat = np.concatenate(hidden)
        assert flat.shape[0] == chunk_tokens(n_frames, a.chunk_frames, a.tokens_per_chunk)
        per_window = a.window_tokens // a.tokens_per_chunk
        first_changed = min(changed) if changed else full
        kept = min(len(self._window_embeds), first_changed // per_window)
        parts = list(self._window_embeds[:kept])
        rest = flat[kept * a.window_tokens :]
        n_full, n_tail = divmod(rest.shape[0], a.window_tokens)
        if n_full:
            parts.extend(self.encoder.backend_windows(rest[: n_full * a.window_tokens].reshape(n_full, a.window_tokens, -1)))
        if n_tail:
            parts.append(self.encoder.backend_windows(rest[None, n_full * a.window_tokens :])[0])
        return np.concatenate(parts), kept
