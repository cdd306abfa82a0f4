#!/usr/bin/env python3
"""Latency of the standard endpoints (docs/benchmarks.md, "Standard endpoints"), all in one run:

1. a 10 s file through ``POST /v1/audio/transcriptions`` (the ``openai`` package) vs offline ``transcribe``
   (a warm in-process ``Transcriber``, what ``qasr-daemon transcribe`` runs, and the CLI itself, cold);
2. Wyoming ``audio-stop`` → ``transcript`` for a 3 s command streamed in real time (the ``wyoming`` client);
3. a dictation utterance's final latency (3 s streamed in real time over the WebSocket, a foreground
   utterance like the microphone's) alone and while a 10 s OpenAI request runs.

    .venv/bin/python scripts/bench_endpoints.py --model ~/.cache/qasr/bench/random-0.6b-int8-q4_k
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.daemon import DaemonProcess  # noqa: E402
from tests.test_openai_api import tone, wav_bytes  # noqa: E402

SR = 16000


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def offline(bundle: Path, path: Path, repeats: int, max_tokens: int) -> tuple[list[float], float]:
    from qasr.engine.transcribe import TranscribeOptions, Transcriber

    with Transcriber(bundle, TranscribeOptions(max_new_tokens=max_tokens)) as transcriber:
        transcriber.transcribe_file(path)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            transcriber.transcribe_file(path)
            times.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "qasr", "transcribe", "--model", str(bundle),
                    "--max-new-tokens", str(max_tokens), str(path)], check=True,
                   capture_output=True)
    return times, (time.perf_counter() - t0) * 1000


def openai_once(env: DaemonProcess, path: Path) -> float:
    import openai

    client = openai.OpenAI(base_url=env.server_info()["http_url"] + "/v1", api_key=env.token(), max_retries=0,
                           timeout=600)
    t0 = time.perf_counter()
    client.audio.transcriptions.create(model="x", file=path)
    return (time.perf_counter() - t0) * 1000


async def wyoming_once(host: str, port: int, pcm16: np.ndarray) -> float:
    from wyoming.asr import Transcribe, Transcript
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient

    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Transcribe().event())
        await client.write_event(AudioStart(rate=SR, width=2, channels=1).event())
        start = time.perf_counter()
        for i, n in enumerate(range(0, pcm16.size, 1024)):  # real time, as a satellite streams it
            await asyncio.sleep(max(0.0, start + n / SR - time.perf_counter()))
            await client.write_event(AudioChunk(rate=SR, width=2, channels=1, audio=pcm16[n:n + 1024].tobytes()).event())
        await asyncio.sleep(max(0.0, start + pcm16.size / SR - time.perf_counter()))
        t0 = time.perf_counter()
        await client.write_event(AudioStop().event())
        while True:
            event = await client.read_event()
            if Transcript.is_type(event.type):
                return (time.perf_counter() - t0) * 1000


async def dictation_once(env: DaemonProcess, pcm16: np.ndarray) -> tuple[float, float]:
    """(audio.end → final as the client sees it, the final's own latency_ms)."""
    from websockets.asyncio.client import connect

    async with connect(env.server_info()["ws_url"], additional_headers={"Authorization": f"Bearer {env.token()}"}) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "audio.start", "format": "s16le", "sample_rate": SR, "segment": "none"}))
        start = time.perf_counter()
        for n in range(0, pcm16.size, 960):  # 60 ms blocks in real time, like the microphone's
            await asyncio.sleep(max(0.0, start + n / SR - time.perf_counter()))
            await ws.send(pcm16[n:n + 960].tobytes())
        await asyncio.sleep(max(0.0, start + pcm16.size / SR - time.perf_counter()))
        t0 = time.perf_counter()
        await ws.send(json.dumps({"type": "audio.end"}))
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "final":
                return (time.perf_counter() - t0) * 1000, message["timings"]["latency_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path.home() / ".cache/qasr/bench/random-0.6b-int8-q4_k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=40,
                        help="cap on generated tokens (random weights never stop by themselves; 40 is what 10 s "
                             "of real speech needs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qasr-bench-endpoints-"))
    ten = work / "ten.wav"
    ten.write_bytes(wav_bytes(tone(10.0, 1)))
    command = (np.clip(tone(3.0, 2), -1, 1) * 32767).astype("<i2")
    speech = (np.clip(tone(3.0, 3), -1, 1) * 32767).astype("<i2")

    results: dict = {}
    warm, cold = offline(args.model, ten, args.repeats, args.max_new_tokens)
    results["offline_transcribe_10s_ms"] = median(warm)
    results["cli_transcribe_10s_cold_ms"] = round(cold, 1)

    env = DaemonProcess(work / "daemon")
    env.start(args.model, "--set", "wyoming.enabled=true", "--set", "wyoming.uri=tcp://127.0.0.1:0",
              "--set", f"engine.max_new_tokens={args.max_new_tokens}")
    try:
        host, port = env.status()["wyoming_uri"][len("tcp://"):].rsplit(":", 1)
        openai_once(env, ten)  # warm-up (first decode)
        results["openai_10s_ms"] = median([openai_once(env, ten) for _ in range(args.repeats)])
        results["openai_vs_offline"] = round(results["openai_10s_ms"] / results["offline_transcribe_10s_ms"], 2)
        results["wyoming_stop_to_transcript_3s_ms"] = median(
            [asyncio.run(wyoming_once(host, int(port), command)) for _ in range(args.repeats)])
        alone = [asyncio.run(dictation_once(env, speech)) for _ in range(args.repeats)]
        loaded = []
        for _ in range(args.repeats):
            worker = threading.Thread(target=openai_once, args=(env, ten))
            worker.start()
            time.sleep(0.3)  # the upload is in and its job queued before the dictation starts
            loaded.append(asyncio.run(dictation_once(env, speech)))
            worker.join()
        results["dictation_final_ms_alone"] = median([a for a, _ in alone])
        results["dictation_final_ms_during_openai"] = median([a for a, _ in loaded])
        results["dictation_latency_ms_alone_pipeline"] = median([b for _, b in alone])
        results["dictation_latency_ms_during_openai_pipeline"] = median([b for _, b in loaded])
        results["openai_request_ms_metrics"] = env.metrics()["series"].get("openai_request_ms")
    finally:
        env.stop()
    results["model"] = str(args.model)
    results["max_new_tokens"] = args.max_new_tokens
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
