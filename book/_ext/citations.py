"""Author-year citations in round brackets, as papers write them, and a bibliography whose
entries are labelled the way the text cites them.

sphinxcontrib-bibtex's ``author_year`` referencing style puts years and parenthetical citations
in square brackets ("Ho et al. [2020]"). This extension registers the same style with round
brackets under the name ``author_year_round``, for ``bibtex_reference_style``:
``{cite:t}`` reads "Ho et al. (2020)" and ``{cite:p}`` "(Ho et al., 2020)".

The bibliography's own labels come from its formatting style, ``alpha`` by default ("[HJA20]"),
which a reader cannot match to "Ho et al. (2020)". Under the same name, for
``bibtex_default_style``, this extension registers ``alpha`` with labels that read as a textual
citation does: the last names as the referencing style writes them (one, two joined by "and",
or the first and "et al."), then the year in brackets. Two works that would share a label get
the letters a, b, ... after the year, in the bibliography's order. The brackets that Sphinx
puts around every citation label are hidden by ``static/citations.css``.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pybtex.plugin
from pybtex.database import Entry
from pybtex.style.formatting.alpha import Style as AlphaStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.application import Sphinx
from sphinxcontrib.bibtex.plugin import register_plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle, PersonStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

STYLE_NAME = "author_year_round"
STATIC = Path(__file__).parent / "static"


def round_brackets() -> BracketStyle:
    return BracketStyle(left="(", right=")")


@dataclass
class RoundAuthorYearStyle(AuthorYearReferenceStyle):
    """``author_year`` with every kind of citation in round brackets."""

    bracket_textual: BracketStyle = field(default_factory=round_brackets)
    bracket_parenthetical: BracketStyle = field(default_factory=round_brackets)
    bracket_author: BracketStyle = field(default_factory=round_brackets)
    bracket_label: BracketStyle = field(default_factory=round_brackets)
    bracket_year: BracketStyle = field(default_factory=round_brackets)


def authors(entry: Entry, person: PersonStyle) -> str:
    """The authors (else editors) of ``entry`` as a textual citation names them."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    if not people:
        raise ValueError(f"bibliography entry {entry.key!r} has no author or editor")
    names = [
        person.style_plugin.format(one, person.abbreviate).format().render_as("text")
        for one in people
    ]
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    return f"{names[0]} et al."


class AuthorYearLabels(BaseLabelStyle):
    """Labels "Ho et al. (2020)", "Kingma and Welling (2014)", "Vincent (2011)"."""

    def format_labels(self, sorted_entries: Iterable[Entry]) -> Iterator[str]:
        person = RoundAuthorYearStyle().person  # name the authors as the citations do
        entries = list(sorted_entries)
        stems = [(authors(e, person), e.fields.get("year", "n.d.")) for e in entries]
        shared, seen = Counter(stems), Counter()
        for stem in stems:
            who, year = stem
            suffix = ""
            if shared[stem] > 1:
                suffix = string.ascii_lowercase[seen[stem]]
                seen[stem] += 1
            yield f"{who} ({year}{suffix})"


class AuthorYearAlphaStyle(AlphaStyle):
    """pybtex's ``alpha`` entries (sorted by author, year, title) with author-year labels."""

    default_label_style = STYLE_NAME


def serve_static(app: Sphinx) -> None:
    """``builder-inited``: serve static/ (other extensions serve it too: add it once)."""
    if str(STATIC) not in app.config.html_static_path:
        app.config.html_static_path.append(str(STATIC))


def setup(app: Sphinx) -> dict[str, Any]:
    # sphinxcontrib-bibtex looks the styles up by name when the builder starts
    register_plugin("sphinxcontrib.bibtex.style.referencing", STYLE_NAME, RoundAuthorYearStyle)
    pybtex.plugin.register_plugin("pybtex.style.labels", STYLE_NAME, AuthorYearLabels)
    pybtex.plugin.register_plugin("pybtex.style.formatting", STYLE_NAME, AuthorYearAlphaStyle)
    app.connect("builder-inited", serve_static)
    app.add_css_file("citations.css")
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
