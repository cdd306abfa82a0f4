"""The daemon: owns settings, bundle, engine, capture, segmenter, workers, server, journal and output.

Threads: the main thread waits for signals and control requests (it never does audio work); an
``audio`` thread reads the capture and runs the segmenter; the ``encoder`` and ``decoder`` workers
(daemon/workers.py) produce partials and finals; the control socket and the WebSocket server have
their own threads. Events from the decoder worker go to the WebSocket server, the journal and the
desktop output.

States: ``starting`` → ``listening`` (capture open, waiting for speech / a command) ⇄ ``recording``
(an utterance is being captured) ⇄ ``transcribing`` (finals still being produced, no speech) ;
``paused`` (vad mode, listening switched off by ``toggle``); ``no-device`` (no microphone could be
opened: the daemon keeps serving WebSocket ingestion, control commands and status, and retries the
device every ``DEVICE_RETRY_S``); ``error`` (the capture stream failed); ``stopping``.

A missing or broken model is fatal at start (one clear line, non-zero exit); a missing microphone is not.
"""

from __future__ import annotations

import importlib
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from qasr import __version__
from qasr.config import paths
from qasr.config.loader import ConfigError, load_settings
from qasr.config.settings import Settings, changed_options
from qasr.daemon import lifecycle, logging_setup
from qasr.daemon.control import ControlServer
from qasr.daemon.workers import Pipeline, WholeUtteranceBackend
from qasr.engine.bundle import load_bundle
from qasr.errors import QasrError

log = logging.getLogger("qasr.app")

DEVICE_RETRY_S = 10.0
DRAIN_TIMEOUT_S = 120.0
STATES = ("starting", "listening", "recording", "transcribing", "paused", "no-device", "error", "stopping")


