"""Load config.toml over the defaults, apply ``--set section.key=value`` overrides, validate.

Every problem is one line that names the file, the line number and the key, and says what is allowed
(unknown keys get a "did you mean" suggestion). A file is checked whole: the ``ConfigError`` lists every
problem found, one per line (``errors``), not only the first.
"""

from __future__ import annotations

import difflib
import re
import sys
import typing
from dataclasses import fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from qasr.config import paths
from qasr.config.settings import PROFILE_SINKS, ProfileSettings, Settings, section_types
from qasr.errors import QasrError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli (a dependency there, see pyproject.toml)
    import tomli as tomllib


class ConfigError(QasrError):
    exit_code = 2

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors) if errors else [message]


class _Problems:
    """Every problem of one load, so that a file with three mistakes is reported with three lines."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def check(self, step, *args: Any) -> Any:
        """``step(*args)``, or None with its ConfigError recorded."""
        try:
            return step(*args)
        except ConfigError as exc:
            self.errors.extend(exc.errors)
            return None

    def raise_any(self) -> None:
        if self.errors:
            raise ConfigError("\n".join(self.errors), self.errors)


def default_toml_text() -> str:
    return resources.files("qasr.config").joinpath("default.toml").read_text(encoding="utf-8")


def load_settings(config_file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                  *, explicit: bool | None = None) -> tuple[Settings, Path]:
    """Settings from ``config_file`` (default: $XDG_CONFIG_HOME/qasr/config.toml) plus overrides.

    A missing default file means "all defaults"; a file named explicitly must exist.
    Returns the settings and the path of the config file consulted.
    """
    if explicit is None:
        explicit = config_file is not None
    path = Path(config_file).expanduser() if config_file is not None else paths.config_file()
    settings = Settings()
    problems = _Problems()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        settings = _apply_toml(settings, text, str(path), problems)
    elif explicit:
        raise ConfigError(f"config file {path} does not exist; create it (`qasr-daemon config init`) or drop --config")
    settings = _apply_overrides(settings, overrides, problems)
    problems.raise_any()
    return settings, path


def load_daemon_settings(config_file: str | Path | None, overrides: tuple[str, ...] = (), *,
                         model: str | None = None, device: str | None = None) -> tuple[Settings, Path]:
    """The daemon's settings: ``--model DIR`` and ``--device NAME`` win over the file and ``--set``."""
    extra = list(overrides)
    if model:
        extra.append(f"model.path={_toml_string(str(Path(model).expanduser().resolve()))}")
    if device:
        extra.append(f"audio.device={_toml_string(device)}")
    return load_settings(config_file, extra)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def apply_toml(settings: Settings, text: str, source: str = "<config>") -> Settings:
    problems = _Problems()
    settings = _apply_toml(settings, text, source, problems)
    problems.raise_any()
    return settings


def apply_overrides(settings: Settings, overrides: list[str] | tuple[str, ...]) -> Settings:
    """Apply ``section.key=value`` strings; value is TOML (``42``, ``true``, ``"x"``, ``["a"]``) or bare text."""
    problems = _Problems()
    settings = _apply_overrides(settings, overrides, problems)
    problems.raise_any()
    return settings


def _apply_toml(settings: Settings, text: str, source: str, problems: _Problems) -> Settings:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # the parser stops at the first: one problem
        problems.errors.append(f"{source}: not valid TOML: {exc}")
        return settings
    locate = _KeyLocator(text)
    return _merge(settings, data, lambda section, key=None: f"{source}:{locate(section, key)}", problems)


def _apply_overrides(settings: Settings, overrides: list[str] | tuple[str, ...], problems: _Problems) -> Settings:
    for item in overrides:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or name.count(".") != 1:
            problems.errors.append(f"--set {item!r}: write it as section.key=value (e.g. engine.language=English)")
            continue
        section, key = name.split(".")
        value = _parse_value(raw.strip())
        settings = _merge(settings, {section: {key: value}}, lambda s, k=None, _i=item: f"--set {_i}", problems)
    return settings


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # bare text such as English or /tmp/x


def _merge(settings: Settings, data: dict[str, Any], where, problems: _Problems) -> Settings:
    """``settings`` with every valid value of ``data``; each invalid one is a problem and is left out."""
    sections = section_types()
    updates: dict[str, Any] = {}
    for section, table in data.items():
        if section == "profile":
            found = problems.check(_profiles, table, where)
            if found is not None:
                updates["profiles"] = found
            continue
        if section not in sections:
            problems.errors.append(f"{where(section)}: unknown section [{section}]{_suggest(section, sections)}")
            continue
        if not isinstance(table, dict):
            problems.errors.append(
                f"{where(section)}: {section} must be a table ([{section}]), not a {_toml_type(table)}")
            continue
        cls = sections[section]
        known = {f.name: f for f in fields(cls)}
        hints = typing.get_type_hints(cls)
        current = updates.get(section, getattr(settings, section))
        changes: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                problems.errors.append(
                    f"{where(section, key)}: unknown key {section}.{key}{_suggest(key, known, prefix=section + '.')}"
                )
                continue
            checked = problems.check(_check, f"{section}.{key}", value, hints[key], known[key].metadata,
                                     where(section, key))
            if checked is not None:  # TOML has no null: None is a recorded problem
                changes[key] = checked
        updates[section] = replace(current, **changes)
    return replace(settings, **updates)


