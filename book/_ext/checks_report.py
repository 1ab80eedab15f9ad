"""Collect the checks that pages run (``ddpm.checks``) and list them on a verification report.

Each check a page runs leaves an output in the executed notebook whose metadata holds the check's
record under the key ``ddpm_check``. After a page is read (executed, or taken from the jupyter
cache, whose outputs ``executed_notebooks`` puts back into the notebook first) its checks are
read from that notebook into the build environment, where they survive incremental builds and
are merged across parallel readers. A check must name an equation of its
own page, by label or tag.

A page holding the ``verification-report`` directive gets a table of every check in the book:
page, equation, what was checked, the result and its status. It is rewritten on every build.
"""

from __future__ import annotations

import json
from typing import Any

from docutils import nodes
from executed_notebooks import executed_notebook_path
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

OUTPUT_KEY = "ddpm_check"  # written by ddpm.checks


class verification_report(nodes.General, nodes.Element):  # noqa: N801 (docutils node naming)
    """Where the report table goes; replaced before writing."""


class VerificationReport(SphinxDirective):
    """``verification-report``: a table of every check in the book."""

    def run(self) -> list[nodes.Node]:
        self.env.ddpm_check_reports = getattr(self.env, "ddpm_check_reports", set())
        self.env.ddpm_check_reports.add(self.env.docname)
        return [verification_report()]


def checks_of(env: BuildEnvironment) -> dict[str, list[dict[str, Any]]]:
    """docname -> the check records its executed notebook holds, in page order."""
    if not hasattr(env, "ddpm_checks"):
        env.ddpm_checks = {}
    return env.ddpm_checks


def collect_checks(app: Sphinx, doctree: nodes.document) -> None:
    """``doctree-read``: read the page's check records from its executed notebook."""
    env = app.env
    if "kernelspec" not in env.metadata[env.docname]:
        return
    notebook = executed_notebook_path(app, env.docname)
    if not notebook.exists():
        return
    cells = json.loads(notebook.read_text(encoding="utf8"))["cells"]
    records = [
        output["metadata"][OUTPUT_KEY]
        for cell in cells
        for output in cell.get("outputs", [])
        if OUTPUT_KEY in output.get("metadata", {})
    ]
    if records:
        checks_of(env)[env.docname] = records


def purge_doc(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    checks_of(env).pop(docname, None)
    getattr(env, "ddpm_check_reports", set()).discard(docname)


def merge_info(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: Any) -> None:
    checks_of(env).update(
        {doc: records for doc, records in checks_of(other).items() if doc in docnames}
    )
    reports = getattr(other, "ddpm_check_reports", set()) & set(docnames)
    env.ddpm_check_reports = getattr(env, "ddpm_check_reports", set()) | reports


def equation_label(env: BuildEnvironment, docname: str, name: str) -> str | None:
    """The math label of the equation on ``docname`` that a check calls ``name``."""
    math = env.get_domain("math")
    if math.data["objects"].get(name, (None,))[0] == docname:
        return name
    for label, (doc, tag) in math.data.get("tags", {}).items():
        if doc == docname and tag in (name, f"({name})"):
            return label
    return None


def check_labels(app: Sphinx, env: BuildEnvironment) -> None:
    """``env-check-consistency``: every check names an equation of its own page."""
    for docname, records in checks_of(env).items():
        for label in dict.fromkeys(record["label"] for record in records):
            if equation_label(env, docname, label) is None:
                logger.warning(
                    f"a check names equation ({label}), which is not on this page: give the "
                    f"equation \\tag{{{label}}} or the label ({label})",
                    location=docname,
                    type="ddpm",
                    subtype="check",
                )


def reading_order(env: BuildEnvironment, docnames) -> list[str]:
    """``docnames`` in the book's order (the table of contents), others after, by name."""
    relations = env.collect_relations()
    order, doc = [], env.config.root_doc
    while doc is not None and doc not in order:
        order.append(doc)
        doc = relations.get(doc, [None, None, None])[2]
    rank = {doc: i for i, doc in enumerate(order)}
    return sorted(docnames, key=lambda doc: (rank.get(doc, len(rank)), doc))


def rewrite_reports(app: Sphinx, env: BuildEnvironment) -> list[str]:
    """``env-get-updated``: the report pages are rewritten on every build."""
    return sorted(getattr(env, "ddpm_check_reports", set()))


class FillVerificationReport(SphinxPostTransform):
    """Replace the placeholder with the table; runs before references are resolved."""

    default_priority = 5

    def run(self, **kwargs: Any) -> None:
        for placeholder in list(self.document.findall(verification_report)):
            placeholder.replace_self(self.report())

    def report(self) -> list[nodes.Node]:
        checks = checks_of(self.env)
        pages = reading_order(self.env, checks)
        records = [(doc, record) for doc in pages for record in checks[doc]]
        failed = sum(not record["passed"] for _doc, record in records)
        summary = (
            f"{plural(len(records), 'check')} on {plural(len(pages), 'page')} in this build: "
            f"{len(records) - failed} passed, {failed} failed."
        )
        if not records:
            summary = "No page of this build runs a check."
        rows = [self.row(doc, record) for doc, record in records]
        headers = ["Page", "Equation", "What is checked", "Result", "Status"]
        return [nodes.paragraph(summary, summary, classes=["verification-summary"])] + (
            [table(headers, rows)] if rows else []
        )

    def row(self, docname: str, record: dict[str, Any]) -> list[nodes.Node]:
        page = self.xref("std", "doc", "/" + docname, nodes.inline(docname, docname))
        label = equation_label(self.env, docname, record["label"])
        equation = nodes.literal(record["label"], record["label"])
        if label is not None:
            equation = self.xref("math", "eq", label, equation)
        kind = "SymPy identity" if record["kind"] == "identity" else "numeric"
        result = f"{kind}: {record['detail']}"
        status = "\u2713 passed" if record["passed"] else "\u2717 failed"
        return [
            nodes.paragraph("", "", page),
            nodes.paragraph("", "", equation),
            nodes.paragraph(record["description"], record["description"]),
            nodes.paragraph(result, result),
            nodes.paragraph(status, status, classes=[f"check-{status.split()[1]}"]),
        ]

    def xref(self, domain: str, role: str, target: str, content: nodes.Node) -> pending_xref:
        return pending_xref(
            "",
            content,
            refdomain=domain,
            reftype=role,
            reftarget=target,
            refexplicit=False,
            refwarn=True,
            refdoc=self.env.docname,
        )


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def table(headers: list[str], rows: list[list[nodes.Node]]) -> nodes.table:
    def row(cells) -> nodes.row:
        line = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += cell if isinstance(cell, nodes.Node) else nodes.paragraph(cell, cell)
            line += entry
        return line

    group = nodes.tgroup(cols=len(headers))
    group.extend(nodes.colspec(colwidth=1) for _ in headers)
    group += nodes.thead("", row(headers))
    group += nodes.tbody("", *(row(cells) for cells in rows))
    return nodes.table("", group, classes=["verification-report"])


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_node(verification_report)
    app.add_directive("verification-report", VerificationReport)
    app.add_post_transform(FillVerificationReport)
    app.connect("doctree-read", collect_checks)
    app.connect("env-purge-doc", purge_doc)
    app.connect("env-merge-info", merge_info)
    app.connect("env-check-consistency", check_labels)
    app.connect("env-get-updated", rewrite_reports)
    return {
        "version": "1",
        "env_version": 1,
        "parallel_read_safe": True,
        "parallel_write_safe": True,
    }
