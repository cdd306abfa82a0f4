"""``qasr-daemon record-call start|stop``: one transcript per recording, both sides labelled (you / them).

    recorder = CallRecorder(paths.transcripts_dir, clock_of)   # clock_of("mic") → that source's SourceClock
    recorder.start()
    recorder.observe(message)        # every broadcast qasr.v1 message (decoder or aligner thread)
    recorder.stop(settle)            # settle(): waits for finals still on their way; then the files

Finals of the microphone and of system audio are collected as they are published (with ``words`` when
the aligner gave them), placed on the call's clock through their source's ``SourceClock`` (each source's
stream time → wall clock; a turn spoken as the recording began may start a little before 0, by the VAD's
pre-roll; subtitles show it at 0), and written at ``stop`` by ``transcript_files`` in audio-time order, with the
echo rule applied. Nothing said, nothing written: a recording without turns leaves no files.
"""

from __future__ import annotations

import logging
import threading
import time
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from qasr.daemon.audio.source_clock import SourceClock
from qasr.daemon.results.transcript_files import SPEAKERS, Turn, write_transcript
from qasr.errors import QasrError

log = logging.getLogger("qasr.call")

MAX_TURNS = 100_000  # about a week of talk; more is refused rather than kept in memory


def clean_text(text: str) -> str:
    """Control characters never reach a file (line breaks become spaces)."""
    return " ".join("".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text).split())


class CallRecorder:
    def __init__(self, folder: Callable[[], Path], clock_of: Callable[[str], SourceClock | None]) -> None:
        self._folder = folder
        self._clock_of = clock_of
        self._lock = threading.Lock()
        self._started: float | None = None  # wall clock
        self._turns: list[Turn] = []
        self.last_files: list[str] = []

    @property
    def recording(self) -> bool:
        return self._started is not None

    def start(self) -> dict:
        with self._lock:
            if self._started is not None:
                return {"recording": True, "started": _iso(self._started), "already": True}
            self._started, self._turns = time.time(), []
            started = self._started
        log.info("recording a call transcript")
        return {"recording": True, "started": _iso(started), "already": False}

    def observe(self, message: dict) -> None:
        if self._started is None or message.get("type") != "final":
            return
        source = message.get("source")
        text = clean_text(str(message.get("text") or ""))
        if source not in SPEAKERS or not text:
            return
        start_s, end_s = float(message.get("audio_start", 0.0)), float(message.get("audio_end", 0.0))
        clock = self._clock_of(source)
        wall = clock.wall(start_s) if clock is not None else None
        if wall is None:
            wall = time.time() - (end_s - start_s)
        with self._lock:
            if self._started is None or len(self._turns) >= MAX_TURNS:
                return
            start = wall - self._started
            end = start + max(0.0, end_s - start_s)
            if end < 0:
                return  # spoken before the recording began
            words = tuple((clean_text(str(w.get("word", ""))), start + float(w.get("start", 0.0)),
                           start + float(w.get("end", 0.0))) for w in message.get("words") or ())
            self._turns.append(Turn(SPEAKERS[source], source, start, end, text,
                                    message.get("language"), words, str(message.get("utterance_id", ""))))

    def stop(self, settle: Callable[[], None] = lambda: None) -> dict:
        """End the recording: ``settle()`` lets finals still on their way arrive, then the files are written."""
        if self._started is None:
            raise QasrError("no call is being recorded; start one with `qasr-daemon record-call start`")
        settle()
        with self._lock:
            started, turns = self._started, self._turns
            self._started, self._turns = None, []
        if started is None:
            raise QasrError("no call is being recorded")
        ended = time.time()
        if not turns:
            log.info("call recording stopped: nothing was said, no transcript written")
            self.last_files = []
            return {"recording": False, "files": [], "turns": 0,
                    "message": "nothing was said: no transcript written"}
        try:
            files, echoes = write_transcript(self._folder(), turns, _dt(started), _dt(ended))
        except OSError as exc:
            raise QasrError(f"cannot write the call transcript into {self._folder()}: {exc}") from exc
        self.last_files = [str(p) for p in files]
        log.info("call transcript: %d turns (%d echoes dropped) in %s", len(turns) - echoes, echoes, files[0].parent)
        return {"recording": False, "files": self.last_files, "turns": len(turns) - echoes,
                "echoes_dropped": echoes, "seconds": round(ended - started, 1)}

    def status(self) -> dict:
        with self._lock:
            return {"recording": self._started is not None, "turns": len(self._turns),
                    "started": _iso(self._started) if self._started is not None else None,
                    "last_files": list(self.last_files)}


def _dt(wall: float) -> datetime:
    return datetime.fromtimestamp(wall, tz=timezone.utc)


def _iso(wall: float) -> str:
    return _dt(wall).isoformat(timespec="seconds")
