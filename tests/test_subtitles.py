"""engine/subtitles.py, the one SRT/WebVTT writer (the CLI's `transcribe`/`align` and the OpenAI endpoint's
`srt`/`vtt` responses): the edge cases, decided here.

- No cue: SRT is the empty string, WebVTT the header and its blank line, "WEBVTT\\n\\n" (a valid empty file).
- A cue whose text is blank is left out, and the numbering has no gap.
- A blank line inside a cue's text would end the cue: blank lines are dropped, the other lines kept.
- "-->" inside a cue's text would read as a timing line: it becomes "->".
- WebVTT cue text is markup: "&", "<" and ">" are escaped; SRT has no escapes and keeps them.
"""

from __future__ import annotations

from qasr.engine.subtitles import Cue, format_srt, format_vtt, srt_time, vtt_time


def test_no_cue_is_an_empty_srt_and_a_header_only_vtt():
    assert format_srt([]) == ""
    assert format_vtt([]) == "WEBVTT\n\n"
    assert format_srt([Cue(0, 1, ""), Cue(1, 2, " \n \n")]) == ""
    assert format_vtt([Cue(0, 1, "\n")]) == "WEBVTT\n\n"


def test_blank_cues_are_left_out_without_a_gap_in_the_numbers():
    cues = [Cue(0, 1, "one"), Cue(1, 2, "   "), Cue(2, 3, "two")]
    assert format_srt(cues) == "1\n00:00:00,000 --> 00:00:01,000\none\n\n2\n00:00:02,000 --> 00:00:03,000\ntwo\n"
    assert format_vtt(cues) == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\none\n\n00:00:02.000 --> 00:00:03.000\ntwo\n"


def test_a_blank_line_inside_a_cue_is_collapsed_so_the_cue_stays_whole():
    text = "first line\n\n  \nsecond line\n"
    assert format_srt([Cue(0, 1, text)]) == "1\n00:00:00,000 --> 00:00:01,000\nfirst line\nsecond line\n"
    assert format_vtt([Cue(0, 1, text)]) == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nfirst line\nsecond line\n"
    # every block is separated by exactly one blank line: splitting on it gives the cues back
    srt = format_srt([Cue(0, 1, "a\n\nb"), Cue(1, 2, "c")])
    assert [block.splitlines()[0] for block in srt.split("\n\n")] == ["1", "2"]


def test_arrows_and_markup_cannot_break_a_cue():
    cue = Cue(0, 1, "x --> y <b>bold</b> & co")
    assert format_srt([cue]).splitlines()[2] == "x -> y <b>bold</b> & co"
    assert format_vtt([cue]).splitlines()[3] == "x -&gt; y &lt;b&gt;bold&lt;/b&gt; &amp; co"


def test_times_round_to_milliseconds_and_never_go_negative():
    assert srt_time(-0.5) == "00:00:00,000" and vtt_time(-0.5) == "00:00:00.000"
    assert srt_time(3725.0074) == "01:02:05,007" and vtt_time(0.0006) == "00:00:00.001"
    assert srt_time(360000.0) == "100:00:00,000"



def test_a_voice_is_a_vtt_span_and_an_srt_prefix_and_text_stays_text():
    cue = Cue(0, 1, "a <b> & c", "them")
    assert format_vtt([cue]) == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n<v them>a &lt;b&gt; &amp; c\n"
    assert format_srt([cue]) == "1\n00:00:00,000 --> 00:00:01,000\nthem: a <b> & c\n"
