"""Tie every numbered equation a reader sees to its checks, and list them all.

A page builds each numbered equation as a ``ddpm.checks.Equation`` in a code cell and shows it
with ``{glue:math}`` (the glued TeX carries the ``\\tag``); its checks run in code cells too. Each
equation and each check leaves a record in the executed notebook's output metadata. Code cells
are cached by jupyter-cache, which does not look at a page's text, so the tie between what a page
shows and what was checked is made here, on the Sphinx side, every time a page is read, whether
its outputs were executed or taken from the cache:

- every display equation with a ``\\tag`` on a page must be pasted from an Equation of that page:
  a typed one (an edit of the page's text) fails the build, naming the page and the equation;
- every Equation the page builds must be shown there, and every check must name one of them;
- an Equation that is not a definition must have a check whose claim is part of the shown
  equation, and every check must have passed with each of its mutants rejected.

Failures are warnings, which ``make book`` (``-W``) turns into errors. The directive
``verification-report`` lists every equation and check, grouped by page, with totals; the
``concordance`` extension reads the same records.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from typing import Any

from docutils import nodes
from executed_notebooks import executed_notebook_path
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.transforms import SphinxTransform
from sphinx.transforms.post_transforms import SphinxPostTransform
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

CHECK_KEY = "ddpm_check"  # written by ddpm.checks
EQUATION_KEY = "ddpm_equation"
TAG = re.compile(r"\\tag\*?\s*\{([^{}]+)\}")

GREEN, RED, GREY = "#1a7f37", "#cf222e", "#6e7781"


# --- what each page shows, builds and checks ----------------------------------------------------


def store(env: BuildEnvironment, name: str) -> dict[str, Any]:
    """A per-document store kept in the environment (docname -> value)."""
    if not hasattr(env, name):
        setattr(env, name, {})
    return getattr(env, name)


class ShownEquations(SphinxTransform):
    """Note every numbered display equation of the page (a ``\\tag`` or a label): its number,
    and whether it was pasted from the page's glue data (``glue:math``) or typed into the text."""

    default_priority = 205  # after InlineDoubleDollar (200), before TaggedEquations (210)

    def apply(self, **kwargs: Any) -> None:
        shown = []
        for block in self.document.findall(nodes.math_block):
            labels = TAG.findall(block.astext()) or ([block["label"]] if block.get("label") else [])
            for tag in labels:
                shown.append(
                    {
                        "label": tag.strip(),
                        "pasted": "pasted-math" in block.get("classes", []),
                        "latex": block.astext().strip(),
                        "line": block.line,
                    }
                )
        store(self.env, "ddpm_shown")[self.env.docname] = shown


def collect_records(app: Sphinx, doctree: nodes.document) -> None:
    """``doctree-read``: read the page's equation and check records, then hold the page to the
    rules above."""
    env, docname = app.env, app.env.docname
    equations, checks = [], []
    if "kernelspec" in env.metadata[docname]:
        notebook = executed_notebook_path(app, docname)
        if notebook.exists():
            cells = json.loads(notebook.read_text(encoding="utf8"))["cells"]
            for cell in cells:
                for output in cell.get("outputs", []):
                    metadata = output.get("metadata", {})
                    if EQUATION_KEY in metadata:
                        equations.append(metadata[EQUATION_KEY])
                    if CHECK_KEY in metadata:
                        checks.append(metadata[CHECK_KEY])
    store(env, "ddpm_equations")[docname] = equations
    store(env, "ddpm_checks")[docname] = checks
    if docname in getattr(env, "ddpm_check_reports", set()):
        env.get_domain("math").data["has_equations"][docname] = True  # the report shows math
    shown = store(env, "ddpm_shown").get(docname, [])
    if docname in app.config.checked_equations_exempt:  # a test page of typed math
        shown = [item for item in shown if item["pasted"]]
    for problem, line in problems(shown, equations, checks):
        logger.warning(problem, location=(docname, line), type="ddpm", subtype="check")


