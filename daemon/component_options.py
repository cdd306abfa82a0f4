"""``Settings`` → each component's options, in one place: no option is copied by hand anywhere else."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from qasr.config import paths
from qasr.config.settings import Settings
from qasr.daemon.audio.capture import CaptureOptions
from qasr.daemon.audio.segmenter import SegmenterOptions
from qasr.daemon.desktop.hotkey import HotkeyOptions
from qasr.daemon.desktop.output import OutputOptions
from qasr.daemon.results.journal import JournalOptions
from qasr.daemon.server.openai_bridge import OpenAIOptions
from qasr.daemon.server.wyoming_server import WyomingOptions
from qasr.daemon.server.ws_server import ServerOptions
from qasr.daemon.transcription.aligner_host import AlignerHostOptions
from qasr.daemon.transcription.engine_host import EngineHostOptions
from qasr.daemon.results.text_shaping import ShapingOptions
from qasr.engine.streaming import StreamingOptions
from qasr.engine.transcribe import TranscribeOptions

# Room in the decoder for contexts set later (reload, WebSocket `set` / audio.start): the KV cache is
# sized for the worst case (1 byte a token), ~170 MB at 0.6B.
CONTEXT_RESERVE_BYTES = 1536
# The segmenter cuts long speech at engine.max_utterance_s; the engine's own cut must never come first.
SESSION_CUT_MARGIN_S = 3600.0


def transcribe_options(s: Settings) -> TranscribeOptions:
    e = s.engine
    return TranscribeOptions(language=e.language or None, context=e.context, threads=e.threads,
                             max_new_tokens=e.max_new_tokens, verify="none",
                             context_reserve_bytes=CONTEXT_RESERVE_BYTES, device=e.device)


def streaming_options(s: Settings) -> StreamingOptions:
    """Each utterance's session (the engine host fills in the utterance's language and context)."""
    e = s.engine
    return StreamingOptions(language=e.language or None, context=e.context, rtf_budget=e.rtf_budget,
                            max_new_tokens=e.max_new_tokens,
                            max_utterance_s=e.max_utterance_s + SESSION_CUT_MARGIN_S)


def engine_host_options(s: Settings) -> EngineHostOptions:
    return EngineHostOptions(model_path=s.model.resolved_path(), verify=s.model.verify,
                             transcribe=transcribe_options(s), streaming=streaming_options(s),
                             stream=s.engine.streaming, context=s.engine.context,
                             context_limit_bytes=CONTEXT_RESERVE_BYTES)


def segmenter_options(s: Settings, mode: str | None = None) -> SegmenterOptions:
    v = s.vad
    return SegmenterOptions(mode=mode or v.mode, aggressiveness=v.aggressiveness, onset_ms=v.onset_ms,
                            hangover_ms=v.hangover_ms, preroll_ms=v.preroll_ms,
                            max_utterance_s=s.engine.max_utterance_s,
                            release_voice_ms=int(round(s.hotkey.release_tail_s * 1000)))


def capture_options(s: Settings) -> CaptureOptions:
    a = s.audio
    return CaptureOptions(device=str(a.device).strip() or None, block_ms=a.block_ms, preroll_s=a.preroll_s, ring_s=a.queue_s)


def pipeline_queue_blocks(s: Settings) -> int:
    """Capture blocks the segmenter → encoder queue holds (it blocks, never drops, when full)."""
    return max(16, int(s.audio.queue_s * 1000 / s.audio.block_ms))


def output_options(s: Settings) -> OutputOptions:
    """Every option of [output] is passed on (``live`` and ``word_timestamps`` are the dictation route's)."""
    o = s.output
    renamed = {"type_delay_ms": "char_delay_ms"}
    values = {renamed.get(f.name, f.name): getattr(o, f.name) for f in fields(o)
              if f.name not in ("live", "word_timestamps")}
    values["char_delay_ms"] = float(values["char_delay_ms"])
    values["auto_rules"], values["paste_key_rules"] = dict(o.auto_rules), dict(o.paste_key_rules)
    values["wayland_tools"] = tuple(o.wayland_tools)
    return OutputOptions(**values)


def hotkey_options(s: Settings) -> HotkeyOptions:
    h = s.hotkey
    return HotkeyOptions(enabled=h.enabled, combo=h.combo, mode=h.mode, tap_threshold_s=h.tap_threshold_s,
                         # the release tail is the segmenter's (release_voice_ms): it ends as soon as the
                         # VAD hears no voice, where a timer here would always wait release_tail_s
                         release_tail_s=0.0, cancel_key=h.cancel_key, backend=h.backend,
                         evdev_devices=tuple(h.evdev_devices))


def ime_options(s: Settings):
    from qasr.daemon.desktop.ime_link import ImeOptions

    i, h = s.ime, s.hotkey
    return ImeOptions(hotkey=i.hotkey or h.combo, cancel_key=h.cancel_key, hotkey_mode=h.mode,
                      tap_threshold_s=h.tap_threshold_s, context_from_surrounding=i.context_from_surrounding,
                      context_chars=i.context_chars, commit_timeout_s=i.commit_timeout_s)


def shaping_options(s: Settings) -> ShapingOptions:
    sh = s.shaping
    return ShapingOptions(replacements_file=sh.replacements_file, hotwords_file=sh.hotwords_file,
                          trailing_space=sh.trailing_space,
                          strip_final_period_max_words=sh.strip_final_period_max_words,
                          max_context_chars=sh.max_context_chars, spoken_formatting=sh.spoken_formatting,
                          spoken_match=sh.spoken_match, spoken_dir=sh.spoken_dir)


def journal_options(s: Settings) -> JournalOptions:
    j = s.journal
    return JournalOptions(enabled=j.enabled, path=j.resolved_path(), max_bytes=j.max_bytes, backups=j.backups,
                          max_age_days=j.max_age_days)


def server_options(s: Settings) -> ServerOptions:
    sv = s.server
    return ServerOptions(
        host=sv.host, port=sv.port, allowed_origins=tuple(sv.allowed_origins), max_clients=sv.max_clients,
        max_message_bytes=sv.max_message_bytes, commands_per_second=sv.rate_limit_per_s,
        command_burst=max(1, int(2 * sv.rate_limit_per_s)),
        # The pages (/captions) are static and hold no secret; they carry the token in the URL
        # fragment and prove it on the WebSocket, so a token in the page's query is never needed.
        http_requires_token=False,
    )


def openai_options(s: Settings) -> OpenAIOptions:
    o = s.openai
    return OpenAIOptions(enabled=o.enabled, max_upload_bytes=o.max_upload_bytes, max_concurrent_jobs=o.max_concurrent_jobs,
                         requests_per_minute=o.requests_per_minute, max_audio_s=o.max_audio_s)


def wyoming_options(s: Settings) -> WyomingOptions:
    w = s.wyoming
    return WyomingOptions(uri=w.uri, allow_remote=w.allow_remote, max_clients=w.max_clients,
                          max_event_bytes=w.max_event_bytes, max_audio_s=w.max_audio_s,
                          idle_timeout_s=w.idle_timeout_s, events_per_second=w.events_per_second,
                          streaming=w.streaming)


def aligner_path(s: Settings) -> Path | None:
    """The forced-aligner bundle for word timestamps: model.aligner, else the installed one (None: none)."""
    if s.model.aligner:
        candidate = Path(s.model.aligner).expanduser()
        return candidate if candidate.is_absolute() else paths.models_dir() / candidate
    from qasr.daemon.models.store import find_aligner_bundle

    return find_aligner_bundle()


def aligner_options(s: Settings) -> AlignerHostOptions:
    """The aligner shares the engine's threads and device settings (loaded only when words are wanted)."""
    return AlignerHostOptions(threads=s.engine.threads, device=s.engine.device, verify=s.model.verify)
