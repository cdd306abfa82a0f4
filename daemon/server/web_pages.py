"""The daemon's own web pages: the live captions page at ``/captions`` and its assets.

``http_response(path, query) -> HttpReply | None`` is the WebSocket server's HTTP hook
(``ServerHandler.http_response``): None means "not mine" (the server answers 404).

The pages are static and hold no secret, so they are served without a token; the token travels in
the URL fragment (``/captions#token=...``), which browsers never send to a server nor write to its logs.
The page's script reads it and opens ``ws://HOST:PORT/?token=...``; the server's default Origin
allow-list already admits its own ``http://127.0.0.1:PORT`` pages.
"""

from __future__ import annotations

from importlib import resources
from urllib.parse import quote

from qasr.daemon.server.ws_server import HttpReply

CAPTIONS_PATH = "/captions"

# URL path -> (file in qasr.clients/web, content type)
PAGES = {
    "/captions": ("captions.html", "text/html; charset=utf-8"),
    "/captions/": ("captions.html", "text/html; charset=utf-8"),
    "/captions.js": ("captions.js", "text/javascript; charset=utf-8"),
    "/captions.css": ("captions.css", "text/css; charset=utf-8"),
}

SECURITY_HEADERS = {
    # Scripts and styles only from the daemon itself; WebSockets to the loopback daemon.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self' ws://127.0.0.1:* ws://localhost:* ws://[::1]:*; img-src 'self' data:; "
    "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def read_asset(name: str) -> bytes:
    return resources.files("qasr.clients").joinpath("web", name).read_bytes()


def http_response(path: str, query: dict[str, list[str]] | None = None) -> HttpReply | None:
    page = PAGES.get(path)
    if page is None:
        return None
    name, content_type = page
    return HttpReply(200, content_type, read_asset(name), dict(SECURITY_HEADERS))


def captions_url(http_url: str, token: str, **appearance: str | int) -> str:
    """Address of the captions page with the token in the fragment; ``appearance`` becomes the query
    (font, size, color, tentative, background, lines, align, fade, status)."""
    query = "&".join(f"{quote(str(k))}={quote(str(v))}" for k, v in appearance.items())
    return f"{http_url.rstrip('/')}{CAPTIONS_PATH}{'?' + query if query else ''}#token={quote(token, safe='')}"
