"""Caption state: committed/tentative merge, wrapping and scrolling, fading by time, connection state, sources
and labels; the captions feed asking for system audio."""

from __future__ import annotations

import pytest

from qasr.clients.captions_model import (
    COMMITTED,
    CONNECTED,
    CONNECTING,
    RECONNECTING,
    TENTATIVE,
    CaptionModel,
    CaptionOptions,
    Span,
    display_width,
    join_text,
    wrap,
)


def partial(uid, committed, tentative):
    return {"type": "partial", "utterance_id": uid, "seq": 1, "committed": committed, "tentative": tentative}


def final(uid, text):
    return {"type": "final", "utterance_id": uid, "seq": 2, "text": text, "token_ids": []}


def styled(view):
    return [[(s.style, s.text) for s in line] for line in view.lines]


def test_committed_and_tentative_of_one_utterance_form_one_text_in_two_styles():
    model = CaptionModel()
    model.apply(partial("1", "hello wor", "ld and more"), now=0)
    assert styled(model.view(80, now=0.1)) == [[(COMMITTED, "hello wor"), (TENTATIVE, "ld and more")]]
    # tentative text is replaceable, committed text grows
    model.apply(partial("1", "hello world and ", "mo"), now=0.5)
    assert styled(model.view(80, now=0.6)) == [[(COMMITTED, "hello world and "), (TENTATIVE, "mo")]]


def test_final_replaces_the_partial_and_is_solid():
    model = CaptionModel()
    model.apply(partial("1", "hello", " wrld"), now=0)
    model.apply(final("1", "hello world."), now=1)
    view = model.view(80, now=1)
    assert styled(view) == [[(COMMITTED, "hello world.")]]
    assert view.text == "hello world."


def test_utterances_follow_each_other_with_the_right_separator():
    model = CaptionModel()
    model.apply(final("1", "First one."), now=0)
    model.apply(partial("2", "", "second"), now=1)
    assert styled(model.view(80, now=1)) == [[(COMMITTED, "First one."), (TENTATIVE, " second")]]
    model.apply(final("2", "Second."), now=2)
    model.apply(final("3", "你好。"), now=3)
    model.apply(final("4", "世界"), now=4)
    assert model.view(80, now=4).text == "First one. Second.你好。世界"  # no space next to CJK
    assert join_text("abc", "你") == "abc你" and join_text("a ", "b") == "a b" and join_text("", "x") == "x"


def test_empty_finals_and_unknown_events_change_nothing():
    model = CaptionModel()
    assert model.apply({"type": "ack", "command": "start"}, now=0) is False
    model.apply(final("1", "   "), now=0)
    assert model.view(80, now=0).lines == ()


def test_wrap_breaks_at_spaces_keeps_styles_and_cuts_words_longer_than_a_line():
    lines = wrap([Span("one two thr", COMMITTED), Span("ee four", TENTATIVE)], width=10)
    assert [[(s.style, s.text) for s in line] for line in lines] == [
        [(COMMITTED, "one two")],
        [(COMMITTED, "thr"), (TENTATIVE, "ee four")],  # a word split across styles is not broken
    ]
    lines = wrap([Span("abcdefghijkl mn", COMMITTED)], width=5)
    assert ["".join(s.text for s in line) for line in lines] == ["abcde", "fghij", "kl mn"]
    assert all(display_width("".join(s.text for s in line)) <= 5 for line in lines)


def test_cjk_text_breaks_between_characters_and_counts_double_width():
    assert display_width("你好ab") == 6
    lines = wrap([Span("你好世界，今天天气很好", COMMITTED)], width=8)
    assert ["".join(s.text for s in line) for line in lines] == ["你好世界", "，今天天", "气很好"]


def test_wrap_uses_the_given_measure():
    pixels = {"i": 2, " ": 3}
    lines = wrap([Span("iiii mmmm", COMMITTED)], width=24, measure=lambda t: sum(pixels.get(c, 10) for c in t))
    assert ["".join(s.text for s in line) for line in lines] == ["iiii", "mm", "mm"]


def test_only_the_newest_lines_are_shown_so_old_text_scrolls_off_the_top():
    model = CaptionModel(CaptionOptions(max_lines=2))
    for n, word in enumerate(["alpha", "bravo", "charlie", "delta", "echo"]):
        model.apply(final(str(n), word), now=n * 0.1)
    view = model.view(width=13, now=1)
    assert view.text == "charlie delta\necho"
    model.apply(partial("9", "fox", "trot golf"), now=1.1)
    assert styled(model.view(width=13, now=1.2)) == [
        [(COMMITTED, "echo fox"), (TENTATIVE, "trot")],
        [(TENTATIVE, "golf")],
    ]


