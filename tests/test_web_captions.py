"""The web captions page: served at /captions, token only in the fragment, appearance from the query,
committed/tentative styles, reconnects. Checked in headless Chromium driven over the DevTools protocol."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from qasr import protocol
from qasr.daemon.server import web_pages
from qasr.daemon.server.ws_server import BaseServerHandler
from tests.test_captions_overlay import FakeDaemon, final_event, partial_event, wait_for

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--window-size=1000,300"]


# ---------------------------------------------------------------------------- unit

def test_pages_and_assets_are_served_with_a_strict_policy():
    html = web_pages.http_response("/captions", {})
    assert html.status == 200 and html.content_type.startswith("text/html")
    assert b'src="/captions.js"' in html.body and b'href="/captions.css"' in html.body
    policy = html.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert html.headers["Referrer-Policy"] == "no-referrer"
    js = web_pages.http_response("/captions.js", {})
    assert js.content_type.startswith("text/javascript") and b"location.hash" in js.body
    assert b"innerHTML" not in js.body  # transcript text only ever goes in as textContent
    assert web_pages.http_response("/captions.css", {}).content_type.startswith("text/css")
    for other in ("/", "/captions/../token", "/captions.html", "/web/captions.js", "/health"):
        assert web_pages.http_response(other, {}) is None


def test_captions_url_keeps_the_token_in_the_fragment():
    url = web_pages.captions_url("http://127.0.0.1:8765/", "a+b/c=", background="transparent", lines=3)
    assert url == "http://127.0.0.1:8765/captions?background=transparent&lines=3#token=a%2Bb%2Fc%3D"
    assert web_pages.captions_url("http://127.0.0.1:8765", "t") == "http://127.0.0.1:8765/captions#token=t"


# ---------------------------------------------------------------------------- Chromium

class Browser:
    """Headless Chromium with one page, driven through the DevTools protocol (``websockets``)."""

    def __init__(self, url: str, profile: Path) -> None:
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        assert chromium, "chromium is missing (apt install chromium; scripts/install.sh lists it)"
        self.proc = subprocess.Popen([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                                      "--remote-debugging-port=0", url],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        assert wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 90), "no DevTools port"
        port = int(port_file.read_text().split()[0])

        def page_socket():
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            except (OSError, ValueError):
                return None
            return next((t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"), None)

        self.ws_url = wait_for(page_socket, 60)
        assert self.ws_url, "Chromium opened no page"
        self._ids = 0

    async def __aenter__(self):
        from websockets.asyncio.client import connect

        self.ws = await connect(self.ws_url, max_size=None)
        return self

    async def __aexit__(self, *exc):
        await self.ws.close()

    async def call(self, method: str, **params):
        self._ids += 1
        await self.ws.send(json.dumps({"id": self._ids, "method": method, "params": params}))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if reply.get("id") == self._ids:
                assert "error" not in reply, reply
                return reply["result"]

    async def evaluate(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.2)

    async def screenshot(self, path: Path) -> bytes:
        data = base64.b64decode((await self.call("Page.captureScreenshot", format="png"))["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class PagesHandler(BaseServerHandler):
    """Serves the captions pages like the daemon does, remembering what each request asked for."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict]] = []

    def http_response(self, path, query):
        self.requests.append((path, query))
        return web_pages.http_response(path, query)


CAPTION_STATE = """JSON.stringify({
  connection: document.body.dataset.connection,
  text: document.getElementById('text') ? document.getElementById('text').textContent : null,
  committed: [...document.querySelectorAll('#text .committed')].map(e => e.textContent).join('|'),
  tentative: [...document.querySelectorAll('#text .tentative')].map(e => e.textContent).join('|'),
  committedColour: (e => e && getComputedStyle(e).color)(document.querySelector('#text .committed')),
  tentativeColour: (e => e && getComputedStyle(e).color)(document.querySelector('#text .tentative')),
  background: getComputedStyle(document.getElementById('box')).backgroundColor,
  fontSize: getComputedStyle(document.body).fontSize,
  align: (e => e && getComputedStyle(e).textAlign)(document.getElementById('text')),
})"""


def state(raw: str | None) -> dict:
    return json.loads(raw) if raw else {}


BADGE = "JSON.stringify([getComputedStyle(document.getElementById('status')).display, " \
        "document.getElementById('status-text').textContent])"