def _profiles(tables: Any, where) -> tuple[ProfileSettings, ...]:
    """``[[profile]]`` tables (an array of tables) → ProfileSettings, each checked like a section."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{where('profile')}: write profiles as [[profile]] tables, got {_show(tables)}")
    known = {f.name: f for f in fields(ProfileSettings)}
    hints = typing.get_type_hints(ProfileSettings)
    problems = _Problems()
    profiles = []
    for number, table in enumerate(tables, start=1):
        here = f"{where('profile', f'#{number}')} (profile {number})"
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known:
                problems.errors.append(
                    f"{here}: unknown key profile.{key}{_suggest(key, known, prefix='profile.')}")
                continue
            if key in ("trailing_space", "spoken_formatting") and isinstance(value, bool):
                value = "true" if value else "false"
            meta = {"choices": {"sink": PROFILE_SINKS, "trailing_space": ("", "true", "false"),
                                "spoken_formatting": ("", "true", "false")}.get(key)}
            checked = problems.check(_check, f"profile.{key}", value, hints[key], meta, here)
            if checked is not None:
                values[key] = checked
        if not values.get("match"):
            if "match" in values or "match" not in table:  # not there or empty (a bad one is reported above)
                problems.errors.append(f"{here}: a profile needs match = [\"window class or app_id glob\", ...]")
            continue
        profiles.append(ProfileSettings(**values))
    problems.raise_any()
    return tuple(profiles)


def _check(name: str, value: Any, hint: Any, meta: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:  # tuple[str, ...]: a TOML array of strings
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: {name} must be an array of strings, got {_show(value)}")
        return tuple(value)
    if origin is dict:  # dict[str, str]: a TOML table of strings, e.g. { firefox = "type" }
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{where}: {name} must be a table of strings like {{ xterm = \"type\" }}, "
                              f"got {_show(value)}")
        choices = meta.get("choices")
        for key, item in value.items():
            if choices and item not in choices:
                raise ConfigError(f"{where}: {name}.{key} = {item!r} is not one of {', '.join(map(repr, choices))}"
                                  f"{_suggest(item, choices, quote=True)}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {name} must be an integer, got {_show(value)}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {name} must be a number, got {_show(value)}")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string (in quotes), got {_show(value)}")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(
                f"{where}: {name} = {value!r} is not one of {', '.join(map(repr, choices))}"
                f"{_suggest(value, choices, quote=True)}"
            )
        return value
    low, high = meta.get("min"), meta.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{where}: {name} = {value} is out of range [{low}, {high}]")
    return value


def _toml_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array", dict: "table"}.get(
        type(value), type(value).__name__
    )


def _show(value: Any) -> str:
    return f"{value!r} ({_toml_type(value)})"


def _suggest(word: str, options, prefix: str = "", quote: bool = False) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if not close:
        return ""
    return f"; did you mean {close[0]!r}?" if quote else f"; did you mean {prefix}{close[0]}?"


_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_\-\"' .]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")


def _unquote(part: str) -> str:
    part = part.strip()
    return part[1:-1] if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'" else part


class _KeyLocator:
    """Line numbers of sections and keys in TOML text (plain tables and dotted keys; enough for config files)."""

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        in_multiline = False
        arrays: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline:
                if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
                    in_multiline = False
                continue
            array = re.match(r"^\s*\[\[\s*([A-Za-z0-9_\-]+)\s*\]\]", line)
            if array:  # [[profile]]: the n-th table is (name, "#n")
                arrays[array.group(1)] = arrays.get(array.group(1), 0) + 1
                table = (array.group(1), f"#{arrays[array.group(1)]}")
                self.lines.setdefault(table, number)
                self.lines.setdefault(table[:1], number)
                continue
            header = _HEADER.match(line)
            if header and not line.lstrip().startswith("[["):
                table = tuple(_unquote(p) for p in header.group(1).split("."))
                self.lines.setdefault(table, number)
                continue
            key = _KEY.match(line)
            if key:
                dotted = tuple(_unquote(p) for p in key.group(1).split("."))
                full = table + dotted
                for i in range(1, len(full) + 1):
                    self.lines.setdefault(full[:i], number)
                rest = line[key.end():]
                if rest.count('"""') % 2 == 1 or rest.count("'''") % 2 == 1:
                    in_multiline = True

    def __call__(self, section: str, key: str | None = None) -> str:
        wanted = (section,) if key is None else (section, key)
        number = self.lines.get(wanted) or self.lines.get((section,))
        return f"line {number}" if number else "?"
