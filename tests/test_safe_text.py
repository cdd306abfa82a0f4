"""Text that is safe to type (issue 21, part 2): no control character, no model marker and no U+FFFD
in any text the engine produces; newlines only where shaping put them, never Enter into a terminal
unless asked; `history` escapes what the journal holds."""

from __future__ import annotations

import json
import random

import pytest

from qasr.daemon.desktop.output import OutputOptions, text_for_window
from qasr.daemon.desktop.x11 import WindowInfo
from qasr.daemon.results.history import format_entry, json_line
from qasr.daemon.results.text_shaping import ShapingOptions, TextShaper
from qasr.engine.bundle import load_bundle
from qasr.engine.commit import TextOfTokens
from qasr.engine.decoder import Decoder, DecoderOptions
from qasr.engine.output import parse_output, transcript_of_ids
from qasr.engine.safe_text import is_unsafe, safe_text
from qasr.daemon.bench.random_tokenizer import ADDED_TOKENS

CONTROLS = [chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))]
VISIBLE = "Grüße, café — naïve 你好世界 🎤😀"


def _no_unsafe(text: str) -> bool:
    return not any(is_unsafe(c) for c in text)


# -- the one function ---------------------------------------------------------------------------

def test_safe_text_removes_every_c0_c1_control_and_del():
    for ch in CONTROLS:
        got = safe_text(f"one{ch}two {ch}three")
        assert _no_unsafe(got), (ch, got)
        assert got.replace(" ", "") == "onetwothree", (ch, got)
    assert safe_text("one\ntwo\tthree\r\nfour\x1b[31m") == "one two three four[31m"
    assert safe_text("a \n b") == "a b" and safe_text("\n\x02 hi") == "hi"
    assert safe_text("x\ufffdy") == "xy"
    assert safe_text(VISIBLE) is VISIBLE or safe_text(VISIBLE) == VISIBLE  # text without controls: unchanged


def test_safe_text_keeps_only_the_controls_asked_for():
    assert safe_text("line\n\tnext\x1b\x07\r\n", keep="\n\t") == "line\n\tnext\n"


