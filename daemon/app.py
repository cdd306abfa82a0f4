"""The daemon: lifecycle and state. It composes the parts and holds nothing else.

    EngineHost (model) ─► Pipeline (encoder + decoder workers) ─► ResultRouter (output, journal, publish)
    Microphone ─► UtteranceFeed ─┘      WebSocket audio (server/bridge) ─► UtteranceFeed ─┘
    CommandHandler ◄─ control socket, WebSocket, hotkey

States (``status()["state"]`` and ``state`` events):
  starting      loading the model, opening the microphone and the server
  listening     microphone open, waiting for speech (vad) or a start command (ptt/toggle)
  recording     an utterance is being captured
  transcribing  no utterance being captured, finals still being produced
  paused        vad mode, listening switched off by ``toggle`` (the stream stays open: no warm-up later)
  no-device     no microphone could be opened: the daemon keeps serving status, commands and WebSocket
                audio ingestion, and tries the device again every DEVICE_RETRY_S seconds
  error         the capture stream failed while running (retried like no-device)
  stopping      SIGTERM/stop: the utterance in flight is ended and transcribed, then the daemon exits

A missing or broken model, a bad config or a busy port are fatal at start: one line, non-zero exit.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qasr import __version__
from qasr.config import paths
from qasr.config.loader import load_daemon_settings
from qasr.config.settings import Settings, changed_options, keep_restart_options
from qasr.daemon import lifecycle, logging_setup
from qasr.daemon.commands import CommandHandler
from qasr.daemon.components import DEVICE_RETRY_S, Components
from qasr.daemon.malloc_tuning import tune_malloc
from qasr.daemon.status import daemon_status
from qasr.errors import QasrError

log = logging.getLogger("qasr.app")

DRAIN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DaemonOptions:
    config_file: Path | None = None  # None: $XDG_CONFIG_HOME/qasr/config.toml (optional)
    overrides: tuple[str, ...] = ()  # --set section.key=value, re-applied on every reload
    model: str | None = None  # --model DIR (wins over model.path)
    device: str | None = None  # --device NAME (wins over audio.device)


class Daemon:
    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.settings, self.config_path = self._load_settings()
        self.state = "starting"
        self.started_at = time.time()
        self.log_file: Path | None = None
        self.reload_error = ""  # why the last reload was refused
        self.parts = Components(self)
        self.commands = CommandHandler(self, on_change=self.wake)
        self._lock = lifecycle.InstanceLock()
        self._terminate = threading.Event()
        self._reload_requested = threading.Event()
        self._wake = threading.Event()
        self._last_device_try = 0.0

    def _load_settings(self) -> tuple[Settings, Path]:
        o = self.options
        return load_daemon_settings(o.config_file, o.overrides, model=o.model, device=o.device)

    # ------------------------------------------------------------------ what the parts ask of the daemon
    @property
    def microphone(self):
        return self.parts.microphone

    @property
    def device_error(self) -> str | None:
        return self.parts.device_error

    def vad_mode(self) -> bool:
        return self.settings.vad.mode == "vad"

    def wake(self) -> None:
        self._wake.set()

    def status(self) -> dict[str, Any]:
        return daemon_status(self)

    # ------------------------------------------------------------------ run
    def run(self, reporter: lifecycle.ReadyReporter | None = None) -> int:
        """Start everything, serve until SIGTERM/stop, shut down. Start-up errors raise QasrError."""
        reporter = reporter or lifecycle.ReadyReporter()
        tune_malloc()  # before any worker thread exists
        try:
            self._lock.acquire()
            self.log_file = logging_setup.setup_logging(self.settings.logging, to_stderr=not reporter.detached)
            log.info("qasr %s starting (pid %d, config %s)", __version__, os.getpid(), self.config_path)
            lifecycle.install_signal_handlers(self.request_stop, self.request_reload)
            self.parts.start()
            self._last_device_try = time.monotonic()
            lifecycle.write_pid_file()
        except BaseException as exc:
            if isinstance(exc, QasrError):
                log.error("start-up failed: %s", exc)
                reporter.failed(str(exc))
            else:
                log.exception("start-up failed")
                reporter.failed(f"internal error during start-up ({exc!r}); see {self.log_file or paths.log_file()}")
            self.parts.shutdown()
            self._lock.release()
            raise
        self.state = "listening"  # start-up is over: from here the state follows the components
        self._set_state(self.computed_state())
        p = self.parts
        log.info("ready: state=%s model=%s device=%s ws=%s", self.state, p.model_name, p.input_device, p.ws_url)
        reporter.ready({"pid": os.getpid(), "state": self.state, "ws_url": p.ws_url,
                        "input_device": p.input_device, "warnings": p.warnings})
        try:
            self._main_loop()
        finally:
            self._shutdown()
        return 0

    def _main_loop(self) -> None:
        while not self._terminate.is_set():
            self._wake.wait(1.0)  # state changes, signals and commands wake it at once
            self._wake.clear()
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self.reload()
            if self.parts.microphone is None and time.monotonic() - self._last_device_try > DEVICE_RETRY_S:
                self._last_device_try = time.monotonic()
                self.parts.open_microphone()
            self._set_state(self.computed_state())

    # ------------------------------------------------------------------ state
    def computed_state(self) -> str:
        if self.state in ("stopping", "starting"):
            return self.state
        p = self.parts
        busy = p.pipeline is not None and p.pipeline.busy()
        mic = p.microphone
        if mic is None or mic.capture.state in ("retrying", "no-device"):
            return "transcribing" if busy else "no-device"
        if self.state == "error":
            return "error"
        if mic.paused:
            return "paused"
        if mic.recording:
            return "recording"
        return "transcribing" if busy else "listening"

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        log.debug("state %s -> %s", self.state, state)
        self.state = state
        self.parts.publish_state(state)

    def capture_failed(self, message: str) -> None:
        self.state = "error"
        self.wake()

    # ------------------------------------------------------------------ commands
    def command(self, name: str, **args: Any) -> dict[str, Any]:
        return self.commands.run(name, **args)

    def set_engine(self, language: str | None = None, context: str | None = None) -> dict[str, Any]:
        """Change language/context for the next utterances (WebSocket ``set``); a reload re-reads the file."""
        engine = self.settings.engine
        if language is not None:
            self.parts.check_language(language)
            engine = replace(engine, language=language)
        if context is not None:
            engine = replace(engine, context=context)
        self.settings = replace(self.settings, engine=engine)
        return {"language": engine.language or None, "context": engine.context}

    # ------------------------------------------------------------------ signals / reload
    def request_stop(self) -> None:
        self._terminate.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested.set()
        self._wake.set()

    def reload(self) -> bool:
        """SIGHUP: re-read the config file (+ the same --set overrides); apply what can change live.
        False when the file is refused (the reason is logged and in ``reload_error``)."""
        try:
            new, _ = self._load_settings()
            self.parts.check_language(new.engine.language)
        except QasrError as exc:
            self.reload_error = f"reload refused, keeping the running settings: {exc}"
            log.error("%s", self.reload_error)
            self.parts.publish_warning("config", f"reload refused: {exc}")
            return False
        self.reload_error = ""
        changes = changed_options(self.settings, new)
        restart = [name for name, needs in changes if needs]
        if restart:
            log.warning("changed options that apply after a restart: %s", ", ".join(restart))
            new = keep_restart_options(self.settings, new)
        old, self.settings = self.settings, new
        logging_setup.set_level(new.logging.level)
        self.parts.apply_settings(old, new)
        log.info("reloaded %s: %s", self.config_path, ", ".join(n for n, _ in changes) or "no changes")
        return True

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self) -> None:
        log.info("stopping")
        self._set_state("stopping")
        self.parts.stop_microphone(finish_utterance=True)
        self.parts.system.shutdown()  # system audio off; a call being recorded is written (with the last finals)
        pipeline = self.parts.pipeline
        if pipeline is not None and not pipeline.drain(DRAIN_TIMEOUT_S):
            log.error("gave up waiting for pending finals after %.0f s", DRAIN_TIMEOUT_S)
        self.parts.shutdown()
        lifecycle.remove_runtime_file(paths.pid_file())
        self._lock.release()
        log.info("stopped")
