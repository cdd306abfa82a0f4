"""A file's duration from its container's header (no decoding): for the longest-first schedule and the
progress bar. 0.0 when the header does not say or the file cannot be opened (the worker then reports why)."""

from __future__ import annotations


def audio_seconds(path: str) -> float:
    try:
        import av

        with av.open(path, mode="r") as container:
            if container.duration is not None:
                return max(float(container.duration) / 1_000_000, 0.0)  # av.time_base: microseconds
            stream = container.streams.audio[0] if container.streams.audio else None
            if stream is not None and stream.duration is not None and stream.time_base is not None:
                return max(float(stream.duration * stream.time_base), 0.0)
    except Exception:  # noqa: BLE001 - any unreadable file: unknown length
        pass
    return 0.0
