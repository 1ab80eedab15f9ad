"""The built book as a reader's browser shows it, opened from files and served over HTTP.

Debian's chromium, driven by selenium through Debian's ``chromedriver`` (``apt-get install
chromium-driver``), opens every page of the site that ``make book`` built (``_build/html``, or the
folder in ``BOOK_HTML``) and checks what a reader would see break: console errors, requests that
fail or that would leave the machine (the browser cannot resolve any other host), math that
MathJax did not typeset or typeset as an error, ``$$`` left in the text, images that did not
load. Then it works the controls: the sidebar toggle on a wide screen, the chapter list and the
page's contents on a phone, the search, the dark-mode switch and the notebook download. A
screenshot of every page at both widths goes to ``_build/screenshots/<width>/``.

``make browser`` runs this file once the book is built. Without a built book or without
chromedriver the tests are skipped, except under CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchWindowException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("BOOK_HTML", REPO / "_build" / "html"))
SCREENSHOTS = SITE.parent / "screenshots"
WIDE, PHONE = 1400, 400  # px: the theme shows the sidebar from 992 px up
HEIGHT = 1000  # px of the window; screenshots take the whole page, up to MAX_SHOT
MAX_SHOT = 8000  # px: the bottom of a longer page is left out of its screenshot
WAIT = 30  # s: the longest a page, MathJax or a control may take
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    # nothing leaves the machine: every host but the local server fails to resolve
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
NOT_OUTSIDE = ("data:", "blob:", "about:", "chrome:", "chrome-extension:", "devtools:")

# Runs in the page once it has loaded: waits for MathJax and the images, then reports.
INSPECT_PAGE = """
const done = arguments[arguments.length - 1];
(async () => {
  // a page still being replaced has no body yet: wait for the loaded document
  for (let i = 0; i < 200 && (!document.body || document.readyState !== "complete"); i++) {
    await new Promise((later) => setTimeout(later, 50));
  }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const images = [...document.images];
  for (const img of images) {
    img.loading = "eager";
    if (!img.complete) {
      await new Promise((loaded) => {
        img.addEventListener("load", loaded);
        img.addEventListener("error", loaded);
        setTimeout(loaded, 10000);
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
    // MathJax shows a macro it does not know as its name in red
    undefinedMacros: [...document.querySelectorAll('mjx-mtext[style*="color: red"]')]
      .map((e) => e.closest("mjx-container").textContent.slice(0, 80)),
    rawDollars: text.textContent.includes("$$"),
    brokenImages: images.filter((i) => !(i.complete && i.naturalWidth > 0))
      .map((i) => i.getAttribute("src")),
  };
})().then(done, (error) => done({scriptError: String(error)}));
"""


def missing(reason: str) -> None:
    """Skip for want of ``reason``; under CI, fail: there the test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must build the book and install chromium-driver first)")
    pytest.skip(reason)


def site_pages(site: Path) -> list[str]:
    """The site's pages: its HTML files, less theme templates (under ``_*/``) and redirects."""
    pages = []
    for path in sorted(site.rglob("*.html")):
        page = path.relative_to(site).as_posix()
        redirect = 'http-equiv="refresh"' in path.read_text(encoding="utf8").lower()
        if not page.startswith("_") and "/_" not in page and not redirect:
            pages.append(page)
    return pages


@dataclass
class PageReport:
    """What went wrong on one page (empty: nothing)."""

    url: str
    math: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, found: list[str]) -> None:
        if found:
            self.problems.setdefault(kind, []).extend(found)


class Browser:
    """One headless chromium, its console and network logs read after each page."""

    def __init__(self, chromedriver: str) -> None:
        options = webdriver.ChromeOptions()
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        service = webdriver.ChromeService(executable_path=chromedriver)
        self.driver = webdriver.Chrome(options=options, service=service)
        self.driver.set_page_load_timeout(WAIT)
        self.driver.set_script_timeout(WAIT)
        self.width(WIDE)

    def width(self, pixels: int, height: int = HEIGHT) -> None:
        """Lay pages out ``pixels`` wide; below the theme's breakpoint as a phone does."""
        self.pixels = pixels
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": pixels, "height": height, "deviceScaleFactor": 1, "mobile": pixels < 992},
        )

    def open(self, url: str) -> None:
        """Load ``url`` with the logs of earlier pages cleared."""
        self.logs()
        self.driver.get(url)

    def logs(self) -> tuple[list[dict], list[dict]]:
        """The console entries and the network events since the last call."""
        console = self.driver.get_log("browser")
        performance = self.driver.get_log("performance")
        network = [json.loads(entry["message"])["message"] for entry in performance]
        return console, [event for event in network if event["method"].startswith("Network.")]

    def inspect(self, url: str, base: str) -> PageReport:
        """Open ``url`` and report what broke on it; requests outside ``base`` count as leaving."""
        self.open(url)
        found = self.driver.execute_async_script(INSPECT_PAGE)
        console, network = self.logs()
        report = PageReport(url=url, math=found.get("math", 0))
        report.note("script", [found["scriptError"]] if "scriptError" in found else [])
        report.note("math not typeset", found.get("untypeset", []))
        report.note("MathJax errors", found.get("mathErrors", []))
        report.note("undefined TeX macros", found.get("undefinedMacros", []))
        report.note("raw $$", ["$$ left in the text"] if found.get("rawDollars") else [])
        report.note("images not loaded", found.get("brokenImages", []))
        report.note("console errors", [e["message"] for e in console if e["level"] == "SEVERE"])
        report.note("requests", failed_requests(network, base))
        return report

    def screenshot(self, path: Path) -> None:
        """The whole page (up to MAX_SHOT px tall) as a PNG.

        The window is made as tall as the page for the shot, at its width, and put back
        after: chromium's "capture beyond the viewport" lays the page out anew for the shot,
        and this theme's layout then came out shifted to the left, cut off.
        """
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        self.width(self.pixels, height=min(int(size["height"]), MAX_SHOT))
        try:
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
        finally:
            self.width(self.pixels)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def visible(self, selector: str):
        """The one element matching ``selector`` that a reader can see (fails if not one).

        It is waited for: the theme's primary sidebar comes in with a quarter-second transition
        (visibility, opacity, margin) after the page has loaded, and its search box looked at
        in that moment is not yet displayed.
        """

        def shown():
            found = self.driver.find_elements(By.CSS_SELECTOR, selector)
            return [e for e in found if e.is_displayed()]

        try:
            self.wait(lambda: len(shown()) == 1, "")
        except TimeoutException:
            pass
        elements = shown()
        assert len(elements) == 1, f"{len(elements)} visible elements match {selector!r}"
        return elements[0]

    def present(self, selector: str, at_least: int) -> list:
        """The elements matching ``selector``, once there are ``at_least`` of them."""
        found = lambda: self.driver.find_elements(By.CSS_SELECTOR, selector)  # noqa: E731
        self.wait(lambda: len(found()) >= at_least, f"fewer than {at_least} {selector!r}")
        return found()

    def wait(self, condition, message: str):
        """``condition()`` once true, within WAIT seconds (else a timeout saying ``message``)."""
        return WebDriverWait(self.driver, WAIT).until(lambda _: condition(), message)

    def close(self) -> None:
        self.driver.quit()


