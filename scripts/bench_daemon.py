#!/usr/bin/env python3
"""Daemon-level benchmarks (issues 4 and 5): the real daemon as a process, a virtual microphone, Xvfb.

    .venv/bin/python scripts/bench_daemon.py --model DIR [--threads N] [--skip-typing] [--json]

Everything runs in a private temp folder: XDG dirs for the daemon, a private PulseAudio server whose
null sink ``vsink`` is the microphone (its monitor is the default source), an Xvfb display for the
typing part, and a Tk window with a focused Entry as the typing target. Everything started is stopped
at the end (also on Ctrl-C). One line per measurement (``--json``: one JSON object per line, with
``"bench"`` naming the measurement).

Measurements
- ``idle``: the daemon listens to a silent microphone for ``--idle-s`` seconds. ``cpu_pct`` = CPU time
  of the daemon process (all threads, /proc/PID/stat utime+stime) over wall time, in % of one core.
  Evidence of no model work: the deltas over the window of the server's /metrics counters
  (published_partial/final/vad), of status ``utterances``, and the events a subscriber received.
- ``memory``: VmRSS and VmHWM (peak RSS) from /proc/PID/status after start-up and after the speech runs.
- ``final_latency`` (vad mode, streaming engine): espeak-ng speech played into the null sink while a
  WebSocket subscriber records the arrival time (time.monotonic) of every event. The ``vad`` events
  carry the daemon's stream time; with their arrival times they map stream time to wall time (see
  ``stream_clock``), which places the end of speech (first voiced frame + the file's voiced duration)
  and the end of the utterance (hangover over) on this process's clock. Per utterance:
  ``speech_end_to_final_ms`` = final arrival − end of speech, as the daemon heard it.
  ``hangover_ms`` = vad.hangover_ms (configuration; ``speech_end_to_utt_end_ms`` is it, measured).
  ``engine_final_ms`` = the engine's own finish() compute when the final's timings carry it
  (``final_ms``/``total_ms``), else None; ``prepared`` = the final was computed at the pause, during the
  hangover (then ``engine_final_ms`` is that computation). ``overhead_ms`` = speech_end_to_final −
  hangover − engine_final (target ≤ 100 ms; only for finals not prepared). ``utt_end_to_final_ms`` = final arrival − end of the utterance;
  ``daemon_latency_ms`` = the final's ``timings.latency_ms`` (pipeline: utterance end → final emitted:
  decoder queueing behind a partial step + final compute, the engine's final latency as the daemon runs
  it); ``ws_overhead_ms`` = utt_end_to_final − daemon_latency (text shaping, journal, publish, WebSocket).
  ``played_end_to_final_ms`` = final arrival − (paplay start + offset of the speech end in the file):
  adds paplay start-up and the playback → capture path (``playback_delay_ms``, measured at speech start).
  ``partials``, ``compute_ms`` (engine time for the utterance), ``cpu_s`` (daemon CPU during it).
- ``clients``: daemon CPU seconds for the same utterance (the longest of ``--lengths``) with 1 and with
  ``--clients`` subscribers, alternating for ``--client-rounds`` rounds; ``extra_cpu_pct`` = (median CPU
  with N / median CPU with 1 − 1) × 100 (target ≤ 5 %). ``noise_pct`` = spread of the 1-subscriber runs
  over their median: an extra below it is not significant. The number of partials per run is shown
  because the engine's step cadence adapts to load (one step more or less moves CPU by a few %);
  ``bench_cpu_s_*`` is this process's own CPU (it shares the cores); ``final_spread_ms`` = last − first
  final arrival over the N clients.
- ``typing`` (push-to-talk, issue 5): daemon started with DISPLAY, vad.mode=ptt, hotkey F9 in hold
  mode, output.sink=type or paste, and a replacements.txt rule mapping every final to a fixed
  40-character string. F9 is pressed (XTEST), the speech is played, F9 is released at the end of the
  speech; the Tk helper timestamps every change of the Entry. ``release_to_last_char_ms`` = last
  character visible − key release; the configured tails (hotkey release_tail_s, the segmenter's
  250 ms ptt release tail, the hotkey's 40 ms release debounce) are part of it and reported apart.
- ``sink_speed``: each sink (type, paste) driven directly in this process (qasr.daemon.desktop.output) into
  the same Entry: ``cps`` = characters / (deliver call start → last character visible).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

from qasr.daemon.lifecycle import process_alive, wait_for_exit

SR = 16000
TYPED_TEXT = "The quick brown fox jumps over a lazy dog"[:40]  # 40 characters, many distinct keys
HOTKEY = "F9"
HOTKEY_DEBOUNCE_MS = 40  # daemon/desktop/hotkey.py HotkeyOptions.release_debounce_s
SEGMENTER_PTT_TAIL_MS = 250  # daemon/audio/segmenter.py SegmenterOptions.release_tail_ms (not configurable)
SPEECH_WORDS = (
    "please write down the following notes about the quarterly planning meeting we discussed the budget "
    "for the new office the schedule for hiring two engineers and the design review for the mobile "
    "application next we talked about customer feedback on the latest release and agreed to fix the "
    "login problem before the end of the month finally everybody should send their travel plans to the "
    "team assistant by friday so that the bookings can be made in time for the conference in september"
).split()


def log(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def mono() -> float:
    return time.monotonic()


class BenchError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------ speech files

def write_wav(path: Path, pcm: np.ndarray) -> Path:
    import soundfile

    soundfile.write(str(path), np.asarray(pcm, np.float32), SR, subtype="PCM_16")
    return path


def load_wav(path: Path) -> np.ndarray:
    import soundfile
    import soxr

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    pcm = data.mean(axis=1).astype(np.float32)
    if rate != SR:
        pcm = soxr.resample(pcm, rate, SR).astype(np.float32)
    return pcm


def trim_silence(pcm: np.ndarray, rel: float = 0.02) -> np.ndarray:
    loud = np.flatnonzero(np.abs(pcm) > rel * float(np.max(np.abs(pcm)) or 1.0))
    return pcm[loud[0]: loud[-1] + 1] if loud.size else pcm


def espeak_speech(seconds: float, work: Path) -> np.ndarray:
    """About ``seconds`` of espeak-ng English speech (16 kHz float32), leading/trailing silence removed."""
    words = max(3, int(round(seconds * 2.6)))
    text = " ".join(SPEECH_WORDS[i % len(SPEECH_WORDS)] for i in range(words))
    speed = 175.0
    pcm = np.zeros(0, np.float32)
    for _ in range(3):  # adjust the speaking rate until the duration is within 5 %
        raw = work / "espeak.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", str(int(speed)), "-w", str(raw), text], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        pcm = trim_silence(load_wav(raw))
        raw.unlink()
        got = pcm.size / SR
        if abs(got - seconds) / seconds < 0.05:
            break
        speed = min(450.0, max(80.0, speed * got / seconds))
    return (0.5 * pcm / max(1e-6, float(np.max(np.abs(pcm))))).astype(np.float32)


def synthetic_speech(seconds: float) -> np.ndarray:
    from qasr.daemon.bench.synthetic_audio import make_test_audio

    return make_test_audio(seconds, seed=int(seconds * 10), kind="speechlike")


class SpeechFile:
    """A WAV to play: ``lead_s`` of silence, the speech, ``tail_s`` of silence; ``speech_end_s`` is the
    offset of the last voiced sample in the file."""

    def __init__(self, path: Path, lead_s: float, speech_s: float, tail_s: float) -> None:
        self.path, self.lead_s, self.speech_s, self.tail_s = path, lead_s, speech_s, tail_s

    @property
    def speech_end_s(self) -> float:
        return self.lead_s + self.speech_s


def make_speech_file(seconds: float, work: Path, kind: str, lead_s: float = 0.3, tail_s: float = 0.2) -> SpeechFile:
    pcm = espeak_speech(seconds, work) if kind == "espeak" else synthetic_speech(seconds)
    silence = np.zeros
    full = np.concatenate([silence(int(lead_s * SR), np.float32), pcm, silence(int(tail_s * SR), np.float32)])
    path = write_wav(work / f"speech-{kind}-{seconds:g}s.wav", full)
    return SpeechFile(path, lead_s, pcm.size / SR, tail_s)


# ------------------------------------------------------------------------------------------ PulseAudio, Xvfb

class Pulse:
    """A private pulseaudio (null sink ``vsink``, its monitor the default source) under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = root / "pulse-xdg"
        self.pulse_dir = self.runtime / "pulse"
        client_conf = root / "pulse-client.conf"
        for d in (self.runtime, root / "pulse-home", root / "pulse-config"):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        client_conf.write_text("autospawn = no\n")
        self.client_env = {"PULSE_SERVER": f"unix:{self.pulse_dir / 'native'}", "PULSE_RUNTIME_PATH": str(self.pulse_dir),
                           "PULSE_COOKIE": str(root / "pulse-cookie"), "PULSE_CLIENTCONFIG": str(client_conf)}
        self.env = dict(os.environ, **self.client_env)
        self.server_env = dict(self.env, HOME=str(root / "pulse-home"), XDG_RUNTIME_DIR=str(self.runtime),
                               XDG_CONFIG_HOME=str(root / "pulse-config"))
        self.pid: int | None = None

    def start(self) -> None:
        subprocess.run(["pulseaudio", "-D", "-n", "--exit-idle-time=-1", "--disallow-exit",
                        "-L", "module-native-protocol-unix", "-L", "module-null-sink sink_name=vsink",
                        "-L", "module-always-sink"], env=self.server_env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        deadline = mono() + 20
        while subprocess.run(["pactl", "info"], env=self.env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, timeout=20).returncode != 0:
            if mono() > deadline:
                raise BenchError("the private pulseaudio did not come up")
            time.sleep(0.1)
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.pid = int((self.pulse_dir / "pid").read_text().split()[0])
        for args in (("set-default-sink", "vsink"), ("set-default-source", "vsink.monitor")):
            subprocess.run(["pactl", *args], env=self.env, check=True, capture_output=True, timeout=20)

    def play(self, path: Path) -> subprocess.Popen:
        return subprocess.Popen(["paplay", "--device=vsink", str(path)], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            subprocess.run(["pulseaudio", "--kill"], env=self.server_env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=15)
        if self.pid and wait_for_exit(self.pid, 5) is False:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class Xvfb:
    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.display = ""

    def start(self) -> str:
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24",
                                      "-nolisten", "tcp"], pass_fds=(write_fd,),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            number = pipe.readline().strip()
        if not number:
            self.stop()
            raise BenchError("Xvfb did not report a display number")
        self.display = f":{number.decode()}"
        return self.display

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------------------ /proc

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_mb(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = round(int(value.split()[0]) / 1024.0, 1)
    return {"rss_mb": out.get("VmRSS"), "peak_rss_mb": out.get("VmHWM")}


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


# ------------------------------------------------------------------------------------------ the daemon

class Daemon:
    """One daemon process with private XDG folders under ``root``."""

    def __init__(self, root: Path, model: Path, overrides: list[str], extra_env: dict[str, str],
                 display: str | None) -> None:
        self.root = root
        self.runtime = root / "rt"
        for d in ("config/qasr", "state", "data", "cache"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.runtime.mkdir(mode=0o700, exist_ok=True)
        self.model = model
        self.overrides = overrides
        self.env = dict(os.environ)
        self.env.pop("DISPLAY", None)
        self.env.update({"XDG_CONFIG_HOME": str(root / "config"), "XDG_STATE_HOME": str(root / "state"),
                         "XDG_DATA_HOME": str(root / "data"), "XDG_CACHE_HOME": str(root / "cache"),
                         "XDG_RUNTIME_DIR": str(self.runtime)})
        self.env.update(extra_env)
        if display:
            self.env["DISPLAY"] = display
        self.pid: int | None = None
        self.warmed = False
        self.info: dict = {}
        self.token = ""

    @property
    def config_dir(self) -> Path:
        return self.root / "config" / "qasr"

    @property
    def log_file(self) -> Path:
        return self.root / "state" / "qasr" / "qasr.log"

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "qasr", *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self) -> float:
        sets = [a for o in ["server.port=0", *self.overrides] for a in ("--set", o)]
        t0 = mono()
        result = self.cli("start", "--model", str(self.model), *sets)
        elapsed = mono() - t0
        if result.returncode != 0:
            raise BenchError(f"the daemon did not start: {result.stderr.strip()[-500:]}\n{self.log_tail()}")
        qasr_rt = self.runtime / "qasr"
        self.pid = int((qasr_rt / "qasr.pid").read_text().strip())
        self.info = json.loads((qasr_rt / "server.json").read_text())
        self.token = (qasr_rt / "token").read_text().strip()
        return elapsed

    def control(self, cmd: str, timeout: float = 30) -> dict:
        path = self.runtime / "qasr" / "control.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall((json.dumps({"cmd": cmd}) + "\n").encode())
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply = json.loads(data)
        if not reply.get("ok"):
            raise BenchError(f"daemon refused {cmd}: {reply.get('error')}")
        return reply["result"]

    def status(self) -> dict:
        return self.control("status")

    def wait_state(self, states: tuple[str, ...], timeout: float = 60) -> dict:
        deadline = mono() + timeout
        while True:
            status = self.status()
            if status["state"] in states:
                return status
            if mono() > deadline:
                raise BenchError(f"daemon state is {status['state']!r}, expected {states}: {status.get('device_error')}")
            time.sleep(0.1)

    def metrics(self) -> dict:
        url = self.info["http_url"].rstrip("/") + "/metrics?format=json"
        with urllib.request.urlopen(url, timeout=30) as response:
            return json.loads(response.read())

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        if process_alive(pid):
            with contextlib.suppress(Exception):
                self.cli("stop", timeout=200)
            if not wait_for_exit(pid, 30):
                log(f"daemon {pid} did not stop; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_for_exit(pid, 10)


def counters_delta(before: dict, after: dict) -> dict:
    a, b = before.get("counters", {}), after.get("counters", {})
    return {k: b.get(k, 0) - a.get(k, 0) for k in sorted(set(a) | set(b)) if b.get(k, 0) != a.get(k, 0)}


# ------------------------------------------------------------------------------------------ WebSocket clients

class Subscribers:
    """WebSocket subscribers on a private asyncio loop; every client records (arrival time, event)."""

    def __init__(self, ws_url: str, token: str) -> None:
        self.ws_url, self.token = ws_url, token
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-ws", daemon=True)
        self.thread.start()
        self.clients: list[dict] = []  # {"ws", "task", "events": [(t, msg)]}
        self.lock = threading.Lock()
        self.closed = False

    def _run(self, coro, timeout: float = 60):
        if self.closed and self.clients == []:
            coro.close()
            return None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open(self) -> dict:
        from websockets.asyncio.client import connect

        ws = await connect(self.ws_url, additional_headers={"Authorization": f"Bearer {self.token}"},
                           max_size=None, open_timeout=30)
        hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if hello.get("type") != "hello":
            raise BenchError(f"expected hello, got {hello}")
        client = {"ws": ws, "events": [], "all": not self.clients}  # client 0 records everything
        client["task"] = asyncio.ensure_future(self._reader(client))
        return client

    async def _reader(self, client: dict) -> None:
        from websockets.exceptions import ConnectionClosed

        record_all = client["all"]
        with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
            async for message in client["ws"]:
                t = mono()
                # the other clients only keep finals: keep this process's CPU (it shares the cores) low
                if isinstance(message, str) and (record_all or '"final"' in message[:40]):
                    with self.lock:
                        client["events"].append((t, json.loads(message)))

    def resize(self, n: int) -> None:
        """Open or close clients until ``n`` are connected (client 0 is kept)."""
        async def go():
            while len(self.clients) < n:
                opened = await asyncio.gather(*(self._open() for _ in range(min(8, n - len(self.clients)))))
                self.clients.extend(opened)
            while len(self.clients) > n:
                client = self.clients.pop()
                await client["ws"].close()
                client["task"].cancel()
        self._run(go(), timeout=120)

    def events(self, index: int = 0, since: float = 0.0) -> list[tuple[float, dict]]:
        with self.lock:
            return [(t, m) for t, m in self.clients[index]["events"] if t >= since]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.resize(0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def wait_utterances_done(subs: Subscribers, daemon: Daemon, since: float, timeout: float) -> list[tuple[float, dict]]:
    """Wait until speech that started after ``since`` is over: a vad speech=false event, no speech open
    after it, a final after it, and the daemon back to ``listening``. Returns the recorder's events."""
    deadline = mono() + timeout
    last_poll = 0.0
    while mono() < deadline:
        events = subs.events(0, since)
        vads = [(t, m) for t, m in events if m["type"] == "vad"]
        if vads and not vads[-1][1]["speech"]:
            t_end = vads[-1][0]
            after = [m for t, m in events if t >= t_end]
            # "listening" after the last speech end means the pipeline is idle: every final is out (a final
            # is published before the state changes); a too-short segment is cancelled without a final
            has_final = any(m["type"] == "final" for _, m in events)
            listening = any(m["type"] == "state" and m["state"] == "listening" for m in after)
            if has_final and listening:
                return events
            if has_final and mono() - last_poll > 0.5:  # no state event seen (it changed between polls)
                last_poll = mono()
                status = daemon.status()
                if status["state"] == "listening" and status["pending_utterances"] == 0:
                    return subs.events(0, since)
        time.sleep(0.02)
    raise BenchError(f"no final within {timeout:.0f} s (events: {[m['type'] for _, m in subs.events(0, since)]}); "
                     f"daemon log:\n{daemon.log_tail()}")


# ------------------------------------------------------------------------------------------ output

class Reporter:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.results: list[dict] = []

    def __call__(self, bench: str, **fields) -> None:
        record = {"bench": bench, **fields}
        self.results.append(record)
        if self.as_json:
            print(json.dumps(record), flush=True)
        else:
            print(f"{bench:<14}" + "  ".join(f"{k}={_fmt(v)}" for k, v in fields.items()), flush=True)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def r1(value: float | None) -> float | None:
    return None if value is None else round(float(value), 1)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# ------------------------------------------------------------------------------------------ phases

def phase_idle(daemon: Daemon, subs: Subscribers, report: Reporter, idle_s: float, settle_s: float) -> None:
    daemon.wait_state(("listening",), timeout=60)
    time.sleep(settle_s)
    status0, metrics0 = daemon.status(), daemon.metrics()
    t0, cpu0 = mono(), cpu_seconds(daemon.pid)
    time.sleep(idle_s)
    cpu1, t1 = cpu_seconds(daemon.pid), mono()
    status1, metrics1 = daemon.status(), daemon.metrics()
    seen: dict[str, int] = {}
    for _, m in subs.events(0, t0):
        if t0 <= _ <= t1:
            seen[m["type"]] = seen.get(m["type"], 0) + 1
    delta = counters_delta(metrics0, metrics1)
    model_work = {
        "utterances": status1["utterances"] - status0["utterances"],
        "published_partial": delta.get("published_partial", 0),
        "published_final": delta.get("published_final", 0),
        "published_vad": delta.get("published_vad", 0),
    }
    report("idle", seconds=round(t1 - t0, 1), cpu_pct=round(100.0 * (cpu1 - cpu0) / (t1 - t0), 2),
           cpu_s=round(cpu1 - cpu0, 2), no_model_work=not any(model_work.values()), model_work=model_work,
           state=status1["state"], events_seen=seen, threads=thread_count(daemon.pid),
           input_device=status1.get("input_device"))


def play_and_wait(daemon: Daemon, subs: Subscribers, pulse: Pulse, speech: SpeechFile) -> dict:
    """Play one utterance into the microphone; returns timing facts from the recorder's events."""
    cpu0, own0 = cpu_seconds(daemon.pid), time.process_time()
    t_play = mono()
    player = pulse.play(speech.path)
    t_speech_end = t_play + speech.speech_end_s
    try:
        player.wait(timeout=speech.speech_end_s + speech.tail_s + 60)
    finally:
        stop_process(player)
    events = wait_utterances_done(subs, daemon, t_play, timeout=120 + 10 * speech.speech_s)
    t_done = mono()
    cpu1, own1 = cpu_seconds(daemon.pid), time.process_time()
    return {"t_play": t_play, "t_speech_end": t_speech_end, "t_done": t_done, "cpu_s": cpu1 - cpu0,
            "bench_cpu_s": own1 - own0, "events": events,
            "finals": [(t, m) for t, m in events if m["type"] == "final"],
            "partials": sum(1 for _, m in events if m["type"] == "partial")}


def engine_final_ms(timings: dict) -> float | None:
    """The engine's own final compute, if the daemon puts it into the final's timings."""
    for key in ("final_ms", "total_ms", "engine_final_ms"):
        if isinstance(timings.get(key), (int, float)):
            return float(timings[key])
    return None


def stream_clock(events: list[tuple[float, dict]], t_final: float, onset_s: float) -> dict | None:
    """Map the daemon's stream clock to this process's wall clock for the utterance whose final arrived
    at ``t_final``.

    ``vad`` events carry stream time (samples captured / 16000). speech=true is decided ``onset_s`` after
    its ``time`` (the start of the voiced run), speech=false at its ``time`` (hangover over); each event
    arrives at wall = offset + decision time + lag, lag >= 0 (capture block, processing, WebSocket; large
    while the decoder is busy). The smallest offset over the utterance's events is the best estimate.
    Returns the wall times of the speech start (first voiced frame), of the utterance end, and the offset."""
    vads = [(t, m) for t, m in events if m["type"] == "vad" and t <= t_final]
    ends = [(t, m) for t, m in vads if not m["speech"]]
    starts = [(t, m) for t, m in vads if m["speech"]]
    if not ends or not starts:
        return None
    offsets = [t - float(m["time"]) - (onset_s if m["speech"] else 0.0) for t, m in vads]
    offset = min(offsets)
    return {"offset": offset, "speech_start": offset + float(starts[0][1]["time"]),
            "utt_end": offset + float(ends[-1][1]["time"])}


def warmup(daemon: Daemon, subs: Subscribers, pulse: Pulse, speech: SpeechFile) -> None:
    """One utterance that is not reported: the first one after start-up pays one-time costs."""
    if daemon.warmed:
        return
    daemon.warmed = True
    daemon.wait_state(("listening",), timeout=120)
    got = play_and_wait(daemon, subs, pulse, speech)
    log(f"warm-up utterance: {len(got['finals'])} final(s), daemon cpu {got['cpu_s']:.2f} s")


def phase_latency(daemon: Daemon, subs: Subscribers, pulse: Pulse, report: Reporter, speeches: list[SpeechFile],
                  repeats: int, hangover_ms: int, onset_ms: int) -> None:
    onset_s = max(1, -(-onset_ms // 30)) * 0.03  # the segmenter decides after ceil(onset / 30 ms) voiced frames
    warmup(daemon, subs, pulse, speeches[0])
    for speech in speeches:
        for run in range(repeats):
            daemon.wait_state(("listening",), timeout=120)
            time.sleep(0.5)
            got = play_and_wait(daemon, subs, pulse, speech)
            base = {"speech_s": round(speech.speech_s, 2), "run": run}
            clock = stream_clock(got["events"], got["finals"][-1][0], onset_s) if got["finals"] else None
            if clock is None:
                report("final_latency", **base, measured=False,
                       reason="no final (the VAD found no speech, or the utterance was too short)")
                continue
            t_final, final = got["finals"][-1]
            timings = final.get("timings") or {}
            engine_ms, daemon_ms = engine_final_ms(timings), timings.get("latency_ms")
            speech_end = clock["speech_start"] + speech.speech_s  # the played file's voiced span, on the stream
            to_final = (t_final - speech_end) * 1000.0
            after_utt = (t_final - clock["utt_end"]) * 1000.0
            report("final_latency", **base, utterances=len(got["finals"]),
                   audio_s=round(final["audio_end"] - final["audio_start"], 2), partials=got["partials"],
                   speech_end_to_final_ms=r1(to_final), hangover_ms=hangover_ms,
                   engine_final_ms=r1(engine_ms), prepared=final.get("prepared"),
                   # a prepared final's compute ran during the hangover: no overhead to derive
                   overhead_ms=(r1(to_final - hangover_ms - engine_ms)
                                if engine_ms is not None and not final.get("prepared") else None),
                   utt_end_to_final_ms=r1(after_utt), daemon_latency_ms=r1(daemon_ms),
                   ws_overhead_ms=r1(after_utt - daemon_ms) if daemon_ms is not None else None,
                   speech_end_to_utt_end_ms=r1((clock["utt_end"] - speech_end) * 1000.0),
                   played_end_to_final_ms=r1((t_final - got["t_speech_end"]) * 1000.0),
                   playback_delay_ms=r1((clock["speech_start"] - (got["t_play"] + speech.lead_s)) * 1000.0),
                   compute_ms=r1(timings.get("compute_ms")), cpu_s=round(got["cpu_s"], 2))


def phase_clients(daemon: Daemon, subs: Subscribers, pulse: Pulse, report: Reporter, speech: SpeechFile,
                  n_clients: int, repeats: int) -> None:
    cpu: dict[int, list[float]] = {1: [], n_clients: []}
    partials: dict[int, list[int]] = {1: [], n_clients: []}
    bench_cpu: dict[int, list[float]] = {1: [], n_clients: []}
    spreads: list[float] = []
    missing = 0
    warmup(daemon, subs, pulse, speech)
    for run in range(repeats):
        for n in (1, n_clients):
            subs.resize(n)
            daemon.wait_state(("listening",), timeout=120)
            time.sleep(0.5)
            got = play_and_wait(daemon, subs, pulse, speech)
            cpu[n].append(got["cpu_s"])
            partials[n].append(got["partials"])
            bench_cpu[n].append(got["bench_cpu_s"])
            if n > 1 and got["finals"]:
                time.sleep(0.3)
                final_id = got["finals"][-1][1]["utterance_id"]
                arrivals = []
                for i in range(n):
                    times = [t for t, m in subs.events(i, got["t_play"])
                             if m["type"] == "final" and m["utterance_id"] == final_id]
                    if times:
                        arrivals.append(times[0])
                    else:
                        missing += 1
                if arrivals:
                    spreads.append((max(arrivals) - min(arrivals)) * 1000.0)
            log(f"clients run {run}: {n} subscriber(s), daemon cpu {got['cpu_s']:.2f} s over "
                f"{got['t_done'] - got['t_play']:.1f} s")
    subs.resize(1)
    one, many = median(cpu[1]), median(cpu[n_clients])
    report("clients", clients=n_clients, speech_s=round(speech.speech_s, 2), rounds=repeats,
           cpu_s_1=round(one, 3), cpu_s_n=round(many, 3),
           extra_cpu_pct=round(100.0 * (many / one - 1.0), 1) if one else None,
           extra_cpu_s=round(many - one, 3),
           noise_pct=round(100.0 * (max(cpu[1]) - min(cpu[1])) / one, 1) if one and len(cpu[1]) > 1 else None,
           cpu_s_1_all=[round(c, 3) for c in cpu[1]],
           cpu_s_n_all=[round(c, 3) for c in cpu[n_clients]],
           partials_1=partials[1], partials_n=partials[n_clients],
           bench_cpu_s_1=round(median(bench_cpu[1]), 3), bench_cpu_s_n=round(median(bench_cpu[n_clients]), 3),
           final_spread_ms=r1(median(spreads)), finals_missing=missing)


# ------------------------------------------------------------------------------------------ typing

TK_HELPER = r"""
import json, sys, time, tkinter as tk
root = tk.Tk()
root.title("qasr-bench-target")
root.geometry("900x80+10+10")
var = tk.StringVar(master=root)
entry = tk.Entry(root, textvariable=var, width=120)
entry.pack(fill="x", padx=5, pady=5)
def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
def changed(*_):
    say({"t": time.monotonic(), "text": var.get()})
var.trace_add("write", changed)
def command(*_):
    line = sys.stdin.readline()
    if not line or line.strip() == "quit":
        root.destroy(); return
    if line.strip() == "clear":
        var.set("")
    elif line.strip() == "focus":
        root.focus_force(); entry.focus_force(); root.update()
    say({"ack": line.strip(), "t": time.monotonic(), "focus": str(root.focus_get()), "window": root.winfo_id(),
         "frame": int(root.wm_frame(), 16) if root.wm_frame() else 0})
root.tk.createfilehandler(sys.stdin, tk.READABLE, command)
def ready():
    root.focus_force(); entry.focus_force(); root.update()
    say({"ready": True, "t": time.monotonic(), "focus": str(root.focus_get())})
root.after(300, ready)
root.mainloop()
"""


class TkTarget:
    """A Tk window with a focused Entry in a subprocess; every change of its text is timestamped."""

    def __init__(self, display: str) -> None:
        env = dict(os.environ, DISPLAY=display)
        self.proc = subprocess.Popen([sys.executable, "-c", TK_HELPER], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.changes: list[tuple[float, str]] = []
        self.acks: list[dict] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        with self.cond:
            if not self.cond.wait_for(lambda: any(a.get("ready") for a in self.acks), timeout=30):
                err = self.proc.stderr.read() if self.proc.poll() is not None else ""
                raise BenchError(f"the Tk target window did not come up: {err.strip()[-300:]}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                if "text" in msg:
                    self.changes.append((msg["t"], msg["text"]))
                else:
                    self.acks.append(msg)
                self.cond.notify_all()

    def command(self, name: str) -> dict:
        with self.cond:
            n = len(self.acks)
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.acks) > n, timeout=10):
                raise BenchError(f"the Tk target did not answer {name!r}")
            return self.acks[n]

    def clear(self) -> None:
        self.command("clear")
        self.command("focus")
        with self.cond:
            self.changes.clear()

    def wait_text(self, expected: str, timeout: float) -> list[tuple[float, str]] | None:
        with self.cond:
            ok = self.cond.wait_for(lambda: bool(self.changes) and self.changes[-1][1] == expected, timeout=timeout)
            return list(self.changes) if ok else None

    def text(self) -> str:
        with self.cond:
            return self.changes[-1][1] if self.changes else ""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        stop_process(self.proc)


class Keyboard:
    """Key presses through XTEST from this process (precise timestamps, no xdotool start-up)."""

    def __init__(self, display: str) -> None:
        from Xlib import XK, display as xdisplay
        from Xlib.ext import xtest  # noqa: F401 - registers the extension

        self.disp = xdisplay.Display(display)
        if not self.disp.has_extension("XTEST"):
            raise BenchError("the X server has no XTEST extension")
        self.keycode = self.disp.keysym_to_keycode(XK.string_to_keysym(HOTKEY))

    def _send(self, kind: int) -> float:
        from Xlib.ext import xtest

        xtest.fake_input(self.disp, kind, self.keycode)
        self.disp.sync()
        return mono()

    def down(self) -> float:
        from Xlib import X

        return self._send(X.KeyPress)

    def up(self) -> float:
        from Xlib import X

        return self._send(X.KeyRelease)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.disp.close()


def typing_chars(changes: list[tuple[float, str]], expected: str) -> tuple[float, float, int]:
    """(time of the first change that starts the expected text, time it became complete, change count)."""
    started = [t for t, text in changes if text and expected.startswith(text)]
    complete = [t for t, text in changes if text == expected]
    return started[0], complete[0], len(changes)


def typing_run(env: "BenchEnv", daemon: Daemon, subs: Subscribers, speech: SpeechFile) -> dict:
    """Hold the hotkey while the speech plays, release it at the end of the speech, wait for the text."""
    daemon.wait_state(("listening",), timeout=120)
    env.tk.clear()
    time.sleep(0.3)
    since = mono()
    t_down = env.keyboard.down()
    t_play = mono()
    player = env.pulse.play(speech.path)
    try:
        # release the key at the end of the speech (+ the ~40 ms playback → capture path)
        time.sleep(max(0.0, t_play + speech.speech_end_s + 0.05 - mono()))
    finally:
        t_up = env.keyboard.up()
    changes = env.tk.wait_text(TYPED_TEXT, timeout=120 + 10 * speech.speech_s)
    stop_process(player)
    deadline = mono() + (10 if changes is not None else 2)  # the final is published after the delivery
    while mono() < deadline and not any(m["type"] == "final" for _, m in subs.events(0, since)):
        time.sleep(0.02)
    events = subs.events(0, since)
    return {"t_down": t_down, "t_up": t_up, "changes": changes, "events": events,
            "finals": [(t, m) for t, m in events if m["type"] == "final"]}


def typing_failure(env: "BenchEnv", got: dict) -> str:
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


def phase_typing(env: "BenchEnv", report: Reporter, speeches: list[SpeechFile], repeats: int, sinks: list[str],
                 hotkey_tail_s: float) -> None:
    tails_ms = int(HOTKEY_DEBOUNCE_MS + hotkey_tail_s * 1000 + SEGMENTER_PTT_TAIL_MS)
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
            changes = got["changes"]
            if run < 0:
                log(f"typing warm-up ({sink}): {'typed' if changes is not None else typing_failure(env, got)}")
                continue
            if changes is None:
                report("typing", **base, measured=False, reason=typing_failure(env, got))
                continue
            t_first, t_last, n_changes = typing_chars(changes, TYPED_TEXT)
            t_up = got["t_up"]
            t_final, final = got["finals"][-1] if got["finals"] else (None, {})
            timings = final.get("timings") or {}
            report("typing", **base, chars=len(TYPED_TEXT),
                   release_to_last_char_ms=r1((t_last - t_up) * 1000.0),
                   release_to_first_char_ms=r1((t_first - t_up) * 1000.0),
                   typing_ms=r1((t_last - t_first) * 1000.0),
                   cps=round((len(TYPED_TEXT) - 1) / (t_last - t_first), 1) if t_last > t_first else None,
                   entry_changes=n_changes, configured_tails_ms=tails_ms,
                   daemon_latency_ms=r1(timings.get("latency_ms")), engine_final_ms=r1(engine_final_ms(timings)),
                   ws_final_after_release_ms=r1((t_final - t_up) * 1000.0) if t_final else None,
                   final_sink=final.get("sink"), held_s=round(t_up - got["t_down"], 2))
        env.stop_daemon()


def phase_sink_speed(env: "BenchEnv", report: Reporter, sinks: list[str], lengths: tuple[int, ...] = (40, 200)) -> None:
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
                t0 = mono()
                result = output.deliver(text)
                t_call = mono()
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


# ------------------------------------------------------------------------------------------ orchestration

class BenchEnv:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="qasr-bd-", dir="/tmp"))  # short: unix socket paths
        self.pulse = Pulse(self.root)
        self.xvfb = Xvfb()
        self.tk: TkTarget | None = None
        self.keyboard: Keyboard | None = None
        self.daemon: Daemon | None = None
        self.subscribers: list[Subscribers] = []
        self.count = 0

    def base_overrides(self) -> list[str]:
        sets = ["server.max_clients=64", "journal.enabled=false"]
        if self.args.threads:
            sets.append(f"engine.threads={self.args.threads}")
        return sets + list(self.args.daemon_set)

    def new_daemon(self, overrides: list[str], display: str | None = None, replacements: str | None = None) -> Daemon:
        self.stop_daemon()
        self.count += 1
        daemon = Daemon(self.root / f"d{self.count}", Path(self.args.model), self.base_overrides() + overrides,
                        self.pulse.client_env, display)
        if replacements is not None:
            (daemon.config_dir / "replacements.txt").write_text(f"(?s)\\A.*\\Z = \"{replacements}\"\n")
        self.daemon = daemon
        elapsed = daemon.start()
        log(f"daemon {daemon.pid} ready in {elapsed:.1f} s ({' '.join(overrides)})")
        return daemon

    def subscribe(self, daemon: Daemon, n: int = 1) -> Subscribers:
        subs = Subscribers(daemon.info["ws_url"], daemon.token)
        self.subscribers.append(subs)
        subs.resize(n)
        return subs

    def stop_daemon(self) -> None:
        for subs in self.subscribers:
            subs.close()
        self.subscribers.clear()
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_daemon()
        if self.tk is not None:
            self.tk.close()
        if self.keyboard is not None:
            self.keyboard.close()
        self.xvfb.stop()
        self.pulse.stop()
        if self.args.keep:
            log(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def missing_tools(names: tuple[str, ...]) -> list[str]:
    return [n for n in names if shutil.which(n) is None]


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {len(os.sched_getaffinity(0))} cores, load {os.getloadavg()[0]:.2f}"


def run(args: argparse.Namespace) -> int:
    report = Reporter(args.json)
    model = Path(args.model).expanduser().resolve()
    if not (model / "manifest.json").is_file():
        print(f"bench_daemon: {model} is not a model bundle (no manifest.json)", file=sys.stderr)
        return 2
    args.model = str(model)
    need = missing_tools(("pulseaudio", "pactl", "paplay") + (("espeak-ng",) if args.speech == "espeak" else ()))
    if need:
        print(f"bench_daemon: missing {', '.join(need)} (apt install pulseaudio pulseaudio-utils espeak-ng)",
              file=sys.stderr)
        return 2
    phases = set(args.only.split(",")) if args.only else {"idle", "latency", "clients", "typing", "sinks"}
    if args.skip_typing:
        phases -= {"typing", "sinks"}
    env = BenchEnv(args)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        log(f"{machine()}; model {model}; work dir {env.root}")
        report("setup", model=model.name, machine=machine(), threads=args.threads or "auto",
               hangover_ms=args.hangover_ms)
        env.pulse.start()
        speeches = [make_speech_file(s, env.root, args.speech) for s in args.lengths]
        if phases & {"idle", "latency", "clients"}:
            daemon = env.new_daemon(["vad.mode=vad", f"vad.hangover_ms={args.hangover_ms}",
                                     f"vad.onset_ms={args.onset_ms}", "output.sink=none",
                                     "hotkey.enabled=false"])
            subs = env.subscribe(daemon)
            report("memory", when="after_start", **memory_mb(daemon.pid))
            if "idle" in phases:
                phase_idle(daemon, subs, report, args.idle_s, args.settle_s)
            if "latency" in phases:
                phase_latency(daemon, subs, env.pulse, report, speeches, args.repeats, args.hangover_ms,
                              args.onset_ms)
            if "clients" in phases:
                phase_clients(daemon, subs, env.pulse, report, speeches[-1], args.clients, args.client_rounds)
            report("memory", when="after_speech", **memory_mb(daemon.pid))
            env.stop_daemon()
        if phases & {"typing", "sinks"}:
            need = missing_tools(("Xvfb",))
            try:
                import tkinter  # noqa: F401
            except ImportError:
                need.append("python3-tk")
            if need:
                report("typing", measured=False, reason=f"missing {', '.join(need)}")
            else:
                env.xvfb.start()
                env.tk = TkTarget(env.xvfb.display)
                env.keyboard = Keyboard(env.xvfb.display)
                sinks = [s.strip() for s in args.sinks.split(",") if s.strip()]
                if "typing" in phases:
                    phase_typing(env, report, speeches, args.repeats, sinks, args.hotkey_tail_s)
                if "sinks" in phases:
                    phase_sink_speed(env, report, sinks)
        return 0
    except BenchError as exc:
        print(f"bench_daemon: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench_daemon: interrupted", file=sys.stderr)
        return 130
    finally:
        env.close()
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench_daemon", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="model bundle directory")
    p.add_argument("--threads", type=int, default=0, help="engine.threads for the daemon (0: its default)")
    p.add_argument("--skip-typing", action="store_true", help="no Xvfb/typing/sink measurements")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--idle-s", type=float, default=20.0, help="idle measurement window (seconds)")
    p.add_argument("--settle-s", type=float, default=3.0, help="wait after start-up before the idle window")
    p.add_argument("--lengths", type=float, nargs="+", default=[3.0, 10.0], help="utterance lengths (s)")
    p.add_argument("--repeats", type=int, default=2, help="runs per utterance length (latency, typing)")
    p.add_argument("--client-rounds", type=int, default=3, help="alternating 1 / N subscriber rounds")
    p.add_argument("--clients", type=int, default=20, help="subscribers in the many-clients run")
    p.add_argument("--hangover-ms", type=int, default=600, help="vad.hangover_ms of the daemon")
    p.add_argument("--onset-ms", type=int, default=150, help="vad.onset_ms of the daemon")
    p.add_argument("--hotkey-tail-s", type=float, default=0.3, help="hotkey.release_tail_s of the typing daemon")
    p.add_argument("--sinks", default="type,paste", help="output sinks for the typing measurements")
    p.add_argument("--speech", choices=("espeak", "synthetic"), default="espeak",
                   help="espeak-ng speech (default) or qasr.daemon.bench.synthetic_audio")
    p.add_argument("--only", help="comma list of phases: idle,latency,clients,typing,sinks")
    p.add_argument("--daemon-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra --set for every daemon started")
    p.add_argument("--keep", action="store_true", help="keep the work folder (daemon logs) for inspection")
    args = p.parse_args(argv)
    if args.clients < 2:
        p.error("--clients must be at least 2")
    return args


if __name__ == "__main__":
    raise SystemExit(run(parse_args()))
