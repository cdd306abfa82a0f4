"""``qasr-daemon status`` (control socket) and the WebSocket server's hello/health/metrics facts."""

from __future__ import annotations

import os
import time
from typing import Any

from qasr import __version__
from qasr.config import paths


def daemon_status(daemon: Any) -> dict[str, Any]:
    s, p = daemon.settings, daemon.parts
    pipeline = p.pipeline
    return {
        "pid": os.getpid(),
        "version": __version__,
        "state": daemon.computed_state(),
        "model": p.model_name,
        "model_path": str(p.engine.bundle.root) if p.engine else str(s.model.resolved_path()),
        "input_device": p.input_device,
        "device_error": p.device_error,
        "mode": s.vad.mode,
        "language": s.engine.language or None,
        "ws_url": p.ws_url,
        "openai_url": f"{p.server.http_url}/v1" if p.server is not None and p.openai is not None else None,
        "realtime_url": f"{p.server.ws_url.rstrip('/')}/v1/realtime" if p.server is not None and p.realtime is not None
        else None,
        "wyoming_uri": f"tcp://{p.wyoming.host}:{p.wyoming.port}" if p.wyoming is not None else None,
        "token_file": str(paths.token_file()) if p.server is not None else None,
        "last_latency_ms": pipeline.last_latency_ms if pipeline else None,
        "utterances": pipeline.utterances_done if pipeline else 0,
        "pending_utterances": pipeline.pending() if pipeline else 0,
        "uptime_s": round(time.time() - daemon.started_at, 1),
        "config_file": str(daemon.config_path),
        "log_file": str(daemon.log_file) if daemon.log_file else None,
        "journal_file": p.journal_file(),
        "output": s.output.sink if p.desktop_delivery.output is not None else "none",
        "desktop": dict(getattr(p, "desktop", {})),
        "ime": p.ime.describe() if getattr(p, "ime", None) is not None else None,
        "profile": p.desktop_delivery.profile_status(),
        "save_audio_dir": s.debug.save_audio_dir or None,
        "word_timestamps": _words(s, p),
        "system_audio": p.system.status() if getattr(p, "system", None) is not None else None,
        "warnings": list(p.warnings),
    }


def _words(s: Any, p: Any) -> dict[str, Any]:
    """[output] word_timestamps and the aligner behind them (also the OpenAI endpoint's word granularity)."""
    host = getattr(p, "aligner", None)
    return {"on": s.output.word_timestamps, "aligner": str(host.path) if host is not None and host.path else None,
            "loaded": bool(host is not None and host.loaded), "error": host.error if host is not None else None,
            "aligned": host.aligned if host is not None else 0, "failed": host.failed if host is not None else 0}


def hello_info(daemon: Any) -> dict[str, Any]:
    s = daemon.settings
    return {"model": daemon.parts.model_name, "state": daemon.state, "mode": s.vad.mode,
            "language": s.engine.language or None, "languages": daemon.parts.languages()}


def health_info(daemon: Any) -> dict[str, Any]:
    return {"ok": daemon.state not in ("error", "stopping"), "state": daemon.state,
            "model": daemon.parts.model_name, "input_device": daemon.parts.input_device}


def metrics_info(daemon: Any) -> dict[str, Any]:
    status = daemon_status(daemon)
    return {"utterances": status["utterances"], "pending_utterances": status["pending_utterances"],
            "uptime_s": status["uptime_s"]}
