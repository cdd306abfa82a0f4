"""The aligner's pure text/time parts: word split and timestamp repair against the official
Qwen3ForceAlignProcessor (exact), and subtitle cues (qasr.engine.subtitles)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time

import numpy as np
import pytest

from qasr.engine.align import words as words_mod
from qasr.engine.align.repair import repair_timestamps, words_with_times
from qasr.engine.align.words import (ALIGNER_LANGUAGES, JAPANESE_HINT, KOREAN_HINT, WordSplitError,
                                     normalize_language, split_words)
from qasr.engine.subtitles import Cue, format_srt, format_vtt, srt_time, vtt_time, word_cues


def _installed(name: str) -> bool:
    """A real package (the official import leaves stubs without __file__ for missing ones)."""
    try:
        module = importlib.import_module(name)
    except ImportError:
        return False
    return getattr(module, "__file__", None) is not None


HAVE_NAGISA = _installed("nagisa")  # decided before the official import can stub them
HAVE_SOYNLP = _installed("soynlp")


@pytest.fixture(scope="module")
def official():
    from qasr.daemon.bench.random_checkpoint import import_official_qwen_asr

    import_official_qwen_asr()
    aligner = importlib.import_module("qwen_asr.inference.qwen3_forced_aligner")
    return aligner.Qwen3ForceAlignProcessor()


@pytest.fixture
def fresh_splitters():
    words_mod._nagisa_tagging.cache_clear()
    words_mod._korean_tokenizer.cache_clear()
    yield
    words_mod._nagisa_tagging.cache_clear()
    words_mod._korean_tokenizer.cache_clear()


# ---------------------------------------------------------------- word split

TEXTS = [
    "Hello, world! It's 5 o'clock — don't panic.",
    "state-of-the-art e-mail 3.14 1,000,000 $5 50% #tag @user",
    "don’t “quoted” 'single' rock'n'roll ''",
    "cafe\u0301 naïve Zürich",
    "我们今天去公园散步，好吗？",
    "我们用Python写code，好吗？",
    "我们用Python写code，然后 deploy 到 server 上。",
    "Привет, мир! Ёлка — это «дерево».",
    "Grüße aus Zürich: Äpfel, Öl, Übermut, naïve Café.",
    "I ❤️ emoji 😀👍🏽 ok 🇩🇪",
    "",
    " ,.!? … — ",
    "  lots   of\twhite\nspace\u3000here\u00a0and\u2009thin  ",
    "佢哋今日去咗邊度呀？我唔知。",
    "𠀀𠀁 extension B 𪜀 compat 豈 edges \u9fff\ufad9\ufaff \u3400\u4dbf",
    "٣ ४ Ⅻ ½ x²",
    "مرحبا بالعالم، كيف حالك؟",
    "สวัสดีครับ ภาษาไทย",
    "日本語のテキストです。カタカナ",
    "안녕하세요, 반갑습니다!",
    "Ça va? ¿Qué tal? Olá, tudo bem? Ciao, come stai?",
]


@pytest.mark.parametrize("text", TEXTS)
def test_space_separated_split_equals_the_official(official, text):
    for ours, theirs in (("English", "English"), ("chinese", "Chinese"), ("yue", "Cantonese"), ("ru", "Russian"),
                         (None, "English"), ("Klingon", "Klingon")):
        assert split_words(text, ours) == official.encode_timestamp(text, theirs)[0], (text, ours)


def test_split_examples():
    assert split_words("We'll meet at 5, ok?", "English") == ["We'll", "meet", "at", "5", "ok"]
    assert split_words("我们用Python写code，好吗？", "zh") == ["我", "们", "用", "Python", "写", "code", "好", "吗"]
    assert split_words("e-mail, don’t", None) == ["email", "dont"]
    assert split_words(" ,.!? ", "en") == [] and split_words("", None) == []


JAPANESE = ["こんにちは、世界！今日はいい天気ですね。", "東京タワーは333メートルです。Hello world", "", "。", "日本語 と English"]
KOREAN = ["안녕하세요, 반갑습니다! 오늘 날씨가 좋네요.", "한국어123 abc 서울특별시", "", "!!", "대한민국의 수도는 서울입니다"]


@pytest.mark.skipif(not HAVE_NAGISA, reason="nagisa is not installed (pip install nagisa)")
@pytest.mark.parametrize("text", JAPANESE)
def test_japanese_split_equals_the_official(official, text):
    want = official.encode_timestamp(text, "Japanese")[0]
    assert split_words(text, "Japanese") == want
    assert split_words(text, "ja") == want


@pytest.mark.skipif(not HAVE_SOYNLP, reason="soynlp is not installed (pip install soynlp)")
@pytest.mark.parametrize("text", KOREAN)
def test_korean_split_equals_the_official(official, text):
    want = official.encode_timestamp(text, "korean")[0]
    assert split_words(text, "Korean") == want
    assert split_words(text, "KO") == want


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


def test_japanese_without_nagisa_says_what_to_install(monkeypatch, fresh_splitters):
    monkeypatch.setitem(sys.modules, "nagisa", None)  # import nagisa -> ImportError
    with pytest.raises(WordSplitError) as exc:
        split_words("日本語の文章です", "Japanese")
    assert _one_line(exc) == JAPANESE_HINT and "pip install nagisa" in JAPANESE_HINT
    assert split_words("日本語", "Chinese") == ["日", "本", "語"]  # other languages need nothing


def test_korean_without_soynlp_or_dictionary_says_what_to_install(monkeypatch, fresh_splitters):
    monkeypatch.setitem(sys.modules, "soynlp", None)
    monkeypatch.setitem(sys.modules, "soynlp.tokenizer", None)
    with pytest.raises(WordSplitError) as exc:
        split_words("안녕하세요", "ko")
    assert _one_line(exc) == KOREAN_HINT and "pip install soynlp" in KOREAN_HINT
    monkeypatch.undo()
    words_mod._korean_tokenizer.cache_clear()
    monkeypatch.setattr(words_mod, "korean_dictionary_path", lambda: None)
    with pytest.raises(WordSplitError) as exc:
        split_words("안녕하세요", "Korean")
    assert _one_line(exc) == KOREAN_HINT


def test_korean_dictionary_is_found_without_importing_qwen_asr():
    code = ("import sys; from qasr.engine.align.words import korean_dictionary_path as k; p = k(); "
            "assert p and p.endswith('korean_dict_jieba.dict'), p; "
            "assert 'qwen_asr' not in sys.modules and 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_normalize_language():
    assert normalize_language(None) is None and normalize_language("  ") is None
    assert normalize_language("english") == "English" and normalize_language("JAPANESE") == "Japanese"
    assert normalize_language("ja") == "Japanese" and normalize_language("KO") == "Korean"
    assert normalize_language("yue") == "Cantonese" and normalize_language("zh-CN") == "Chinese"
    assert normalize_language("en_US") == "English" and normalize_language(" German ") == "German"
    assert normalize_language("kLINGON") == "Klingon"
    codes = ["zh", "en", "yue", "fr", "de", "it", "ja", "ko", "pt", "ru", "es"]
    assert sorted(normalize_language(c) for c in codes) == sorted(ALIGNER_LANGUAGES)


# ---------------------------------------------------------------- timestamp repair

def _same_as_official(official, values: np.ndarray) -> None:
    if values.size == 0:  # the official code fails on max([]); ours is empty
        assert repair_timestamps(values) == [] and repair_timestamps([]) == []
        return
    want = official.fix_timestamp(values)
    assert repair_timestamps(values) == want, values.tolist()
    assert repair_timestamps(values.tolist()) == want


def test_repair_equals_the_official_on_random_arrays(official):
    rng = np.random.default_rng(12)
    for trial in range(4000):
        n = int(rng.integers(0, 61))
        high = int(rng.choice([2, 3, 5, 10, 40, 1000]))
        values = rng.integers(0, high, size=n)
        if trial % 3 == 0:
            values = (values * 80.0).astype(np.float32)  # as the aligner gives them: class * 80 ms
        elif trial % 3 == 1:
            values = np.sort(values) + rng.integers(-high, high + 1, size=n) * (rng.random(n) < 0.2)
        _same_as_official(official, values)


def test_repair_equals_the_official_on_ordered_and_long_arrays(official):
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 7, 60, 500):
        _same_as_official(official, np.arange(n) * 80.0)
        _same_as_official(official, np.arange(n)[::-1] * 80.0)
        _same_as_official(official, np.full(n, 240.0))
    runs = np.sort(rng.integers(0, 5000, size=2000)).astype(np.float64) * 80.0
    for start in rng.choice(1990, size=40, replace=False):  # anomaly runs of 1..6
        runs[start : start + int(rng.integers(1, 7))] = rng.integers(0, 5000) * 80.0
    outliers = np.sort(rng.integers(0, 5000, size=2000)) * 80.0
    spots = rng.choice(2000, size=150, replace=False)
    outliers[spots] = rng.integers(0, 5000, size=150) * 80.0
    for values in (runs, outliers, rng.integers(0, 50, size=2000).astype(np.float32) * 80):
        _same_as_official(official, values)


def test_repair_examples_and_speed():
    assert repair_timestamps([100, 50, 200]) == [100, 100, 200]  # one anomaly: the nearer (left on a tie)
    assert repair_timestamps([0, 900, 800, 50, 60]) == [0, 0, 50, 50, 60]  # two: each takes the nearer
    assert repair_timestamps([0, 900, 800, 700, 100, 200]) == [0, 25, 50, 75, 100, 200]  # three: interpolated
    assert repair_timestamps([500, 0, 10, 20]) == [0, 0, 10, 20]  # at the edge: the one neighbour
    assert repair_timestamps(np.array([80.0, 160.0])) == [80, 160]
    values = np.sort(np.random.default_rng(0).integers(0, 5000, size=4000)) * 80.0
    values[::37] = 0.0
    t0 = time.perf_counter()
    fixed = repair_timestamps(values)
    elapsed = time.perf_counter() - t0
    assert fixed == sorted(fixed)
    print(f"\nrepair_timestamps, n=4000: {elapsed * 1000:.1f} ms")


def test_words_with_times_as_official_align(official):
    rng = np.random.default_rng(1)
    words = ["one", "two", "three", "four", "五"]
    for _ in range(200):
        values = (rng.integers(0, 60, size=10) * 80.0).astype(np.float32)
        want = [(d["text"], round(d["start_time"] / 1000.0, 3), round(d["end_time"] / 1000.0, 3))
                for d in official.parse_timestamp(words, values)]
        assert words_with_times(words, values) == want
    assert words_with_times(["a"], [1234.0, 1000.0]) == [("a", 1.234, 1.234)]
    assert words_with_times([], []) == []
    with pytest.raises(ValueError):
        words_with_times(["a", "b"], [0.0, 80.0])


# ---------------------------------------------------------------- subtitles

def test_clock_formats():
    assert srt_time(0) == "00:00:00,000" and vtt_time(0) == "00:00:00.000"
    assert srt_time(3661.5) == "01:01:01,500" and vtt_time(3725.007) == "01:02:05.007"
    assert srt_time(-2.0) == "00:00:00,000" and vtt_time(59.9996) == "00:01:00.000"


def test_cues_by_characters():
    w = [("Hello", 0.0, 0.4), ("world", 0.5, 0.9), ("again", 1.0, 1.4)]
    assert word_cues(w, max_chars=11) == [Cue(0.0, 0.9, "Hello world"), Cue(1.0, 1.4, "again")]
    assert word_cues(w, max_chars=10) == [Cue(0.0, 0.4, "Hello"), Cue(0.5, 0.9, "world"), Cue(1.0, 1.4, "again")]
    assert word_cues(w) == [Cue(0.0, 1.4, "Hello world again")]
    assert word_cues([("extraordinarily", 0.0, 1.0), ("so", 1.0, 1.2)], max_chars=5) == [
        Cue(0.0, 1.0, "extraordinarily"), Cue(1.0, 1.2, "so")]  # a word over the limit stands alone
    assert word_cues([]) == [] and word_cues([("", 0.0, 0.0)]) == []


def test_cues_by_duration_and_pauses():
    w = [(f"w{i}", float(i), float(i + 1)) for i in range(5)]
    assert [c.text for c in word_cues(w, max_seconds=2.5)] == ["w0 w1", "w2 w3", "w4"]
    assert [c.text for c in word_cues(w, max_seconds=2.0)] == ["w0 w1", "w2 w3", "w4"]
    assert [c.text for c in word_cues(w, max_seconds=1.9)] == ["w0", "w1", "w2", "w3", "w4"]
    paused = [("a", 0.0, 0.5), ("b", 1.5, 2.0), ("c", 3.1, 3.5)]
    assert word_cues(paused) == [Cue(0.0, 2.0, "a b"), Cue(3.1, 3.5, "c")]  # 1.0 s is not more than max_gap
    assert word_cues(paused, max_gap=0.5) == [Cue(0.0, 0.5, "a"), Cue(1.5, 2.0, "b"), Cue(3.1, 3.5, "c")]
    assert word_cues(paused, max_gap=None) == [Cue(0.0, 3.5, "a b c")]


def test_cues_join_cjk_without_spaces():
    w = [("我", 0.0, 0.2), ("们", 0.2, 0.4), ("用", 0.4, 0.6), ("Python", 0.6, 1.0), ("写", 1.0, 1.2),
         ("code", 1.2, 1.5), ("好", 1.6, 1.7), ("吗", 1.7, 1.8)]
    assert word_cues(w) == [Cue(0.0, 1.8, "我们用 Python 写 code 好吗")]
    assert [c.text for c in word_cues(w, max_chars=4)] == ["我们用", "Python", "写", "code", "好吗"]
    ja = [("こんにちは", 0.0, 0.5), ("世界", 0.5, 0.8), ("Hello", 0.8, 1.0)]
    assert word_cues(ja)[0].text == "こんにちは世界 Hello"
    ko = [("안녕", 0.0, 0.3), ("하세요", 0.3, 0.6)]
    assert word_cues(ko)[0].text == "안녕 하세요"


def test_srt_and_vtt_text():
    cues = [Cue(0.0, 1.25, "Hello world"), Cue(2.0, 2.5, "  "), Cue(61.5, 3725.007, "again")]
    assert format_srt(cues) == (
        "1\n00:00:00,000 --> 00:00:01,250\nHello world\n\n"
        "2\n00:01:01,500 --> 01:02:05,007\nagain\n"
    )
    assert format_vtt(cues) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.250\nHello world\n\n"
        "00:01:01.500 --> 01:02:05.007\nagain\n"
    )
    # the edge cases (empty files, blank lines and markup inside a cue): tests/test_subtitles.py


def test_word_cues_to_srt():
    w = [("Hello", 0.0, 0.4), ("world", 0.5, 0.9), ("again", 2.5, 3.0)]
    assert format_srt(word_cues(w)) == (
        "1\n00:00:00,000 --> 00:00:00,900\nHello world\n\n"
        "2\n00:00:02,500 --> 00:00:03,000\nagain\n"
    )
