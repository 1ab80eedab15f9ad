"""The book's machinery (book/_ext/*, ddpm.checks) on the fixture book in tests/fixture_book.

Book builds are slow, so the fixture book is built once for the module (into a temporary folder)
and every HTML test reads that build. Two small books made on the fly cover what needs a book of its
own: a check that fails, and incremental builds (a page read again with its outputs from the
cache, then a package change that must re-execute it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from bs4 import BeautifulSoup
from nbclient import NotebookClient

pytestmark = pytest.mark.book

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixture_book"
EXTENSIONS = REPO / "book" / "_ext"
JUPYTER_BOOK = Path(sys.executable).with_name("jupyter-book")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def build(book: Path, output: Path) -> tuple[int, str]:
    """``make book``'s command on ``book``, output under ``output``; (exit code, log)."""
    command = [JUPYTER_BOOK, "build", book, "--path-output", output, "-W", "-n", "--keep-going"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    return result.returncode, ANSI.sub("", result.stdout + result.stderr)


def small_book(root: Path, pages: dict[str, str], watch: list[str]) -> Path:
    """A book in ``root`` with the fixture's settings, ``pages`` (name -> text) in that order."""
    config = yaml.safe_load((FIXTURE / "_config.yml").read_text())
    config["sphinx"]["local_extensions"] = dict.fromkeys(
        config["sphinx"]["local_extensions"], str(EXTENSIONS)
    )
    config["sphinx"]["config"]["package_cache_paths"] = watch
    config["html"]["favicon"] = str(REPO / "book" / "favicon.svg")
    config["bibtex_bibfiles"] = [str(FIXTURE / "references.bib")]
    names = list(pages)
    toc = {"format": "jb-book", "root": names[0]}
    if names[1:]:
        toc["chapters"] = [{"file": name} for name in names[1:]]
    root.mkdir(parents=True, exist_ok=True)
    (root / "_config.yml").write_text(yaml.safe_dump(config))
    (root / "_toc.yml").write_text(yaml.safe_dump(toc))
    for name, text in pages.items():
        (root / f"{name}.md").write_text(text)
    return root


@pytest.fixture(scope="module")
def fixture_build(tmp_path_factory) -> tuple[Path, str]:
    output = tmp_path_factory.mktemp("fixture-book")
    code, log = build(FIXTURE, output)
    assert code == 0, log[-6000:]
    return output / "_build" / "html", log


@pytest.fixture(scope="module")
def site(fixture_build) -> Path:
    return fixture_build[0]


def soup(site: Path, page: str) -> BeautifulSoup:
    return BeautifulSoup((site / f"{page}.html").read_text(encoding="utf8"), "html.parser")


def article(site: Path, page: str):
    return soup(site, page).find("article")


def text(node) -> str:
    return " ".join(node.get_text(" ").split())


# --- Jekyll-style pages ---------------------------------------------------------------------------


def test_build_has_no_warnings(fixture_build):
    _site, log = fixture_build
    assert "WARNING:" not in log and "build succeeded" in log  # Sphinx's, not the kernel's


def test_front_matter_title_becomes_the_h1_with_date_and_tags_under_it(site):
    page = article(site, "kramdown")
    assert [text(h) for h in page.find_all("h1")] == ["Written like a Jekyll post #"]
    assert soup(site, "kramdown").title.get_text().startswith("Written like a Jekyll post")
    meta = page.find("h1").find_next_sibling()
    assert "post-meta" in meta["class"]
    assert text(meta) == "Nov 28, 2026 · kramdown · math"
    assert [text(h) for h in page.find_all("h2")][:1] == ["Math, the kramdown way #"]


def test_post_file_name_gives_title_and_date(site):
    page = article(site, "2026-11-28-named-by-its-date")
    assert [text(h) for h in page.find_all("h1")] == ["Named By Its Date #"]
    assert text(page.find(class_="post-date")) == "Nov 28, 2026"


def test_a_page_that_is_not_a_post_has_no_date_line(site):
    # its front matter has a date and tags, but the layout of a page, not a post
    page = article(site, "references")
    assert [text(h) for h in page.find_all("h1")] == ["References #"]
    assert page.find(class_="post-meta") is None
    assert "Nov 28, 2026" not in text(page) and "bibliography" not in text(page.find("h1").parent)


def test_an_h1_in_the_page_wins_over_the_front_matter_title(site):
    page = article(site, "intro")
    assert [text(h) for h in page.find_all("h1")] == ["Fixture book #"]
    assert "front matter title" not in text(page)


# --- kramdown math --------------------------------------------------------------------------------


def test_double_dollars_inside_a_paragraph_are_inline_math(site):
    inline = [span.get_text() for span in article(site, "kramdown").select("p span.math")]
    assert r"\(a^2 + b^2 = c^2\)" in inline
    assert r"\(\$5 + \$3 = \$8\)" in inline  # \$ inside math stays a dollar sign for MathJax


def test_double_dollars_as_a_paragraph_are_display_math(site):
    blocks = article(site, "kramdown").select("div.math")
    assert len(blocks) == 4
    assert r"\int_0^1 x \, dx" in blocks[3].get_text()
    assert blocks[3].find(class_="eqno") is None  # untagged, unlabelled: no number


def test_tag_numbers_an_equation_once(site):
    page = article(site, "kramdown")
    for anchor, tag in [("equation-1", "1"), ("equation-eq-named", "2")]:
        block = page.find(id=anchor)
        assert block.find(class_="eqno") is None  # no second number from Sphinx
        assert block.get_text().count(r"\tag") == 1 and rf"\tag{{{tag}}}" in block.get_text()
    # the tag sits outside the multi-line environment, where MathJax accepts it
    assert re.search(r"\\end\{aligned\}\s*\\tag\{2\}", page.find(id="equation-eq-named").get_text())
    # an align environment keeps a tag on each line, and each tag is an anchor
    align = page.find(id="equation-4a")
    assert align.name == "div" and align.find(class_="eqno") is None
    assert page.find(id="equation-4b") is not None
    assert align.get_text().strip().startswith(r"\begin{align}")


def test_references_to_tagged_equations_read_as_their_tags(site):
    links = {a["href"]: text(a) for a in article(site, "kramdown").select("a.reference.internal")}
    assert links["#equation-1"] == "(1)" and links["#equation-eq-named"] == "(2)"
    assert links["#equation-4b"] == "(4b)"
    links = {a["href"]: text(a) for a in article(site, "intro").select("a.reference.internal")}
    assert links["kramdown.html#equation-1"] == "(1)"
    assert links["kramdown.html#equation-eq-named"] == "(2)"


def test_reference_style_links(site):
    links = {text(a): a["href"] for a in article(site, "kramdown").find_all("a", href=True)}
    assert links["reference-style links"] == "https://arxiv.org/abs/2006.11239"
    assert links["end"] == "#sec-figure"


def test_plain_myst_keeps_labels_references_and_directives(site):
    page = article(site, "intro")
    assert text(page.find(id="equation-eq-euler").find(class_="eqno")).startswith("(1)")
    links = {a["href"]: text(a) for a in page.select("a.reference.internal")}
    assert links["#equation-eq-euler"] == "(1)" and links["#sec-myst"] == "Plain MyST"
    assert page.select_one("div.admonition.note") is not None
    assert "A colon fence" in text(page.select_one("div.admonition-a-colon-fence"))


def test_citations_read_author_and_year_in_round_brackets(site):
    page = article(site, "intro")
    paragraph = next(p for p in page.find_all("p") if "Citations read" in p.get_text())
    assert " ".join(paragraph.get_text().split()) == (
        "Citations read author and year: Ho et al. (2020) in the text, or in brackets "
        "(Ho et al., 2020)."
    )
    entry = article(site, "references").select_one("div.citation")
    assert [a["href"] for a in paragraph.find_all("a")] == [f"references.html#{entry['id']}"] * 2


def test_bibliography_labels_read_as_the_text_cites(site):
    page = article(site, "intro")
    paragraph = next(p for p in page.find_all("p") if "labels each work" in p.get_text())
    cited = [
        (" ".join(c.get_text().split()), c.find("a")["href"].partition("#")[2])
        for c in paragraph.select("span.bibtex-citation")
    ]
    labels = {
        entry["id"]: entry.select_one("span.label").get_text()
        for entry in article(site, "references").select("div.citation")
    }
    # one author: the last name; two: both, joined by "and"; more: the first and "et al.";
    # a "von" stays with the last name and LaTeX accents become letters
    assert [(shown, labels[target]) for shown, target in cited] == [
        ("Kingma and Welling (2014)", "[Kingma and Welling (2014)]"),
        ("von Platen et al. (2022)", "[von Platen et al. (2022)]"),
        ("Hyv\u00e4rinen (2005)", "[Hyv\u00e4rinen (2005)]"),
        # the same text for two works: the labels add a letter, in the bibliography's order
        # (by author: Song, Jiaming before Song, Yang)
        ("Song et al. (2021)", "[Song et al. (2021b)]"),
        ("Song et al. (2021)", "[Song et al. (2021a)]"),
    ]
    # the square brackets Sphinx puts around every label are hidden
    assert "citations.css" in str(soup(site, "references").head)
    css = (site / "_static" / "citations.css").read_text()
    assert re.search(r"span\.fn-bracket \{\s*display: none;", css)


# --- checks ---------------------------------------------------------------------------------------


def test_a_check_shows_its_status_beside_its_equation(site):
    page = article(site, "checks")
    badges = page.select(".ddpm-check")
    assert [badge["data-label"] for badge in badges] == ["3", "5"]
    for badge in badges:
        assert "ddpm-check-passed" in badge["class"] and "1 of 1 mutants rejected" in text(badge)
        shown = page.find(id=f"equation-{badge['data-label']}")
        assert rf"\tag{{{badge['data-label']}}}" in shown.get_text()


def test_shown_equations_are_the_checked_objects(site):
    page = article(site, "checks")
    shown = page.find(id="equation-5").get_text()
    assert r"\sum_{k=1}^{n} k = \frac{n \left(n + 1\right)}{2}" in shown
    links = {a["href"]: text(a) for a in page.select("a.reference.internal")}
    assert links["#equation-3"] == "(3)" and links["#equation-5"] == "(5)"


def test_verification_report_lists_every_equation_and_check_by_page(site):
    page = article(site, "verification")
    summary = text(page.select_one(".verification-summary"))
    assert summary == "\u2713 every check held in this build, on 1 page."
    totals = [[text(cell) for cell in row.find_all("td")] for row in page.select("table tbody tr")]
    assert totals[:6] == [
        ["Equations shown", "3"],
        ["Equations checked", "2"],
        ["Definitions", "1"],
        ["Not checked", "0"],
        ["Checks passed", "2 of 2"],
        ["Mutants rejected", "2 of 2"],
    ]
    assert [text(h) for h in page.select("p.rubric")] == [
        "Checks",
        "Definitions and notation (nothing to prove; a check, where there is one, compares the "
        "package with the definition)",
    ]
    equations = [text(p) for p in page.select("p.verification-equation")]
    assert equations == [
        "\u2713 checked (3)",
        "\u2713 checked (5) \u2014 Ho et al. (2020): Eq. 14",
        "definition (6) on Checks",
    ]
    lines = [text(li) for li in page.select("ul.verification-checks li")]
    assert lines[0] == (
        "\u2713 Pythagoras' identity. Claim: the shown equation. Against: SymPy derivation (SymPy "
        "simplifies the difference of the two sides). Mutants: a factor of 2 (rejected)."
    )
    assert "Against: exact case (the running sums of 1..49)" in lines[1]
    hrefs = [a["href"] for a in page.select("a.reference.internal")]
    assert "checks.html#equation-3" in hrefs and "checks.html#equation-6" in hrefs


def test_concordance_lists_the_papers_equations_against_the_books(site):
    page = article(site, "verification")
    rows = [[text(cell) for cell in row.find_all("td")] for row in page.select("table tbody tr")]
    concordance = [row for row in rows if len(row) == 4]
    assert [row[0] for row in concordance] == [f"Eq. {n}" for n in range(1, 27)] + [
        f"Algorithm {n}" for n in range(1, 5)
    ]
    by_item = {row[0]: row[3] for row in concordance}
    assert by_item["Eq. 14"] == "(5) in Checks \u2713 1 check"
    assert by_item["Eq. 4"] == "not in the book"
    assert "checks.html#equation-5" in [a["href"] for a in page.select("table a")]
    assert text(page.select_one("p.concordance-summary")) == (
        "Of the 26 numbered equations and 4 algorithms of Ho et al. (2020), 1 is derived or "
        "restated in this book, and 1 of those by an equation whose checks ran and held while "
        "this page was built."
    )


def test_a_theorem_block_shows_the_checked_equation(site):
    page = article(site, "checks")
    theorem = page.select_one("div.proof.theorem")
    assert theorem["id"] == "thm-gauss"
    assert text(theorem.select_one(".admonition-title")) == "Theorem 1 (Gauss\u2019s sum)"
    shown = theorem.find(id="equation-5")  # the pasted, checked equation, inside the block
    assert shown is not None and r"\tag{5}" in shown.get_text()
    assert page.select_one('.ddpm-check[data-label="5"]') is not None
    proof = theorem.find_next_sibling("div")
    assert "proof" in proof["class"] and text(proof).startswith("Proof. Write the sum")
    links = {a["href"]: text(a) for a in page.select("a.reference.internal")}
    assert links["#thm-gauss"] == "Theorem 1"


def test_an_exercise_has_its_solution_folded_with_math_in_both(site):
    page = article(site, "checks")
    exercise = page.find(id="ex-odd-sum")
    assert "exercise" in exercise["class"]
    assert text(exercise.select_one(".admonition-title")).startswith("Exercise 1")
    assert exercise.select("span.math")  # $$...$$ inside a paragraph: inline math
    solution = exercise.find_next_sibling("div")
    assert {"solution", "dropdown"} <= set(solution["class"])
    assert text(solution.select_one(".admonition-title")).startswith("Solution to Exercise 1")
    assert solution.select("div.math") and solution.select("span.math")


def test_the_index_lists_the_terms_of_index_directives_and_roles(site):
    index = soup(site, "genindex").find("article")
    entries = {text(a): a["href"] for a in index.select("table.indextable a")}
    assert entries["Gauss's sum"].startswith("checks.html#index-")
    assert entries["exercises"].startswith("checks.html#index-")
    # the role shows its text and indexes the entry after it
    assert "An exercise on" in text(article(site, "checks"))


def test_blocks_read_in_the_downloaded_notebook(site):
    sys.path.insert(0, str(EXTENSIONS))
    from jupyter_markdown import myst_left_in

    notebook = nbformat.read(site / "_sources" / "checks.ipynb", as_version=4)
    markdown = "\n\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert myst_left_in(markdown) == []
    assert "**Theorem 1 (Gauss's sum).** The sum of the first $n$ integers:" in markdown
    assert "*Proof.* Write the sum forwards" in markdown
    assert "**Exercise 1.** What is the sum $1 + 3 + \\dots + (2n - 1)$" in markdown
    assert "<details><summary>Solution to Exercise 1</summary>" in markdown
    assert "An exercise on [Theorem 1](" in markdown


def build_variant(tmp_path: Path, old: str, new: str) -> tuple[Path, int, str]:
    """The fixture's checks page with ``old`` replaced by ``new``, built alone."""
    page = (FIXTURE / "checks.md").read_text()
    assert old in page
    book = small_book(tmp_path / "book", {"checks": page.replace(old, new)}, [str(REPO / "ddpm")])
    code, log = build(book, tmp_path / "out")
    return book, code, log


def test_a_false_shown_equation_fails_the_build_naming_page_and_equation(tmp_path):
    book, code, log = build_variant(tmp_path, "\nrhs = sp.Integer(1)\n", "\nrhs = sp.Integer(2)\n")
    assert code != 0
    assert f"{book / 'checks.md'}: WARNING: Executing notebook failed" in log
    assert "CheckFailed: check of equation (3) failed: Pythagoras' identity" in log
    assert "simplify(claim - other) = -1" in log


def test_a_mutant_that_the_check_does_not_reject_fails_the_build(tmp_path):
    _book, code, log = build_variant(
        tmp_path, '{"n - 1 for n + 1": n * (n - 1) / 2}', '{"the same sum": (n**2 + n) / 2}'
    )
    assert code != 0
    assert "CheckFailed: check of equation (5) failed: partial sums of 1..n" in log
    assert "mutant not rejected (the check cannot tell it from the claim): ['the same sum']" in log


def test_a_result_without_a_check_on_its_shown_form_fails_the_build(tmp_path):
    _book, code, log = build_variant(tmp_path, "    gauss.rhs,\n", "    (n**2 + n) / 2,\n")
    assert code != 0
    assert "not a part of the shown equation" in log


def test_an_edited_shown_equation_fails_a_build_whose_outputs_are_cached(tmp_path):
    """jupyter-cache does not see the page's text: the Sphinx side must."""
    book, code, log = build_variant(tmp_path, "", "")
    assert code == 0, log[-4000:]
    page = book / "checks.md"
    typed = "$$\n\\sum_{k=1}^{n} k = \\frac{n (n - 1)}{2} \\tag{5}\n$$"
    page.write_text(page.read_text().replace("```{glue:math} eq-5\n```", typed))
    code, log = build(book, tmp_path / "out")
    assert "Using cached notebook" in log and "Executing notebook" not in log
    assert code != 0
    line = page.read_text().splitlines().index("$$") + 1
    assert (
        f"{page}:{line}: WARNING: equation (5) is typed into the page, so no check sees it" in log
    )


# --- the build: cached execution, invalidated by package changes ----------------------------------

PROBE_PAGE = """\
---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {name: python3, display_name: Python 3, language: python}
---

# Cache probe

```{glue:math} eq-1
```

```{code-cell} ipython3
import probe
import sympy as sp
from ddpm.checks import Equation, check_close

print(f"probe says {probe.MESSAGE}")
one = sp.Symbol("one")
sum_of_ones = Equation("1", sp.Eq(one + one, 2, evaluate=False))
sum_of_ones.glue()
check_close(sum_of_ones, one + one, 2, "one and one make two", at={one: 1},
            against_from="exact: counting", mutants={"three": one + one + one})
```
"""


def outputs_of(notebook: Path) -> list[str]:
    """The text of every output in a notebook file."""
    cells = nbformat.read(notebook, as_version=4).cells
    return [str(output) for cell in cells if cell.cell_type == "code" for output in cell.outputs]


def test_cached_pages_keep_their_checks_and_a_package_change_re_executes_them(tmp_path):
    report = "# Report\n\n```{verification-report}\n```\n"
    book = small_book(tmp_path / "book", {"probe": PROBE_PAGE, "report": report}, ["probe"])
    (book / "probe").mkdir()
    (book / "probe" / "__init__.py").write_text('MESSAGE = "first"\n')
    html = tmp_path / "out" / "_build" / "html"
    listed = "one and one make two"

    code, log = build(book, tmp_path / "out")
    assert code == 0, log[-4000:]
    assert "Executing notebook" in log and "probe says first" in (html / "probe.html").read_text()
    assert listed in (html / "report.html").read_text()

    code, log = build(book, tmp_path / "out")  # nothing changed: outputs come from the cache
    assert code == 0, log[-4000:]
    assert "Executing notebook" not in log
    assert "one and one make two" in (html / "report.html").read_text()

    # read again (a touched or edited page, a config change), its outputs taken from the cache:
    # the report still lists its checks, and its notebook download still has its outputs
    os.utime(book / "probe.md")
    code, log = build(book, tmp_path / "out")
    assert code == 0, log[-4000:]
    assert "Using cached notebook" in log and "Executing notebook" not in log
    assert listed in (html / "report.html").read_text()
    assert any("probe says first" in output for output in outputs_of(html / "_sources/probe.ipynb"))

    (book / "probe" / "__init__.py").write_text('MESSAGE = "second"\n')
    code, log = build(book, tmp_path / "out")  # the page did not change, the package did
    assert code == 0, log[-4000:]
    assert "Executing notebook" in log and "probe says second" in (html / "probe.html").read_text()


TIMED_PAGE = """\
---
jupytext:
  text_representation: {{extension: .md, format_name: myst}}
kernelspec: {{name: python3, display_name: Python 3, language: python}}
---

# {name}

```{{code-cell}} ipython3
import os
import time

start = time.time()
time.sleep(3)
{extra}
threads = os.environ.get("OMP_NUM_THREADS")
print(f"ran from {{start:.3f}} to {{time.time():.3f}} with {{threads}} thread(s)")
```
"""
RAN = re.compile(r"ran from ([\d.]+) to ([\d.]+) with (\S+) thread")


def test_pages_execute_several_at_a_time_and_a_failing_one_still_fails_the_build(tmp_path):
    pages = {
        "first": TIMED_PAGE.format(name="First", extra=""),
        "second": TIMED_PAGE.format(name="Second", extra=""),
    }
    book = small_book(tmp_path / "book", pages, [str(REPO / "ddpm")])
    html = tmp_path / "out" / "_build" / "html"
    code, log = build(book, tmp_path / "out")
    assert code == 0, log[-4000:]
    assert "parallel_execution: executing 2 pages, 2 at a time" in log
    # MyST-NB found both pages' outputs in the cache, so it executed neither itself
    assert log.count("Using cached notebook") == 2 and "Executing notebook" not in log
    spans = [RAN.search((html / f"{name}.html").read_text()).groups() for name in pages]
    (start_1, end_1, threads_1), (start_2, end_2, threads_2) = spans
    assert float(start_1) < float(end_2) and float(start_2) < float(end_1)  # they overlapped
    assert threads_1 == threads_2 == "1"

    # a page that raises: executed ahead, it fails there, and MyST-NB runs it again as it reads
    # it, so the build fails with the page's own traceback
    (book / "second.md").write_text(
        TIMED_PAGE.format(name="Second", extra='raise RuntimeError("the page is broken")')
    )
    (book / "first.md").write_text(TIMED_PAGE.format(name="First", extra="pass"))
    code, log = build(book, tmp_path / "out")
    assert code != 0
    assert "parallel_execution: second.md failed after" in log
    assert f"{book / 'second.md'}: WARNING: Executing notebook failed" in log
    assert "RuntimeError: the page is broken" in log
    assert "ran from" in (html / "first.html").read_text()  # the other page was built


def test_the_book_watches_the_package_and_mirrors_the_fixture_settings():
    book = yaml.safe_load((REPO / "_config.yml").read_text())
    fixture = yaml.safe_load((FIXTURE / "_config.yml").read_text())
    # the package, the bench results the pages read, and the paper's numbers (bench/data)
    watched = book["sphinx"]["config"].pop("package_cache_paths")
    assert watched == ["ddpm", "bench/results", "bench/data"]
    # every bench folder a page reads from is watched: a new result re-executes its page
    read = {
        f"bench/{m.group(1)}"
        for page in (REPO / "book").glob("*.md")
        for m in re.finditer(r'"bench"\s*/\s*"(\w+)"', page.read_text())
    }
    assert read and read <= set(watched), read - set(watched)
    fixture["sphinx"]["config"].pop("package_cache_paths")
    # the fixture's kramdown pages type tagged equations; no page of the book may
    assert fixture["sphinx"]["config"].pop("checked_equations_exempt") == ["intro", "kramdown"]
    assert fixture["sphinx"]["config"].pop("paper_list") == "../../book/paper.yml"
    assert book["sphinx"]["config"] == fixture["sphinx"]["config"]
    assert book["execute"] | {"timeout": 0} == fixture["execute"] | {"timeout": 0}
    assert book["parse"] == fixture["parse"]
    assert list(book["sphinx"]["local_extensions"]) == list(fixture["sphinx"]["local_extensions"])
    assert book["sphinx"]["extra_extensions"] == fixture["sphinx"]["extra_extensions"]


# --- an offline site ------------------------------------------------------------------------------

FETCHED = {"script": "src", "img": "src", "iframe": "src", "source": "src", "embed": "src"}
NAVIGATION_LINKS = {"next", "prev", "index", "search", "canonical"}


def test_no_page_fetches_anything_from_the_internet(site):
    for path in site.rglob("*.html"):
        page = BeautifulSoup(path.read_text(encoding="utf8"), "html.parser")
        urls = [
            tag[attribute]
            for name, attribute in FETCHED.items()
            for tag in page(name, attrs={attribute: True})
        ]
        urls += [tag["data"] for tag in page("object", data=True)]
        urls += [
            link["href"]
            for link in page("link", href=True)
            if not NAVIGATION_LINKS & set(link.get("rel", []))
        ]
        external = [url for url in urls if url and re.match(r"^(https?:)?//", url)]
        assert external == [], path
    for path in site.joinpath("_static").rglob("*.css"):
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", path.read_text(errors="replace")), path


def test_mathjax_is_served_by_the_site(site):
    scripts = [s.get("src", "") for s in soup(site, "kramdown")("script")]
    assert "_static/mathjax/tex-chtml.js" in scripts
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_wide_display_equations_scroll_instead_of_being_cut_off(site):
    links = [link.get("href", "") for link in soup(site, "checks")("link")]
    assert any(href.startswith("_static/ddpm-math.css") for href in links)
    css = (site / "_static" / "ddpm-math.css").read_text()
    assert re.search(r"div\.math \{\s*overflow-x: auto;", css)


def test_dark_mode_puts_no_light_panel_under_a_cells_html_output(site):
    # the theme's dark mode gives a cell's HTML output a light panel; appearance.css must
    # override every such rule with the same selector, loaded after the theme's stylesheet
    def rules(path: Path) -> str:
        return re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.DOTALL)  # no comments

    theme = rules(site / "_static" / "styles" / "pydata-sphinx-theme.css")
    light = re.findall(r"([^{}]+)\{[^{}]*background-color:var\(--pst-color-text-base\)", theme)
    panels = {
        " ".join(selector.split())
        for rule in light
        for selector in rule.split(",")
        if "data-theme=dark" in selector and ".text_html" in selector
    }
    assert panels  # the theme still has the rule: else this test checks nothing
    css = rules(site / "_static" / "appearance.css")
    overrides = {
        " ".join(selector.replace('"', "").split())
        for rule in re.findall(r"([^{}]+)\{[^{}]*background-color: transparent", css)
        for selector in rule.split(",")
    }
    assert panels <= overrides, panels - overrides
    head = str(soup(site, "checks").head)
    assert head.index("pydata-sphinx-theme.css") < head.index("appearance.css")


def test_executable_pages_download_as_notebooks_that_run(site, tmp_path):
    for page in ("kramdown", "checks"):
        links = [a["href"] for a in soup(site, page).find_all("a", href=True)]
        assert f"_sources/{page}.ipynb" in links
    plain = [a["href"] for a in soup(site, "intro").find_all("a", href=True)]
    assert not any(href.endswith(".ipynb") for href in plain)
    notebook = nbformat.read(site / "_sources" / "checks.ipynb", as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    badges = [
        output["metadata"]["ddpm_check"]["label"]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if "ddpm_check" in output.get("metadata", {})
    ]
    assert badges == ["3", "5"]
