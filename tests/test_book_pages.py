"""The chapter pages as a reader gets them: code that fits the column, pages of readable length.

A code cell or code block wider than 88 columns scrolls sideways in the book's column (about
780 px at a 1400 px window), and a page much longer than 500 source lines is better split into
a section page. Both are read off the Markdown sources of every page in the table of contents.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
CHAPTERS = sorted(p for p in BOOK.glob("[01][0-9]*.md"))
PAGES = sorted(BOOK.glob("*.md"))
CODE_COLUMNS = 88
PAGE_LINES = 500
FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})(.*)$")
CODE_DIRECTIVES = ("{code-cell}", "{code-block}", "{code}")


def code_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line inside a code cell or code block; directives such as
    figures or exercises are followed into but their own text is not code."""
    stack: list[tuple[str, bool]] = []  # open fences: (marker, holds code)
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match:
            marker, info = match.group(1), match.group(2).strip()
            if stack and marker == stack[-1][0] and not info:
                stack.pop()
                continue
            if info or not stack:
                is_code = not info.startswith("{") or info.split()[0] in CODE_DIRECTIVES
                stack.append((marker, is_code))
                continue
        if stack and stack[-1][1]:
            found.append((number, line))
    return found


def test_code_lines_are_found():
    text = "\n".join(
        [
            "prose " * 20,
            "```{code-cell} ipython3",
            "x = 1",
            "```",
            "````{exercise}",
            "text, not code",
            "```python",
            "y = 2",
            "```",
            "````",
            "```",
            "z = 3",
            "```",
        ]
    )
    assert [line for _, line in code_lines(text)] == ["x = 1", "y = 2", "z = 3"]


def test_chapters_are_found():
    names = {p.name[:2] for p in CHAPTERS}
    assert names == {f"{n:02d}" for n in range(1, 12)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_code_fits_the_column(page):
    wide = [
        f"{page.name}:{number}: {len(line)} columns"
        for number, line in code_lines(page.read_text())
        if len(line) > CODE_COLUMNS
    ]
    assert not wide, "code wider than the column:\n" + "\n".join(wide)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_is_not_too_long(page):
    lines = len(page.read_text().splitlines())
    assert lines <= PAGE_LINES, f"{page.name} has {lines} lines; split it into sections"
