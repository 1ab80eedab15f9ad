"""Author-year citations in round brackets, as papers write them.

sphinxcontrib-bibtex's ``author_year`` referencing style puts years and parenthetical citations
in square brackets ("Ho et al. [2020]"). This extension registers the same style with round
brackets under the name ``author_year_round``, for ``bibtex_reference_style``:
``{cite:t}`` reads "Ho et al. (2020)" and ``{cite:p}`` "(Ho et al., 2020)".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sphinx.application import Sphinx
from sphinxcontrib.bibtex.plugin import register_plugin
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.author_year import AuthorYearReferenceStyle

STYLE_NAME = "author_year_round"


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


def setup(app: Sphinx) -> dict[str, Any]:
    # sphinxcontrib-bibtex looks the style up by name when the builder starts
    register_plugin("sphinxcontrib.bibtex.style.referencing", STYLE_NAME, RoundAuthorYearStyle)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
