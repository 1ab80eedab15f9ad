"""The pure helpers of the book's Sphinx extensions (book/_ext), without building a book."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from pybtex.database import parse_string

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "book" / "_ext"))

import checks_report  # noqa: E402
import citations  # noqa: E402
import jekyll  # noqa: E402
import package_cache  # noqa: E402


def test_has_h1_ignores_comments_in_code_cells():
    body = "Text.\n\n```{code-cell} ipython3\n# a comment\nx = 1\n```\n\n## A section\n"
    assert not jekyll.has_h1(body)
    assert jekyll.has_h1(body + "\n# A title\n")
    assert jekyll.has_h1("A title\n=======\n")
    assert not jekyll.has_h1("~~~~\n# inside a tilde fence\n~~~~\n#hashtag is not a heading\n")


def test_read_post_from_front_matter_and_from_a_post_file_name():
    text = "---\nlayout: post\ntitle: Forward\ndate: 2026-11-28\ntags: [a, b]\n---\nBody\n"
    post, start = jekyll.read_post("book/02-forward", text)
    assert post == jekyll.Post("Forward", dt.date(2026, 11, 28), ("a", "b"), is_post=True)
    assert text[start:] == "Body\n"
    post, start = jekyll.read_post("posts/2026-11-28-the-reverse-process", "Body\n")
    assert post == jekyll.Post("The Reverse Process", "2026-11-28", (), is_post=True)
    assert start == 0
    assert jekyll.read_post("intro", "# Intro\n") is None


def test_a_post_is_a_page_with_layout_post_or_no_layout_and_a_date():
    def is_post(front: str, name: str = "book/page") -> bool:
        return jekyll.read_post(name, f"---\n{front}\n---\nBody\n")[0].is_post

    assert is_post("layout: post\ntitle: A")
    assert is_post("title: A\ndate: 2026-11-28")
    assert is_post("title: A", name="posts/2026-11-28-a")
    # Jekyll's layout for a page that is not a post, whatever else it says
    assert not is_post("layout: page\ntitle: A\ndate: 2026-11-28\ntags: [a]")
    assert not is_post("layout: page", name="posts/2026-11-28-a")
    assert not is_post("title: A\ntags: [a]")  # no layout and no date


def test_quote_dates_keeps_lines_and_makes_dates_strings():
    front = "---\nlayout: post\ndate: 2026-11-28\nupdated: 2026-11-29 10:00:00\ntitle: 2026\n---\n"
    quoted = jekyll.quote_dates(front)
    assert quoted.count("\n") == front.count("\n")
    data = yaml.safe_load(quoted.strip("-\n"))
    assert data == {
        "layout": "post",
        "date": "2026-11-28",
        "updated": "2026-11-29 10:00:00",
        "title": 2026,
    }


def test_package_hash_follows_the_files_and_skips_caches(tmp_path):
    package = tmp_path / "pkg"
    (package / "__pycache__").mkdir(parents=True)
    (package / "a.py").write_text("A = 1\n")
    first = package_cache.package_hash(tmp_path, ["pkg"])
    (package / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert package_cache.package_hash(tmp_path, ["pkg"]) == first
    (package / "a.py").write_text("A = 2\n")
    assert package_cache.package_hash(tmp_path, ["pkg"]) != first
    (package / "a.py").write_text("A = 1\n")
    (package / "data.json").write_text("{}")
    assert package_cache.package_hash(tmp_path, ["pkg"]) != first


def test_check_records_merge_across_parallel_readers_and_purge_per_page():
    main = SimpleNamespace(ddpm_checks={"a": ["check a"]}, ddpm_check_reports={"report"})
    worker = SimpleNamespace(ddpm_checks={"b": ["new"], "a": ["stale"]}, ddpm_check_reports=set())
    checks_report.merge_info(None, main, {"b"}, worker)
    assert main.ddpm_checks == {"a": ["check a"], "b": ["new"]}
    checks_report.purge_doc(None, main, "a")
    checks_report.purge_doc(None, main, "report")
    assert main.ddpm_checks == {"b": ["new"]} and main.ddpm_check_reports == set()


def shown(label, pasted=True, latex=None, line=3):
    return {
        "label": label,
        "pasted": pasted,
        "latex": latex or f"a = b \\tag{{{label}}}",
        "line": line,
    }


def built(label, definition=False, latex=None):
    return {
        "label": label,
        "latex": latex or f"a = b \\tag{{{label}}}",
        "definition": definition,
        "paper": [],
        "srepr": ["..."],
    }


def checked(label, claim_shown=True, passed=True, mutants=({"rejected": True},)):
    return {
        "label": label,
        "passed": passed,
        "claim_shown": claim_shown,
        "mutants": list(mutants),
        "description": "d",
        "detail": "x",
    }


def problems(shown_list, built_list, checks):
    return [message for message, _line in checks_report.problems(shown_list, built_list, checks)]


def test_a_page_that_keeps_the_rules_has_no_problems():
    assert problems([shown("1"), shown("2")], [built("1"), built("2", True)], [checked("1")]) == []


def test_each_broken_rule_is_named_with_its_equation():
    cases = [
        ([shown("1", pasted=False)], [built("1")], [checked("1")], "(1) is typed into the page"),
        ([shown("1")], [], [], "the page builds no Equation (1)"),
        ([shown("1", latex="a = c \\tag{1}")], [built("1")], [checked("1")], "differs from"),
        ([], [built("1")], [checked("1")], "Equation (1) is built but not shown"),
        ([shown("1")], [built("1")], [], "(1) states a result, but no check"),
        ([shown("1")], [built("1")], [checked("1", claim_shown=False)], "no check takes its claim"),
        ([shown("1")], [built("1")], [checked("1"), checked("2")], "names equation (2)"),
        ([shown("1")], [built("1")], [checked("1", mutants=())], "(1) has no mutants"),
        ([shown("1")], [built("1")], [checked("1", passed=False)], "a check of (1) failed"),
        (
            [shown("1")],
            [built("1")],
            [checked("1", mutants=({"rejected": False},))],
            "(1) let a mutant pass",
        ),
    ]
    for shown_list, built_list, checks, message in cases:
        found = problems(shown_list, built_list, checks)
        assert len(found) == 1 and message in found[0], (message, found)


def test_a_definition_needs_no_check():
    assert problems([shown("1")], [built("1", definition=True)], []) == []


def test_bibliography_labels_name_the_authors_and_year_as_a_citation_does():
    bib = parse_string(
        r"""
        @misc{one, author = {Vincent, Pascal}, year = {2011}}
        @misc{two, author = {Kingma, Diederik P. and Welling, Max}, year = {2014}}
        @misc{three, author = {Ho, Jonathan and Jain, Ajay and Abbeel, Pieter}, year = {2020}}
        @misc{von, author = {von Platen, Patrick and Patil, Suraj and Lozhkov, Anton},
               year = {2022}}
        @misc{accent, author = {Hyv{\"a}rinen, Aapo}, year = {2005}}
        @misc{same1, author = {Song, Jiaming and Meng, Chenlin and Ermon, Stefano}, year = {2021}}
        @misc{same2, author = {Song, Yang and Ermon, Stefano and Poole, Ben}, year = {2021}}
        @misc{edited, editor = {Bishop, Christopher M.}, year = {2006}}
        """,
        "bibtex",
    )
    labels = list(citations.AuthorYearLabels().format_labels(bib.entries.values()))
    assert labels == [
        "Vincent (2011)",
        "Kingma and Welling (2014)",
        "Ho et al. (2020)",
        "von Platen et al. (2022)",
        "Hyv\u00e4rinen (2005)",
        "Song et al. (2021a)",  # two works with the same label get letters, in this order
        "Song et al. (2021b)",
        "Bishop (2006)",  # no author: the editor
    ]
    anonymous = parse_string("@misc{x, title = {No one}, year = {2000}}", "bibtex")
    with pytest.raises(ValueError, match="entry 'x' has no author or editor"):
        list(citations.AuthorYearLabels().format_labels(anonymous.entries.values()))
