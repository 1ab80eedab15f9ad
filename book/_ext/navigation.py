"""Navigation that works at every width, and search that works from files as well as over HTTP.

- pydata-sphinx-theme 0.17 renders a header strip above every page when its ``navbar_persistent``
  option is unset: a second search box, and a menu button that sphinx-book-theme's stylesheet
  hides. Both themes' scripts bind to the first ``.primary-toggle`` of the page, which is then that
  hidden button, so the article header's toggle neither hides the sidebar on a wide screen nor
  opens the chapter list on a phone (sphinx-book-theme issues 917 and 935), and the same goes
  for the page's contents (``.secondary-toggle``). With ``navbar_persistent`` empty the strip is
  not rendered at all: the article header's toggles are the page's only ones, and the sidebar's
  search field (the header's search button on a phone) opens the theme's one search box.
- Sphinx's search page fetches every hit's page to cut a snippet from it. A browser refuses
  ``fetch`` to a page opened from a file (one console error per hit, and no snippets), and the
  snippet is cut from the raw text of the page: code cells, and TeX cut in the middle of a
  formula. Here each page's prose is written at build time to ``_static/search-text/<page>.js``,
  which the search page loads as a script (scripts load from files too);
  ``static/search-snippets.js`` then shows, under each hit, the sentences that contain the search
  words, with their math typeset by MathJax (served to the search page as well).
- A long inline literal (a URL) stays on one line and widens the page past a phone's screen;
  ``static/navigation.css`` lets it break.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.config import Config

STATIC = Path(__file__).parent / "static"
TEXT_FOLDER = "search-text"  # under _static/: one script per page
# not prose: code cells (input and output), permalinks, a page's date and tags, tables of contents
NOT_PROSE = "div.cell, .headerlink, script, style, pre, .post-meta, .toctree-wrapper"
PROSE = ["p", "figcaption", "caption", "dt", "th"]  # what a reader reads, math included
SPACES = re.compile(r"\s+")


def drop_header_strip(app: Sphinx, config: Config) -> None:
    """``config-inited``: an empty ``navbar_persistent`` (unless set), own search snippets."""
    config.html_theme_options.setdefault("navbar_persistent", [])
    config.html_show_search_summary = False  # static/search-snippets.js makes them


def serve_static(app: Sphinx) -> None:
    """``builder-inited``: serve static/ (kramdown_math serves it too: add it once)."""
    if str(STATIC) not in app.config.html_static_path:
        app.config.html_static_path.append(str(STATIC))


def page_prose(body: str) -> list[tuple[str, list[str]]]:
    """The readable paragraphs of a page's HTML body, in order, each with the ids of the sections
    it lies in (outermost first). Inline math stays as MathJax reads it, ``\\(...\\)``."""
    soup = BeautifulSoup(body, "html.parser")
    for element in soup.select(NOT_PROSE):
        element.decompose()
    prose = []
    for element in soup.find_all(PROSE):
        if element.find_parent(PROSE) is not None:
            continue  # read with the element it lies in (a figure's caption, say)
        text = SPACES.sub(" ", element.get_text()).strip()
        if text:
            sections = [s["id"] for s in reversed(element.find_parents("section")) if s.get("id")]
            prose.append((text, sections))
    return prose


def write_page_text(
    app: Sphinx, pagename: str, templatename: str, context: dict, doctree: nodes.document | None
) -> None:
    """``html-page-context``: write the page's prose as a script the search page can load, and
    give the search page MathJax and the snippet script."""
    if doctree is not None and "body" in context:
        script = Path(app.outdir, "_static", TEXT_FOLDER, *f"{pagename}.js".split("/"))
        script.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps([pagename, page_prose(context["body"])], ensure_ascii=False)
        script.write_text(f"DDPM_SEARCH_TEXT.add(...{data});\n", encoding="utf8")
    if pagename == "search" and app.builder.math_renderer_name == "mathjax":
        if app.config.mathjax3_config:
            body = f"window.MathJax = {json.dumps(app.config.mathjax3_config)}"
            app.builder.add_js_file("", body=body)
        app.builder.add_js_file(app.config.mathjax_path, defer="defer")
        app.builder.add_js_file("search-snippets.js")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_css_file("navigation.css")
    app.connect("config-inited", drop_header_strip)
    app.connect("builder-inited", serve_static)
    app.connect("html-page-context", write_page_text)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
