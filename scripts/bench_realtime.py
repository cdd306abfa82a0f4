#!/usr/bin/env python3
"""``/v1/realtime`` (OpenAI Realtime transcription, the ``openai`` package's client) beside the ``qasr.v1``
WebSocket, in one run against one daemon (docs/benchmarks.md, "Realtime transcription").

The same clip is streamed in 100 ms chunks at real time through each, without turn detection (the client
ends the item: ``input_audio_buffer.commit`` / ``audio.end``):
- ``end_to_final_ms``: the last chunk sent → ``...transcription.completed`` / ``final`` received;
- ``first_delta_ms``: the first chunk sent (speech starts at once) → the first ``delta`` / the first
  ``partial`` with committed text (or the ``final``, when nothing was committed before it: a delta then).

    .venv/bin/python scripts/bench_realtime.py --model ~/.cache/qasr/bench/random-0.6b-int8-q4_k --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.harness.daemon import DaemonProcess  # noqa: E402
from tests.test_openai_api import tone  # noqa: E402

SR = 16000
CHUNK_S = 0.1


def pcm16(audio: np.ndarray, rate: int) -> bytes:
    if rate != SR:
        import soxr

        audio = soxr.resample(audio, SR, rate).astype(np.float32)
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def paced(data: bytes, rate: int, send) -> tuple[float, float]:
    """Send ``data`` in 100 ms chunks at real time; (first chunk sent, last chunk sent)."""
    step = int(rate * CHUNK_S) * 2
    start = time.perf_counter()
    for i, offset in enumerate(range(0, len(data), step)):
        await asyncio.sleep(max(0.0, start + i * CHUNK_S - time.perf_counter()))
        await send(data[offset:offset + step])
    return start, time.perf_counter()


async def qasr_once(env: DaemonProcess, audio: np.ndarray) -> dict:
    from websockets.asyncio.client import connect

    data = pcm16(audio, SR)
    first_delta: list[float] = []
    async with connect(env.server_info()["ws_url"], additional_headers={"Authorization": f"Bearer {env.token()}"}) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "audio.start", "format": "s16le", "sample_rate": SR, "segment": "none"}))

        async def receive() -> float:
            while True:
                message = json.loads(await ws.recv())
                text = message.get("committed") if message["type"] == "partial" else message.get("text")
                if text and not first_delta:  # as a delta: committed words, or the final's text
                    first_delta.append(time.perf_counter())
                if message["type"] == "final":
                    return time.perf_counter()

        task = asyncio.create_task(receive())
        start, last = await paced(data, SR, ws.send)
        await ws.send(json.dumps({"type": "audio.end"}))
        final = await asyncio.wait_for(task, 600)
    return {"end_to_final_ms": (final - last) * 1000,
            "first_delta_ms": (first_delta[0] - start) * 1000 if first_delta else None}


async def realtime_once(env: DaemonProcess, audio: np.ndarray, rate: int) -> dict:
    import openai

    data = pcm16(audio, rate)
    client = openai.AsyncOpenAI(base_url=env.server_info()["http_url"] + "/v1", api_key=env.token(), max_retries=0)
    first_delta: list[float] = []
    async with client.realtime.connect(model="qwen3-asr", extra_query={"intent": "transcription"}) as conn:
        await conn.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": rate}, "turn_detection": None}}})

        async def receive() -> float:
            async for event in conn:
                if event.type == "conversation.item.input_audio_transcription.delta" and not first_delta:
                    first_delta.append(time.perf_counter())
                if event.type == "conversation.item.input_audio_transcription.completed":
                    return time.perf_counter()
                if event.type == "error":
                    raise RuntimeError(event.error.message)
            raise RuntimeError("the connection closed")

        task = asyncio.create_task(receive())
        start, last = await paced(data, rate, lambda chunk: conn.input_audio_buffer.append(
            audio=base64.b64encode(chunk).decode()))
        await conn.input_audio_buffer.commit()
        completed = await asyncio.wait_for(task, 600)
    return {"end_to_final_ms": (completed - last) * 1000,
            "first_delta_ms": (first_delta[0] - start) * 1000 if first_delta else None}


def median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r[key] is not None]
    return round(statistics.median(values), 1) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path.home() / ".cache/qasr/bench/random-0.6b-int8-q4_k")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lengths", type=float, nargs="+", default=[3.0, 10.0])
    parser.add_argument("--max-new-tokens", type=int, default=40,
                        help="cap on generated tokens (random weights never stop by themselves)")
    args = parser.parse_args()
    env = DaemonProcess(Path(tempfile.mkdtemp(prefix="qasr-bench-realtime-")))
    env.start(args.model, "--set", f"engine.max_new_tokens={args.max_new_tokens}")
    results: dict = {"model": str(args.model), "repeats": args.repeats, "chunk_ms": int(CHUNK_S * 1000),
                     "load_before": os.getloadavg()}
    try:
        asyncio.run(qasr_once(env, tone(2.0, 9)))  # warm-up
        for seconds in args.lengths:
            # one second of a harmonic tone, repeated: random weights commit words on it while it streams
            audio = np.tile(tone(1.0, 1), int(round(seconds)))
            runs: dict[str, list[dict]] = {"qasr_v1": [], "realtime_16k": [], "realtime_24k": []}
            once = {"qasr_v1": lambda: qasr_once(env, audio), "realtime_16k": lambda: realtime_once(env, audio, 16000),
                    "realtime_24k": lambda: realtime_once(env, audio, 24000)}
            for i in range(args.repeats):  # interleaved, the order turned each round: load changes hit all alike
                for name in (list(once) if i % 2 == 0 else list(reversed(once))):
                    runs[name].append(asyncio.run(once[name]()))
            for name, values in runs.items():
                results[f"{name}_{seconds:g}s"] = {key: median(values, key) for key in ("end_to_final_ms",
                                                                                       "first_delta_ms")}
        series = env.metrics()["series"]
        results["daemon_series"] = {name: series.get(name) for name in (
            "final_latency_ms", "realtime_final_latency_ms", "realtime_end_to_completed_ms")}
    finally:
        env.stop()
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
