"""The daemon's parts: built from its settings, kept, replaced on reload, closed at the end.

Start order: model → route dispatcher and pipeline → results (journal, text shaping, desktop output) →
control socket → WebSocket server → microphone → hotkey. Every option comes from ``component_options``.
The servers get the ``TranscriptionService``; each source gets its route here or from it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from qasr import protocol
from qasr.config.settings import Settings
from qasr.daemon import component_options as opts
from qasr.daemon.audio.microphone import Microphone
from qasr.daemon.audio.segment_events import VadState
from qasr.daemon.audio.segmenter import SegmenterOptions
from qasr.daemon.desktop import session as desktop_session
from qasr.daemon.desktop.evdev_hotkey import choose_backend as choose_hotkey_backend, make_listener as make_hotkey
from qasr.daemon.desktop.output import TextOutput
from qasr.daemon.transcription.engine_host import EngineHost
from qasr.daemon.results.final_words import FinalWords
from qasr.daemon.results.journal import Journal
from qasr.daemon.transcription.pipeline import Pipeline
from qasr.daemon.results.desktop_delivery import DesktopDelivery
from qasr.daemon.results.dictation_route import DictationRoute
from qasr.daemon.results.requester_route import RequesterRoute
from qasr.daemon.results.result_services import ResultServices
from qasr.daemon.server.bridge import DaemonServerHandler, ServerRunner
from qasr.daemon.server.openai_bridge import OpenAIEndpoint
from qasr.daemon.server.realtime_bridge import RealtimeEndpoint, RealtimeOptions
from qasr.daemon.server.wyoming_server import WyomingServer
from qasr.daemon.transcription.aligner_host import AlignerHost
from qasr.daemon.transcription.route_dispatch import RouteDispatcher
from qasr.daemon.transcription.routes import MIC, STREAM, Deliver, Source
from qasr.daemon.transcription.service import TranscriptionService
from qasr.daemon.server.control_socket import ControlServer
from qasr.daemon.server.ws_server import EventServer
from qasr.daemon.results.text_shaping import TextShaper
from qasr.daemon.results.utterance_audio import UtteranceAudioSaver
from qasr.daemon.system_source import SystemSource
from qasr.errors import QasrError

log = logging.getLogger("qasr.components")

NO_DEVICE = "no input device"
DEVICE_RETRY_S = 10.0  # the daemon tries to open a missing microphone again this often


class Components:
    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon  # settings, state, commands, wake(), capture_failed()
        self.engine: EngineHost | None = None
        self.aligner: AlignerHost | None = None  # word timestamps (finals, OpenAI requests); loaded on demand
        self.pipeline: Pipeline | None = None
        self.results = ResultServices(self.publish)  # what every route shares
        self.desktop_delivery = DesktopDelivery(self.results)
        self.mic_source = Source.of(MIC, MIC, DictationRoute(self.results, self.desktop_delivery,
                                                             live_typing=lambda: self.settings.output.live))
        self.dispatch = RouteDispatcher(after=lambda: self.daemon.wake())
        self.service: TranscriptionService | None = None
        self.microphone: Microphone | None = None
        self.system = SystemSource(self)  # system audio captions and the call recorder
        self.server: EventServer | None = None
        self.server_handler: DaemonServerHandler | None = None
        self.control: ControlServer | None = None
        self.hotkey: Any = None  # desktop.hotkey.HotkeyListener (X11) or evdev_hotkey.EvdevHotkeyListener
        self.action_keys: Any = None  # desktop.action_keys.ActionKeys: paste-last / undo keys (X11)
        self.ime: Any = None  # desktop.ime_link.ImeLink: input-method engines on the control socket
        self.session = desktop_session.detect()
        self.desktop: dict[str, Any] = {"session": self.session.as_dict()}  # what status shows, and why
        self._runner: ServerRunner | None = None
        self.openai: OpenAIEndpoint | None = None
        self.realtime: RealtimeEndpoint | None = None  # /v1/realtime, beside the OpenAI endpoint
        self.wyoming: WyomingServer | None = None
        self._wyoming_runner: ServerRunner | None = None
        self.input_device: str | None = None
        self.device_error: str | None = None
        self.ws_url: str | None = None
        self.warnings: list[str] = []

    @property
    def settings(self) -> Settings:
        return self.daemon.settings

    # ------------------------------------------------------------------ start-up
    def start(self) -> None:
        s = self.settings
        self.engine = EngineHost(lambda: opts.engine_host_options(self.daemon.settings), self._hotwords,
                                 lambda utterance_id: self.pipeline.final_text(utterance_id))
        if s.debug.save_audio_dir:
            self.results.saver = UtteranceAudioSaver(Path(s.debug.save_audio_dir).expanduser())
        self._start_aligner()
        self.pipeline = Pipeline(self.engine.backend(), self.dispatch, max_queued_blocks=opts.pipeline_queue_blocks(s),
                                 on_audio=self._utterance_audio, delivery=self.dispatch)
        self.pipeline.start()
        self.service = TranscriptionService(self.pipeline, self.engine, self._route, self.segmenter_options,
                                            self.words_aligner)
        self.results.journal = Journal(opts.journal_options(s))
        self._set_profiles(s.profiles)
        self.desktop_delivery.engine_context = lambda: self.daemon.settings.engine.context
        self._make_shaper()
        self._make_output()
        self._start_ime()
        self.control = ControlServer(self.daemon.commands.control,
                                     streams={"ime": self.ime.serve} if self.ime is not None else None)
        self.control.start()
        self._start_server()
        self._start_wyoming()
        self.open_microphone()
        self.system.update()
        self._start_hotkey()
        self._start_action_keys()

    def _start_aligner(self) -> None:
        """The aligner host always exists (the OpenAI endpoint may ask for words); the model is loaded only
        when words are wanted: at start with [output] word_timestamps, else at the first request for them."""
        s = self.settings
        self.aligner = AlignerHost(opts.aligner_path(s), opts.aligner_options(s), warn=self._warn)
        self.results.words = FinalWords(self.aligner, lambda: self.daemon.settings.output.word_timestamps
                                       or self.system.recorder.recording)
        if s.output.word_timestamps:
            self._want_words()

    def _want_words(self) -> None:
        if self.aligner.available:
            self.aligner.preload()  # on the aligner thread: start-up does not wait for it
        else:
            self.aligner.warn_unavailable()

    def words_aligner(self) -> AlignerHost | None:
        """The aligner for a request that wants words (OpenAI); an aligner pulled since the start is found."""
        host = self.aligner
        if host is not None and host.path is None and not host.loaded:
            host.retry(opts.aligner_path(self.settings))
        return host

    def _utterance_audio(self, utterance_id: str, pcm, source: str) -> None:
        """Each block of an utterance's audio as the engine gets it (encoder worker)."""
        if self.results.saver is not None:
            self.results.saver.add(utterance_id, pcm)
        if self.results.words is not None:
            self.results.words.collect(utterance_id, pcm, source)

    def _route(self, kind: str, name: str, deliver: Deliver) -> RequesterRoute:
        """The route of a requester's source (the service's ``source``)."""
        return RequesterRoute(kind, name, self.results, deliver)

    @property
    def model_name(self) -> str | None:
        return self.engine.model_name if self.engine else None

    def languages(self) -> list[str]:
        return self.engine.languages() if self.engine else []

    def journal_file(self) -> str | None:
        journal = self.results.journal
        return str(journal.path) if journal is not None and journal.enabled else None

    def check_language(self, language: str | None) -> None:
        if self.engine is not None:
            self.engine.check_language(language)

    def segmenter_options(self, mode: str | None = None) -> SegmenterOptions:
        return opts.segmenter_options(self.settings, mode)

    def _hotwords(self) -> str:
        shaper = self.results.shaper
        return shaper.context() if shaper is not None else ""

    def _make_shaper(self) -> None:
        self.results.shaper = TextShaper(opts.shaping_options(self.settings),
                                        on_warning=lambda message: self.publish_warning("shaping", message))

    def _make_output(self) -> None:
        self.desktop_delivery.set_output(None)
        log.info("desktop session: %s (%s)", self.session.describe(), "; ".join(self.session.reasons))
        if self.settings.output.sink == "none":
            self.desktop["output"] = {"sink": "none"}
            return
        try:
            output = TextOutput(opts.output_options(self.settings), session=self.session)
        except QasrError as exc:
            self.desktop["output"] = {"sink": "none", "why": str(exc)}
            self._warn(f"desktop text output is off: {exc}")
            return
        self.desktop_delivery.set_output(output)
        self.desktop["output"] = info = output.describe()
        log.info("text output: sink %s, typing %s, clipboard %s, focus %s%s", info.get("sink"),
                 ", ".join(info.get("typing") or []) or "none", info.get("clipboard"), info.get("focus"),
                 "".join(f"; {name} unusable: {why}" for name, why in (info.get("unusable") or {}).items()))
        if not output.focus_known:
            self._warn(f"no focus safety on this desktop ({self.session.focus_note}): text goes to whatever "
                       "window has the focus when the final is ready")

    def _start_server(self) -> None:
        if not self.settings.server.enabled:
            return
        self.server_handler = handler = DaemonServerHandler(self.daemon, self.service)
        if self.settings.openai.enabled:
            handler.openai = self.openai = OpenAIEndpoint(self.service, opts.openai_options(self.settings))
            handler.realtime = self.realtime = RealtimeEndpoint(
                self.service, RealtimeOptions(self.settings.engine.max_utterance_s))
        self.server = EventServer(opts.server_options(self.settings), handler)
        handler.send_to = self.server.send_to
        self._runner = ServerRunner(self.server)
        try:
            self._runner.start()
        except BaseException:
            self.server, self._runner = None, None
            raise
        self.ws_url = self.server.ws_url
        self.results.on_final = self._count_final

    def _count_final(self, kind: str, message: dict) -> None:
        """Finals of sources other than the microphone and WebSocket clients, in /metrics by kind."""
        metrics = self.server.metrics if self.server is not None else None
        if metrics is None or kind == STREAM:
            return  # WebSocket results are counted as the server sends them
        metrics.count(f"finals_{kind}")
        latency = (message.get("timings") or {}).get("latency_ms")
        if isinstance(latency, (int, float)):
            metrics.observe(f"{kind}_final_latency_ms", float(latency))

    def _start_wyoming(self) -> None:
        if not self.settings.wyoming.enabled:
            return
        metrics = self.server.metrics if self.server is not None else None
        self.wyoming = WyomingServer(self.service, opts.wyoming_options(self.settings), metrics)
        runner = ServerRunner(self.wyoming, name="wyoming")
        try:
            runner.start()
        except BaseException:
            self.wyoming = None
            raise
        self._wyoming_runner = runner

    def _start_ime(self) -> None:
        if not self.settings.ime.enabled:
            return
        from qasr.daemon.desktop.ime_link import ImeLink

        try:
            self.ime = ImeLink(opts.ime_options(self.settings), self.daemon.commands.hotkey)
        except (QasrError, ValueError) as exc:
            self._warn(f"[ime] is off: {exc}")
            return
        self.desktop_delivery.ime = self.ime
        if self.settings.ime.wayland and self.session.wayland:
            from qasr.daemon.desktop.wayland_ime import WaylandInputMethod

            wayland = WaylandInputMethod(self.ime)
            if wayland.start():
                log.info("Wayland input method (input-method-v2) active on the seat")
            else:
                self._warn(f"Wayland input method off: {wayland.unavailable}")

    def _start_hotkey(self) -> None:
        h = self.settings.hotkey
        if not h.enabled:
            return
        hotkey = self.daemon.commands.hotkey
        options = opts.hotkey_options(self.settings)
        backend, why = choose_hotkey_backend(options.backend, self.session)
        self.desktop["hotkey"] = {"backend": backend, "why": why}
        log.info("hotkey back-end: %s (%s)", backend, why)
        if backend == "none":
            if h.backend != "none":
                self._warn(why)
            return
        actions = self._action_combos() if backend == "evdev" else None  # X11: _start_action_keys
        shared = self.ime is not None and opts.ime_options(self.settings).hotkey == h.combo
        press = lambda name: None if shared and self.ime.active else hotkey(name)  # noqa: E731  the engine has it
        listener = make_hotkey(backend, options, (lambda: press("start"), lambda: press("stop"),
                                                  lambda: press("cancel")), options.evdev_devices, actions)
        if listener.start():
            self.hotkey = listener
            log.info("hotkey %s (%s, %s)", h.combo, h.mode, backend)
        elif listener.unavailable_reason:
            self.desktop["hotkey"] = {"backend": "none", "why": listener.unavailable_reason}
            self.warnings.append(listener.unavailable_reason)

    def _set_profiles(self, profiles: tuple) -> None:
        """[[profile]] tables for dictation; a language the model does not know is dropped with a warning."""
        from dataclasses import replace

        checked = []
        for profile in profiles:
            if profile.language:
                try:
                    self.check_language(profile.language)
                except QasrError as exc:
                    self._warn(f"[[profile]] {profile.label}: {exc}; its language is ignored")
                    profile = replace(profile, language="")
            checked.append(profile)
        self.desktop_delivery.profiles = tuple(checked)

    def _action_combos(self) -> dict:
        """hotkey.paste_last_combo / undo_combo → callbacks running the command on a thread of its own."""
        from qasr.daemon.desktop import action_keys

        h = self.settings.hotkey
        try:
            keys = action_keys.bindings(h.paste_last_combo, h.undo_combo)
        except QasrError as exc:
            self._warn(f"hotkey.paste_last_combo / undo_combo: {exc}")
            return {}
        run = self.daemon.commands.hotkey
        return {combo: (lambda n=name: action_keys.in_thread(run, n)) for combo, name in keys.items()}

    def _start_action_keys(self) -> None:
        from qasr.daemon.desktop import action_keys

        h = self.settings.hotkey
        try:
            keys = action_keys.bindings(h.paste_last_combo, h.undo_combo)
        except QasrError as exc:
            self._warn(f"hotkey.paste_last_combo / undo_combo: {exc}")
            return
        if not keys or (self.hotkey is not None and getattr(self.hotkey, "backend", "") == "evdev"):
            return  # none, or the evdev listener serves them
        if self.session.kind != desktop_session.X11:
            self._warn("paste-last/undo hotkeys need X11 or the evdev hotkey; on Wayland bind "
                       "`qasr-daemon paste-last` and `qasr-daemon undo` in your compositor")
            return
        run = self.daemon.commands.hotkey
        listener = action_keys.ActionKeys(keys, run)
        if listener.start():
            self.action_keys = listener

    def _warn(self, note: str) -> None:
        log.warning("%s", note)
        if note not in self.warnings:
            self.warnings.append(note)

    # ------------------------------------------------------------------ microphone
    def open_microphone(self) -> None:
        try:
            mic = Microphone(opts.capture_options(self.settings), self.segmenter_options(), self.pipeline,
                             self.mic_source, on_capture_state=self._on_capture_state, on_failure=self._capture_failed,
                             on_vad=self._publish_vad, on_begin=self._mic_utterance_began,
                             on_end=self._mic_utterance_ended, on_audio=self.daemon.wake)
            mic.start()
        except QasrError as exc:  # NoInputDeviceError and friends
            self._no_device(str(exc))
            return
        mic.feed.choose = self._choose_engine_options
        self.microphone = mic
        self.input_device = mic.device_name or self.settings.audio.device or "default"
        self.device_error = None
        self.warnings = [w for w in self.warnings if not w.startswith(NO_DEVICE)]
        log.info("capturing from %s", self.input_device)

    def stop_microphone(self, finish_utterance: bool) -> None:
        mic, self.microphone = self.microphone, None
        if mic is not None:
            mic.stop(finish_utterance)

    def _no_device(self, message: str) -> None:
        if self.device_error != message:
            log.warning("no microphone (%s); serving WebSocket audio only, retrying every %.0f s",
                        message, DEVICE_RETRY_S)
        self.warnings = [w for w in self.warnings if not w.startswith(NO_DEVICE)]
        self.warnings.append(f"{NO_DEVICE} ({message}); the daemon serves WebSocket audio streams and retries the "
                             f"microphone every {DEVICE_RETRY_S:.0f} s")
        self.device_error = message
        self.input_device = None

    def _on_capture_state(self, state: str, message: str) -> None:
        """Capture supervisor: a lost device is reopened by the capture itself; reflect it in the state."""
        if state in ("retrying", "no-device"):
            self.device_error = message
            log.warning("microphone %s: %s", state, message)
        elif state == "running":
            self.device_error = None
        self.daemon.wake()

    def _capture_failed(self, message: str) -> None:
        self.device_error = message
        self.daemon.capture_failed(message)

    def _choose_engine_options(self, language: str | None, context: str | None) -> tuple:
        """Per-application profiles, then the text before an input method's cursor (utterance start)."""
        language, context = self.desktop_delivery.choose_engine_options(language, context)
        return self.ime.choose_context(language, context) if self.ime is not None else (language, context)

    def _mic_utterance_began(self, utterance_id: str) -> None:
        self.desktop_delivery.begin_output(utterance_id)
        if self.ime is not None:
            self.ime.recording(True)
        if self.hotkey is not None and self.settings.vad.mode != "vad":
            self.hotkey.notify_started()

    def _mic_utterance_ended(self, utterance_id: str, ended: bool, more_follows: bool) -> None:
        mic = self.microphone
        idle = mic is None or not mic.feed.in_utterance
        if self.ime is not None and idle and not more_follows:
            self.ime.recording(False)
        if self.hotkey is not None and idle and not more_follows and self.settings.vad.mode != "vad":
            self.hotkey.notify_stopped()  # ended by other means (CLI, cancel): the hotkey state follows

    # ------------------------------------------------------------------ publishing
    def publish(self, message: dict | None) -> None:
        if message is not None:
            self.system.observe(message)  # the call recorder
        if message is not None and self.server is not None:
            self.server.publish(message)

    def publish_state(self, state: str) -> None:
        self.publish(protocol.state(state))

    def publish_warning(self, code: str, message: str, **info: Any) -> None:
        self.publish(protocol.warning(code, message, **info))

    def _publish_vad(self, event: VadState) -> None:
        self.publish(protocol.vad(event.speaking, event.t_s))

    # ------------------------------------------------------------------ reload / shutdown
    def apply_settings(self, old: Settings, new: Settings) -> None:
        """What a reload can change while running (the rest is [restart])."""
        if new.vad != old.vad or new.engine.max_utterance_s != old.engine.max_utterance_s:
            if self.microphone is not None:  # replaced once no utterance is open
                self.microphone.set_segmenter_options(self.segmenter_options())
        if new.audio.system != old.audio.system:
            self.system.update()
        if new.journal != old.journal:
            self.results.journal = Journal(opts.journal_options(new))
        if replace(new.output, word_timestamps=False) != replace(old.output, word_timestamps=False):
            self._make_output()
        if new.shaping != old.shaping:
            self._make_shaper()
        if new.profiles != old.profiles:
            self._set_profiles(new.profiles)
        if new.output.word_timestamps and self.aligner is not None and not self.aligner.loaded:
            if not old.output.word_timestamps or not self.aligner.available:
                self.aligner.retry(opts.aligner_path(new))  # the user may have pulled the aligner since
                self._want_words()

    def shutdown(self) -> None:
        if self.action_keys is not None:
            self.action_keys.stop()
            self.action_keys = None
        if self.hotkey is not None:
            self.hotkey.stop()
            self.hotkey = None
        self.results.shaper = None
        self.system.shutdown()
        self.stop_microphone(finish_utterance=False)
        if self.aligner is not None:
            self.aligner.close()  # after the finals that wait for their words went out
        if self._runner is not None:
            try:
                self._runner.stop()
            except Exception:
                log.exception("stopping the WebSocket server failed")
            self._runner, self.server = None, None
        if self._wyoming_runner is not None:
            try:
                self._wyoming_runner.stop()
            except Exception:
                log.exception("stopping the Wyoming server failed")
            self._wyoming_runner, self.wyoming = None, None
        if self.openai is not None:
            self.openai.close()
        if self.ime is not None:
            self.ime.close()
        if self.control is not None:
            self.control.stop()
            self.control = None
        if self.pipeline is not None:
            self.pipeline.stop()
        self.dispatch.stop()
        self.desktop_delivery.set_output(None)
        if self.engine is not None:
            self.engine.close()
