"""Typed settings: one frozen dataclass per section of config.toml.

The defaults here are the single source of truth; ``config/default.toml`` documents every option
with the same values (a test keeps the two in step). Each field carries its validation rules in
``metadata``: ``choices`` (allowed strings), ``min``/``max`` (numeric range). The loader
(``config/loader.py``) checks types, ranges and enums and rejects unknown keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from qasr.config import paths

DEFAULT_MODEL_NAME = "qwen3-asr-0.6b"  # where `qasr-daemon models pull 0.6b` puts it

# WM_CLASS globs (class or instance, case-insensitive) of terminal windows: output.terminal_classes.
TERMINAL_CLASSES = (
    "xterm", "uxterm", "urxvt", "rxvt", "urxvt-*", "st", "st-256color", "gnome-terminal*", "kgx",
    "org.gnome.Console", "konsole", "kitty", "alacritty", "terminator", "tilix", "xfce4-terminal",
    "mate-terminal", "lxterminal", "qterminal", "wezterm", "org.wezfurlong.wezterm", "foot",
    "terminology", "sakura", "guake", "tilda", "yakuake", "ghostty", "com.mitchellh.ghostty",
    "cool-retro-term", "deepin-terminal", "io.elementary.terminal", "blackbox", "termite", "roxterm",
)
# Terminals whose paste key inserts the PRIMARY selection (no default Ctrl+Shift+V binding).
PASTE_KEY_RULES = {"xterm": "shift+Insert", "uxterm": "shift+Insert", "urxvt": "shift+Insert",
                   "rxvt": "shift+Insert", "urxvt-*": "shift+Insert"}
OUTPUT_SINKS = ("type", "paste", "none")  # what `auto` may pick for a window


def _opt(default: Any, *, choices: tuple[str, ...] | None = None, min: float | None = None,
         max: float | None = None, restart: bool = False) -> Any:
    """A settings field with its validation rules attached.

    restart: a running daemon applies a new value only when it restarts (SIGHUP leaves it as it is).
    """
    meta = {"choices": choices, "min": min, "max": max, "restart": restart}
    if isinstance(default, dict):  # a TOML table of strings; ``choices`` then limits its values
        table = dict(default)
        return field(default_factory=lambda: dict(table), metadata=meta)
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelSettings:
    path: str = _opt("", restart=True)  # "" -> models_dir()/DEFAULT_MODEL_NAME; relative -> under models_dir()
    verify: str = _opt("size", choices=("none", "size", "sha256"), restart=True)
    # forced-aligner bundle for word timestamps: "" -> the installed one (`models pull aligner`);
    # relative -> under models_dir()
    aligner: str = _opt("", restart=True)

    def resolved_path(self) -> Path:
        if not self.path:
            return paths.models_dir() / DEFAULT_MODEL_NAME
        candidate = Path(self.path).expanduser()
        return candidate if candidate.is_absolute() else paths.models_dir() / candidate


@dataclass(frozen=True)
class AudioSettings:
    device: str = _opt("", restart=True)  # "" = system default input; else a name substring or an index
    block_ms: int = _opt(60, min=10, max=200, restart=True)
    preroll_s: float = _opt(1.0, min=0.0, max=10.0, restart=True)
    queue_s: float = _opt(30.0, min=1.0, max=600.0, restart=True)
    system: bool = _opt(False)  # captions of what the computer plays (the default output's monitor)


@dataclass(frozen=True)
class VadSettings:
    mode: str = _opt("vad", choices=("vad", "ptt", "toggle"))
    aggressiveness: int = _opt(2, min=0, max=3)
    onset_ms: int = _opt(150, min=30, max=2000)
    hangover_ms: int = _opt(600, min=30, max=5000)
    preroll_ms: int = _opt(500, min=0, max=3000)


@dataclass(frozen=True)
class EngineSettings:
    streaming: bool = _opt(True)
    language: str = _opt("")  # "" = detect; else a language the bundle lists (checked at start)
    context: str = _opt("")
    threads: int = _opt(0, min=0, max=256, restart=True)  # 0 = pick from the CPU count
    # where the engine computes (qasr.engine.device); a missing GPU or CPU-only build falls back to the CPU
    device: str = _opt("auto", choices=("auto", "cpu", "cuda", "vulkan"), restart=True)
    max_new_tokens: int = _opt(448, min=1, max=4096)
    rtf_budget: float = _opt(0.5, min=0.01, max=10.0)
    max_utterance_s: float = _opt(30.0, min=1.0, max=1200.0)


@dataclass(frozen=True)
class ServerSettings:
    enabled: bool = _opt(True, restart=True)
    host: str = _opt("127.0.0.1", restart=True)
    port: int = _opt(8765, min=0, max=65535, restart=True)  # 0 = any free port (clients read server.json)
    allowed_origins: tuple[str, ...] = _opt((), restart=True)  # besides the server's own pages
    max_clients: int = _opt(32, min=1, max=1024, restart=True)
    max_message_bytes: int = _opt(1 << 20, min=1024, max=64 << 20, restart=True)
    rate_limit_per_s: float = _opt(20.0, min=1.0, max=100000.0, restart=True)


@dataclass(frozen=True)
class OpenAISettings:
    enabled: bool = _opt(True, restart=True)  # POST /v1/audio/transcriptions on the server's port
    max_upload_bytes: int = _opt(25 << 20, min=1024, max=1 << 30, restart=True)
    max_concurrent_jobs: int = _opt(2, min=1, max=64, restart=True)
    requests_per_minute: float = _opt(120.0, min=1.0, max=100000.0, restart=True)
    max_audio_s: float = _opt(3600.0, min=1.0, max=86400.0, restart=True)


@dataclass(frozen=True)
class WyomingSettings:
    enabled: bool = _opt(False, restart=True)
    uri: str = _opt("tcp://127.0.0.1:10300", restart=True)
    allow_remote: bool = _opt(False, restart=True)  # needed to bind an address other machines reach
    max_clients: int = _opt(8, min=1, max=256, restart=True)
    max_event_bytes: int = _opt(1 << 20, min=1024, max=64 << 20, restart=True)
    max_audio_s: float = _opt(300.0, min=1.0, max=3600.0, restart=True)
    idle_timeout_s: float = _opt(30.0, min=1.0, max=3600.0, restart=True)
    events_per_second: float = _opt(500.0, min=1.0, max=100000.0, restart=True)
    streaming: bool = _opt(True, restart=True)


@dataclass(frozen=True)
class OutputSettings:
    sink: str = _opt("auto", choices=("auto", "type", "paste", "none"))
    live: bool = _opt(False)
    auto_rules: dict[str, str] = _opt({}, choices=OUTPUT_SINKS)  # WM_CLASS glob -> sink, for sink = auto
    auto_terminal_sink: str = _opt("type", choices=OUTPUT_SINKS)
    auto_default_sink: str = _opt("paste", choices=OUTPUT_SINKS)
    terminal_classes: tuple[str, ...] = _opt(TERMINAL_CLASSES)
    paste_keys: str = _opt("ctrl+v")
    terminal_paste_keys: str = _opt("ctrl+shift+v")
    paste_key_rules: dict[str, str] = _opt(PASTE_KEY_RULES)  # WM_CLASS glob -> paste keys
    terminal_newlines: bool = _opt(False)  # a newline/tab into a terminal is Enter/Tab (else a space)
    restore_clipboard: bool = _opt(True)
    restore_delay_s: float = _opt(1.0, min=0.0, max=60.0)
    focus_check: bool = _opt(True)
    type_delay_ms: int = _opt(2, min=0, max=100)
    keymap_restore_delay_s: float = _opt(1.0, min=0.0, max=60.0)
    modifier_release_timeout_s: float = _opt(1.5, min=0.0, max=30.0)
    backend: str = _opt("auto", choices=("auto", "x11", "wayland"))
    wayland_tools: tuple[str, ...] = _opt(("auto",))
    uinput_layout: str = _opt("auto")
    wtype_start_delay_ms: int = _opt(30, min=1, max=1000)
    unknown_window_paste_keys: str = _opt("shift+Insert")
    word_timestamps: bool = _opt(False)  # finals carry `words` (start/end of each word) from the forced aligner


@dataclass(frozen=True)
class HotkeySettings:
    enabled: bool = _opt(True, restart=True)
    combo: str = _opt("<ctrl>+<alt>+space", restart=True)
    mode: str = _opt("auto", choices=("auto", "hold", "toggle"), restart=True)
    tap_threshold_s: float = _opt(0.3, min=0.0, max=5.0, restart=True)
    release_tail_s: float = _opt(0.2, min=0.0, max=5.0, restart=True)  # most audio after release while voiced
    cancel_key: str = _opt("<esc>", restart=True)
    paste_last_combo: str = _opt("", restart=True)  # "" = none; X11: deliver the last final again
    undo_combo: str = _opt("", restart=True)        # "" = none; X11: remove the last dictated text
    backend: str = _opt("auto", choices=("auto", "x11", "evdev", "none"), restart=True)
    evdev_devices: tuple[str, ...] = _opt((), restart=True)


@dataclass(frozen=True)
class ImeSettings:
    enabled: bool = _opt(True, restart=True)            # accept input-method engines (IBus) on the control socket
    hotkey: str = _opt("", restart=True)                # "" = the same combo as [hotkey] combo
    wayland: bool = _opt(False, restart=True)           # be the seat's input-method-v2 (sway, Hyprland, …)
    context_from_surrounding: bool = _opt(False)        # the text before the cursor is the utterance's context
    context_chars: int = _opt(200, min=0, max=2000)     # at most this many characters of it
    commit_timeout_s: float = _opt(2.0, min=0.1, max=30.0)  # an engine that does not confirm a commit by then


@dataclass(frozen=True)
class ShapingSettings:
    replacements_file: str = _opt("replacements.txt")  # relative: inside the config folder
    hotwords_file: str = _opt("hotwords.txt")
    trailing_space: bool = _opt(True)
    strip_final_period_max_words: int = _opt(0, min=0, max=1000)
    max_context_chars: int = _opt(1000, min=0, max=10000)
    spoken_formatting: bool = _opt(False)  # "new line", "comma", "句号" … become what they say
    spoken_match: str = _opt("edges", choices=("edges", "anywhere"))
    spoken_dir: str = _opt("spoken")  # per-language tables <dir>/<Language>.txt; relative: in the config folder


@dataclass(frozen=True)
class JournalSettings:
    enabled: bool = _opt(True)
    path: str = _opt("")  # "" = $XDG_STATE_HOME/qasr/journal.jsonl
    max_bytes: int = _opt(10 << 20, min=4096, max=1 << 30)
    backups: int = _opt(3, min=0, max=100)
    max_age_days: float = _opt(0.0, min=0.0, max=36500.0)  # 0 = no age limit

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else paths.journal_file()


@dataclass(frozen=True)
class LoggingSettings:
    level: str = _opt("info", choices=("debug", "info", "warning", "error"))
    file: str = _opt("", restart=True)  # "" = $XDG_STATE_HOME/qasr/qasr.log
    max_bytes: int = _opt(5 << 20, min=4096, max=1 << 30, restart=True)
    backup_count: int = _opt(3, min=0, max=100, restart=True)

    def resolved_file(self) -> Path:
        return Path(self.file).expanduser() if self.file else paths.log_file()


@dataclass(frozen=True)
class DebugSettings:
    save_audio_dir: str = _opt("")  # "" = off; else every utterance is saved there as a 16 kHz WAV


@dataclass(frozen=True)
class ProfileSettings:
    """One ``[[profile]]`` table: settings for the windows it matches (first match wins)."""
    name: str = ""                       # shown by status and the history; "" = the first match pattern
    match: tuple[str, ...] = ()          # WM_CLASS / instance / Wayland app_id globs, any case (required)
    title: str = ""                      # a window-title glob too ("" = any title)
    sink: str = ""                       # "" = [output] sink; else auto | type | paste | none
    language: str = ""                   # "" = engine.language
    context: str = ""                    # "" = engine.context; else replaces it for these windows
    hotwords: tuple[str, ...] = ()       # added to the hot words for these windows
    trailing_space: str = ""             # "" = [shaping]; "true" / "false" (TOML booleans are accepted)
    spoken_formatting: str = ""          # "" = [shaping]; "true" / "false"

    @property
    def label(self) -> str:
        return self.name or (self.match[0] if self.match else "profile")


PROFILE_SINKS = ("", "auto", "type", "paste", "none")


@dataclass(frozen=True)
class Settings:
    model: ModelSettings = field(default_factory=ModelSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    vad: VadSettings = field(default_factory=VadSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    openai: OpenAISettings = field(default_factory=OpenAISettings)
    wyoming: WyomingSettings = field(default_factory=WyomingSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    hotkey: HotkeySettings = field(default_factory=HotkeySettings)
    ime: ImeSettings = field(default_factory=ImeSettings)
    shaping: ShapingSettings = field(default_factory=ShapingSettings)
    journal: JournalSettings = field(default_factory=JournalSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    debug: DebugSettings = field(default_factory=DebugSettings)
    profiles: tuple[ProfileSettings, ...] = ()  # [[profile]] tables, in file order (not a section)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            f.name: {o.name: _plain(getattr(getattr(self, f.name), o.name)) for o in fields(getattr(self, f.name))}
            for f in _sections()
        }


def _sections() -> list:
    """The fields of Settings that are [sections] (everything but ``profiles``)."""
    return [f for f in fields(Settings) if f.name != "profiles"]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def section_types() -> dict[str, type]:
    """Section name -> its dataclass."""
    return {f.name: type(getattr(Settings(), f.name)) for f in _sections()}


def changed_options(old: Settings, new: Settings) -> list[tuple[str, bool]]:
    """("section.key", needs_restart) for every option whose value differs."""
    changes = [("profile", False)] if old.profiles != new.profiles else []
    for section in _sections():
        a, b = getattr(old, section.name), getattr(new, section.name)
        for option in fields(a):
            if getattr(a, option.name) != getattr(b, option.name):
                changes.append((f"{section.name}.{option.name}", bool(option.metadata.get("restart"))))
    return changes


def keep_restart_options(old: Settings, new: Settings) -> Settings:
    """``new`` with every [restart] option put back to its running value."""
    sections = {}
    for section in _sections():
        a, b = getattr(old, section.name), getattr(new, section.name)
        keep = {f.name: getattr(a, f.name) for f in fields(a) if f.metadata.get("restart")}
        sections[section.name] = replace(b, **keep)
    return replace(new, **sections)
