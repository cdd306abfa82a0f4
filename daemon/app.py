"""The daemon: owns settings, bundle, engine, capture, segmenter, workers, server, journal and output.

Threads: the main thread waits for signals and control requests (it never does audio work); an
``audio`` thread reads the capture and runs the segmenter; the ``encoder`` and ``decoder`` workers
(daemon/workers.py) turn utterances into partials and finals; the control socket and the WebSocket
server (daemon/server/bridge.py) have their own threads. The decoder worker hands each event to
``_on_pipeline_event``: mic finals go to the desktop output, the journal and every WebSocket
subscriber; results of audio a client streamed go to that client only.

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

import importlib
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from qasr import __version__
from qasr.config import paths
from qasr.config.loader import ConfigError, load_settings
from qasr.config.settings import Settings, changed_options
from qasr.daemon import lifecycle, logging_setup
from qasr.daemon.server.control_socket import ControlServer
from qasr.daemon.audio.segmenter import Segmenter, SegmenterOptions
from qasr.daemon.workers import Pipeline, StreamingBackend, WholeUtteranceBackend
from qasr.engine.bundle import load_bundle
from qasr.errors import QasrError

log = logging.getLogger("qasr.app")

DEVICE_RETRY_S = 10.0
DRAIN_TIMEOUT_S = 120.0
# Silence (s) after which partial steps pause until the voice resumes: a running step would delay the final.
PARTIAL_PAUSE_S = 0.25
CONTEXT_RESERVE_BYTES = 1536  # KV cache for the worst case (1 byte a token): ~170 MB at 0.6B
# Characters of the previous final given as context to an utterance that continues speech cut at max length.
CONTINUATION_CONTEXT_CHARS = 300


def _optional_module(name: str):
    """A sibling module another part of qasr provides; None while it is not there."""
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
        self.segmenter: Segmenter | None = None
        self.server = None
        self.server_handler = None
        self.journal = None
        self.output = None
        self.control: ControlServer | None = None
        self.hotkey = None
        self.shaper = None
        self.input_device: str | None = None
        self.device_error: str | None = None
        self.ws_url: str | None = None
        self.log_file: Path | None = None
        self.warnings: list[str] = []
        self._runner = None
        self._lock = lifecycle.InstanceLock()
        self._terminate = threading.Event()
        self._reload_requested = threading.Event()
        self._wake = threading.Event()
        self._mic_lock = threading.RLock()  # segmenter, mic utterance bookkeeping, output target
        self._mic_utterances: dict[int, int] = {}  # segmenter utterance id -> pipeline utterance id
        self._last_mic_utterance: int | None = None  # pipeline id of the newest mic utterance
        self._final_texts: dict[int, str] = {}  # pipeline id -> final text, for speech cut at max length
        self._segmenter_stale = False
        self._paused = False
        self._audio_stop = threading.Event()
        self._audio_thread: threading.Thread | None = None
        self._last_device_try = 0.0
        self._output_lock = threading.Lock()
        self._output_targets: dict[int, Any] = {}  # mic pipeline utterance id -> its output.UtteranceTarget
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
        except BaseException as exc:
            if isinstance(exc, QasrError):
                log.error("start-up failed: %s", exc)
                reporter.failed(str(exc))
            else:
                log.exception("start-up failed")
                reporter.failed(f"internal error during start-up ({exc!r}); see {self.log_file or paths.log_file()}")
            self._shutdown_components()
            self._lock.release()
            raise
        self.state = "listening"  # start-up is over: from here the state follows the components
        self._set_state(self._computed_state())
        log.info("ready: state=%s model=%s device=%s ws=%s", self.state, self.model_name, self.input_device,
                 self.ws_url)
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
        self.check_language(s.engine.language)
        self.transcriber = self._make_transcriber()
        if s.debug.save_audio_dir:
            self._saver = _UtteranceAudioSaver(Path(s.debug.save_audio_dir).expanduser())
        backend = (StreamingBackend(self._make_session) if s.engine.streaming
                   else WholeUtteranceBackend(self._transcribe))
        self.pipeline = Pipeline(
            backend,
            self._on_pipeline_event,
            max_queued_blocks=max(16, int(s.audio.queue_s * 1000 / s.audio.block_ms)),
            on_audio=self._saver.add if self._saver else None,
        )
        self.pipeline.start()
        self._make_journal()
        self._make_shaper()
        self._make_output()
        self.control = ControlServer(self._on_control)
        self.control.start()
        self._start_server()
        self._open_capture()
        self._start_hotkey()

    @property
    def model_name(self) -> str | None:
        return self.bundle.manifest.model.get("name") if self.bundle else None

    def languages(self) -> list[str]:
        return list(self.bundle.manifest.languages) if self.bundle else []

    def check_language(self, language: str | None) -> None:
        from qasr.engine.prompt import resolve_language

        if language and self.bundle:
            try:
                resolve_language(language, self.languages())
            except QasrError:
                raise ConfigError(
                    f"engine.language = {language!r} is not a language of {self.model_name}; use \"\" (detect) "
                    f"or one of: {', '.join(self.languages())}"
                ) from None

    def _make_transcriber(self):
        from qasr.engine.transcribe import TranscribeOptions, Transcriber

        e = self.settings.engine
        # Room for contexts set later (reload, WebSocket `set` / audio.start) is reserved in the decoder.
        return Transcriber(self.bundle, TranscribeOptions(
            language=e.language or None, context=e.context, threads=e.threads, max_new_tokens=e.max_new_tokens,
            verify="none", context_reserve_bytes=CONTEXT_RESERVE_BYTES,
        ))

    def _make_session(self, options: dict[str, Any]):
        """A streaming session for one utterance (decoder worker); the stream's options win over settings."""
        from qasr.engine.streaming import StreamingOptions, StreamingSession

        e = self.settings.engine
        context = self._utterance_context(options)
        return StreamingSession(self.transcriber, StreamingOptions(
            language=options.get("language") or e.language or None, context=context, rtf_budget=e.rtf_budget,
            max_new_tokens=e.max_new_tokens,
            max_utterance_s=e.max_utterance_s + 3600.0,  # the segmenter cuts long speech; never the session
        ))

    def _transcribe(self, audio: np.ndarray, options: dict[str, Any]):
        """Offline engine call (engine.streaming = false; decoder worker): the whole utterance."""
        e = self.settings.engine
        t = self.transcriber
        t.set_prompt(options.get("language") or e.language or None, self._utterance_context(options),
                     e.max_new_tokens)
        return t.transcribe(audio)

    def _make_journal(self) -> None:
        journal = _optional_module("qasr.daemon.journal")
        j = self.settings.journal
        if journal is not None:
            self.journal = journal.Journal(journal.JournalOptions(enabled=j.enabled, path=j.resolved_path()))

    def _make_output(self) -> None:
        o = self.settings.output
        with self._output_lock:
            old, self.output = self.output, None
            if old is not None:
                old.close()
            if o.sink == "none":
                return
            output = _optional_module("qasr.daemon.desktop.output")
            if output is None:
                return
            try:
                self.output = output.TextOutput(output_options(o, output.OutputOptions))
            except QasrError as exc:
                note = f"desktop text output is off: {exc}"
                log.warning("%s", note)
                if note not in self.warnings:
                    self.warnings.append(note)

    def _start_server(self) -> None:
        s = self.settings.server
        if not s.enabled:
            return
        from qasr.daemon.server import bridge as server_bridge
        from qasr.daemon.server import ws_server

        self.server_handler = server_bridge.DaemonServerHandler(self)
        self.server = ws_server.EventServer(ws_server.ServerOptions(
            host=s.host, port=s.port, allowed_origins=tuple(s.allowed_origins), max_clients=s.max_clients,
            max_message_bytes=s.max_message_bytes, commands_per_second=s.rate_limit_per_s,
            command_burst=max(1, int(2 * s.rate_limit_per_s)),
            # The pages (/captions) are static and hold no secret; they carry the token in the URL
            # fragment and prove it on the WebSocket, so a token in the page's query is never needed.
            http_requires_token=False,
        ), self.server_handler)
        self._runner = server_bridge.ServerRunner(self.server)
        try:
            self._runner.start()
        except BaseException:
            self.server = None
            self._runner = None
            raise
        self.ws_url = self.server.ws_url

    def _start_hotkey(self) -> None:
        h = self.settings.hotkey
        hotkey = _optional_module("qasr.daemon.desktop.hotkey")
        if hotkey is None or not h.enabled:
            return
        listener = hotkey.HotkeyListener(
            hotkey.HotkeyOptions(enabled=h.enabled, combo=h.combo, mode=h.mode, tap_threshold_s=h.tap_threshold_s,
                                 release_tail_s=h.release_tail_s, cancel_key=h.cancel_key),
            on_start=lambda: self._hotkey_command("start"), on_stop=lambda: self._hotkey_command("stop"),
            on_cancel=lambda: self._hotkey_command("cancel"),
        )
        if listener.start():
            self.hotkey = listener
            log.info("hotkey %s (%s)", h.combo, h.mode)
        elif listener.unavailable_reason:
            self.warnings.append(listener.unavailable_reason)

    def _hotkey_command(self, action: str) -> None:
        """Hotkey thread: ptt/toggle modes start/stop utterances; vad mode pauses/resumes listening."""
        if self.settings.vad.mode == "vad":
            name = "cancel" if action == "cancel" else "toggle"
        else:
            name = {"start": "start-utterance", "stop": "stop-utterance", "cancel": "cancel"}[action]
        try:
            self.command(name)
        except QasrError as exc:
            log.warning("hotkey: %s", exc)

    # ------------------------------------------------------------------ microphone
    def _open_capture(self) -> None:
        self._last_device_try = time.monotonic()
        capture_mod = _optional_module("qasr.daemon.audio.capture")
        if capture_mod is None:
            self._no_device("microphone capture is not available in this build")
            return
        a = self.settings.audio
        try:
            capture = capture_mod.AudioCapture(capture_mod.CaptureOptions(
                device=a.device or None, block_ms=a.block_ms, preroll_s=a.preroll_s, ring_s=a.queue_s,
            ), on_state=self._on_capture_state)
            capture.start()
        except QasrError as exc:  # NoInputDeviceError and friends
            self._no_device(str(exc))
            return
        self.capture = capture
        self.input_device = _device_name(capture) or a.device or "default"
        self.device_error = None
        with self._mic_lock:
            self.segmenter = self.make_segmenter()
        self._audio_stop.clear()
        self._audio_thread = threading.Thread(target=self._audio_loop, name="audio", daemon=True)
        self._audio_thread.start()
        self.warnings = [w for w in self.warnings if not w.startswith("no input device")]
        log.info("capturing from %s", self.input_device)

    def _no_device(self, message: str) -> None:
        if self.device_error != message:
            log.warning("no microphone (%s); serving WebSocket audio only, retrying every %.0f s",
                        message, DEVICE_RETRY_S)
        self.warnings = [w for w in self.warnings if not w.startswith("no input device")]
        self.warnings.append(
            f"no input device ({message}); the daemon serves WebSocket audio streams and retries the "
            f"microphone every {DEVICE_RETRY_S:.0f} s"
        )
        self.device_error = message
        self.input_device = None

    def make_segmenter(self, mode: str | None = None) -> Segmenter:
        v, e = self.settings.vad, self.settings.engine
        return Segmenter(SegmenterOptions(
            mode=mode or v.mode, aggressiveness=v.aggressiveness, onset_ms=v.onset_ms, hangover_ms=v.hangover_ms,
            preroll_ms=v.preroll_ms, max_utterance_s=e.max_utterance_s,
        ))

    def _audio_loop(self) -> None:
        capture = self.capture
        while not self._audio_stop.is_set():
            try:
                pcm = capture.read(timeout=0.1)
            except Exception as exc:
                log.exception("capture failed")
                self._capture_failed(f"capture failed: {exc}")
                return
            if pcm is None:
                continue
            with self._mic_lock:
                if self._paused:
                    continue
                self._handle_mic_events(self.segmenter.process(pcm))
                if self._segmenter_stale and not self.segmenter.in_utterance:
                    self.segmenter = self.make_segmenter()
                    self._segmenter_stale = False
            self._wake.set()

    def _on_capture_state(self, state: str, message: str) -> None:
        """Capture supervisor: a lost device is reopened by the capture itself; reflect it in the state."""
        if state in ("retrying", "no-device"):
            self.device_error = message
            log.warning("microphone %s: %s", state, message)
        elif state == "running":
            self.device_error = None
        self._wake.set()

    def _capture_failed(self, message: str) -> None:
        with self._mic_lock:
            self._handle_mic_events(self.segmenter.finish())  # what was captured still gets transcribed
        self.device_error = message
        self.state = "error"
        self._wake.set()

    def _handle_mic_events(self, events: list) -> None:
        """Segmenter events -> pipeline (with _mic_lock held)."""
        for event in events:
            kind = type(event).__name__
            if kind == "VadState":
                self._publish_protocol("vad", event.speaking, event.t_s)
                continue
            if kind == "SpeechStart":
                # Speech cut at max_utterance_s goes on in a new utterance that gets the previous one's text
                # as context (its final is decoded first: the decoder serves utterances in order).
                options = {"continues": self._last_mic_utterance} if getattr(event, "continued", False) else None
                utterance = self.pipeline.begin("mic", options=options, audio_start=event.t_s)
                self._last_mic_utterance = utterance
                self._mic_utterances[event.utterance_id] = utterance
                self._output_begin(utterance)
                if self.hotkey is not None and self.segmenter is not None and self.segmenter.mode != "vad":
                    self.hotkey.notify_started()
                continue
            utterance = self._mic_utterances.get(event.utterance_id)
            if utterance is None:
                continue
            if kind == "SpeechAudio":
                # A pause that may be the end of speech: no partial step, so the decoder is free for the final.
                self.pipeline.audio(utterance, event.pcm, event.t_s,
                                    partial=self.segmenter.silence_s < PARTIAL_PAUSE_S)
            elif kind == "SpeechPause":
                # The audio so far is the whole utterance unless speech resumes: the final is computed now,
                # during the VAD's hangover, and comes out the moment the end is confirmed.
                self.pipeline.pause(utterance)
            elif kind in ("SpeechEnd", "Cancelled"):
                (self.pipeline.end if kind == "SpeechEnd" else self.pipeline.cancel)(utterance)
                del self._mic_utterances[event.utterance_id]
                continues = kind == "SpeechEnd" and event.reason == "max_length"  # a new utterance follows
                if (self.hotkey is not None and not self._mic_utterances and not continues
                        and self.segmenter is not None and self.segmenter.mode != "vad"):
                    self.hotkey.notify_stopped()  # ended by other means (CLI, cancel): the hotkey state follows

    def _output_begin(self, utterance: int) -> None:
        """Record the focused window for this utterance: its text goes there or to the clipboard."""
        with self._output_lock:
            if self.output is None:
                return
            try:
                self._output_targets[utterance] = self.output.begin_utterance()
            except QasrError as exc:
                log.warning("text output: %s", exc)

    # ------------------------------------------------------------------ pipeline events (decoder thread)
    def _on_pipeline_event(self, event: dict[str, Any]) -> None:
        from qasr.daemon.server.bridge import protocol_event

        kind, source = event["type"], event.get("source", "mic")
        if kind == "final" and self._saver is not None:
            self._saver.save(event["utterance_id"])
        if kind == "cancelled" and self._saver is not None:
            self._saver.drop(event["utterance_id"])
        raw = event.get("text", "")
        if kind == "final" and self.shaper is not None and raw:
            event = dict(event, text=self.shaper.apply_replacements(raw))
        if kind == "final":  # context for an utterance that continues this one's cut speech
            self._final_texts[event["utterance_id"]] = raw
            while len(self._final_texts) > 8:
                self._final_texts.pop(next(iter(self._final_texts)))
        if source != "mic":
            if self.server_handler is not None:
                self.server_handler.route(event, protocol_event(event))
            return
        if kind == "final":
            result = self._deliver(event["utterance_id"], raw)
            sink = _delivered_by(result)
            if self.journal is not None and event["text"]:
                try:
                    self.journal.append(dict(event, utterance_id=str(event["utterance_id"]), sink=sink))
                except QasrError as exc:
                    log.error("%s", exc)
            log.info("final #%s (%.2f s audio, %s ms, sink %s): %s", event["utterance_id"], event["audio_s"],
                     event["latency_ms"], sink or "none", event["text"])
            self._publish(protocol_event(event, sink))
            self._publish_output_warning(result, event["utterance_id"])
        elif kind == "partial":
            self._live_type(event)
            self._publish(protocol_event(event))
        elif kind == "cancelled":
            self._output_end(event["utterance_id"])
        elif kind == "error":
            log.error("utterance %s: %s", event.get("utterance_id"), event.get("message"))
            self._output_end(event.get("utterance_id"))
            self._publish(protocol_event(event))
        self._wake.set()

    def _deliver(self, utterance: int, text: str):
        """Type/paste a mic final into the window its utterance started in: the DeliveryResult, or None."""
        with self._output_lock:
            target = self._output_targets.pop(utterance, None)
            if self.output is None or not text:
                return None
            shaped = text
            if self.shaper is not None:
                # Live typing already typed committed text that cannot be rewritten: no replacements then.
                shaped = self.shaper.shape_live_final(text) if self.settings.output.live else self.shaper.shape(text)
            try:
                return self.output.deliver(shaped, target)
            except QasrError as exc:
                log.warning("text output failed: %s", exc)
                return _failed_delivery(str(exc))

    def _live_type(self, event: dict[str, Any]) -> None:
        if self.output is None or not self.settings.output.live:
            return
        # Committed text only grows within an utterance: type what was committed since the last partial.
        with self._output_lock:
            target = self._output_targets.get(event["utterance_id"])
            if self.output is None or target is None:
                return
            committed = event["committed"]
            typed = target.typed_text
            delta = committed[len(typed):] if committed.startswith(typed) else ""
            try:
                result = self.output.deliver_committed(delta, target)
            except QasrError as exc:
                log.warning("live typing failed: %s", exc)
                return
        self._publish_output_warning(result, event["utterance_id"])

    def _publish_output_warning(self, result: Any, utterance: int) -> None:
        if result is None or not result.message:
            return
        code = "focus_moved" if result.focus_moved else "output"
        self._publish_protocol("warning", code, result.message, utterance_id=str(utterance),
                               sink=_delivered_by(result))

    def _output_end(self, utterance: int | None) -> None:
        """A cancelled or failed utterance: nothing will be delivered for it."""
        with self._output_lock:
            target = self._output_targets.pop(utterance, None)
            if self.output is not None and target is not None:
                self.output.cancel_utterance(target)

    def _make_shaper(self) -> None:
        from qasr.daemon.text_shaping import ShapingOptions, TextShaper

        sh = self.settings.shaping
        self.shaper = TextShaper(ShapingOptions(
            replacements_file=sh.replacements_file, hotwords_file=sh.hotwords_file,
            trailing_space=sh.trailing_space, strip_final_period_max_words=sh.strip_final_period_max_words,
            max_context_chars=sh.max_context_chars,
        ), on_warning=lambda message: self._publish_protocol("warning", "shaping", message))

    def _utterance_context(self, options: dict[str, Any]) -> str:
        """The context of one utterance; one that continues cut speech also gets the previous final's text."""
        context = self._context(options.get("context"))
        previous = self._final_texts.get(options.get("continues"), "")  # type: ignore[arg-type]
        if previous:
            context = f"{context} {previous[-CONTINUATION_CONTEXT_CHARS:]}".strip()
        data = context.encode("utf-8")
        if len(data) > CONTEXT_RESERVE_BYTES:  # the decoder is sized for this much; keep the newest part
            log.warning("context is %d bytes, more than the %d the decoder holds: its start is dropped",
                        len(data), CONTEXT_RESERVE_BYTES)
            context = data[-CONTEXT_RESERVE_BYTES:].decode("utf-8", errors="ignore")
        return context

    def _context(self, requested: str | None) -> str:
        """Model context: the stream's own, else engine.context plus the hot words file (decoder thread)."""
        if requested is not None:
            return requested
        hotwords = self.shaper.context() if self.shaper is not None else ""
        return ", ".join(part for part in (self.settings.engine.context, hotwords) if part)

    def _publish(self, event: dict[str, Any] | None) -> None:
        if event is not None and self.server is not None:
            self.server.publish(event)

    def _publish_protocol(self, kind: str, *args: Any, **info: Any) -> None:
        if self.server is None:
            return
        from qasr import protocol

        if kind == "vad":
            self.server.publish(protocol.vad(*args))
        elif kind == "warning":
            self.server.publish(protocol.warning(*args, **info))
        elif kind == "state":
            self.server.publish(protocol.state(*args))

    # ------------------------------------------------------------------ state
    def _computed_state(self) -> str:
        if self.state in ("stopping", "starting"):
            return self.state
        busy = self.pipeline is not None and self.pipeline.busy()
        if self.capture is None or getattr(self.capture, "state", "running") in ("retrying", "no-device"):
            return "transcribing" if busy else "no-device"
        if self.state == "error":
            return "error"
        if self._paused:
            return "paused"
        if self._mic_utterances:
            return "recording"
        return "transcribing" if busy else "listening"

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        log.debug("state %s -> %s", self.state, state)
        self.state = state
        self._publish_protocol("state", state)

    def status(self) -> dict[str, Any]:
        s = self.settings
        pipeline = self.pipeline
        return {
            "pid": os.getpid(),
            "version": __version__,
            "state": self._computed_state(),
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
            "output": self.settings.output.sink if self.output is not None else "none",
            "save_audio_dir": s.debug.save_audio_dir or None,
            "warnings": list(self.warnings),
        }

    # ------------------------------------------------------------------ commands
    def command(self, name: str) -> dict[str, Any]:
        """start-utterance / stop-utterance / toggle / cancel, from the control socket, WebSocket or hotkey."""
        if self.state == "stopping":
            raise QasrError("the daemon is stopping")
        with self._mic_lock:
            if self.segmenter is None or self.capture is None:
                raise QasrError(
                    f"no microphone is open ({self.device_error or 'capture unavailable'}); check "
                    "`qasr-daemon devices`, or stream audio over the WebSocket"
                )
            seg = self.segmenter
            if name == "cancel":
                cancelled = seg.in_utterance
                self._handle_mic_events(seg.cancel())
                result = {"cancelled": cancelled}
            elif name == "toggle" and seg.mode == "vad":  # vad mode: toggle pauses / resumes listening
                self._paused = not self._paused
                if self._paused:
                    self._handle_mic_events(seg.stop_utterance())
                result = {"paused": self._paused}
            elif name == "toggle":
                self._handle_mic_events(seg.toggle())
                result = {"recording": seg.in_utterance}
            elif name == "start-utterance":
                self._paused = False
                self._handle_mic_events(seg.start_utterance())
                result = {"recording": seg.in_utterance}
            elif name == "stop-utterance":
                self._handle_mic_events(seg.stop_utterance())
                result = {"recording": seg.in_utterance}
            else:
                raise ValueError(f"unknown command {name!r}")
        self._wake.set()
        return result

    def set_engine(self, language: str | None = None, context: str | None = None) -> dict[str, Any]:
        """Change language/context for the next utterances (WebSocket ``set``); a reload re-reads the file."""
        engine = self.settings.engine
        if language is not None:
            self.check_language(language)
            engine = replace(engine, language=language)
        if context is not None:
            engine = replace(engine, context=context)
        self.settings = replace(self.settings, engine=engine)
        return {"language": engine.language or None, "context": engine.context}

    def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request["cmd"]
        if cmd == "status":
            return self.status()
        if cmd == "stop":
            self.request_stop()
            return {"stopping": True, "pid": os.getpid()}
        if cmd == "reload":
            return {"reloaded": self.reload()}
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
            self.check_language(new.engine.language)
        except QasrError as exc:
            log.error("reload refused, keeping the running settings: %s", exc)
            self._publish_protocol("warning", "config", f"reload refused: {exc}")
            return False
        changes = changed_options(self.settings, new)
        restart = [name for name, needs in changes if needs]
        if restart:
            log.warning("changed options that apply after a restart: %s", ", ".join(restart))
            new = _keep_restart_options(self.settings, new)
        old, self.settings = self.settings, new
        logging_setup.set_level(new.logging.level)
        if new.vad != old.vad or new.engine.max_utterance_s != old.engine.max_utterance_s:
            with self._mic_lock:
                self._segmenter_stale = True  # replaced once no utterance is open
        if new.journal != old.journal:
            self._make_journal()
        if new.output != old.output:
            self._make_output()
        if new.shaping != old.shaping:
            self._make_shaper()
        log.info("reloaded %s: %s", self.config_path, ", ".join(n for n, _ in changes) or "no changes")
        return True

    # ------------------------------------------------------------------ shutdown
    def _shutdown(self) -> None:
        log.info("stopping")
        self._set_state("stopping")
        self._stop_audio(finish_utterance=True)
        if self.pipeline is not None and not self.pipeline.drain(DRAIN_TIMEOUT_S):
            log.error("gave up waiting for pending finals after %.0f s", DRAIN_TIMEOUT_S)
        self._shutdown_components()
        lifecycle.remove_runtime_file(paths.pid_file())
        self._lock.release()
        log.info("stopped")

    def _stop_audio(self, finish_utterance: bool) -> None:
        self._audio_stop.set()
        if self._audio_thread is not None:
            self._audio_thread.join(timeout=5)
            self._audio_thread = None
        capture, self.capture = self.capture, None
        if capture is None:
            return
        with self._mic_lock:
            if finish_utterance and self.segmenter is not None and self.pipeline is not None:
                # Audio already captured belongs to the utterance in flight; then end it where it is.
                while (pcm := capture.read(timeout=0)) is not None and self.segmenter.in_utterance:
                    self._handle_mic_events(self.segmenter.process(pcm))
                self._handle_mic_events(self.segmenter.finish())
        try:
            capture.stop()
        except Exception:
            log.exception("closing the capture failed")

    def _shutdown_components(self) -> None:
        if self.hotkey is not None:
            self.hotkey.stop()
            self.hotkey = None
        self.shaper = None
        self._stop_audio(finish_utterance=False)
        if self._runner is not None:
            try:
                self._runner.stop()
            except Exception:
                log.exception("stopping the WebSocket server failed")
            self._runner = None
            self.server = None
        if self.control is not None:
            self.control.stop()
            self.control = None
        if self.pipeline is not None:
            self.pipeline.stop()
        if self.output is not None:
            self.output.close()
        close = getattr(self.transcriber, "close", None)
        if close is not None:
            close()