def failed_requests(network: list[dict], base: str) -> list[str]:
    """Requests that failed (an error or an HTTP status of 400 up) or that left ``base``."""
    failed, urls = [], {}
    for event in network:
        params = event["params"]
        if event["method"] == "Network.requestWillBeSent":
            url = urls[params["requestId"]] = params["request"]["url"]
            if not url.startswith((base, *NOT_OUTSIDE)):
                failed.append(f"outside the site: {url}")
        elif event["method"] == "Network.responseReceived":
            if params["response"]["status"] >= 400:
                failed.append(f"{params['response']['status']}: {params['response']['url']}")
        elif event["method"] == "Network.loadingFailed" and not params.get("canceled"):
            failed.append(f"{params['errorText']}: {urls.get(params['requestId'], '?')}")
    return failed


# ----- fixtures: the built site, served and opened in one browser -----


@pytest.fixture(scope="module")
def site() -> Path:
    if not (SITE / "index.html").is_file():
        missing(f"no built book in {SITE} (make book builds it)")
    return SITE


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The site served over HTTP on 127.0.0.1; yields its base URL."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format, *args) -> None:
            pass

    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(site: Path) -> Iterator[Browser]:  # no site, no need to start a browser
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        missing("chromedriver not found (Debian: apt-get install chromium-driver)")
    opened = Browser(chromedriver)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(params=["file", "http"])