def test_page_in_chromium_shows_events_and_reconnects(tmp_path):
    runtime = Path(tempfile.mkdtemp(prefix="qasr-web-"))
    handler = PagesHandler()
    daemon = FakeDaemon(runtime, handler)
    port, token = daemon.server.port, daemon.server.token
    url = web_pages.captions_url(daemon.server.http_url, token, size=40, color="ffeeaa", tentative="808080",
                                 background="000000", lines=2, align="left")
    browser = Browser(url, tmp_path / "profile")

    async def script():
        nonlocal daemon
        async with browser as page:
            assert await page.wait_for("document.body.dataset.connection === 'connected'", 90), \
                await page.evaluate(CAPTION_STATE)
            # nothing said yet: a quiet badge says the daemon is listening (not a blank page)
            display, text = json.loads(await page.evaluate(BADGE))
            assert display != "none" and text == "listening", (display, text)
            daemon.publish(protocol.state("paused"))
            assert await page.wait_for("document.getElementById('status-text').textContent === 'paused'", 30)
            daemon.publish(protocol.state("listening"))
            daemon.publish(final_event("1", "First sentence, finished."))
            daemon.publish(partial_event("2", "streaming wor", "ld 你好"))
            assert await page.wait_for("document.querySelector('#text .tentative') !== null", 30)
            shown = state(await page.evaluate(CAPTION_STATE))
            assert shown["text"] == "First sentence, finished. streaming world 你好"
            assert shown["committed"] == "First sentence, finished. streaming wor"
            assert shown["tentative"] == "ld 你好"
            assert json.loads(await page.evaluate(BADGE))[0] == "none"  # status=auto: captions on screen
            assert shown["committedColour"] == "rgb(255, 238, 170)"
            assert shown["tentativeColour"] == "rgb(128, 128, 128)"
            assert shown["background"] == "rgb(0, 0, 0)"
            assert (shown["fontSize"], shown["align"]) == ("40px", "left")
            png = await page.screenshot(tmp_path / "captions.png")
            assert png.startswith(b"\x89PNG") and len(png) > 2000

            daemon.publish(final_event("2", "Streaming world, <b>done</b>."))
            assert await page.wait_for("!document.querySelector('#text .tentative')", 30)
            shown = state(await page.evaluate(CAPTION_STATE))
            assert shown["text"] == "First sentence, finished. Streaming world, <b>done</b>."
            assert await page.evaluate("document.querySelector('#text b')") is None  # text, never markup

            # a final with word timestamps: its words become spans carrying their times on the stream clock
            daemon.publish(protocol.final("3", 2, "Timed words.", "English", [1], 5.0, 6.0, words=[
                {"word": "Timed", "start": 0.1, "end": 0.4}, {"word": "words", "start": 0.4, "end": 0.9}]))
            assert await page.wait_for("document.querySelectorAll('#text .word').length === 2", 30)
            words = await page.evaluate("JSON.stringify([...document.querySelectorAll('#text .word')]"
                                        ".map(e => [e.textContent, e.dataset.start, e.dataset.end, e.title]))")
            assert json.loads(words) == [["Timed", "5.100", "5.400", "5.10–5.40 s"], ["words", "5.400", "5.900", "5.40–5.90 s"]]
            shown = state(await page.evaluate(CAPTION_STATE))
            assert shown["text"] == "First sentence, finished. Streaming world, <b>done</b>. Timed words."

            # the daemon restarts (same port, as with the default server.port): the page reconnects
            daemon.stop()
            assert await page.wait_for("document.body.dataset.connection === 'reconnecting'", 30)
            daemon = FakeDaemon(runtime, handler, port=port)
            assert await page.wait_for("document.body.dataset.connection === 'connected'", 60)
            daemon.publish(final_event("1", "After the restart."))
            assert await page.wait_for("document.getElementById('text').textContent.endsWith('After the restart.')", 30)
            await page.screenshot(tmp_path / "captions-restarted.png")

            # status=always keeps the badge over the captions
            await page.call("Page.navigate", url=web_pages.captions_url(daemon.server.http_url, token, status="always"))
            assert await page.wait_for("document.body.dataset.connection === 'connected' && "
                                       "location.search.includes('status=always')", 60)
            daemon.publish(final_event("4", "Badge stays."))
            assert await page.wait_for("document.getElementById('text').textContent === 'Badge stays.'", 30)
            assert json.loads(await page.evaluate(BADGE)) == ["block", "listening"]

    try:
        asyncio.run(script())
    finally:
        browser.close()
        daemon.stop()
        shutil.rmtree(runtime, ignore_errors=True)
    asked = [path for path, _ in handler.requests]
    assert "/captions" in asked and "/captions.js" in asked and "/captions.css" in asked
    assert all("token" not in query for _, query in handler.requests)  # the fragment never reaches the server