def problems(shown: list[dict], equations: list[dict], checks: list[dict]):
    """(message, line) for every way the page breaks the rules; empty when it keeps them."""
    built = {eq["label"]: eq for eq in equations}
    shown_labels = set()
    for item in shown:
        label, line = item["label"], item["line"]
        shown_labels.add(label)
        if not item["pasted"]:
            yield (
                f"equation ({label}) is typed into the page, so no check sees it: build it as "
                f'ddpm.checks.Equation("{label}", ...), glue it and show it with '
                f"```{{glue:math}} eq-{label}```",
                line,
            )
        elif label not in built:
            yield f"equation ({label}) is pasted, but the page builds no Equation ({label})", line
        elif strip_tex(item["latex"]) != strip_tex(built[label]["latex"]):
            yield f"equation ({label}) as shown differs from the Equation its checks took", line
    for label, eq in built.items():
        if label not in shown_labels:
            yield f"Equation ({label}) is built but not shown: show it with {{glue:math}}", None
        of_it = [c for c in checks if c["label"] == label]
        if eq["definition"]:
            continue
        if not any(c.get("claim_shown") for c in of_it):
            yield (
                f"equation ({label}) states a result, but no check takes its claim from the shown "
                "equation (mark it definition=True if it only defines notation)",
                None,
            )
    for check in checks:
        label = check["label"]
        if label not in built:
            yield (
                f"a check names equation ({label}), which this page does not build: "
                f'check an Equation("{label}", ...) of this page',
                None,
            )
        if not check.get("mutants"):
            yield f"a check of ({label}) has no mutants: it cannot be shown able to fail", None
        elif not all(mutant["rejected"] for mutant in check["mutants"]):
            yield f"a check of ({label}) let a mutant pass: {check['description']}", None
        elif not check["passed"]:
            yield f"a check of ({label}) failed: {check['description']}: {check['detail']}", None


def strip_tex(latex: str) -> str:
    return re.sub(r"\s+", "", latex.strip().removeprefix("$$").removesuffix("$$"))


def purge_doc(app: Sphinx, env: BuildEnvironment, docname: str) -> None:
    for name in ("ddpm_shown", "ddpm_equations", "ddpm_checks"):
        store(env, name).pop(docname, None)
    getattr(env, "ddpm_check_reports", set()).discard(docname)


def merge_info(app: Sphinx, env: BuildEnvironment, docnames: set[str], other: Any) -> None:
    for name in ("ddpm_shown", "ddpm_equations", "ddpm_checks"):
        store(env, name).update(
            {doc: value for doc, value in store(other, name).items() if doc in docnames}
        )
    reports = getattr(other, "ddpm_check_reports", set()) & set(docnames)
    env.ddpm_check_reports = getattr(env, "ddpm_check_reports", set()) | reports


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


# --- what the records add up to ------------------------------------------------------------------


def book_equations(env: BuildEnvironment) -> list[tuple[str, dict, list[dict]]]:
    """(docname, equation record, its check records) for every equation, in reading order."""
    equations, checks = store(env, "ddpm_equations"), store(env, "ddpm_checks")
    return [
        (doc, eq, [c for c in checks.get(doc, []) if c["label"] == eq["label"]])
        for doc in reading_order(env, equations)
        for eq in equations[doc]
    ]


def equation_status(eq: dict, checks: list[dict]) -> str:
    """'definition', 'checked' (all checks passed, mutants rejected), 'failed' or 'unchecked'."""
    if eq["definition"]:
        return "definition"
    if not checks:
        return "unchecked"
    if all(c["passed"] and c.get("mutants") for c in checks):
        return "checked"
    return "failed"


def totals(env: BuildEnvironment) -> dict[str, int]:
    rows = book_equations(env)
    statuses = Counter(equation_status(eq, checks) for _doc, eq, checks in rows)
    checks = [c for doc_checks in store(env, "ddpm_checks").values() for c in doc_checks]
    mutants = [m for c in checks for m in c.get("mutants", [])]
    return {
        "shown": len(rows),
        "checked": statuses["checked"],
        "definitions": statuses["definition"],
        "unchecked": statuses["unchecked"] + statuses["failed"],
        "checks": len(checks),
        "passed": sum(c["passed"] for c in checks),
        "mutants": len(mutants),
        "rejected": sum(m["rejected"] for m in mutants),
        "pages": len({doc for doc, _eq, _c in rows}),
    }


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def badge(text: str, colour: str) -> nodes.raw:
    tag = (
        f'<span class="ddpm-badge" style="background:{colour};color:#fff;border-radius:0.8em;'
        f'padding:0.05em 0.55em;font-weight:600;font-size:0.85em;white-space:nowrap">'
        f"{html.escape(text)}</span>"
    )
    return nodes.raw("", tag, format="html")


