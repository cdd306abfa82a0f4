"""The daemon's engine host takes every option from component_options.engine_host_options, re-read per
utterance: the offline backend (engine.streaming = false) transcribes as `Transcriber` does with the same
prompt, and a streaming session gets the settings' budget and caps with the utterance's language/context."""

from __future__ import annotations

from qasr.config.loader import apply_overrides
from qasr.config.settings import Settings
from qasr.daemon import component_options as co
from qasr.daemon.bench.synthetic_audio import make_test_audio
from qasr.daemon.transcription.engine_host import EngineHost
from qasr.daemon.transcription.engine_streams import StreamingBackend, StreamOptions, WholeUtteranceBackend
from qasr.engine.transcribe import Transcriber


def test_engine_host_follows_the_settings_per_utterance(tiny_bundle):
    settings = {"now": apply_overrides(Settings(), [f"model.path={tiny_bundle}", "engine.streaming=false",
                                                    "engine.context=names", "engine.max_new_tokens=12",
                                                    "engine.threads=1"])}
    host = EngineHost(lambda: co.engine_host_options(settings["now"]), lambda: "hot", lambda _id: "")
    reference = Transcriber(tiny_bundle, co.transcribe_options(settings["now"]))
    try:
        assert isinstance(host.backend(), WholeUtteranceBackend)
        audio = make_test_audio(3.0, seed=3)
        got = host._transcribe(audio, StreamOptions("1", language="English"))
        reference.set_prompt("English", "names, hot", 12)
        assert got.token_ids == reference.transcribe(audio).token_ids

        # a reload: the next utterance streams, with the new options
        settings["now"] = apply_overrides(settings["now"], ["engine.streaming=true", "engine.rtf_budget=0.7"])
        assert isinstance(host.backend(), StreamingBackend)
        session = host._session(StreamOptions("2", context="asked"))
        assert (session.options.language, session.options.context) == (None, "asked")
        assert (session.options.max_new_tokens, session.options.rtf_budget) == (12, 0.7)
    finally:
        host.close()
        reference.close()
