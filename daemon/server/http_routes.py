"""The HTTP side of the WebSocket port, sans-I/O: responses for ``/health``, ``/metrics``, the app's pages
and refused upgrades, and the token and origin checks. ``ws_server.py`` calls these with what they need."""

from __future__ import annotations

import hmac
import json
from http import HTTPStatus

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from qasr import __version__
from qasr.daemon.server.metrics import Metrics
from qasr.protocol import PROTOCOL

HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"


def http(status: int, body: bytes | str, content_type: str, extra: dict[str, str] | None = None) -> Response:
    if isinstance(body, str):
        body = body.encode("utf-8")
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
        ]
    )
    for key, value in (extra or {}).items():
        headers[key] = value
    return Response(status, HTTPStatus(status).phrase, headers, body)


def text(status: int, message: str) -> Response:
    return http(status, message.rstrip("\n") + "\n", "text/plain; charset=utf-8")


def allowed_origins(port: int, extra: tuple[str, ...]) -> frozenset[str]:
    own = {f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}"}
    return frozenset(own | {o.rstrip("/") for o in extra})


def origin_allowed(origin: str | None, origins: frozenset[str]) -> bool:
    """The one Origin check (WebSocket upgrades, the OpenAI endpoints): no Origin (not a browser) or an allowed one."""
    return origin is None or origin.rstrip("/") in origins


def origin_refused(origin: str | None) -> str:
    return f"origin {origin} is not allowed; add it to server.allowed_origins"


def token_ok(request: Request, query: dict[str, list[str]], token: str) -> bool | None:
    """True: valid token; False: wrong token; None: no token at all."""
    offered = None
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            offered = value.strip()
    if offered is None and query.get("token"):
        offered = query["token"][0]
    if offered is None:
        return None
    return hmac.compare_digest(offered.encode("utf-8"), token.encode("utf-8"))


def health(info: dict, uptime_s: float, clients: int) -> Response:
    body = {
        "ok": bool(info.get("ok", True)),
        "state": info.get("state"),
        "model": info.get("model"),
        "uptime_s": round(uptime_s, 3),
        "clients": clients,
        "protocol": PROTOCOL,
        "version": __version__,
    }
    body.update({k: v for k, v in info.items() if k not in body})
    return http(200 if body["ok"] else 503, json.dumps(body) + "\n", "application/json")


def metrics(request: Request, query: dict[str, list[str]], app: dict, metrics: Metrics, uptime_s: float, clients: int) -> Response:
    uptime = round(uptime_s, 3)
    fmt = (query.get("format") or [""])[0]
    wants_json = fmt == "json" or (not fmt and "application/json" in request.headers.get("Accept", ""))
    if wants_json:
        body = {"clients": clients, "uptime_s": uptime, **metrics.snapshot(), "app": app}
        return http(200, json.dumps(body) + "\n", "application/json")
    gauges = {"clients": clients, "uptime_seconds": uptime}
    gauges.update({k: v for k, v in app.items() if isinstance(v, (int, float))})
    return http(200, metrics.prometheus(gauges), "text/plain; version=0.0.4; charset=utf-8")


def no_page(path: str) -> Response:
    if path in ("/", ""):
        return text(426, f"this is the qasr {PROTOCOL} WebSocket endpoint; connect with a WebSocket client")
    return text(404, f"nothing at {path}; try {HEALTH_PATH} or {METRICS_PATH}")