def base(request, site: Path) -> str:
    """The site's base URL, opened from files or served over HTTP."""
    return site.as_uri() + "/" if request.param == "file" else request.getfixturevalue("served")


@pytest.fixture
def wide(browser: Browser) -> Browser:
    browser.width(WIDE)
    return browser


@pytest.fixture
def phone(browser: Browser) -> Iterator[Browser]:
    browser.width(PHONE)
    yield browser
    browser.width(WIDE)


def chapter(site: Path) -> str:
    """A page with a notebook to download (an executed chapter)."""
    return next(
        page for page in site_pages(site) if ".ipynb" in (site / page).read_text(encoding="utf8")
    )


# ----- every page -----


def test_every_page_reads_cleanly(wide: Browser, site: Path, base: str):
    reports = []
    for page in site_pages(site):
        reports.append(wide.inspect(base + page, base))
        if base.startswith("http"):  # the screenshots are of the served site
            wide.screenshot(SCREENSHOTS / str(WIDE) / page.replace(".html", ".png"))
    broken = [report for report in reports if report.problems]
    assert not broken, "\n".join(
        f"{report.url}: {kind}: {found}"
        for report in broken
        for kind, found in report.problems.items()
    )
    assert sum(report.math for report in reports) > 0  # the math checks did look at math


def test_every_page_fits_a_phone(phone: Browser, site: Path, served: str):
    too_wide, broken = {}, {}
    for page in site_pages(site):
        report = phone.inspect(served + page, served)
        if report.problems:
            broken[page] = report.problems
        width = phone.driver.execute_script("return document.documentElement.scrollWidth")
        if width > PHONE:
            too_wide[page] = width
        phone.screenshot(SCREENSHOTS / str(PHONE) / page.replace(".html", ".png"))
    assert broken == {}
    assert too_wide == {}, f"pages wider than a {PHONE} px phone (px)"


# ----- the controls -----


def test_the_sidebar_toggle_hides_and_shows_the_sidebar_on_a_wide_screen(wide: Browser, served):
    wide.open(served + "book/intro.html")
    sidebar = wide.driver.find_element(By.ID, "pst-primary-sidebar")
    wide.wait(sidebar.is_displayed, "the sidebar is not shown")
    toggle = wide.visible(".primary-toggle")
    toggle.click()
    wide.wait(lambda: not sidebar.is_displayed(), "the sidebar stayed")
    toggle.click()
    wide.wait(sidebar.is_displayed, "the sidebar did not come back")


def test_the_menu_shows_the_chapter_list_on_a_phone(phone: Browser, served, site: Path):
    phone.open(served + chapter(site))
    # the chapter list: the top level (a chapter's sections open under it on demand)
    chapters = phone.present(".bd-docs-nav .toctree-l1 > a.reference", at_least=5)
    titles = [link.get_attribute("textContent").strip() for link in chapters]
    assert len(titles) >= 5 and not any(link.is_displayed() for link in chapters)
    phone.visible(".primary-toggle").click()
    menu = phone.driver.find_element(By.ID, "pst-primary-sidebar-modal")
    phone.wait(lambda: menu.get_attribute("open") is not None, "the menu did not open")
    shown = menu.find_elements(By.CSS_SELECTOR, ".toctree-l1 > a.reference")
    phone.wait(lambda: all(link.is_displayed() for link in shown), "chapters not shown")
    assert [link.text.strip() for link in shown] == titles
    menu.send_keys(Keys.ESCAPE)
    phone.wait(lambda: menu.get_attribute("open") is None, "the menu did not close")


def test_the_contents_button_shows_the_page_sections_on_a_phone(phone: Browser, served, site):
    phone.open(served + chapter(site))
    sections = phone.driver.find_elements(By.CSS_SELECTOR, "#pst-page-toc-nav a")
    titles = [link.get_attribute("textContent").strip() for link in sections]
    assert titles and not any(link.is_displayed() for link in sections)
    phone.visible(".secondary-toggle").click()
    contents = phone.driver.find_element(By.ID, "pst-secondary-sidebar-modal")
    phone.wait(lambda: contents.get_attribute("open") is not None, "the contents did not open")
    shown = contents.find_elements(By.CSS_SELECTOR, "#pst-page-toc-nav a")
    phone.wait(lambda: all(link.is_displayed() for link in shown), "sections not shown")
    assert [link.text.strip() for link in shown] == titles
    contents.send_keys(Keys.ESCAPE)
    phone.wait(lambda: contents.get_attribute("open") is None, "the contents did not close")


