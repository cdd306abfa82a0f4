"""What the user sees of a batch run: on a terminal one bar redrawn in place (files, audio hours, speed, ETA)
with failures printed above it; otherwise (a pipe, a log file) one plain line per finished file. Then a
summary either way."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import TextIO


def clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def hours(seconds: float) -> str:
    """Audio length: hours, or minutes under an hour."""
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


@dataclass
class Tally:
    files: int  # to do in this run
    audio_s: float  # their duration from the containers (0 for those that could not be probed)
    done: int = 0
    failed: int = 0
    done_audio_s: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def wall_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def speed(self) -> float:
        """Audio seconds per wall second (× real time); 0 until a file is done."""
        return self.done_audio_s / self.wall_s if self.done_audio_s > 0 and self.wall_s > 0 else 0.0

    def eta_s(self) -> float | None:
        if self.speed <= 0:
            return None
        return max(self.audio_s - self.done_audio_s, 0.0) / self.speed


class Progress:
    def __init__(self, tally: Tally, stream: TextIO, tty: bool | None = None):
        self.tally = tally
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self._drawn = False

    def note(self, line: str) -> None:
        self._clear()
        print(line, file=self.stream, flush=True)
        self.tick()

    def file_finished(self, path: str, ok: bool, audio_s: float, seconds: float, error: str | None) -> None:
        t = self.tally
        if ok:
            t.done += 1
            t.done_audio_s += audio_s
        else:
            t.failed += 1
        if not ok:
            self.note(f"failed [{t.finished}/{t.files}] {path}: {error}")
        elif not self.tty:
            self.note(f"done [{t.finished}/{t.files}] {path} ({audio_s:.1f} s audio in {seconds:.1f} s)")
        else:
            self.tick()

    def tick(self) -> None:
        if not self.tty:
            return
        t = self.tally
        width = shutil.get_terminal_size((100, 20)).columns
        eta = t.eta_s()
        facts = (f" {t.finished}/{t.files} files  {hours(t.done_audio_s)} of {hours(t.audio_s)} audio  "
                 f"{t.speed:.1f}× real time  ETA {clock(eta) if eta is not None else '?'}")
        bar_width = max(10, min(40, width - len(facts) - 3))
        share = t.done_audio_s / t.audio_s if t.audio_s > 0 else (t.finished / t.files if t.files else 1.0)
        filled = int(round(bar_width * min(share, 1.0)))
        line = f"[{'#' * filled}{'.' * (bar_width - filled)}]{facts}"
        self.stream.write("\r" + line[: width - 1] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False

    def summary(self, out_manifest: str, skipped_done: int, skipped_failed: int, left: int, interrupted: bool) -> None:
        self._clear()
        t = self.tally
        speed = f"{t.speed:.1f}× real time" if t.speed else "no audio done"
        parts = [f"{t.done} done", f"{t.failed} failed"]
        if skipped_done or skipped_failed:
            parts.append(f"{skipped_done + skipped_failed} skipped (done or failed in an earlier run)")
        line = f"batch: {', '.join(parts)}; {hours(t.done_audio_s)} of audio in {clock(t.wall_s)} ({speed})"
        print(line, file=self.stream)
        if interrupted:
            print(f"batch: interrupted with {left} files left; run the same command again to resume",
                  file=self.stream)
        if t.failed or skipped_failed:
            retry = " (--retry-failed tries them again)" if skipped_failed or t.failed else ""
            print(f"batch: the reasons of the failures are in {out_manifest}{retry}", file=self.stream)
        self.stream.flush()
