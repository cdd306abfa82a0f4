"""Replacement rules, hotwords, spacing and the short-utterance period rule, with real files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from qasr.daemon.results.text_shaping import ShapingOptions, TextShaper, parse_hotwords, parse_replacements, word_count


def write(path: Path, text: str) -> None:
    """Write and move the mtime forward, so a rewrite within one timestamp tick is still seen."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    if path.stat().st_mtime_ns <= before:
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    folder = tmp_path / "xdg" / "qasr"
    folder.mkdir(parents=True)
    return folder


def test_files_default_to_the_config_folder(config):
    shaper = TextShaper(ShapingOptions())
    assert shaper.replacements_path == config / "replacements.txt"
    assert shaper.hotwords_path == config / "hotwords.txt"
    assert shaper.shape("nothing configured") == "nothing configured "
    assert shaper.context() == ""


def test_replacement_rules_apply_in_order_with_groups_and_flags(config):
    write(config / "replacements.txt", "\n".join([
        "# spoken punctuation and fixes",
        r"(?i)\s*\bnew line\b\s* = \n",
        r"\bteh\b = the",
        r"(\d+) percent = \1%",
        r"(?P<first>\w+) at example dot com = \g<first>@example.com",
        r'\s+comma\b = ","',
        r"\bum,?\s* =",
        "Qwen three = Qwen3",
        "^x equals y$ = x = y",
    ]))
    shaper = TextShaper(ShapingOptions(trailing_space=False))
    assert len(shaper.rules) == 8
    assert shaper.shape("um, teh report New Line says 40 percent comma done") == "the report\nsays 40%, done"
    assert shaper.shape("mail bob at example dot com about Qwen three") == "mail bob@example.com about Qwen3"
    assert shaper.shape("x equals y") == "x = y"  # the first "=" with whitespace before it separates


def test_bad_rules_warn_once_with_file_and_line_and_are_skipped(config, caplog):
    path = config / "replacements.txt"
    write(path, "also good = ok\nbad( = x\nno separator here\n(x) = \\2\ngood = fine\n")
    warnings: list[str] = []
    caplog.set_level(logging.WARNING, logger="qasr.text_shaping")
    shaper = TextShaper(ShapingOptions(trailing_space=False), on_warning=warnings.append)
    assert shaper.shape("good and also good") == "fine and ok"
    assert [w.split(": ", 1)[0] for w in warnings] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert "bad regular expression" in warnings[0] and "rule skipped" in warnings[0]
    assert all("\n" not in w for w in warnings)
    shaper.shape("again")  # unchanged file: no new warnings
    assert len(warnings) == 3
    assert len(caplog.records) == 3


def test_rules_reload_when_the_file_changes(config):
    path = config / "replacements.txt"
    shaper = TextShaper(ShapingOptions(trailing_space=False))
    assert shaper.shape("colour") == "colour"
    write(path, "colour = color\n")
    assert shaper.shape("colour") == "color"
    write(path, "colour = hue\n")
    assert shaper.shape("colour") == "hue"
    path.unlink()
    assert shaper.shape("colour") == "colour"
    # an editor that saves by writing a new file and renaming it over the old one
    tmp = config / "replacements.txt.new"
    tmp.write_text("colour = kleur\n", encoding="utf-8")
    os.replace(tmp, path)
    assert shaper.shape("colour") == "kleur"


def test_hotwords_feed_the_context_and_reload(config):
    path = config / "hotwords.txt"
    write(path, "# names\nQwen3-ASR\nllama.cpp\n\nKubernetes\nQwen3-ASR\n")
    shaper = TextShaper(ShapingOptions(max_context_chars=40))
    assert shaper.hotwords() == ["Qwen3-ASR", "llama.cpp", "Kubernetes"]
    assert shaper.context() == "Qwen3-ASR, llama.cpp, Kubernetes"
    write(path, "Qwen3-ASR\nllama.cpp\nKubernetes\nPipeWire and XWayland\n")
    assert shaper.context() == "Qwen3-ASR, llama.cpp, Kubernetes"  # capped at a whole hotword
    assert len(shaper.hotwords()) == 4


def test_trailing_space_and_cjk(config):
    shaper = TextShaper(ShapingOptions())
    assert shaper.shape("Hello there.") == "Hello there. "
    assert shaper.shape("你好世界。") == "你好世界。"
    assert shaper.shape("こんにちは") == "こんにちは"
    assert shaper.shape("Привет") == "Привет "
    assert shaper.shape("") == ""
    assert shaper.shape("ends with newline\n") == "ends with newline\n"
    assert TextShaper(ShapingOptions(trailing_space=False)).shape("Hi.") == "Hi."


def test_live_final_only_adds_the_trailing_space(config):
    write(config / "replacements.txt", "teh = the\n")
    shaper = TextShaper(ShapingOptions(strip_final_period_max_words=5))
    assert shaper.shape("teh end.") == "the end "
    assert shaper.shape_live_final("teh end.") == "teh end. "  # already typed live: never rewritten


def test_final_period_removed_only_for_short_utterances(config):
    shaper = TextShaper(ShapingOptions(strip_final_period_max_words=3, trailing_space=False))
    assert shaper.shape("Yes.") == "Yes"
    assert shaper.shape("Sounds good to me.") == "Sounds good to me."
    assert shaper.shape("See you soon.") == "See you soon"
    assert shaper.shape("好的。") == "好的"
    assert shaper.shape("Wait...") == "Wait..."  # an ellipsis is not a final period
    assert shaper.shape("Really?") == "Really?"
    off = TextShaper(ShapingOptions(strip_final_period_max_words=0, trailing_space=False))
    assert off.shape("Yes.") == "Yes."