def test_one_search_box_finds_hits_with_readable_snippets(wide: Browser, base: str):
    wide.open(base + "book/intro.html")
    field = wide.visible(".search-button-field")  # the page's one search box
    field.click()
    box = wide.visible("#pst-search-dialog input[name=q]")
    box.send_keys("posterior", Keys.ENTER)
    wide.wait(lambda: "search.html?q=posterior" in wide.driver.current_url, "no search page")
    status = wide.driver.find_element(By.CSS_SELECTOR, "#search-results .search-summary")
    wide.wait(lambda: "found" in status.text, "the search did not finish")
    hits = wide.driver.find_elements(By.CSS_SELECTOR, "#search-results ul.search > li")
    assert hits
    wide.wait(
        lambda: all(hit.find_elements(By.CSS_SELECTOR, ".ddpm-snippet") for hit in hits),
        "a hit has no snippet",
    )
    wide.driver.execute_async_script(
        "const done = arguments[0]; MathJax.startup.promise.then(() => done());"
    )
    snippets = [hit.find_element(By.CSS_SELECTOR, ".ddpm-snippet") for hit in hits]
    for snippet in snippets:
        text = snippet.text
        assert len(text) > 40, text
        assert not any(raw in text for raw in ("\\(", "\\[", "$$", "glue(")), text
        assert not snippet.find_elements(By.CSS_SELECTOR, ".math:not(:has(mjx-container))")
    marked = [
        mark.text.lower()
        for s in snippets
        for mark in s.find_elements(By.CLASS_NAME, "highlighted")
    ]
    assert "posterior" in marked
    console, network = wide.logs()
    assert [e["message"] for e in console if e["level"] == "SEVERE"] == []
    assert failed_requests(network, base) == []


def test_the_dark_mode_switch_changes_the_page(wide: Browser, served):
    wide.open(served + "book/intro.html")
    wide.driver.execute_script("localStorage.clear()")
    wide.driver.refresh()
    look = (
        "return [document.documentElement.dataset.theme,"
        " getComputedStyle(document.body).backgroundColor]"
    )
    before = wide.driver.execute_script(look)
    wide.visible(".theme-switch-button").click()
    after = wide.driver.execute_script(look)
    assert after[0] != before[0] and after[1] != before[1], (before, after)
    wide.visible(".theme-switch-button").click()
    assert wide.driver.execute_script(look) == before


def test_the_download_link_serves_a_notebook(wide: Browser, site: Path, base: str, tmp_path: Path):
    wide.driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
    )
    wide.open(base + chapter(site))
    wide.visible(".dropdown-download-buttons > button").click()
    link = wide.visible(".dropdown-download-buttons a[href$='.ipynb']")
    saved = tmp_path / link.get_attribute("href").rsplit("/", 1)[-1]
    home = wide.driver.current_window_handle
    link.click()

    def served_notebook() -> str | None:
        """The notebook's text: saved as a download, or shown in the tab the link opened."""
        if saved.is_file():
            return saved.read_text(encoding="utf8")
        for tab in set(wide.driver.window_handles) - {home}:
            try:
                wide.driver.switch_to.window(tab)
                return wide.driver.find_element(By.TAG_NAME, "body").text or None
            except NoSuchWindowException:  # the tab closed: it turned into a download
                return None
            finally:
                wide.driver.switch_to.window(home)
        return None

    try:
        text = wide.wait(served_notebook, f"{saved.name} was neither saved nor shown")
    finally:
        for tab in set(wide.driver.window_handles) - {home}:
            wide.driver.switch_to.window(tab)
            wide.driver.close()
        wide.driver.switch_to.window(home)
    notebook = json.loads(text)
    assert notebook["nbformat"] == 4
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and any(cell["outputs"] for cell in code)  # executed