def _optional_module(name: str):
    """A sibling module another part of qasr provides; None while it does not exist."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


@dataclass(frozen=True)
class DaemonOptions:
    config_file: Path | None = None  # None: $XDG_CONFIG_HOME/qasr/config.toml (optional)
    overrides: tuple[str, ...] = ()  # --set section.key=value, re-applied on every reload
    model: str | None = None  # --model DIR (wins over model.path)
    device: str | None = None  # --device NAME (wins over audio.device)
    foreground: bool = True  # log to stderr too


class Daemon:
    def __init__(self, options: DaemonOptions) -> None:
        self.options = options
        self.settings, self.config_path = self._load_settings()
        self.state = "starting"
        self.started_at = time.time()
        self.bundle = None
        self.transcriber = None
        self.pipeline: Pipeline | None = None
        self.capture = None
        self.segmenter = None
        self.server = None
        self.journal = None
        self.output = None
        self.control: ControlServer | None = None
        self.input_device: str | None = None
        self.device_error: str | None = None
        self.ws_url: str | None = None
        self.log_file: Path | None = None
        self.warnings: list[str] = []
        self._lock = lifecycle.InstanceLock()
        self._terminate = threading.Event()
        self._reload_requested = threading.Event()
        self._wake = threading.Event()
        self._seg_lock = threading.RLock()  # segmenter + mic utterance bookkeeping
        self._mic_utterance: int | None = None
        self._paused = False
        self._audio_stop = threading.Event()
        self._audio_thread: threading.Thread | None = None
        self._last_device_try = 0.0
        self._saver: _UtteranceAudioSaver | None = None

    # ------------------------------------------------------------------ settings
    def _load_settings(self) -> tuple[Settings, Path]:
        overrides = list(self.options.overrides)
        if self.options.model:
            overrides.append(f"model.path={_toml_string(str(Path(self.options.model).expanduser().resolve()))}")
        if self.options.device:
            overrides.append(f"audio.device={_toml_string(self.options.device)}")
        return load_settings(self.options.config_file, overrides)

    # ------------------------------------------------------------------ run
    def run(self, reporter: lifecycle.ReadyReporter | None = None) -> int:
        """Start everything, serve until SIGTERM/stop, shut down. Start-up errors raise QasrError."""
        reporter = reporter or lifecycle.ReadyReporter()
        try:
            self._lock.acquire()
            self.log_file = logging_setup.setup_logging(self.settings.logging, to_stderr=not reporter.detached)
            log.info("qasr %s starting (pid %d, config %s)", __version__, os.getpid(), self.config_path)
            lifecycle.install_signal_handlers(self.request_stop, self.request_reload)
            self._start_components()
            lifecycle.write_pid_file()
        except QasrError as exc:
            log.error("start-up failed: %s", exc)
            reporter.failed(str(exc))
            self._shutdown_components()
            self._lock.release()
            raise
        except BaseException as exc:
            log.exception("start-up failed")
            reporter.failed(f"internal error during start-up: {exc}; see {self.log_file or paths.log_file()}")
            self._shutdown_components()
            self._lock.release()
            raise
        self._set_state(self._computed_state())
        log.info("ready: state=%s model=%s device=%s ws=%s", self.state, self.model_name, self.input_device, self.ws_url)
        reporter.ready({"pid": os.getpid(), "state": self.state, "ws_url": self.ws_url,
                        "input_device": self.input_device, "warnings": self.warnings})
        try:
            self._main_loop()
        finally:
            self._shutdown()
        return 0

    def _main_loop(self) -> None:
        while not self._terminate.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self.reload()
            if self.capture is None and time.monotonic() - self._last_device_try > DEVICE_RETRY_S:
                self._open_capture()
            self._set_state(self._computed_state())

    # ------------------------------------------------------------------ start-up
    def _start_components(self) -> None:
        s = self.settings
        self.bundle = load_bundle(s.model.resolved_path(), verify=s.model.verify)
        self._check_language(s.engine.language)
        self.transcriber = self._make_transcriber()
        if s.debug.save_audio_dir:
            self._saver = _UtteranceAudioSaver(Path(s.debug.save_audio_dir).expanduser())
        self.pipeline = Pipeline(
            WholeUtteranceBackend(self._transcribe),  # INTERIM: offline final per utterance, no partials
            self._on_pipeline_event,
            max_queued_blocks=max(16, int(s.audio.queue_s * 1000 / s.audio.block_ms)),
            on_audio=self._saver.add if self._saver else None,
        )
        self.pipeline.start()
        self._make_journal()
        self._make_output()
        self.control = ControlServer(self._on_control)
        self.control.start()
        self._start_server()
        self._open_capture()

    @property
    def model_name(self) -> str | None:
        return self.bundle.manifest.model.get("name") if self.bundle else None

    def _check_language(self, language: str) -> None:
        if language and self.bundle and language not in self.bundle.manifest.languages:
            raise ConfigError(
                f"engine.language = {language!r} is not a language of {self.model_name}; use \"\" (detect) "
                f"or one of: {', '.join(self.bundle.manifest.languages)}"
            )

    def _make_transcriber(self):
        transcribe = importlib.import_module("qasr.engine.transcribe")
        e = self.settings.engine
        options = transcribe.TranscribeOptions(
            language=e.language or None, context=e.context, max_new_tokens=e.max_new_tokens, threads=e.threads,
        )
        return transcribe.Transcriber(self.bundle.root, options)

    def _transcribe(self, audio: np.ndarray):
        """INTERIM engine call (decoder worker thread): the whole utterance, current language/context."""
        e = self.settings.engine
        return self.transcriber.transcribe(audio, language=e.language or None, context=e.context)

    def _make_journal(self) -> None:
        journal = _optional_module("qasr.daemon.journal")
        j = self.settings.journal
        if journal is not None:
            self.journal = journal.Journal(journal.JournalOptions(enabled=j.enabled, path=j.resolved_path()))

    def _make_output(self) -> None:
        self.output = None  # desktop output (daemon/output.py) is wired once it exists

    def _start_server(self) -> None:
        s = self.settings.server
        if not s.enabled:
            return
        ws_server = _optional_module("qasr.daemon.ws_server")
        if ws_server is None:
            self.warnings.append("the WebSocket server is not available in this build")
            return
        self.server = ws_server.EventServer(
            ws_server.ServerOptions(host=s.host, port=s.port), _ServerHandler(self)
        )
        self.server.start()
        self.ws_url = getattr(self.server, "url", None)

    def _open_capture(self) -> None:
        self._last_device_try = time.monotonic()
        capture_mod = _optional_module("qasr.daemon.capture")
        segmenter_mod = _optional_module("qasr.daemon.segmenter")
        if capture_mod is None or segmenter_mod is None:
            self._no_device("microphone capture is not available in this build")
            return
        a = self.settings.audio
        try:
            capture = capture_mod.AudioCapture(
                capture_mod.CaptureOptions(device=a.device or None, block_ms=a.block_ms, preroll_s=a.preroll_s)
            )
            capture.start()
        except capture_mod.NoInputDeviceError as exc:
            self._no_device(str(exc))
            return
        except QasrError as exc:
            self._no_device(str(exc))
            return
        self.capture = capture
        self.input_device = getattr(capture, "device_name", None) or (a.device or "default")
        self.device_error = None
        self.segmenter = self._make_segmenter(segmenter_mod)
        self._audio_stop.clear()
        self._audio_thread = threading.Thread(target=self._audio_loop, name="audio", daemon=True)
        self._audio_thread.start()
        log.info("capturing from %s", self.input_device)

    def _no_device(self, message: str) -> None:
        if self.device_error != message:
            log.warning("no microphone: %s; serving WebSocket ingestion only, retrying every %.0f s",
                        message, DEVICE_RETRY_S)
            note = f"no input device ({message}); the daemon keeps serving WebSocket ingestion and retries"
            if note not in self.warnings:
                self.warnings.append(note)
        self.device_error = message
        self.input_device = None

    def _make_segmenter(self, segmenter_mod=None):
        segmenter_mod = segmenter_mod or importlib.import_module("qasr.daemon.segmenter")
        v, e = self.settings.vad, self.settings.engine
        return segmenter_mod.Segmenter(segmenter_mod.SegmenterOptions(
            mode=v.mode, aggressiveness=v.aggressiveness, onset_ms=v.onset_ms, hangover_ms=v.hangover_ms,
            preroll_ms=v.preroll_ms, max_utterance_s=e.max_utterance_s,
        ))

    # ------------------------------------------------------------------ audio thread
    def _audio_loop(self) -> None:
        while not self._audio_stop.is_set():
            try:
                pcm = self.capture.read(timeout=0.1)
            except Exception as exc:
                log.exception("capture failed")
                self.device_error = f"capture failed: {exc}"
                self._set_state("error")
                return
            if pcm is None:
                continue
            with self._seg_lock:
                if self._paused:
                    continue
                for event in self.segmenter.process(pcm):
                    self._on_segment_event(event)
            self._wake.set()

    def _on_segment_event(self, event: Any) -> None:
        """Segmenter event -> pipeline (called with _seg_lock held)."""
        kind = type(event).__name__
        if kind == "SpeechStart":
            self._mic_utterance = self.pipeline.begin("mic")
        elif kind == "SpeechAudio" and self._mic_utterance is not None:
            self.pipeline.audio(self._mic_utterance, event.pcm)
        elif kind == "SpeechEnd" and self._mic_utterance is not None:
            self.pipeline.end(self._mic_utterance)
            self._mic_utterance = None
        elif kind == "Cancelled" and self._mic_utterance is not None:
            self.pipeline.cancel(self._mic_utterance)
            self._mic_utterance = None
        elif kind == "VadState":
            self._publish_vad(event)

    def _publish_vad(self, event: Any) -> None:
        if self.server is None:
            return
        protocol = importlib.import_module("qasr.daemon.protocol")
        speech = bool(getattr(event, "speech", False))
        self.server.publish(protocol.vad(speech, float(getattr(event, "time_s", 0.0))))

    # ------------------------------------------------------------------ pipeline events (decoder thread)
    def _on_pipeline_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "final":
            if self._saver is not None:
                self._saver.save(event["utterance_id"])
            sink = self._deliver(event)
            out = dict(event, sink=sink)
            if self.journal is not None:
                try:
                    self.journal.append(out)
                except QasrError as exc:
                    log.error("%s", exc)
            log.info("final #%s (%.2f s audio, %s ms): %s", event["utterance_id"], event["audio_s"],
                     event["latency_ms"], event["text"])
            self._publish(self._protocol_final(out))
        elif kind == "partial":
            self._publish(self._protocol_partial(event))
        elif kind == "cancelled" and self._saver is not None:
            self._saver.drop(event["utterance_id"])
        elif kind == "error":
            log.error("utterance %s: %s", event.get("utterance_id"), event.get("message"))
            protocol = _optional_module("qasr.daemon.protocol")
            if protocol is not None:
                self._publish(protocol.error("internal", event["message"]))
        self._wake.set()

    def _deliver(self, event: dict[str, Any]) -> str | None:
        """Type/paste a mic final on the desktop; returns the sink's name (None when nothing was output)."""
        if self.output is None or event.get("source") != "mic" or not event["text"]:
            return None
        try:
            return self.output.deliver(event["text"])
        except QasrError as exc:
            log.warning("text output failed: %s", exc)
            return None

    def _protocol_final(self, event: dict[str, Any]) -> dict[str, Any]:
        protocol = importlib.import_module("qasr.daemon.protocol")
        timings = {"latency_ms": event["latency_ms"] or 0.0, "compute_ms": event["elapsed_s"] * 1000.0}
        return protocol.final(
            str(event["utterance_id"]), 0, event["text"], event["language"] or None, event["token_ids"],
            0.0, event["audio_s"], timings=timings, sink=event.get("sink"), source=event["source"],
        )

    def _protocol_partial(self, event: dict[str, Any]) -> dict[str, Any]:
        protocol = importlib.import_module("qasr.daemon.protocol")
        return protocol.partial(str(event["utterance_id"]), 0, event["committed"], event["tentative"], 0.0, 0.0)

    def _publish(self, event: dict[str, Any]) -> None:
        if self.server is not None:
            self.server.publish(event)

    # ------------------------------------------------------------------ state
    def _computed_state(self) -> str:
        if self.state == "stopping":
            return "stopping"
        if self.capture is None:
            busy = self.pipeline is not None and self.pipeline.busy()
            return "transcribing" if busy else "no-device"
        if self.state == "error":
            return "error"
        if self._paused:
            return "paused"
        if self._mic_utterance is not None:
            return "recording"
        if self.pipeline is not None and self.pipeline.busy():
            return "transcribing"
        return "listening"

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        log.debug("state %s -> %s", self.state, state)
        self.state = state
        protocol = _optional_module("qasr.daemon.protocol")
        if protocol is not None:
            self._publish(protocol.state(state))

    def status(self) -> dict[str, Any]:
        s = self.settings
        pipeline = self.pipeline
        return {
            "pid": os.getpid(),
            "version": __version__,
            "state": self._computed_state() if self.state != "starting" else "starting",
            "model": self.model_name,
            "model_path": str(self.bundle.root) if self.bundle else str(s.model.resolved_path()),
            "input_device": self.input_device,
            "device_error": self.device_error,
            "mode": s.vad.mode,
            "language": s.engine.language or None,
            "ws_url": self.ws_url,
            "token_file": str(paths.token_file()) if self.server is not None else None,
            "last_latency_ms": pipeline.last_latency_ms if pipeline else None,
            "utterances": pipeline.utterances_done if pipeline else 0,
            "pending_utterances": pipeline.pending() if pipeline else 0,
            "uptime_s": round(time.time() - self.started_at, 1),
            "config_file": str(self.config_path),
            "log_file": str(self.log_file) if self.log_file else None,
            "journal_file": str(self.journal.path) if self.journal is not None and self.journal.enabled else None,
            "save_audio_dir": s.debug.save_audio_dir or None,
            "warnings": list(self.warnings),
        }

    # ------------------------------------------------------------------ commands
    def command(self, name: str) -> dict[str, Any]:
        """start-utterance / stop-utterance / toggle / cancel, from the control socket, WebSocket or hotkey."""
        if self.state == "stopping":
            raise QasrError("the daemon is stopping")
        with self._seg_lock:
            if name == "cancel":
                return self._cancel()
            if self.segmenter is None:
                raise QasrError(
                    f"no microphone is open ({self.device_error or 'capture unavailable'}); "
                    "check `qasr-daemon devices`, or stream audio over the WebSocket"
                )
            mode = self.settings.vad.mode
            if name == "toggle":
                if mode == "vad":  # in vad mode toggle pauses / resumes listening
                    self._paused = not self._paused
                    if self._paused and self._mic_utterance is not None:
                        self._end_mic_utterance()
                    self._wake.set()
                    return {"paused": self._paused}
                events = self.segmenter.toggle()
            elif name == "start-utterance":
                if self._paused:
                    self._paused = False
                events = self.segmenter.start_utterance()
            elif name == "stop-utterance":
                events = self.segmenter.stop_utterance()
            else:
                raise ValueError(f"unknown command {name!r}")
            for event in events or ():
                self._on_segment_event(event)
        self._wake.set()
        return {"recording": self._mic_utterance is not None}

    def _cancel(self) -> dict[str, Any]:
        cancelled = self._mic_utterance is not None
        if self.segmenter is not None:
            events = self.segmenter.cancel()
            for event in events or ():
                self._on_segment_event(event)
        if self._mic_utterance is not None:
            self.pipeline.cancel(self._mic_utterance)
            self._mic_utterance = None
        self._wake.set()
        return {"cancelled": cancelled}

    def _end_mic_utterance(self) -> None:
        """End the utterance being recorded at this point (stop, pause, shutdown); its final still comes."""
        if self._mic_utterance is not None:
            self.pipeline.end(self._mic_utterance)
            self._mic_utterance = None
            if self.segmenter is not None:
                self.segmenter = self._make_segmenter()  # forget the ended utterance's VAD state

    def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request["cmd"]
        if cmd == "status":
            return self.status()
        if cmd == "stop":
            self.request_stop()
            return {"stopping": True, "pid": os.getpid()}
        if cmd == "reload":
            self.request_reload()
            return {"reloading": True}
        return self.command(cmd)

    # ------------------------------------------------------------------ signals / reload
    def request_stop(self) -> None:
        self._terminate.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested.set()
        self._wake.set()

    def reload(self) -> bool:
        """SIGHUP: re-read the config file (+ the same --set overrides); apply what can change live."""
        try:
            new, _ = self._load_settings()
            self._check_language(new.engine.language)
        except QasrError as exc:
            log.error("reload refused, keeping the running settings: %s", exc)
            return False
        changes = changed_options(self.settings, new)
        restart = [name for name, needs in changes if needs]
        if restart:
            log.warning("changed options that apply after a restart: %s", ", ".join(restart))
            new = _keep_restart_options(self.settings, new)
        old = self.settings
        self.settings = new
        logging_setup.set_level(new.logging.level)
        if new.vad != old.vad or new.engine.max_utterance_s != old.engine.max_utterance_s:
            with self._seg_lock:
                if self.segmenter is not None:
                    self._end_mic_utterance()
                    self.segmenter = self._make_segmenter()
        if new.journal != old.journal:
            self._make_journal()
        if new.output != old.output or new.shaping != old.shaping:
            self._make_output()
        log.info("reloaded %s: %s", self.config_path, ", ".join(n for n, _ in changes) or "no changes")
        return True

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self) -> None:
        log.info("stopping")
        self._set_state("stopping")
        self._stop_audio_thread(flush=True)
        with self._seg_lock:
            if self._mic_utterance is not None:  # SIGTERM mid-utterance: finish it with the audio so far
                self.pipeline.end(self._mic_utterance)
                self._mic_utterance = None
        if self.pipeline is not None and not self.pipeline.drain(DRAIN_TIMEOUT_S):
            log.error("gave up waiting for pending finals after %.0f s", DRAIN_TIMEOUT_S)
        self._shutdown_components()
        lifecycle.remove_runtime_file(paths.pid_file())
        self._lock.release()
        log.info("stopped")

    def _stop_audio_thread(self, flush: bool) -> None:
        self._audio_stop.set()
        if self._audio_thread is not None:
            self._audio_thread.join(timeout=5)
            self._audio_thread = None
        if self.capture is not None:
            if flush:  # audio already captured belongs to the utterance in flight
                with self._seg_lock:
                    while (pcm := self.capture.read(timeout=0)) is not None and self.segmenter is not None:
                        for event in self.segmenter.process(pcm):
                            if type(event).__name__ != "SpeechStart" or self._mic_utterance is None:
                                self._on_segment_event(event)
            try:
                self.capture.stop()
            except Exception:
                log.exception("closing the capture failed")
            self.capture = None

    def _shutdown_components(self) -> None:
        if self._audio_thread is not None or self.capture is not None:
            self._stop_audio_thread(flush=False)
        if self.server is not None:
            try:
                self.server.stop()
            except Exception:
                log.exception("stopping the WebSocket server failed")
            self.server = None
        if self.control is not None:
            self.control.stop()
            self.control = None
        if self.pipeline is not None:
            self.pipeline.stop()
        close = getattr(self.output, "close", None)
        if close is not None:
            close()


