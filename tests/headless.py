"""Look at a built book the way a reader's browser does.

Serves a site from 127.0.0.1, opens every page in Debian's headless Chromium over the DevTools
protocol, and reports what a reader would see break: math left untypeset or typeset with errors,
``$$`` left in the text, images that did not load, console errors, and any request that leaves
the local server. Screenshots of each page are saved.

Run it on a built book with ``python tests/headless.py _build/html``.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import websocket

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,900",
    "--remote-debugging-port=0",
]

# Runs in the page once it has loaded: waits for MathJax and the images, then reports.
INSPECT_PAGE = """
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const images = [...document.images];
  for (const img of images) {
    img.loading = "eager";
    if (!img.complete) {
      await new Promise((done) => {
        img.addEventListener("load", done);
        img.addEventListener("error", done);
        setTimeout(done, 10000);
      });
    }
  }
  const text = (document.querySelector("article") || document.body).cloneNode(true);
  text.querySelectorAll("pre, code, script, style, mjx-container").forEach((e) => e.remove());
  return {
    math: document.querySelectorAll(".math").length,
    untypeset: [...document.querySelectorAll(".math")]
      .filter((e) => !e.querySelector("mjx-container")).map((e) => e.textContent.slice(0, 80)),
    mathErrors: [...document.querySelectorAll("mjx-merror")].map((e) => e.textContent),
    rawDollars: text.textContent.includes("$$"),
    images: images.length,
    brokenImages: images.filter((i) => !(i.complete && i.naturalWidth > 0))
      .map((i) => i.getAttribute("src")),
  };
})()
"""


def find_chromium() -> str | None:
    """Debian's chromium (the one CI installs), or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1; yields the base URL."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class PageReport:
    """What went wrong on one page (empty lists: nothing)."""

    url: str
    math: int = 0
    untypeset: list[str] = field(default_factory=list)
    math_errors: list[str] = field(default_factory=list)
    raw_dollars: bool = False
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)


class Chromium:
    """A headless Chromium with one tab, driven over the DevTools protocol."""

    def __init__(self, executable: str, profile: Path, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.events: list[dict] = []
        self._next_id = 0
        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helper processes too can be ended as one group
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{executable} did not start its DevTools endpoint")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        page = next(target for target in targets if target["type"] == "page")
        self.socket = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True
        )
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params) -> dict:
        """Send one command and return its result, keeping the events that arrive meanwhile."""
        self._next_id += 1
        self.socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == event for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {self.timeout} s")
            self.events.append(json.loads(self.socket.recv()))

    def inspect(self, url: str, base: str, screenshot: Path) -> PageReport:
        """Load ``url``, let MathJax finish, report what broke and save a screenshot."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        found = self.call(
            "Runtime.evaluate", expression=INSPECT_PAGE, awaitPromise=True, returnByValue=True
        )["result"]["value"]
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000)}
        shot = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={**clip, "scale": 1},
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        report = PageReport(
            url=url,
            math=found["math"],
            untypeset=found["untypeset"],
            math_errors=found["mathErrors"],
            raw_dollars=found["rawDollars"],
            images=found["images"],
            broken_images=found["brokenImages"],
        )
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] == "error":
                args = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                report.console_errors.append(args)
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                thrown = details.get("exception", {}).get("description", "")
                report.console_errors.append(
                    f"{details['text']} {thrown} at {details.get('url', '')}"
                )
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                report.console_errors.append(f"{entry['text']} {entry.get('url', '')}".strip())
            elif method == "Network.requestWillBeSent":
                requested = params["request"]["url"]
                if not requested.startswith((base, "data:", "blob:", "about:")):
                    report.external_requests.append(requested)
        return report

    def close(self) -> None:
        if getattr(self, "socket", None) is not None:
            self.socket.close()
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


def site_pages(site: Path) -> list[str]:
    """The site's pages: its HTML files, less theme templates (under ``_*/``) and redirects."""
    pages = []
    for path in sorted(site.rglob("*.html")):
        page = path.relative_to(site).as_posix()
        redirect = 'http-equiv="refresh"' in path.read_text(encoding="utf8").lower()
        if not page.startswith("_") and "/_" not in page and not redirect:
            pages.append(page)
    return pages


def check_site(site: Path, screenshots: Path, executable: str) -> list[PageReport]:
    """Open every page of ``site``; screenshots go to ``screenshots/<page>.png``."""
    pages = site_pages(site)
    with serve(site) as base, tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = Chromium(executable, Path(profile))
        try:
            return [
                browser.inspect(base + page, base, screenshots / page.replace(".html", ".png"))
                for page in pages
            ]
        finally:
            browser.close()


def problems(report: PageReport) -> list[str]:
    """What a reader would see broken on the page, in words."""
    found = []
    if report.untypeset:
        found.append(f"math not typeset: {report.untypeset}")
    if report.math_errors:
        found.append(f"MathJax errors: {report.math_errors}")
    if report.raw_dollars:
        found.append("raw $$ left in the text")
    if report.broken_images:
        found.append(f"images that did not load: {report.broken_images}")
    if report.console_errors:
        found.append(f"console errors: {report.console_errors}")
    if report.external_requests:
        found.append(f"requests outside the site: {report.external_requests}")
    return found


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else "_build/html")
    executable = find_chromium()
    if executable is None:
        print("chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    screenshots = site.parent / "screenshots"
    failed = 0
    for report in check_site(site, screenshots, executable):
        broken = problems(report)
        failed += bool(broken)
        status = "; ".join(broken) if broken else f"ok ({report.math} math, {report.images} images)"
        print(f"{report.url.rsplit('/', 1)[-1]}: {status}")
    print(f"screenshots in {screenshots}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
