"""Pages written as Jekyll posts: front matter ``layout``, ``title``, ``date``, ``tags``.

- A page without an H1 gets its front matter ``title`` as its H1, or, without a title either and a
  Jekyll post file name ``YYYY-MM-DD-slug.md``, the slug in title case (as Jekyll does). The H1 is
  added to the source before parsing, so the page's ``##`` sections nest under it without
  warnings; it takes the place of the blank line after the front matter when there is one, so
  line numbers in messages stay right.
- A page is a *post* when its front matter says ``layout: post``, or names no layout and has a
  ``date`` or a post file name (a page with ``layout: page``, say, is not). A post shows its
  ``date`` (or the file name's date) and its ``tags`` in a line under the title; other pages (an
  introduction, the references, an appendix) show neither.
- YAML reads ``date: 2026-11-28`` as a date object, which a notebook's metadata cannot hold (the
  execution cache fails to write it), so top-level dates are quoted in the source.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import yaml
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

logger = logging.getLogger(__name__)

FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?\n", re.DOTALL | re.MULTILINE)
POST_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})-(.+)$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
ATX_H1 = re.compile(r"^ {0,3}#(?:[ \t]|$)")
SETEXT_H1 = re.compile(r"^ {0,3}=+[ \t]*$")
MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
TOP_LEVEL_VALUE = re.compile(r"^([A-Za-z_][\w-]*):[ \t]*(\S.*?)[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Post:
    """What the layout shows of a page: its title (when it has no H1), and for a post its date
    and tags."""

    title: str | None
    date: Any
    tags: tuple[str, ...]
    is_post: bool


def read_post(docname: str, text: str) -> tuple[Post, int] | None:
    """The post metadata of a page and the offset where its body starts (None: not a post)."""
    match = FRONT_MATTER.match(text)
    try:
        front = (yaml.safe_load(match.group(1)) if match else None) or {}
    except yaml.YAMLError:
        return None  # MyST reports the malformed front matter
    name = POST_NAME.match(docname.rsplit("/", 1)[-1])
    if not isinstance(front, dict) or not (front or name):
        return None
    title = front.get("title") or (name.group(2).replace("-", " ").title() if name else None)
    tags = front.get("tags") or ()
    tags = tuple(str(tag) for tag in ([tags] if isinstance(tags, str) else tags))
    date = front.get("date") or (name.group(1) if name else None)
    layout = front.get("layout")
    is_post = layout == "post" or (layout is None and bool(date))
    return Post(str(title) if title else None, date, tags, is_post), match.end() if match else 0


def has_h1(body: str) -> bool:
    """Whether Markdown ``body`` has a level-one heading outside fenced blocks."""
    fence, previous = None, ""
    for line in body.splitlines():
        opener = FENCE.match(line)
        if fence:
            if opener and opener.group(1)[0] == fence[0] and len(opener.group(1)) >= len(fence):
                fence = None
        elif opener:
            fence = opener.group(1)
        elif ATX_H1.match(line) or (SETEXT_H1.match(line) and previous.strip()):
            return True
        previous = "" if fence else line
    return False


def prepare_post(app: Sphinx, docname: str, source: list[str]) -> None:
    """``source-read``: quote the front matter's dates; give a post without an H1 its title."""
    if not str(app.env.doc2path(docname)).endswith(".md"):
        return
    found = read_post(docname, source[0])
    if found is None:
        return
    post, start = found
    app.env.temp_data["jekyll_post"] = post
    front_matter, body = quote_dates(source[0][:start]), source[0][start:]
    if post.title is not None and not has_h1(body):
        heading = "# " + MARKDOWN_PUNCTUATION.sub(r"\\\1", post.title) + "\n"
        body = heading + (body[1:] if body.startswith("\n") else body)
    source[0] = front_matter + body


def quote_dates(front_matter: str) -> str:
    """Quote the top-level values that YAML would read as dates, line for line."""

    def quoted(match: re.Match) -> str:
        key, value = match.groups()
        try:
            parsed = yaml.safe_load(f"{key}: {value}")
        except yaml.YAMLError:
            return match.group(0)
        if isinstance(parsed, dict) and isinstance(parsed.get(key), dt.date):
            return f'{key}: "{value}"'
        return match.group(0)

    return TOP_LEVEL_VALUE.sub(quoted, front_matter)


def as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        return None


class PostMeta(SphinxTransform):
    """Put the post's date and tags in a line under its title."""

    default_priority = 500

    def apply(self, **kwargs: Any) -> None:
        post: Post | None = self.env.temp_data.get("jekyll_post")
        section = self.document.next_node(nodes.section)
        if post is None or not post.is_post or section is None or not (post.date or post.tags):
            return
        meta = nodes.paragraph(classes=["post-meta"])
        if post.date:
            date = as_date(post.date)
            if date is None:
                logger.warning(
                    f"front matter date {post.date!r} is not a date (YYYY-MM-DD)",
                    location=self.env.docname,
                    type="jekyll",
                    subtype="date",
                )
                return
            text = f"{date:%b} {date.day}, {date.year}"
            meta += nodes.inline(text, text, classes=["post-date"])
        for tag in post.tags:
            if len(meta):
                meta += nodes.Text(" \u00b7 ")
            meta += nodes.inline(tag, tag, classes=["post-tag"])
        section.insert(1, meta)  # after the title


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", prepare_post)
    app.add_transform(PostMeta)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
