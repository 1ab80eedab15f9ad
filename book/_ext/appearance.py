"""How the book's own HTML looks (``static/appearance.css``): dark mode without light panels,
and the tables of results that pages write from code cells.

In dark mode the pydata theme puts every HTML output of a cell on a light-grey panel with dark
text, so that widgets written for a white page stay readable. The book's HTML outputs are its
own (check badges, tables of results) and are written for either background, so they follow
the theme; figures keep their white backgrounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

STATIC = Path(__file__).parent / "static"


def serve_static(app: Sphinx) -> None:
    """``builder-inited``: serve static/ (other extensions serve it too: add it once)."""
    if str(STATIC) not in app.config.html_static_path:
        app.config.html_static_path.append(str(STATIC))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", serve_static)
    app.add_css_file("appearance.css")
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