def test_captions_fade_after_silence_and_are_then_forgotten():
    model = CaptionModel(CaptionOptions(fade_after_s=5, fade_s=2))
    assert model.view(80, now=0).opacity == 0.0  # nothing said yet
    model.apply(final("1", "hello"), now=10)
    assert model.opacity(14.9) == 1.0
    assert model.next_change_in(12) == pytest.approx(3)
    assert model.opacity(16) == pytest.approx(0.5)
    assert model.next_change_in(16) == 0.0  # fading: redraw continuously
    faded = model.view(80, now=17.5)
    assert faded.opacity == 0.0 and faded.lines == ()
    assert model.next_change_in(17.5) is None
    # the next utterance starts on a clean slate
    model.apply(final("2", "again"), now=30)
    assert model.view(80, now=30).text == "again"


def test_speech_onset_and_partials_keep_the_captions_from_fading():
    model = CaptionModel(CaptionOptions(fade_after_s=5, fade_s=1))
    model.apply(final("1", "first"), now=0)
    model.apply({"type": "vad", "speech": True, "time": 4.0}, now=4)
    assert model.opacity(8) == 1.0
    model.apply(partial("2", "sec", "ond"), now=8.5)
    assert model.view(80, now=13).text == "first second"  # 4.5 s after the partial: still fully shown
    assert model.view(80, now=14.5).lines == ()


def test_connection_states_and_utterances_cut_off_by_a_lost_connection():
    model = CaptionModel()
    assert model.connection == CONNECTING
    model.apply({"type": "disconnected", "reason": "the qasr daemon is not running"}, now=0)
    assert model.connection == CONNECTING and "not running" in model.detail  # never connected yet
    model.apply({"type": "hello", "protocol": "qasr.v1"}, now=1)
    assert (model.connection, model.detail) == (CONNECTED, "")
    model.apply(partial("1", "cut ", "off"), now=2)
    model.apply({"type": "disconnected", "reason": "1001 daemon stopping"}, now=3)
    assert model.connection == RECONNECTING
    assert styled(model.view(80, now=3)) == [[(COMMITTED, "cut off")]]  # no final will come: keep it solid
    model.apply({"type": "hello"}, now=4)
    model.apply(final("1", "new"), now=5)  # same utterance id from a restarted daemon: a new utterance
    assert model.view(80, now=5).text == "cut off new"


def test_options_are_checked():
    with pytest.raises(ValueError):
        CaptionOptions(max_lines=0)
    with pytest.raises(ValueError):
        CaptionOptions(fade_after_s=0)


def test_sources_pick_whose_words_are_shown_and_labels_say_whose_they_are():
    def sourced(event, source):
        return {**event, "source": source}

    system_only = CaptionModel(CaptionOptions(sources=("system",)))
    assert not system_only.apply(sourced(final("1", "typed by me"), "mic"), now=0)
    assert system_only.apply(sourced(final("2", "the video says hi"), "system"), now=0)
    assert not system_only.apply(final("3", "an old daemon's final is the microphone's"), now=0)
    assert system_only.view(80, now=0.1).text == "the video says hi"

    both = CaptionModel(CaptionOptions(max_lines=5, sources=("mic", "system"), labels=True))
    both.apply(sourced(final("1", "Hello there."), "system"), now=0)
    both.apply(sourced(final("2", "And again."), "system"), now=0)
    both.apply(sourced(partial("3", "I can ", "hear"), "mic"), now=0)
    assert both.view(200, now=0.1).text == "them: Hello there. And again. you: I can hear"
    both.apply(sourced(final("3", "I can hear you."), "mic"), now=0.2)
    both.apply(sourced(partial("4", "Good", ""), "system"), now=0.3)
    assert both.view(200, now=0.4).text == "them: Hello there. And again. you: I can hear you. them: Good"


def test_the_feed_asks_for_system_audio_while_it_runs_and_gives_it_back(tmp_path):
    import queue

    from qasr.clients.captions_feed import EventFeed, FeedOptions
    from qasr.daemon.server.ws_server import BaseServerHandler
    from tests.test_captions_overlay import FakeDaemon, wait_for

    class Recorder(BaseServerHandler):
        def __init__(self):
            self.asked: list = []

        def on_command(self, client_id, msg):
            self.asked.append((msg["type"], msg.get("enabled")))
            return {"on": bool(msg.get("enabled"))}

    handler = Recorder()
    daemon = FakeDaemon(tmp_path, handler)
    feed = EventFeed(queue.Queue(), FeedOptions(url=daemon.server.ws_url, token=daemon.server.token,
                                                system_audio=True))
    feed.start()
    try:
        assert wait_for(lambda: handler.asked == [("system_audio", True)], 30)
    finally:
        feed.stop()
        wait_for(lambda: len(handler.asked) == 2, 10)
        daemon.stop()
    assert handler.asked == [("system_audio", True), ("system_audio", False)]