STATUS_BADGE = {
    "checked": ("\u2713 checked", GREEN),
    "definition": ("definition", GREY),
    "unchecked": ("\u2717 unchecked", RED),
    "failed": ("\u2717 failed", RED),
}


class ReportBase(SphinxPostTransform):
    """Shared pieces of the generated pages: links to pages and equations."""

    default_priority = 5  # before references are resolved

    def page_link(self, docname: str) -> nodes.Node:
        title = self.env.titles.get(docname)
        text = title.astext() if title is not None else docname
        return self.xref("std", "doc", "/" + docname, nodes.inline(text, text))

    def equation_link(self, docname: str, label: str) -> nodes.Node:
        text = f"({label})"
        math = self.env.get_domain("math")
        if label in getattr(math, "tags", {}) and math.tags[label][0] == docname:
            return self.xref("math", "eq", label, nodes.inline(text, text))
        return nodes.inline(text, text)

    def xref(self, domain: str, role: str, target: str, content: nodes.Node) -> pending_xref:
        return pending_xref(
            "",
            content,
            refdomain=domain,
            reftype=role,
            reftarget=target,
            refexplicit=True,
            refwarn=True,
            refdoc=self.env.docname,
        )


# --- the verification report ---------------------------------------------------------------------


class verification_report(nodes.General, nodes.Element):  # noqa: N801 (docutils node naming)
    """Where the report goes; replaced before writing."""


class GeneratedDirective(SphinxDirective):
    """A directive whose content is generated from the whole book's records: its page is
    rewritten on every build, and its placeholder ``node`` filled in before writing."""

    node: type[nodes.Element]

    def run(self) -> list[nodes.Node]:
        self.env.ddpm_check_reports = getattr(self.env, "ddpm_check_reports", set())
        self.env.ddpm_check_reports.add(self.env.docname)
        return [self.node()]


class VerificationReport(GeneratedDirective):
    """``verification-report``: every equation and check of the book, grouped by page."""

    node = verification_report


