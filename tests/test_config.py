"""Typed settings, the shipped default.toml and the loader's validation."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import pytest

from qasr.config import loader, paths
from qasr.config.loader import ConfigError, apply_overrides, apply_toml, load_settings
from qasr.config.settings import Settings, changed_options, section_types


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    return tmp_path


def test_defaults_load_without_a_config_file(xdg):
    settings, path = load_settings()
    assert path == paths.config_file()
    assert not path.exists()
    assert settings == Settings()
    assert settings.server.host == "127.0.0.1"
    assert settings.model.resolved_path().parent == paths.models_dir()


def test_default_toml_documents_exactly_the_settings_with_their_defaults():
    text = loader.default_toml_text()
    data = loader.tomllib.loads(text)
    expected = Settings().to_dict()
    assert set(data) == set(expected)
    for section, options in expected.items():
        assert set(data[section]) == set(options), section
        for key, value in options.items():
            assert data[section][key] == value, f"{section}.{key}"
    # Every option has a comment right above it, and [restart] marks match the settings' metadata.
    lines = text.splitlines()
    section = None
    for i, line in enumerate(lines):
        header = re.match(r"^\[(\w+)\]$", line)
        if header:
            section = header.group(1)
            continue
        key = re.match(r"^(\w+) = ", line)
        if not key:
            continue
        comment = []
        j = i - 1
        while j >= 0 and lines[j].startswith("#"):
            comment.insert(0, lines[j])
            j -= 1
        assert comment, f"{section}.{key.group(1)} has no comment"
        option = {f.name: f for f in fields(section_types()[section])}[key.group(1)]
        assert ("[restart]" in " ".join(comment)) == option.metadata["restart"], f"{section}.{key.group(1)}"


def test_user_file_merges_over_defaults(xdg):
    cfg = paths.config_file()
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[engine]\nlanguage = "English"\nthreads = 1\n\n[server]\nport = 0\n')
    settings, _ = load_settings()
    assert settings.engine.language == "English"
    assert settings.engine.threads == 1
    assert settings.server.port == 0
    assert settings.engine.max_new_tokens == Settings().engine.max_new_tokens
    assert settings.vad == Settings().vad


def test_float_accepts_integer_and_arrays_become_tuples():
    settings = apply_toml(Settings(), '[engine]\nrtf_budget = 1\n[server]\nallowed_origins = ["null"]\n')
    assert settings.engine.rtf_budget == 1.0 and isinstance(settings.engine.rtf_budget, float)
    assert settings.server.allowed_origins == ("null",)


@pytest.mark.parametrize(
    "text, line, words",
    [
        ('[engine]\nlanguage = "English"\nthreads = "two"\n', 3, ["engine.threads", "integer", "'two'"]),
        ('[vad]\n\n# c\nmode = "always"\n', 4, ["vad.mode", "'always'", "'vad'", "'ptt'", "'toggle'"]),
        ('[vad]\naggressiveness = 7\n', 2, ["vad.aggressiveness", "range", "[0, 3]"]),
        ('[server]\nport = 80\nhots = "x"\n', 3, ["unknown key server.hots", "did you mean server.host"]),
        ('[engine]\n[enigne]\nlanguage = "x"\n', 2, ["unknown section [enigne]", "did you mean engine"]),
        ('[output]\nlive = "yes"\n', 2, ["output.live", "true or false"]),
        ('[server]\nallowed_origins = "null"\n', 2, ["server.allowed_origins", "array of strings"]),
        ('[server]\nport = true\n', 2, ["server.port", "integer"]),
        ('engine.language = 3\n', 1, ["engine.language", "string"]),
        ('[logging]\nlevel = "verbose"\n', 2, ["logging.level", "'debug'"]),
        ('[output]\nsink = "typ"\n', 2, ["output.sink", "did you mean 'type'"]),
    ],
)
def test_bad_values_name_the_key_and_the_line(xdg, text, line, words):
    cfg = xdg / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert f"{cfg}:line {line}:" in message
    for word in words:
        assert word in message


def test_every_problem_of_a_file_is_reported_not_only_the_first(xdg):
    cfg = xdg / "several.toml"
    cfg.write_text('[vad]\nmdoe = "ptt"\naggressiveness = 9\n\n[engine]\nthreads = "two"\nlanguage = "English"\n'
                   '[enigne]\nx = 1\n\n[[profile]]\nmatch = ["a"]\nsink = "shout"\n[[profile]]\nname = "x"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, ["server.prot=1", "engine.threads=1"])
    lines = str(err.value).splitlines()
    assert lines == err.value.errors and len(lines) == 7, lines
    expected = [f"{cfg}:line 2: unknown key vad.mdoe; did you mean vad.mode?",
                f"{cfg}:line 3: vad.aggressiveness = 9 is out of range",
                f"{cfg}:line 6: engine.threads must be an integer",
                f"{cfg}:line 8: unknown section [enigne]",
                f"{cfg}:line 11 (profile 1): profile.sink = 'shout'",
                f"{cfg}:line 14 (profile 2): a profile needs match",
                "--set server.prot=1: unknown key server.prot; did you mean server.port?"]
    for line, start in zip(lines, expected):
        assert line.startswith(start), (line, start)
    # the good values around the bad ones still load where nothing is wrong
    cfg.write_text('[engine]\nlanguage = "English"\n')
    assert load_settings(cfg, ["engine.threads=1"])[0].engine.threads == 1


def test_python_3_10_reads_toml_with_tomli():
    """pyproject says Python >= 3.10; tomllib is 3.11+: every import of it in the package is guarded, with
    tomli (a dependency below 3.11) in its place."""
    root = Path(__file__).resolve().parent.parent
    project = loader.tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["requires-python"] == ">=3.10"
    assert "tomli>=2.0; python_version < '3.11'" in project["dependencies"]
    for folder in ("qasr", "engine", "daemon", "clients", "config"):
        for path in (root / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            guarded = {id(node) for test in ast.walk(tree) if isinstance(test, ast.If)
                       and "version_info" in ast.unparse(test.test) for node in ast.walk(test)}
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    if "tomllib" in names:
                        assert id(node) in guarded, f"{path}:{node.lineno}: tomllib without the tomli fallback"


def test_invalid_toml_is_reported_with_the_file(xdg):
    cfg = xdg / "broken.toml"
    cfg.write_text("[engine\nlanguage = 1\n")
    with pytest.raises(ConfigError, match=re.escape(str(cfg)) + ".*not valid TOML.*line 1"):
        load_settings(cfg)


def test_explicit_config_file_must_exist(xdg):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(xdg / "nope.toml")


def test_overrides_parse_toml_values_or_bare_text():
    settings = apply_overrides(
        Settings(),
        ["engine.language=English", "server.port=0", "output.live=true", 'engine.context="a = b"',
         'server.allowed_origins=["http://x"]', "debug.save_audio_dir=/tmp/x y"],
    )
    assert settings.engine.language == "English"
    assert settings.server.port == 0
    assert settings.output.live is True
    assert settings.engine.context == "a = b"
    assert settings.server.allowed_origins == ("http://x",)
    assert settings.debug.save_audio_dir == "/tmp/x y"


@pytest.mark.parametrize(
    "item, words",
    [
        ("engine.threads=many", ["--set engine.threads=many", "integer"]),
        ("engine.langauge=x", ["unknown key engine.langauge", "did you mean engine.language"]),
        ("language=English", ["section.key=value"]),
        ("engine.language", ["section.key=value"]),
    ],
)
def test_bad_overrides_name_the_option(item, words):
    with pytest.raises(ConfigError) as err:
        apply_overrides(Settings(), [item])
    for word in words:
        assert word in str(err.value)


def test_overrides_apply_after_the_file(xdg):
    cfg = xdg / "c.toml"
    cfg.write_text('[engine]\nlanguage = "Chinese"\ncontext = "kept"\n')
    settings, path = load_settings(cfg, ["engine.language=English"])
    assert path == cfg
    assert settings.engine.language == "English"
    assert settings.engine.context == "kept"


def test_changed_options_reports_restart_needs():
    old = Settings()
    new = apply_overrides(old, ["engine.language=English", "server.port=9"])
    assert sorted(changed_options(old, new)) == [("engine.language", False), ("server.port", True)]
    assert changed_options(old, old) == []


def test_profiles_load_as_arrays_of_tables_and_bad_ones_name_the_line():
    text = ('[output]\nsink = "auto"\n\n[[profile]]\nname = "terms"\nmatch = ["foot", "*term*"]\nsink = "type"\n'
            'trailing_space = false\n\n[[profile]]\nmatch = ["thunderbird"]\nlanguage = "English"\n'
            'hotwords = ["Qwen"]\nspoken_formatting = true\n')
    settings = loader.apply_toml(Settings(), text, "cfg")
    first, second = settings.profiles
    assert (first.label, first.match, first.sink, first.trailing_space) == ("terms", ("foot", "*term*"), "type", "false")
    assert (second.label, second.language, second.hotwords, second.spoken_formatting) == \
        ("thunderbird", "English", ("Qwen",), "true")
    assert "profiles" not in Settings().to_dict()
    assert ("profile", False) in changed_options(Settings(), settings)
    for bad, words in (('[[profile]]\nmatch = ["a"]\n\n[[profile]]\nname = "x"\n', "line 4 (profile 2): a profile needs match"),
                       ('[[profile]]\nmatch = ["a"]\nsink = "shout"\n', "line 1 (profile 1): profile.sink = 'shout'"),
                       ('[[profile]]\nmatch = ["a"]\nlangauge = "x"\n', "unknown key profile.langauge; did you mean profile.language?"),
                       ('[[profile]]\nmatch = "a"\n', "profile.match must be an array of strings"),
                       ("profile = 3\n", "write profiles as [[profile]] tables")):
        with pytest.raises(loader.ConfigError, match=re.escape(words)):
            loader.apply_toml(Settings(), bad, "cfg")
