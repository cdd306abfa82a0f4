"""Run the two ONNX halves of the audio encoder with onnxruntime.

Front-end: each 1 s chunk of log-mel (100 frames) -> 13 embeddings (convs, projection, positions 0..12).
The chunks are independent; a tail of r < 100 frames is zero-padded to 100 before the convolutions
(the padding changes the valid outputs, so it must match the official code) and keeps (r + 7) // 8
outputs. Exception, also as the official code: a clip with a single chunk is not padded at all (the
official code pads to the longest chunk of the clip), which needs a front-end with a dynamic time axis.

Back-end: transformer layers with attention inside 104-token (8 s) windows -> audio embeddings for the
decoder. Full windows run as one batch; the tail window runs alone.

The streaming engine calls `frontend_chunks` / `backend_windows` directly on the chunks and windows
it has; `encode` is the whole-clip path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from qasr.engine.bundle import AudioParams, Bundle
from qasr.errors import QasrError


class EncoderError(QasrError):
    """An encoder model cannot be loaded or run; the message says what to do."""


def default_threads() -> int:
    """Physical cores this process may use: hyper-threads add little to matrix products and make
    the thread barriers of llama.cpp and onnxruntime stall when the machine is busy."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or usable
    except ImportError:
        physical = usable
    return max(1, min(usable, physical))


@dataclass(frozen=True)
class EncoderOptions:
    threads: int = 0  # intra-op threads; 0 = default_threads()
    max_batch_windows: int = 8  # full back-end windows per run (bounds memory on long pieces)
    # Front-end chunks per run. The first conv's output is ~6 MB per chunk at 0.6B shapes and the
    # allocator keeps its peak: 4 chunks cost no speed, 64 chunks (a 30 s piece at once) cost ~600 MB RSS.
    max_batch_chunks: int = 4
    # onnxruntime execution providers in order of preference (engine.device.plan_device picks them)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


def chunk_tokens(n_frames: int, chunk_frames: int = 100, tokens_per_chunk: int = 13) -> int:
    """Front-end output length for `n_frames` mel frames (13 per full second, (r + 7) // 8 for a tail)."""
    full, tail = divmod(int(n_frames), chunk_frames)
    # three stride-2 convs: ((((r - 1) // 2 + 1) - 1) // 2 + 1 - 1) // 2 + 1 == (r + 7) // 8 for r > 0
    return full * tokens_per_chunk + ((tail + 7) // 8 if tail > 0 else 0)


def _session(path, threads: int, providers: tuple[str, ...] = ("CPUExecutionProvider",)):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    # Threads that spin while waiting burn a core when the daemon is idle; let them sleep.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Pre-packed copies of the int8 weights double their memory (~90 MB at 0.6B) for no measurable speed.
    opts.add_session_config_entry("session.disable_prepacking", "1")
    # The CPU arena keeps the largest run's intermediates for good (~170 MB after a 12 s clip at 0.6B,
    # the daemon's growth after its first utterance); without it they go back at the end of each run, at
    # no measured speed cost (scripts/bench_soak.py, docs/benchmarks.md).
    opts.enable_cpu_mem_arena = False
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidProtobuf, ...)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EncoderError(
            f"cannot load encoder model {path} ({first_line[:200]}); re-pull or re-convert the model"
        ) from None
    if providers[0] not in session.get_providers():
        import logging

        logging.getLogger(__name__).warning("encoder on the CPU: onnxruntime could not start %s", providers[0])
    return session