def test_word_count_counts_cjk_characters():
    assert word_count("Hello, world.") == 2
    assert word_count("你好世界。") == 4
    assert word_count("Привет, мир") == 2


def test_absolute_paths_and_unreadable_files(tmp_path):
    rules = tmp_path / "rules.txt"
    rules.write_bytes(b"caf\xe9 = coffee\n")  # Latin-1, not UTF-8
    warnings: list[str] = []
    shaper = TextShaper(ShapingOptions(replacements_file=str(rules), hotwords_file=str(tmp_path / "none.txt"),
                                       trailing_space=False), on_warning=warnings.append)
    assert shaper.replacements_path == rules
    assert shaper.shape("café") == "café"
    assert len(warnings) == 1 and "not UTF-8" in warnings[0] and str(rules) in warnings[0]


def test_parsers_are_pure():
    rules, warnings = parse_replacements('"  x" = " y "\n', "mem")
    assert warnings == [] and rules[0].pattern.pattern == "  x" and rules[0].replacement == " y "
    assert parse_hotwords("a\n#b\n a \nc") == ["a", "c"]


# ---- spoken formatting (issue 14) -------------------------------------------------------------------
# Inputs are written the way Qwen3-ASR writes finals: it punctuates by itself, so a spoken "comma" comes
# with the model's own marks around it ("Hello world, comma."), and Chinese has no spaces.

from qasr.daemon.results.spoken_formatting import BUILTIN, format_text, parse_table  # noqa: E402

EN, _ = parse_table(BUILTIN["English"], "en")
ZH, _ = parse_table(BUILTIN["Chinese"], "zh")


@pytest.mark.parametrize("model_text, expected", [
    ("Hello world, comma.", "Hello world,"),           # the model's comma and period are not doubled
    ("Hello world comma.", "Hello world,"),
    ("What time is it question mark?", "What time is it?"),
    ("What time is it? Question mark.", "What time is it?"),
    ("Thanks for the update. New line.", "Thanks for the update.\n"),  # a break keeps the sentence's period
    ("New line.", "\n"),
    ("New paragraph.", "\n\n"),
    ("New line. Dear Anna,", "\nDear Anna,"),
    ("See you then, period. New line.", "See you then.\n"),
    ("I like commas.", "I like commas."),              # whole words only
    ("The period was long.", "The period was long."),  # not at an edge: left alone
    ("Hello comma world.", "Hello comma world."),
])
def test_english_spoken_formatting_at_utterance_edges(model_text, expected):
    assert format_text(model_text, EN).text == expected


@pytest.mark.parametrize("model_text, expected", [
    ("你好世界逗号。", "你好世界，"),
    ("你好，逗号。", "你好，"),
    ("今天天气很好问号", "今天天气很好？"),
    ("今天天气很好？问号。", "今天天气很好？"),
    ("换行。", "\n"),
    ("我们明天见。另起一段。", "我们明天见。\n\n"),
    ("逗号就是标点。", "，就是标点。"),
])
def test_chinese_spoken_formatting(model_text, expected):
    assert format_text(model_text, ZH).text == expected


def test_anywhere_mode_and_the_undo_phrase():
    assert format_text("Hello, comma, world, period. New line. Next.", EN, "anywhere").text == "Hello, world.\nNext."
    assert format_text("你好逗号世界。", ZH, "anywhere").text == "你好，世界。"
    for said in ("Scratch that.", "scratch that", "Scratch that!"):
        assert format_text(said, EN).undo
    assert not format_text("Please scratch that off the list.", EN).undo
    assert format_text("撤销。", ZH).undo


def test_spoken_tables_are_files_per_language_reloaded_on_change(tmp_path):
    warnings: list[str] = []
    shaper = TextShaper(ShapingOptions(config_dir=tmp_path, spoken_formatting=True), on_warning=warnings.append)
    assert shaper.shape("Hello world, comma.", "English") == "Hello world, "
    assert shaper.shape("Hello. New line.", "English") == "Hello.\n"  # no space after a line break
    assert shaper.shape("你好世界逗号。", "Chinese") == "你好世界，"
    assert shaper.shape("Hello world, comma.", "German") == "Hello world, comma. "  # no table: unchanged
    folder = tmp_path / "spoken"
    folder.mkdir()
    (folder / "German.txt").write_text("# mine\nKomma = ,\nneue Zeile = {newline}\nkaputt\n", encoding="utf-8")
    assert shaper.shape("Hallo Welt, Komma.", "German") == "Hallo Welt, "
    assert shaper.shape("Neue Zeile.", "German") == "\n"
    assert any("German.txt:4" in w and "phrase = symbol" in w for w in warnings)
    (folder / "English.txt").write_text("dash = —\n", encoding="utf-8")  # a file replaces the built-in table
    assert shaper.shape("Hello world dash.", "English") == "Hello world— "
    assert shaper.shape("Hello world, comma.", "English") == "Hello world, comma. "
    off = TextShaper(ShapingOptions(config_dir=tmp_path))
    assert off.shape("Hello world, comma.", "English") == "Hello world, comma. "  # off by default
