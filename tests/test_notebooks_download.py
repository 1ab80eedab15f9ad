"""The downloadable notebooks: the book's markdown rewritten for Jupyter (book/_ext/).

The rewriting rules are tested on small inputs (``jupyter_markdown``); one small book is built
to see the whole download: resolved references, glued values and figures, the install cell, and
a fresh kernel running it. The expectations come from kramdown's rule for ``$$``, from the
bibliography entry (three authors: "Ho et al."), and from Python's own formatting.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "book" / "_ext"))

from jupyter_markdown import jupyter_math, myst_left_in, resolve_roles, to_jupyter  # noqa: E402
from run_notebooks import raw_myst  # noqa: E402
from test_book_machinery import FIXTURE, build, small_book  # noqa: E402

# ----- math: kramdown's rule in Jupyter's dialect -----


def test_double_dollars_inside_a_paragraph_become_inline_math_on_one_line():
    text = "Pick $$\\beta_t$$ in $$(0,\n1)$$, small."
    assert jupyter_math(text) == "Pick $\\beta_t$ in $(0, 1)$, small."


def test_a_paragraph_that_is_one_equation_stays_display_math_without_its_label():
    text = "Before.\n\n$$\na = b \\tag{1}\n$$ (eq-ab)\n\nAfter $$c$$."
    assert jupyter_math(text) == "Before.\n\n$$\na = b \\tag{1}\n$$\n\nAfter $c$."


def test_an_equation_right_under_a_line_of_text_is_inline_as_in_kramdown():
    assert jupyter_math("so\n$$x = 1$$\n") == "so\n$x = 1$\n"


def test_two_equations_in_one_paragraph_are_both_inline():
    assert jupyter_math("$$a$$ and $$b$$") == "$a$ and $b$"


def test_code_blocks_keep_their_dollars_and_roles():
    code = "```python\nprint('$$x$$', '{eq}`1`')\n```"
    text = f"Text $$y$$.\n\n{code}\n"
    assert jupyter_math(text) == f"Text $y$.\n\n{code}\n"
    assert resolve_roles(code, lambda name, content: "X") == code


# ----- roles and directives: what the callbacks make of them -----


def test_every_role_is_replaced_by_what_the_resolver_returns():
    seen = []

    def role(name: str, content: str) -> str:
        seen.append((name, content))
        return f"<{len(seen)}>"

    text = "As {cite:t}`ho2020denoising` show, Eq. {eq}`4.1` holds for {glue:text}`n:,` draws."
    assert resolve_roles(text, role) == "As <1> show, Eq. <2> holds for <3> draws."
    assert seen == [("cite:t", "ho2020denoising"), ("eq", "4.1"), ("glue:text", "n:,")]


def test_a_directive_block_is_handed_over_with_its_argument_and_body():
    text = "Above $$a$$.\n\n```{glue:figure} fig-x\n:name: fig-x\n\nA caption.\n```\n\nBelow."
    parts = []

    def directive(name: str, argument: str, body: str) -> str:
        parts.append((name, argument, body))
        return "FIGURE"

    assert to_jupyter(text, lambda *a: "R", directive) == "Above $a$.\n\nFIGURE\n\nBelow."
    assert parts == [("glue:figure", "fig-x", ":name: fig-x\n\nA caption.\n")]


def test_what_a_directive_returns_is_not_rewritten_again():
    """An admonition's body, quoted, keeps the display math its own rewriting made."""
    quoted = "> $$\n> x\n> $$"
    assert to_jupyter(":::{admonition} T\nbody\n:::", lambda *a: "R", lambda *a: quoted) == quoted


def test_what_jupyter_would_show_raw_is_found_and_code_is_not():
    assert myst_left_in("See {numref}`fig-a`.") == ["{numref}`fig-a`"]
    assert myst_left_in("```{glue:math} eq-1\n```") == ["```{glue:math} eq-1\n```"]
    assert myst_left_in("so $$x$$ holds") == ["so $$x$$ holds"]
    assert myst_left_in("$$\nx\n$$\n\nso $x$ and `$$` and\n```\n{eq}`1` $$y$$\n```") == []


def test_the_runner_checks_markdown_cells_only(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("text = '{cite}`key` and $$x$$ here'"),
        nbformat.v4.new_markdown_cell("Fine: $x$.\n\n$$\ny\n$$"),
        nbformat.v4.new_markdown_cell("Raw: {cite}`key`."),
    ]
    path = tmp_path / "page.ipynb"
    nbformat.write(notebook, path)
    assert raw_myst(path) == ["cell 2: '{cite}`key`'"]


# ----- a built book's download -----

PAGE = """\
---
title: Notebook page
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {name: python3, display_name: Python 3, language: python}
---

# Notebook page

The steps $$\\beta_t$$ are small, as {cite:t}`ho2020denoising` chose them.

$$
a = b \\tag{1}
$$

Eq. {eq}`1` holds for {glue:text}`n:,` draws ({numref}`fig-line`).

```{code-cell}
import matplotlib.pyplot as plt
from myst_nb import glue

glue("n", 12345, display=False)
fig, ax = plt.subplots(figsize=(2, 1))
ax.plot([0, 1])
glue("line", fig, display=False)
```

```{glue:figure} line
:name: fig-line

A line through $$x = 0$$.
```
"""


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> nbformat.NotebookNode:
    root = tmp_path_factory.mktemp("notebook-book")
    references = (FIXTURE / "references.md").read_text()
    book = small_book(root / "book", {"page": PAGE, "references": references}, [str(REPO / "ddpm")])
    config = yaml.safe_load((book / "_config.yml").read_text())
    config["sphinx"]["config"]["checked_equations_exempt"] = ["page"]  # a typed \tag
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    code, log = build(book, root / "out")
    assert code == 0, log[-6000:]
    return nbformat.read(root / "out" / "_build" / "html" / "_sources" / "page.ipynb", 4)


@pytest.mark.book
def test_the_download_begins_with_how_to_install_and_where_to_run(download):
    first = download.cells[0]
    assert first.cell_type == "markdown"
    assert "git clone" in first.source and "make setup" in first.source
    assert "jupyter execute page.ipynb" in first.source


@pytest.mark.book
def test_the_download_reads_as_the_page_does(download):
    markdown = [cell.source for cell in download.cells if cell.cell_type == "markdown"]
    text = "\n\n".join(markdown)
    assert [left for cell in markdown for left in myst_left_in(cell)] == []
    assert "The steps $\\beta_t$ are small, as Ho et al. ([2020](../references.html#" in text
    assert "$$\na = b \\tag{1}\n$$" in text
    assert f"Eq. [(1)](../page.html#equation-1) holds for {12345:,} draws" in text
    assert "([Fig. 1](../page.html#fig-line))" in text


@pytest.mark.book
def test_a_glued_figure_is_attached_to_its_cell_with_its_caption(download):
    (cell,) = [cell for cell in download.cells if "attachments" in cell]
    ((name, image),) = cell.attachments.items()
    assert f"![](attachment:{name})" in cell.source
    assert list(image) == ["image/png"]
    assert "A line through $x = 0$." in cell.source


@pytest.mark.book
def test_the_download_runs_in_a_fresh_kernel(download):
    NotebookClient(download, timeout=120, kernel_name="python3").execute()