def test_page_shows_the_sources_asked_for_and_labels_both(tmp_path):
    runtime = Path(tempfile.mkdtemp(prefix="qasr-web-"))
    daemon = FakeDaemon(runtime, PagesHandler())
    url = web_pages.captions_url(daemon.server.http_url, daemon.server.token, source="both", lines=4)
    browser = Browser(url, tmp_path / "profile")

    def sourced(event: dict, source: str) -> dict:
        return {**event, "source": source}

    async def script():
        async with browser as page:
            assert await page.wait_for("document.body.dataset.connection === 'connected'", 90)
            daemon.publish(sourced(final_event("1", "The video says hello."), "system"))
            daemon.publish(sourced(final_event("2", "Not shown."), "ws:c1"))
            daemon.publish(sourced(partial_event("3", "I ", "answer"), "mic"))
            assert await page.wait_for("document.querySelector('#text .tentative') !== null", 30)
            shown = state(await page.evaluate(CAPTION_STATE))
            assert shown["text"] == "them: The video says hello. you: I answer"
            assert shown["tentative"] == "answer"

    try:
        asyncio.run(script())
    finally:
        browser.close()
        daemon.stop()
        shutil.rmtree(runtime, ignore_errors=True)


def test_page_without_a_token_says_how_to_get_one(tmp_path):
    runtime = Path(tempfile.mkdtemp(prefix="qasr-web-"))
    daemon = FakeDaemon(runtime, PagesHandler())
    browser = Browser(f"{daemon.server.http_url}/captions", tmp_path / "profile")

    async def script():
        async with browser as page:
            assert await page.wait_for("document.body.dataset.connection === 'failed'", 60)
            assert "--print-url" in await page.evaluate("document.getElementById('status').textContent")

    try:
        asyncio.run(script())
    finally:
        browser.close()
        daemon.stop()
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.mark.system
def test_running_daemon_serves_the_page_and_chromium_shows_its_transcript(tmp_path, pulse_server, tiny_bundle):
    from tests.fixtures.desktop import espeak_wav
    from tests.harness.daemon import DaemonProcess

    env = DaemonProcess(tmp_path, extra_env=pulse_server.client_env)
    browser = None
    try:
        env.start(tiny_bundle, "--set", "vad.hangover_ms=450", "--set", "output.sink=none")
        assert env.wait_status(lambda s: s["state"] == "listening", timeout=60)["state"] == "listening"
        info = env.server_info()
        with urllib.request.urlopen(f"{info['http_url']}/captions", timeout=30) as page:
            assert page.status == 200 and b"captions" in page.read().lower()
        url = subprocess.run([sys.executable, "-m", "qasr", "captions", "--print-url"], env=env.env,
                             capture_output=True, text=True, timeout=60).stdout.strip()
        assert url.startswith(f"{info['http_url']}/captions#token=")
        browser = Browser(url, tmp_path / "profile")
        speech = espeak_wav("hello world, this is a web captions test")

        async def script():
            async with browser as page:
                assert await page.wait_for("document.body.dataset.connection === 'connected'", 90)
                assert json.loads(await page.evaluate(BADGE))[1] == "listening"  # the daemon's own state
                player = threading.Thread(target=pulse_server.play, args=(speech,))
                player.start()
                try:
                    text = await page.wait_for("(e => e && e.textContent.trim())(document.getElementById('text'))",
                                               180)
                finally:
                    await asyncio.to_thread(player.join)
                assert text, f"no transcript on the page; daemon log:\n{env.log()[-2000:]}"
                await page.screenshot(tmp_path / "captions-daemon.png")

        asyncio.run(script())
        assert "token=" not in env.log()  # neither the page request nor the WebSocket logged the token
    finally:
        if browser is not None:
            browser.close()
        env.stop()
