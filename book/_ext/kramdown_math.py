"""kramdown's math rules on top of MyST's dollarmath.

- ``$$...$$`` inside a paragraph is inline math (MyST's ``myst_dmath_double_inline`` parses it but
  makes a display block; it becomes inline math here). ``$$...$$`` as its own paragraph stays
  display math: a ``$$`` block that follows a line of text without a blank line between is part
  of that paragraph, so inline, as in kramdown.
- A display equation with ``\\tag{n}`` is numbered by the tag alone: Sphinx adds no number of its
  own. The tag is the equation's label unless it has a MyST label ``$$...$$ (name)``, so
  ``{eq}`n``` (or ``{eq}`name```) links to it and reads ``(n)``. An ``align`` (``gather``, ...)
  environment may tag each of its lines; each tag is then a label.

Sphinx wraps display math containing ``\\\\`` in ``split``, where MathJax refuses ``\\tag``, so a
tagged equation is written out whole (``nowrap``), with its tag outside any ``split``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.builders import Builder
from sphinx.domains.math import MathDomain
from sphinx.environment import BuildEnvironment
from sphinx.transforms import SphinxTransform
from sphinx.util import logging
from sphinx.util.nodes import make_refnode

logger = logging.getLogger(__name__)

TAG = re.compile(r"\\tag(\*?)\s*\{([^{}]+)\}")
ENVIRONMENT = re.compile(
    r"\\begin\{(align|alignat|eqnarray|equation|flalign|gather|multline)(\*?)\}.*"
    r"\\end\{\1\2\}",
    re.DOTALL,
)


class KramdownMathDomain(MathDomain):
    """The math domain, plus equations numbered by their ``\\tag``: label -> (docname, tag)."""

    initial_data = {**MathDomain.initial_data, "tags": {}}

    @property
    def tags(self) -> dict[str, tuple[str, str]]:
        return self.data.setdefault("tags", {})

    def clear_doc(self, docname: str) -> None:
        super().clear_doc(docname)
        for label, (doc, _tag) in list(self.tags.items()):
            if doc == docname:
                del self.tags[label]

    def merge_domaindata(self, docnames, otherdata: dict[str, Any]) -> None:
        super().merge_domaindata(docnames, otherdata)
        for label, (doc, tag) in otherdata.get("tags", {}).items():
            if doc in docnames:
                self.tags[label] = (doc, tag)

    def resolve_xref(
        self,
        env: BuildEnvironment,
        fromdocname: str,
        builder: Builder,
        typ: str,
        target: str,
        node: pending_xref,
        contnode: nodes.Element,
    ) -> nodes.Element | None:
        if target in self.tags:
            docname, tag = self.tags[target]
            node_id = nodes.make_id(f"equation-{target}")
            return make_refnode(builder, fromdocname, docname, node_id, nodes.Text(tag))
        return super().resolve_xref(env, fromdocname, builder, typ, target, node, contnode)

    def get_enumerable_node_type(self, node: nodes.Node) -> str | None:
        # tagged equations keep their tag and are left out of Sphinx's equation numbering
        if isinstance(node, nodes.math_block) and node.get("tag"):
            return None
        return super().get_enumerable_node_type(node)


class InlineDoubleDollar(SphinxTransform):
    """``$$...$$`` inside a paragraph (or any other text) is inline math, as in kramdown."""

    default_priority = 200

    def apply(self, **kwargs: Any) -> None:
        for block in list(self.document.findall(nodes.math_block)):
            if isinstance(block.parent, nodes.TextElement):
                inline = nodes.math(block.astext(), block.astext())
                inline.source, inline.line = block.source, block.line
                block.replace_self(inline)
                if TAG.search(inline.astext()):
                    logger.warning(
                        "\\tag in inline math: give the equation a paragraph of its own "
                        "(blank lines around its $$...$$)",
                        location=inline,
                        type="kramdown",
                        subtype="tag",
                    )


class TaggedEquations(SphinxTransform):
    """Give each ``\\tag{n}`` a label and an anchor, and drop Sphinx's own number."""

    default_priority = 210  # after InlineDoubleDollar

    def apply(self, **kwargs: Any) -> None:
        domain: KramdownMathDomain = self.env.get_domain("math")  # type: ignore[assignment]
        docname = self.env.docname
        for block in self.document.findall(nodes.math_block):
            text = block.astext().strip()
            tags = TAG.findall(text)
            if block["nowrap"] or not tags:
                continue
            labels = [tag for _star, tag in tags]
            if block.get("label"):  # a MyST label names the (first) tagged line
                labels[0] = block["label"]
            for label, (star, tag) in zip(labels, tags, strict=True):
                if label != block.get("label"):  # MyST has registered its own label
                    domain.note_equation(docname, label, location=block)
                    block["ids"].append(nodes.make_id(f"equation-{label}"))
                    self.document.set_id(block)
                domain.tags[label] = (docname, tag if star else f"({tag})")
            block["tag"] = tags[0][1]
            block["number"] = None
            block["nowrap"] = True
            block[:] = [nodes.Text(self.display(text, block))]

    def display(self, text: str, block: nodes.math_block) -> str:
        """The TeX MathJax gets: the tag outside any ``split`` that Sphinx would add."""
        if ENVIRONMENT.fullmatch(text):
            return text  # MathJax typesets align, gather, ... as they are, a tag per line
        tags = TAG.findall(text)
        if len(tags) > 1:
            logger.warning(
                "several \\tag in one equation need an environment with a line for each, "
                "such as \\begin{align}",
                location=block,
                type="kramdown",
                subtype="tag",
            )
        body = TAG.sub("", text).strip()
        if "\\\\" in body and "\\begin" not in body:
            body = rf"\begin{{split}}{body}\end{{split}}"
        opening, closing = getattr(self.config, "mathjax_display", (r"\[", r"\]"))
        return f"{opening}{body}{TAG.search(text).group(0)}{closing}"


def add_stylesheet(app: Sphinx) -> None:
    """``builder-inited``: serve static/ddpm-math.css (wide equations scroll, not clip)."""
    app.config.html_static_path.append(str(Path(__file__).parent / "static"))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", add_stylesheet)
    app.add_css_file("ddpm-math.css")
    app.add_domain(KramdownMathDomain, override=True)
    app.add_transform(InlineDoubleDollar)
    app.add_transform(TaggedEquations)
    return {
        "version": "1",
        "env_version": 1,
        "parallel_read_safe": True,
        "parallel_write_safe": True,
    }
