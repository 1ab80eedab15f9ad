"""The book's own pages keep the verification rules, read from their sources without a build.

`make book` enforces the rules while it builds (ddpm.checks in the cells, book/_ext/checks_report.py
on the Sphinx side); these tests read the pages' text, so a page that breaks a rule is named in
`make test` too, and they count what the book checks.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from support import toc_pages

REPO = Path(__file__).resolve().parents[1]
TOC = REPO / "_toc.yml"
CHECKS = {"check_identity", "check_close", "check_holds"}
TYPED_TAG = re.compile(r"\$\$(?:(?!\$\$).)*\\tag\{", re.DOTALL)
GLUED = re.compile(r"```\{glue:math\}\s+eq-(\S+)")
CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```$", re.DOTALL | re.MULTILINE)
CELL_OPTION = re.compile(r"\A(?::[^\n]*\n)*\n?")  # ":tags: [...]" lines at a cell's top


def book_pages() -> list[Path]:
    return [REPO / f"{name}.md" for name in toc_pages(yaml.safe_load(TOC.read_text()))]


def cells(page: Path) -> tuple[str, list[ast.Module]]:
    """The page's Markdown text and its code cells, parsed."""
    text = page.read_text(encoding="utf8")
    markdown = CODE_CELL.sub("", text)
    code = [ast.parse(CELL_OPTION.sub("", body)) for body in CODE_CELL.findall(text)]
    return markdown, code


def calls(tree: ast.Module, names: set[str]):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in names:
                yield name, node


def equations_built(code: list[ast.Module]) -> list[str]:
    return [
        node.args[0].value
        for tree in code
        for _name, node in calls(tree, {"Equation"})
        if node.args and isinstance(node.args[0], ast.Constant)
    ]


def test_every_page_is_in_the_table_of_contents():
    # only_build_toc_files: a page left out of _toc.yml would never be built
    listed = {REPO / f"{name}.md" for name in toc_pages(yaml.safe_load(TOC.read_text()))}
    assert set((REPO / "book").glob("*.md")) <= listed


def test_chapters_then_their_sections_then_the_appendices():
    # book/NN-*.md is chapter NN, book/NNb-*.md its second page, book/aN-*.md appendix N
    numbered = [
        match.groups()
        for name in toc_pages(yaml.safe_load(TOC.read_text()))
        if (match := re.match(r"book/(\d\d|a\d)([b-z]?)-", name))
    ]
    assert numbered == sorted(numbered) and len(numbered) == len(set(numbered))


@pytest.mark.parametrize("page", book_pages(), ids=lambda p: p.stem)
def test_no_page_types_a_numbered_equation(page):
    markdown, _code = cells(page)
    assert not TYPED_TAG.search(markdown), f"{page.name}: a tagged equation typed into the text"


@pytest.mark.parametrize("page", book_pages(), ids=lambda p: p.stem)
def test_every_equation_built_is_shown_and_every_shown_one_is_built(page):
    markdown, code = cells(page)
    built = equations_built(code)
    assert len(built) == len(set(built)), f"{page.name}: an equation number built twice"
    assert sorted(GLUED.findall(markdown)) == sorted(built), page.name


def test_every_check_of_the_book_names_its_sources_and_carries_mutants():
    checks = mutants = 0
    for page in book_pages():
        _markdown, code = cells(page)
        for tree in code:
            for name, node in calls(tree, CHECKS):
                keywords = {k.arg: k.value for k in node.keywords}
                where = f"{page.name}:{node.lineno} {name}"
                assert "against_from" in keywords, f"{where}: no against_from"
                assert "mutants" in keywords, f"{where}: no mutants"
                value = keywords["mutants"]
                if isinstance(value, ast.Dict):
                    assert value.keys, f"{where}: an empty dict of mutants"
                    mutants += len(value.keys)
                else:
                    mutants += 1  # built in the cell; ddpm.checks refuses an empty one
                checks += 1
    # every chapter that derives something checks it; the count is what the book states
    assert checks >= 60 and mutants >= checks, (checks, mutants)


def test_the_paper_list_names_every_equation_and_algorithm_once():
    items = yaml.safe_load((REPO / "book" / "paper.yml").read_text())["items"]
    ids = [item["id"] for item in items]
    assert ids == [str(n) for n in range(1, 27)] + [f"Algorithm {n}" for n in range(1, 5)]
    for page in book_pages():
        _markdown, code = cells(page)
        for tree in code:
            for _name, node in calls(tree, {"Equation"}):
                for keyword in node.keywords:
                    if keyword.arg == "paper":
                        named = ast.literal_eval(keyword.value)
                        named = (named,) if isinstance(named, str) else named
                        assert set(named) <= set(ids), f"{page.name}: {named}"
