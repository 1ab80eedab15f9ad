"""ddpm.symbolic.display: a derivation's steps shown on a book page."""

from __future__ import annotations

import subprocess
import sys

import IPython.display
import pytest
import sympy as sp

from ddpm.symbolic import SYMBOLS, Step, show_steps
from ddpm.symbolic.algebra import equation, label
from ddpm.symbolic.display import step_latex, sum_lines

s = SYMBOLS
a = sp.symbols("a1:4", real=True)
b = sp.symbols("b1:4", real=True)
gap = sp.expand(
    sum(x**2 for x in a) * sum(y**2 for y in b) - sum(x * y for x, y in zip(a, b, strict=True)) ** 2
)


@pytest.fixture
def shown(monkeypatch) -> list:
    """What show_steps hands to IPython's display, in order."""
    objects = []
    monkeypatch.setattr(IPython.display, "display", objects.append)
    return objects


def test_each_step_is_a_numbered_sentence_then_its_equation(shown):
    steps = (
        Step("first: 1 - alpha_t is beta_t", equation(label("y"), 1 - s.alpha_t)),
        Step("a *literal* [x]_t <b>", s.alpha_t * s.alpha_bar_prev),
    )
    show_steps(steps)
    assert [type(obj) for obj in shown] == [IPython.display.Markdown, IPython.display.Math] * 2
    assert shown[0].data == r"*Step 1.* first: 1 - alpha\_t is beta\_t"
    assert shown[1].data == sp.latex(sp.Eq(sp.Symbol("{y}"), s.beta_t, evaluate=False))
    assert shown[2].data == r"*Step 2.* a \*literal\* \[x\]\_t \<b\>"
    assert shown[3].data == sp.latex(s.alpha_bar_t)  # written in the paper's notation


def test_a_long_sum_is_cut_into_lines_that_join_back_to_sympys_latex():
    for per_line in (1, 2, 3, 4, 9):
        lines = sum_lines(gap, per_line)
        assert len(lines) == -(-len(gap.args) // per_line)
        assert " ".join(lines) == sp.latex(gap)
        assert all(line[0] in "+-" for line in lines[1:])


def test_a_long_equation_is_set_over_indented_lines():
    long_sum = equation(label(r"\Delta"), gap)  # nine terms
    assert step_latex(long_sum) == sp.latex(long_sum)
    tex = step_latex(long_sum, terms_per_line=3)
    lines = tex.splitlines()
    assert lines[0] == r"\begin{aligned}" and lines[-1] == r"\end{aligned}"
    body = lines[1:-1]
    first, *rest = sum_lines(gap, 3)
    assert body == [rf"& {{\Delta}} = {first} \\", rf"& \qquad {{}} {rest[0]} \\"] + [
        rf"& \qquad {{}} {rest[1]}"
    ]
    # short sums, expressions that are not equations, and relations stay on one line
    short = equation(label("y"), a[0] + a[1] - b[0])
    assert step_latex(short, terms_per_line=3) == sp.latex(short)
    assert step_latex(gap, terms_per_line=3) == sp.latex(gap)
    assert step_latex(sp.Ge(gap, 0), terms_per_line=3) == sp.latex(sp.Ge(gap, 0))


def test_importing_the_package_does_not_import_ipython():
    code = "import sys, ddpm.symbolic; print('IPython' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