class FillVerificationReport(ReportBase):
    def run(self, **kwargs: Any) -> None:
        for placeholder in list(self.document.findall(verification_report)):
            placeholder.replace_self(self.report())

    def report(self) -> list[nodes.Node]:
        count = totals(self.env)
        if not count["shown"]:
            text = "No page of this build shows a numbered equation."
            return [nodes.paragraph(text, text)]
        ok = count["passed"] == count["checks"] and count["rejected"] == count["mutants"]
        summary = nodes.paragraph(classes=["verification-summary"])
        summary += badge(
            "\u2713 every check held" if ok else "\u2717 some checks failed", GREEN if ok else RED
        )
        summary += nodes.Text(f" in this build, on {plural(count['pages'], 'page')}.")
        headers = [
            "Equations shown",
            "Equations checked",
            "Definitions",
            "Not checked",
            "Checks passed",
            "Mutants rejected",
        ]
        numbers = [
            str(count["shown"]),
            str(count["checked"]),
            str(count["definitions"]),
            str(count["unchecked"]),
            f"{count['passed']} of {count['checks']}",
            f"{count['rejected']} of {count['mutants']}",
        ]
        totals_table = table(
            ["In this build", "Count"],
            [list(pair) for pair in zip(headers, numbers, strict=True)],
            classes=("verification-totals",),
        )
        out: list[nodes.Node] = [summary, totals_table]
        rows = book_equations(self.env)
        for docname in dict.fromkeys(doc for doc, _eq, _c in rows):
            results = [(eq, c) for doc, eq, c in rows if doc == docname and not eq["definition"]]
            if not results:
                continue
            heading = nodes.rubric(classes=["verification-page"])
            heading += self.page_link(docname)
            out.append(heading)
            for eq, checks in results:
                out.extend(self.equation_entry(docname, eq, checks))
        definitions = [(doc, eq, checks) for doc, eq, checks in rows if eq["definition"]]
        if definitions:
            text = "Definitions and notation (nothing to prove; a check, where there is one, "
            text += "compares the package with the definition)"
            out.append(nodes.rubric(text=text))
            for docname, eq, checks in definitions:
                title = nodes.paragraph(classes=["verification-equation"])
                title += badge(*STATUS_BADGE["definition"])
                title += nodes.Text(" ")
                title += self.equation_link(docname, eq["label"])
                title += nodes.Text(" on ")
                title += self.page_link(docname)
                out.extend([title, self.math(eq), *self.check_lines(checks)])
        return out

    def math(self, eq: dict) -> nodes.math_block:
        tex = TAG.sub("", eq["latex"]).strip()
        return nodes.math_block(
            tex, tex, nowrap=False, number=None, label=None, docname=self.env.docname
        )

    def equation_entry(self, docname: str, eq: dict, checks: list[dict]) -> list[nodes.Node]:
        status = equation_status(eq, checks)
        title = nodes.paragraph(classes=["verification-equation"])
        title += badge(*STATUS_BADGE[status])
        title += nodes.Text(" ")
        title += self.equation_link(docname, eq["label"])
        if eq.get("paper"):
            title += nodes.Text(f" \u2014 Ho et al. (2020): {', '.join(paper_names(eq['paper']))}")
        return [title, self.math(eq), *self.check_lines(checks)]

    def check_lines(self, checks: list[dict]) -> list[nodes.Node]:
        """One line per check, folded under a summary line that counts them and their mutants
        (open when one failed), so that the page reads as a list of equations."""
        if not checks:
            return []
        lines = nodes.bullet_list(classes=["verification-checks"])
        for check in checks:
            lines += nodes.list_item("", self.check_line(check))
        mutants = [m for check in checks for m in check.get("mutants", [])]
        rejected = sum(m["rejected"] for m in mutants)
        failed = not all(check["passed"] for check in checks)
        summary = (
            f"{plural(len(checks), 'check')}, {rejected} of {plural(len(mutants), 'mutant')} "
            "rejected: what each compares"
        )
        opening = (
            f'<details class="verification-details" style="margin-bottom:1.2em"'
            f'{" open" if failed else ""}><summary style="cursor:pointer;color:#57606a;'
            f'font-size:0.9em">{summary}</summary>'
        )
        return [
            nodes.raw("", opening, format="html"),
            lines,
            nodes.raw("", "</details>", format="html"),
        ]

    def check_line(self, check: dict) -> nodes.paragraph:
        line = nodes.paragraph()
        passed = check["passed"]
        line += badge("\u2713" if passed else "\u2717", GREEN if passed else RED)
        line += nodes.Text(f" {check['description']}. ")
        line += nodes.strong("", "Claim: ")
        line += nodes.Text(f"{source_text(check['claim_from'])}. ")
        line += nodes.strong("", "Against: ")
        line += nodes.Text(f"{source_text(check['against_from'])}. ")
        mutants = check.get("mutants", [])
        line += nodes.strong("", "Mutants: ")
        line += nodes.Text(
            "; ".join(
                f"{m['description']} ({'rejected' if m['rejected'] else 'NOT rejected'})"
                for m in mutants
            )
            + "."
        )
        return line


SOURCE_NAMES = {  # the kinds of ddpm.checks.SOURCES, as the report words them
    "shown": "the shown equation",
    "derivation": "SymPy derivation",
    "package": "the package",
    "monte-carlo": "Monte Carlo",
    "exact": "exact case",
    "reference": "reference library",
}


def source_text(source: str) -> str:
    """``"kind: detail"`` as the report shows it: the kind named, then the detail."""
    kind, _, detail = source.partition(":")
    name = SOURCE_NAMES.get(kind.strip(), kind.strip())
    detail = detail.strip()
    if kind.strip() == "shown":
        return name
    return f"{name} ({detail})" if detail else name


def paper_names(ids: list[str]) -> list[str]:
    return [i if i.startswith("Algorithm") else f"Eq. {i}" for i in ids]


def table(
    headers: list[str],
    rows: list[list[nodes.Node]],
    classes: tuple[str, ...] = ("paper-concordance",),
) -> nodes.table:
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
    return nodes.table("", group, classes=list(classes))


def setup(app: Sphinx) -> dict[str, Any]:
    # pages whose typed tagged equations are not held to the rules (the machinery's own tests)
    app.add_config_value("checked_equations_exempt", [], "env", [list])
    app.add_node(verification_report)
    app.add_directive("verification-report", VerificationReport)
    app.add_transform(ShownEquations)
    app.add_post_transform(FillVerificationReport)
    app.connect("doctree-read", collect_records)
    app.connect("env-purge-doc", purge_doc)
    app.connect("env-merge-info", merge_info)
    app.connect("env-get-updated", rewrite_reports)
    return {
        "version": "2",
        "env_version": 2,
        "parallel_read_safe": True,
        "parallel_write_safe": True,
    }