def test_safe_text_of_a_growing_text_only_grows():
    """Committed streaming text is append-only: the mapping never looks ahead."""
    rng = random.Random(7)
    alphabet = ["a", "b", " ", "语", "\n", "\t", "\x1b", "\x02", "\x85", "\x9b", "\x7f", "\ufffd", "\x1c"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        whole = safe_text(text)
        assert _no_unsafe(whole)
        for i in range(len(text) + 1):
            assert whole.startswith(safe_text(text[:i])), (text, i)


# -- tokens -> text, with a small token table -----------------------------------------------------

ASR_TEXT, THINK, TOOL_CALL, IM_END = 1000, 1001, 1002, 1003
PIECES = {ASR_TEXT: b"<asr_text>", THINK: b"<think>", TOOL_CALL: b"<tool_call>", IM_END: b""}


def _table(text_pieces: list[bytes]) -> tuple[list[int], callable]:
    """ids for byte pieces (ids 0..) and a speech_bytes giving b"" for the markers."""
    table = dict(enumerate(text_pieces))

    def speech_bytes(token: int) -> bytes:
        return b"" if token in PIECES else table[token]
    return list(table), speech_bytes


def test_transcript_drops_markers_controls_and_an_incomplete_tail():
    euro = "€".encode()
    pieces = [b"language English", b"Hello", b"\x1b[2J", b" world", b"\x0b\x12\x16", b"!", euro[:2]]
    ids, speech = _table(pieces)
    out = [ids[0], ASR_TEXT, ids[1], THINK, ids[2], ids[3], TOOL_CALL, ids[4], ASR_TEXT, ids[5], IM_END, ids[6]]
    assert transcript_of_ids(out, speech, ASR_TEXT) == ("English", "Hello[2J world !")
    assert transcript_of_ids(out[2:], speech, ASR_TEXT, "French") == ("French", "Hello[2J world !")


def test_transcript_without_controls_is_the_official_rendering():
    """skip_special_tokens then the official parser: `parse_output` of the same text."""
    ids, speech = _table([b"language German", " Grüße aus Köln. ".encode()])
    raw = "language German<asr_text> Grüße aus Köln. "
    assert transcript_of_ids([ids[0], ASR_TEXT, ids[1], IM_END], speech, ASR_TEXT) == parse_output(raw)


def test_committed_text_never_shows_half_a_character():
    """A byte token split across steps: nothing of it until the step that completes it, never U+FFFD."""
    zhong = "中".encode()
    ids, speech = _table([b"language Chinese", zhong[:1], zhong[1:], b"\x02ok"])
    text_of = TextOfTokens(speech, ASR_TEXT, forced_language=False)
    steps = [[ids[0], ASR_TEXT], [ids[0], ASR_TEXT, ids[1]], [ids[0], ASR_TEXT, ids[1], ids[2]],
             [ids[0], ASR_TEXT, ids[1], ids[2], ids[3]]]
    seen = [text_of.text(committed, complete_only=True) for committed in steps]
    assert seen == ["", "", "中", "中ok"]


# -- the real decoder's vocabulary (the tiny random checkpoint) ------------------------------------

@pytest.fixture(scope="module")
def decoder(tiny_bundle):
    d = Decoder(load_bundle(tiny_bundle).path("decoder"), DecoderOptions(n_ctx=256, n_batch=32, threads=1))
    yield d
    d.close()


def test_every_added_token_is_a_marker_and_speech_tokens_are_not(decoder):
    for text, _special in ADDED_TOKENS:
        ids = decoder.vocab.tokenize(text)
        assert len(ids) == 1 and decoder.vocab.speech_bytes(ids[0]) == b"", text
    for token in decoder.vocab.tokenize("language English hello 你好"):
        assert decoder.vocab.speech_bytes(token) == decoder.vocab.token_bytes(token) != b""


def test_decoder_output_with_every_control_and_marker_renders_only_the_visible_text(decoder, tiny_bundle):
    """What a random model wrote into foot (`<think>`, `<tool_call>`, `<asr_text>`, ESC, VT, DC2, SYN), and
    every other control character and marker: the transcript is the visible text alone."""
    asr_text = load_bundle(tiny_bundle).manifest.tokens["asr_text"]
    markers = [text for text, _ in ADDED_TOKENS]
    words = VISIBLE.split(" ")
    body = ""
    for i, ch in enumerate(CONTROLS):
        body += ch + markers[i % len(markers)] + (words[i % len(words)] if i % 9 == 0 else "")
    ids = decoder.vocab.tokenize("language English<asr_text>" + VISIBLE + body) + [_first_byte_token(decoder, "中")]
    language, text = transcript_of_ids(ids, decoder.vocab.speech_bytes, asr_text)
    assert language == "English"
    assert _no_unsafe(text) and not any(m in text for m in markers if m)
    assert text.startswith(VISIBLE)
    assert text[len(VISIBLE):].replace(" ", "") == "".join(words[i % len(words)] for i in range(0, len(CONTROLS), 9))


def _first_byte_token(decoder, ch: str) -> int:
    """The id of the byte token of `ch`'s first UTF-8 byte (an incomplete tail)."""
    first = ch.encode()[:1]
    return next(t for t in range(decoder.n_vocab) if decoder.vocab.token_bytes(t) == first)


# -- daemon: shaping, terminals, history ------------------------------------------------------------

def test_shaping_keeps_a_rules_newline_and_tab_and_nothing_else(tmp_path):
    rules = tmp_path / "replacements.txt"
    rules.write_text("(?i)next line = \\n\n(?i)indent = \\t\nbell = \\a\nreturn = \\r\n", encoding="utf-8")
    shaper = TextShaper(ShapingOptions(replacements_file=str(rules), hotwords_file=str(tmp_path / "h.txt"),
                                       trailing_space=False))
    assert shaper.shape("one next line indent two bell return three") == "one \n \t two   three"


def test_a_newline_or_tab_into_a_terminal_is_a_space_unless_asked_for():
    options = OutputOptions()
    foot, editor = WindowInfo(1, "foot", "foot"), WindowInfo(2, "gedit", "Gedit")
    text = "ls -la\nrm -rf x\r\n"
    assert text_for_window(text, foot, options, focus_known=True) == "ls -la rm -rf x "
    assert text_for_window(text, editor, options, focus_known=True) == text
    assert text_for_window(text, None, options, focus_known=False) == "ls -la rm -rf x "  # may be a terminal
    assert text_for_window(text, foot, OutputOptions(terminal_newlines=True), focus_known=True) == text
    tabbed = "cd src\tls"  # a tab into a terminal would complete the command line
    assert text_for_window(tabbed, foot, options, focus_known=True) == "cd src ls"
    assert text_for_window(tabbed, editor, options, focus_known=True) == tabbed
    assert text_for_window(tabbed, foot, OutputOptions(terminal_newlines=True), focus_known=True) == tabbed


def test_history_escapes_control_characters_for_the_terminal():
    entry = {"n": 1, "time": "2026-12-07T04:00:00", "app": "foot\x1b]0;x\x07", "sink": "type",
             "text": "rm -rf\x1b[2J\x9b1m done\nnext\tcol\x7f"}
    line = format_entry(entry)
    assert _no_unsafe(line)
    assert "\\x1b[2J" in line and "\\x9b1m" in line and "⏎next\\tcol\\x7f" in line and "foot\\x1b]0;x\\x07" in line
    as_json = json_line(entry)
    assert _no_unsafe(as_json) and json.loads(as_json) == entry


# -- the random model end to end: offline and streaming --------------------------------------------

def test_random_model_transcripts_and_partials_hold_only_visible_text(tiny_transcriber):
    """Random weights write control characters, markers and cut characters freely: none reaches a
    transcript, a partial or a final, and committed text only grows."""
    from qasr.engine.streaming import StreamingOptions, StreamingSession
    from tests.audio_samples import make_test_audio

    markers = [text for text, _ in ADDED_TOKENS]
    for seed in (5,):  # its raw text holds U+FFFD, VT, NAK and SI
        audio = make_test_audio(6.0, seed=seed)
        result = tiny_transcriber.transcribe(audio)
        texts = [result.text, result.language, *(s.text for s in result.segments)]
        session = StreamingSession(tiny_transcriber, StreamingOptions(), utterance_id="u")
        committed = ""
        for i in range(0, audio.shape[0], 16000):
            for event in session.feed(audio[i : i + 16000]):
                if hasattr(event, "committed"):
                    assert event.committed.startswith(committed)
                    committed = event.committed
                    texts += [event.committed, event.tentative]
        final = session.finish()
        assert final.token_ids == result.token_ids and final.text == result.text
        texts.append(final.text)
        for text in texts:
            assert _no_unsafe(text) and not any(m in text for m in markers), repr(text)