def output_options(o: Any, options_type: type) -> Any:
    """output.OutputOptions from the [output] settings: every option of the section is passed on."""
    renamed = {"type_delay_ms": "char_delay_ms"}
    values = {renamed.get(f.name, f.name): getattr(o, f.name) for f in fields(o) if f.name != "live"}
    values["char_delay_ms"] = float(values["char_delay_ms"])
    values["auto_rules"], values["paste_key_rules"] = dict(o.auto_rules), dict(o.paste_key_rules)
    return options_type(**values)


def _delivered_by(result: Any) -> str | None:
    """The sink that delivered a final (`clipboard` when it was left there), None when nothing was."""
    if result is None:
        return None
    return result.sink if result.delivered or result.sink == "clipboard" else None


def _failed_delivery(message: str) -> Any:
    from qasr.daemon.desktop.output import DeliveryResult

    return DeliveryResult("none", False, message=f"text output failed: {message}")


def _device_name(capture: Any) -> str | None:
    device = getattr(capture, "device", None)
    return device.get("name") if isinstance(device, dict) else None


def _keep_restart_options(old: Settings, new: Settings) -> Settings:
    """``new`` with every [restart] option put back to its running value."""
    sections = {}
    for section in fields(Settings):
        a, b = getattr(old, section.name), getattr(new, section.name)
        keep = {f.name: getattr(a, f.name) for f in fields(a) if f.metadata.get("restart")}
        sections[section.name] = replace(b, **keep)
    return replace(new, **sections)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _UtteranceAudioSaver:
    """debug.save_audio_dir: every utterance's audio, exactly as the engine got it, as float32 WAV."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._chunks: dict[int, list[np.ndarray]] = {}
        self._lock = threading.Lock()

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
        target = self.folder / f"utterance-{os.getpid()}-{utterance_id:04d}.wav"
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