class EncoderRunner:
    def __init__(self, frontend_path, backend_path, audio: AudioParams, options: EncoderOptions = EncoderOptions()):
        self.audio = audio
        self.options = options
        threads = options.threads or default_threads()
        self._front = _session(frontend_path, threads, options.providers)
        self._back = _session(backend_path, threads, options.providers)
        self._front_in = self._front.get_inputs()[0].name
        self._back_in = self._back.get_inputs()[0].name
        time_dim = self._front.get_inputs()[0].shape[-1]
        # A symbolic (str/None) time dimension lets a single short chunk run unpadded.
        self.frontend_dynamic_time = not isinstance(time_dim, int)

    @classmethod
    def from_bundle(cls, bundle: Bundle, options: EncoderOptions = EncoderOptions()) -> "EncoderRunner":
        return cls(bundle.path("encoder_frontend"), bundle.path("encoder_backend"), bundle.manifest.audio, options)

    # --- front-end ---------------------------------------------------------------------------

    def frontend_chunks(self, chunks: np.ndarray) -> np.ndarray:
        """[n, mel_bins, T] float32 -> [n, T', d_model]; T is chunk_frames (or any length if dynamic)."""
        chunks = np.ascontiguousarray(chunks, dtype=np.float32)
        if chunks.shape[0] == 0:
            return np.zeros((0, self.audio.tokens_per_chunk, self.audio.d_model), dtype=np.float32)
        step = max(1, self.options.max_batch_chunks)
        outs = [
            self._front.run(None, {self._front_in: chunks[i : i + step]})[0] for i in range(0, chunks.shape[0], step)
        ]
        return np.concatenate(outs, axis=0).astype(np.float32, copy=False)

    def frontend(self, mel: np.ndarray) -> np.ndarray:
        """Whole-clip front-end: log-mel [mel_bins, T] -> hidden [chunk_tokens(T), d_model]."""
        a = self.audio
        n_frames = int(mel.shape[1])
        if n_frames == 0:
            return np.zeros((0, a.d_model), dtype=np.float32)
        full, tail = divmod(n_frames, a.chunk_frames)
        if full == 0 and self.frontend_dynamic_time:
            out = self.frontend_chunks(mel[None, :, :])
            return out[0, : chunk_tokens(n_frames, a.chunk_frames, a.tokens_per_chunk)]
        n_chunks = full + (1 if tail else 0)
        chunks = np.zeros((n_chunks, a.num_mel_bins, a.chunk_frames), dtype=np.float32)
        body = mel[:, : full * a.chunk_frames].reshape(a.num_mel_bins, full, a.chunk_frames)
        chunks[:full] = body.transpose(1, 0, 2)
        if tail:
            chunks[full, :, :tail] = mel[:, full * a.chunk_frames :]
        out = self.frontend_chunks(chunks)
        hidden = out[:full].reshape(-1, a.d_model)
        if tail:
            hidden = np.concatenate([hidden, out[full, : (tail + 7) // 8]], axis=0)
        return hidden

    # --- back-end ----------------------------------------------------------------------------

    def backend_windows(self, windows: np.ndarray) -> np.ndarray:
        """[n, T, d_model] (T <= window_tokens, each item one attention window) -> [n, T, output_dim]."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        step = max(1, self.options.max_batch_windows)
        outs = [
            self._back.run(None, {self._back_in: windows[i : i + step]})[0] for i in range(0, windows.shape[0], step)
        ]
        return np.concatenate(outs, axis=0).astype(np.float32, copy=False)

    def backend(self, hidden: np.ndarray) -> np.ndarray:
        """Whole-clip back-end: hidden [N, d_model] -> audio embeddings [N, output_dim]."""
        a = self.audio
        n = int(hidden.shape[0])
        if n == 0:
            return np.zeros((0, a.output_dim), dtype=np.float32)
        full, tail = divmod(n, a.window_tokens)
        parts = []
        if full:
            windows = hidden[: full * a.window_tokens].reshape(full, a.window_tokens, a.d_model)
            parts.append(self.backend_windows(windows).reshape(-1, a.output_dim))
        if tail:
            parts.append(self.backend_windows(hidden[None, full * a.window_tokens :])[0])
        return np.concatenate(parts, axis=0)

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """Log-mel [mel_bins, T] -> audio embeddings [chunk_tokens(T), output_dim]."""
        return self.backend(self.frontend(mel))
