"""Show a derivation on a book page: each step as a numbered sentence, then its equation.

A derivation's ``steps`` are ``Step(description, expr)`` pairs (see :mod:`ddpm.symbolic.algebra`).
Equations are written in the paper's notation (:func:`paper_notation`). MathJax 3 does not break
long equations, so a page can ask for a long sum on the right of an equation to be set over
several lines. IPython is imported only when something is shown.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import sympy as sp

from ddpm.symbolic.algebra import Step, paper_notation

MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>])")


def sum_lines(total: sp.Expr, terms_per_line: int) -> list[str]:
    """The LaTeX of the sum ``total`` cut into lines of ``terms_per_line`` terms, in the order
    ``sympy.latex`` prints them; a line after the first starts with its sign, so the lines
    joined with spaces are ``sympy.latex(total)``."""
    lines, line = [], []
    for index, term in enumerate(total.as_ordered_terms()):
        tex = sp.latex(term)
        if index > 0:
            tex = f"- {tex[1:].lstrip()}" if tex.startswith("-") else f"+ {tex}"
        if len(line) == terms_per_line:
            lines.append(" ".join(line))
            line = []
        line.append(tex)
    return lines + [" ".join(line)]


def step_latex(expr: sp.Basic, terms_per_line: int | None = None) -> str:
    """The LaTeX of one step's expression in the paper's notation. With ``terms_per_line``, an
    equation whose right side is a longer sum is set over lines of that many terms, each line
    after the first indented (not aligned at the equals sign, whose left side may be long)."""
    expr = paper_notation(expr)
    if (
        terms_per_line is None
        or not isinstance(expr, sp.Equality)
        or len(sp.Add.make_args(expr.rhs)) <= terms_per_line
    ):
        return sp.latex(expr)
    first, *rest = sum_lines(expr.rhs, terms_per_line)
    lines = [f"& {sp.latex(expr.lhs)} = {first}"] + [rf"& \qquad {{}} {line}" for line in rest]
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"


def show_steps(steps: Iterable[Step], terms_per_line: int | None = None) -> None:
    """Display each step of a derivation: "*Step n.* description" as Markdown, then its
    equation as LaTeX (see :func:`step_latex` for ``terms_per_line``)."""
    from IPython.display import Markdown, Math, display

    for number, (description, expr) in enumerate(steps, 1):
        display(Markdown(f"*Step {number}.* " + MARKDOWN_SPECIAL.sub(r"\\\1", description)))
        display(Math(step_latex(expr, terms_per_line)))
