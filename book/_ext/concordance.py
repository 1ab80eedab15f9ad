"""The paper's equations and algorithms against the book's: a concordance from the build's records.

``book/paper.yml`` (the config value ``paper_list``) lists every numbered equation of Ho et al.
(2020), main text and Appendix A, and its four algorithms. Each ``ddpm.checks.Equation`` names in
``paper=`` what it derives or restates; ``checks_report`` collects those records while the pages are
read. The directive ``paper-concordance`` sets out the table (paper item, where it stands, what it
states, the book's equations for it with the state of their checks), and ``concordance-summary``
one sentence with its counts. Both pages are rewritten on every build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from checks_report import (
    STATUS_BADGE,
    GeneratedDirective,
    ReportBase,
    badge,
    book_equations,
    equation_status,
    paper_names,
    plural,
    table,
)
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

logger = logging.getLogger(__name__)


def text_with_math(text: str) -> nodes.paragraph:
    """A paragraph of ``text`` whose ``$...$`` spans are inline math."""
    paragraph = nodes.paragraph()
    for index, part in enumerate(text.split("$")):
        if part:
            paragraph += nodes.math(part, part) if index % 2 else nodes.Text(part)
    return paragraph


def paper_list(app: Sphinx) -> Path:
    return Path(app.confdir) / app.config.paper_list


def paper_items(app: Sphinx) -> tuple[str, list[dict]]:
    data = yaml.safe_load(paper_list(app).read_text(encoding="utf8"))
    return data["source"], data["items"]


def concordance(env: BuildEnvironment, items: list[dict]) -> list[tuple[dict, list]]:
    """Each of the paper's items with the book's equations (docname, record, checks) that
    derive or restate it."""
    rows = book_equations(env)
    known = {item["id"] for item in items}
    for doc, eq, _c in rows:
        for unknown in set(eq.get("paper", [])) - known:
            logger.warning(
                f"Equation ({eq['label']}) names paper item {unknown!r}, which "
                f"{env.config.paper_list} lacks",
                location=doc,
                type="ddpm",
                subtype="check",
            )
    return [(item, [r for r in rows if item["id"] in r[1].get("paper", [])]) for item in items]


def concordance_counts(app: Sphinx, env: BuildEnvironment) -> dict[str, int]:
    _source, items = paper_items(app)
    table = concordance(env, items)
    in_book = [(item, rows) for item, rows in table if rows]
    checked = [
        item
        for item, rows in in_book
        if any(equation_status(eq, checks) == "checked" for _d, eq, checks in rows)
    ]
    return {
        "equations": sum(not i["id"].startswith("Algorithm") for i in items),
        "algorithms": sum(i["id"].startswith("Algorithm") for i in items),
        "in_book": len(in_book),
        "checked": len(checked),
        "items": len(items),
    }


class paper_concordance(nodes.General, nodes.Element):  # noqa: N801
    """Where the concordance table goes; replaced before writing."""


class PaperListDirective(GeneratedDirective):
    """A generated directive that also reads the paper's list: the page depends on it."""

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(str(paper_list(self.env.app)))
        return super().run()


class PaperConcordance(PaperListDirective):
    """``paper-concordance``: the paper's equations and algorithms against the book's."""

    node = paper_concordance


class concordance_summary(nodes.General, nodes.Element):  # noqa: N801
    """Where the summary paragraph goes; replaced before writing."""


class ConcordanceSummary(PaperListDirective):
    """``concordance-summary``: one sentence with the concordance's counts."""

    node = concordance_summary


class FillConcordance(ReportBase):
    def run(self, **kwargs: Any) -> None:
        for placeholder in list(self.document.findall(paper_concordance)):
            placeholder.replace_self(self.table())
        for placeholder in list(self.document.findall(concordance_summary)):
            count = concordance_counts(self.app, self.env)
            text = (
                f"Of the {count['equations']} numbered equations and {count['algorithms']} "
                f"algorithms of Ho et al. (2020), {count['in_book']} "
                f"{'is' if count['in_book'] == 1 else 'are'} derived or restated in "
                f"this book, and {count['checked']} of those by an equation whose checks ran "
                "and held while this page was built."
            )
            placeholder.replace_self(nodes.paragraph(text, text, classes=["concordance-summary"]))

    def table(self) -> list[nodes.Node]:
        source, items = paper_items(self.app)
        rows = []
        for item, found in concordance(self.env, items):
            name = paper_names([item["id"]])[0]
            where = nodes.paragraph()
            if not found:
                where += nodes.emphasis("", "not in the book")
            for index, (doc, eq, checks) in enumerate(found):
                if index:
                    where += nodes.Text("; ")
                where += self.equation_link(doc, eq["label"])
                where += nodes.Text(" in ")
                where += self.page_link(doc)
                where += nodes.Text(" ")
                status = equation_status(eq, checks)
                label, colour = STATUS_BADGE[status]
                if status == "checked":
                    label = f"\u2713 {plural(len(checks), 'check')}"
                where += badge(label, colour)
            rows.append(
                [
                    nodes.paragraph(name, name),
                    nodes.paragraph(item["where"], item["where"]),
                    text_with_math(item["what"]),
                    where,
                ]
            )
        note = f"Numbering as in {source}."
        return [
            nodes.paragraph(note, note),
            table(["Paper", "Where", "What it states", "In this book"], rows),
        ]


def setup(app: Sphinx) -> dict[str, Any]:
    # the paper's equations and algorithms (relative to the book's root)
    app.add_config_value("paper_list", "book/paper.yml", "env", [str])
    app.add_node(paper_concordance)
    app.add_node(concordance_summary)
    app.add_directive("paper-concordance", PaperConcordance)
    app.add_directive("concordance-summary", ConcordanceSummary)
    app.add_post_transform(FillConcordance)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
