"""The desktop measurements (issue 5): push-to-talk ``typing`` through the daemon, and ``sink_speed`` of
each output sink driven directly in this process."""

from __future__ import annotations

import contextlib
import os
import time

from bench.report import BenchError, Reporter, log, r1
from bench.utterance import engine_final_ms
from bench.typing_target import typing_chars
from tests.harness.daemon import DaemonProcess
from tests.harness.events import Subscribers
from tests.harness.speech import SpeechFile
from tests.harness.processes import stop_process

TYPED_TEXT = "The quick brown fox jumps over a lazy dog"[:40]  # 40 characters, many distinct keys
HOTKEY = "F9"
HOTKEY_DEBOUNCE_MS = 40  # daemon/desktop/hotkey.py HotkeyOptions.release_debounce_s
SEGMENTER_PTT_TAIL_MS = 100  # daemon/audio/segmenter.py SegmenterOptions.release_tail_ms (not configurable)
# hotkey.release_tail_s is the segmenter's voice hold (release_voice_ms): it adds audio only while the VAD still
# hears voice after the two tails above, so it is not part of the fixed tails


def typing_run(env, daemon: DaemonProcess, subs: Subscribers, speech: SpeechFile) -> dict:
    """Hold the hotkey while the speech plays, release it at the end of the speech, wait for the text."""
    daemon.wait_state(("listening",), timeout=120)
    env.tk.clear()
    time.sleep(0.3)
    since = time.monotonic()
    t_down = env.keyboard.down()
    t_play = time.monotonic()
    player = env.pulse.play(speech.path, wait=False)
    try:
        # release the key at the end of the speech (+ the ~40 ms playback → capture path)
        time.sleep(max(0.0, t_play + speech.speech_end_s + 0.05 - time.monotonic()))
    finally:
        t_up = env.keyboard.up()
    changes = env.tk.wait_text(TYPED_TEXT, timeout=120 + 10 * speech.speech_s)
    stop_process(player)
    deadline = time.monotonic() + (10 if changes is not None else 2)  # the final is published after delivery
    while time.monotonic() < deadline and not any(m["type"] == "final" for _, m in subs.events(0, since)):
        time.sleep(0.02)
    events = subs.events(0, since)
    return {"t_down": t_down, "t_up": t_up, "changes": changes, "events": events,
            "finals": [(t, m) for t, m in events if m["type"] == "final"]}


def typing_failure(env, got: dict) -> str:
    text = env.tk.text()
    reason = f"the Entry holds {text!r}, not the expected text" if text else "nothing was typed"
    events, finals = got["events"], got["finals"]
    if not finals and not any(m["type"] == "state" and m["state"] == "recording" for _, m in events):
        reason += " (no utterance: the hotkey press was not seen)"
    elif finals and not finals[-1][1]["text"]:
        reason += " (the final text is empty: nothing to deliver)"
    elif finals:
        reason += f" (final sink {finals[-1][1].get('sink')!r})"
    warnings = [m.get("message") for _, m in events if m["type"] == "warning"]
    if warnings:
        reason += f"; warnings: {warnings}"
    return reason


def _typing_record(got: dict, tails_ms: int) -> dict:
    t_first, t_last, n_changes = typing_chars(got["changes"], TYPED_TEXT)
    t_up = got["t_up"]
    t_final, final = got["finals"][-1] if got["finals"] else (None, {})
    timings = final.get("timings") or {}
    return dict(chars=len(TYPED_TEXT),
                release_to_last_char_ms=r1((t_last - t_up) * 1000.0),
                release_to_first_char_ms=r1((t_first - t_up) * 1000.0),
                typing_ms=r1((t_last - t_first) * 1000.0),
                cps=round((len(TYPED_TEXT) - 1) / (t_last - t_first), 1) if t_last > t_first else None,
                entry_changes=n_changes, configured_tails_ms=tails_ms,
                # key release -> the pipeline's end(): the tails as they ran (+ delivery's start)
                release_to_end_ms=r1((t_first - t_up) * 1000.0 - timings["latency_ms"]) if timings.get("latency_ms")
                else None,
                daemon_latency_ms=r1(timings.get("latency_ms")), engine_final_ms=r1(engine_final_ms(timings)),
                ws_final_after_release_ms=r1((t_final - t_up) * 1000.0) if t_final else None,
                final_sink=final.get("sink"), held_s=round(t_up - got["t_down"], 2))