def _keep_restart_options(old: Settings, new: Settings) -> Settings:
    """``new`` with every [restart] option put back to its running value."""
    from dataclasses import fields

    sections = {}
    for section in fields(Settings):
        a, b = getattr(old, section.name), getattr(new, section.name)
        keep = {f.name: getattr(a, f.name) for f in fields(a) if f.metadata.get("restart")}
        sections[section.name] = replace(b, **keep)
    return replace(new, **sections)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _ServerHandler:
    """What the WebSocket server asks of the daemon (see daemon/ws_server.py's ServerHandler)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def hello_info(self) -> dict[str, Any]:
        d = self.daemon
        return {"model": d.model_name, "state": d.state,
                "languages": list(d.bundle.manifest.languages) if d.bundle else []}

    def on_command(self, client_id: str, msg: dict[str, Any]) -> dict[str, Any]:
        kind = msg["type"]
        if kind == "set":
            return self._set(msg)
        mapping = {"start": "start-utterance", "stop": "stop-utterance", "toggle": "toggle", "cancel": "cancel"}
        return self.daemon.command(mapping[kind])

    def _set(self, msg: dict[str, Any]) -> dict[str, Any]:
        d = self.daemon
        engine = d.settings.engine
        if msg.get("language") is not None:
            d._check_language(msg["language"])
            engine = replace(engine, language=msg["language"])
        if msg.get("context") is not None:
            engine = replace(engine, context=msg["context"])
        d.settings = replace(d.settings, engine=engine)
        return {"language": engine.language or None, "context": engine.context}

    def open_ingest(self, client_id: str, fmt: str, sample_rate: int, segment: str, channels: int = 1):
        return _IngestSink(self.daemon, client_id, fmt, sample_rate, segment, channels)


class _IngestSink:
    """Audio a WebSocket client streams: one utterance (segment "none") or VAD-delimited utterances."""

    def __init__(self, daemon: Daemon, client_id: str, fmt: str, sample_rate: int, segment: str,
                 channels: int = 1) -> None:
        protocol = importlib.import_module("qasr.daemon.protocol")
        self.daemon = daemon
        self.source = f"ws:{client_id}"
        self.decoder = protocol.PcmDecoder(protocol.AudioFormat(fmt, sample_rate, channels))
        self.segmenter = None
        self.utterance: int | None = None
        if segment == "vad":
            seg = importlib.import_module("qasr.daemon.segmenter")
            v, e = daemon.settings.vad, daemon.settings.engine
            self.segmenter = seg.Segmenter(seg.SegmenterOptions(
                mode="vad", aggressiveness=v.aggressiveness, onset_ms=v.onset_ms, hangover_ms=v.hangover_ms,
                preroll_ms=v.preroll_ms, max_utterance_s=e.max_utterance_s,
            ))
        else:
            self.utterance = daemon.pipeline.begin(self.source)

    def feed(self, data: bytes) -> None:
        self._push(self.decoder.feed(data))

    def _push(self, pcm: np.ndarray) -> None:
        pipeline = self.daemon.pipeline
        if self.segmenter is None:
            if pcm.size:
                pipeline.audio(self.utterance, pcm)
            return
        for event in self.segmenter.process(pcm):
            kind = type(event).__name__
            if kind == "SpeechStart":
                self.utterance = pipeline.begin(self.source)
            elif kind == "SpeechAudio" and self.utterance is not None:
                pipeline.audio(self.utterance, event.pcm)
            elif kind in ("SpeechEnd", "Cancelled") and self.utterance is not None:
                (pipeline.end if kind == "SpeechEnd" else pipeline.cancel)(self.utterance)
                self.utterance = None

    def end(self) -> None:
        self._push(self.decoder.flush())
        if self.utterance is not None:
            self.daemon.pipeline.end(self.utterance)
            self.utterance = None

    def cancel(self) -> None:
        if self.utterance is not None:
            self.daemon.pipeline.cancel(self.utterance)
            self.utterance = None


class _UtteranceAudioSaver:
    """debug.save_audio_dir: every utterance's audio, exactly as the engine got it, as float32 WAV."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._chunks: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()
        self._stamp = time.strftime("%Y%m%d-%H%M%S")

    def add(self, utterance_id: int, pcm: np.ndarray) -> None:
        with self._lock:
            self._chunks.setdefault(utterance_id, []).append(pcm.copy())

    def drop(self, utterance_id: int) -> None:
        with self._lock:
            self._chunks.pop(utterance_id, None)

    def save(self, utterance_id: int) -> Path | None:
        with self._lock:
            chunks = self._chunks.pop(utterance_id, None)
        if not chunks:
            return None
        target = self.folder / f"{self._stamp}-utt{utterance_id:04d}.wav"
        write_wav_float32(target, np.concatenate(chunks))
        return target


def write_wav_float32(path: Path, audio: np.ndarray, sample_rate: int = 16000) -> None:
    """Mono IEEE-float WAV (format 3): keeps the samples bit-exact."""
    data = np.asarray(audio, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, sample_rate, sample_rate * 4, 4, 32, 0)
    fact = struct.pack("<I", len(data) // 4)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
            + b"data" + struct.pack("<I", len(data)) + data)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    tmp.replace(path)