def phase_typing(env, report: Reporter, speeches: list[SpeechFile], repeats: int, sinks: list[str],
                 hotkey_tail_s: float) -> None:
    tails_ms = int(HOTKEY_DEBOUNCE_MS + SEGMENTER_PTT_TAIL_MS)
    for sink in sinks:
        daemon = env.new_daemon(
            ["vad.mode=ptt", f"hotkey.combo=<{HOTKEY.lower()}>", "hotkey.mode=hold",
             f"hotkey.release_tail_s={hotkey_tail_s}", "hotkey.enabled=true", f"output.sink={sink}",
             "output.live=false", "shaping.trailing_space=false", "shaping.strip_final_period_max_words=0"],
            display=env.xvfb.display, replacements=TYPED_TEXT)
        status = daemon.wait_state(("listening",), timeout=60)
        problems = [w for w in status.get("warnings", []) if "hotkey" in w or "output" in w]
        if status.get("output") in (None, "none") or problems:
            for speech in speeches:
                report("typing", sink=sink, speech_s=round(speech.speech_s, 2), measured=False,
                       reason="; ".join(problems) or f"the daemon's desktop output is {status.get('output')!r}")
            env.stop_daemon()
            continue
        subs = env.subscribe(daemon)
        runs = [(speeches[0], -1)] + [(speech, run) for speech in speeches for run in range(repeats)]
        for speech, run in runs:  # run -1: warm-up, not reported
            base = {"sink": sink, "speech_s": round(speech.speech_s, 2), "run": run}
            try:
                got = typing_run(env, daemon, subs, speech)
            except BenchError as exc:
                report("typing", **base, measured=False, reason=str(exc).splitlines()[0])
                with contextlib.suppress(Exception):
                    daemon.control("cancel")
                continue
            if run < 0:
                log(f"typing warm-up ({sink}): {'typed' if got['changes'] is not None else typing_failure(env, got)}")
            elif got["changes"] is None:
                report("typing", **base, measured=False, reason=typing_failure(env, got))
            else:
                report("typing", **base, **_typing_record(got, tails_ms))
        env.stop_daemon()


def phase_sink_speed(env, report: Reporter, sinks: list[str], lengths: tuple[int, ...] = (40, 200)) -> None:
    """Each sink driven directly (no daemon): deliver → last character visible in the Entry."""
    os.environ["DISPLAY"] = env.xvfb.display
    try:
        from qasr.daemon.desktop.output import OutputOptions, TextOutput
    except Exception as exc:  # noqa: BLE001 - report, do not fail the whole run
        report("sink_speed", measured=False, reason=f"qasr.daemon.desktop.output unavailable: {exc}")
        return
    base = (TYPED_TEXT + " ") * 10
    for sink in sinks:
        try:
            output = TextOutput(OutputOptions(sink=sink))
        except Exception as exc:  # noqa: BLE001
            report("sink_speed", sink=sink, measured=False, reason=str(exc))
            continue
        try:
            for n in lengths:
                text = base[:n]
                env.tk.clear()
                time.sleep(0.2)
                output.begin_utterance()
                t0 = time.monotonic()
                result = output.deliver(text)
                t_call = time.monotonic()
                changes = env.tk.wait_text(text, timeout=30)
                if changes is None:
                    report("sink_speed", sink=sink, chars=n, measured=False,
                           reason=f"the Entry holds {env.tk.text()!r}; result: {result.message or result.sink}")
                    continue
                _, t_last, _ = typing_chars(changes, text)
                report("sink_speed", sink=sink, chars=n, cps=round(n / (t_last - t0), 1),
                       deliver_to_last_char_ms=r1((t_last - t0) * 1000.0), call_ms=r1((t_call - t0) * 1000.0))
                time.sleep(0.3)
        finally:
            output.close()
