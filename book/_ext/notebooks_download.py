"""Every executed page can be downloaded as a notebook (.ipynb) that reads right in Jupyter.

The book theme offers an ``.ipynb`` download only when a launch service (Binder, Colab, ...) is
configured. This extension writes each page's executed notebook, written by MyST-NB (with the
outputs of the execution cache merged in by ``executed_notebooks``), next to the page's source
under ``_sources/`` and tells the theme, whose download menu then links to it.

The page's markdown cells are MyST with kramdown's math; Jupyter knows neither. When the page
is written, Sphinx has resolved every reference, so each markdown cell is rewritten in Jupyter's
dialect (``jupyter_markdown``): inline math ``$...$``, equation numbers, citations, figure
numbers and glued values as the book shows them (linked to the book's pages), glued equations
as LaTeX and glued figures as images attached to the cell. A first cell says how to install the
package and where to run the notebook; ``python -m tests.run_notebooks`` executes the downloads.
"""

from __future__ import annotations

import base64
import mimetypes
import posixpath
import re
from pathlib import Path
from typing import Any

import nbformat
from docutils import nodes
from executed_notebooks import executed_notebook_path
from jupyter_markdown import to_jupyter
from myst_nb.core.variables import format_plain_text
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

# the repository Jupyter Book names when _config.yml names none
JUPYTER_BOOK_REPOSITORY = "https://github.com/executablebooks/jupyter-book"
MARKDOWN_LINK = re.compile(r"\[([^\]]*)\]\(([^)]*)\)")
EXPLICIT_TITLE = re.compile(r"(.*?)\s*<([^<>]+)>\s*", re.DOTALL)  # a role's `text <target>`
PAGE_LINK = re.compile(r"\]\((?!\w+://)([^)\s#]+)\.md(#[^)\s]*)?\)")  # ](page.md#anchor)

INSTALL = """\
**To run this notebook**: it is the page *{title}* of the book *{book}*, and it imports the
book's `ddpm` package. Get the repository and set up its environment, which holds the package
and the exact versions the book is built with:

```bash
git clone {repository} ddpm-book
cd ddpm-book
make setup   # .venv: requirements*.txt and the package (pip install -e .)
```

Then put this notebook in {folder} of the clone, beside the page's source (a page may read
files relative to it), and open it there with Jupyter, or run it top to bottom with
`.venv/bin/jupyter execute {path}`.{more}
"""


class PageNotebook:
    """One page's notebook: its markdown cells rewritten with what the built page shows."""

    def __init__(self, app: Sphinx, pagename: str, notebook: nbformat.NotebookNode) -> None:
        self.app, self.pagename, self.notebook = app, pagename, notebook
        self.attachments: dict[str, dict[str, str]] = {}  # of the cell being rewritten
        base = app.config.html_baseurl
        # from _sources/<page>.ipynb to the root of the site, unless the site has an address
        self.site = base.rstrip("/") + "/" if base else "../" * (pagename.count("/") + 1)

    # ----- links -----

    def page_url(self, docname: str, anchor: str = "") -> str:
        return self.site + self.app.builder.get_target_uri(docname) + anchor

    def url(self, refuri: str) -> str:
        """A link of the built page (relative to it) as a link from the notebook."""
        if "://" in refuri:
            return refuri
        if refuri.startswith("#"):
            return self.page_url(self.pagename, refuri)
        return self.site + posixpath.normpath(
            posixpath.join(posixpath.dirname(self.pagename), refuri)
        )

    def markdown_of(self, node: nodes.Node) -> str:
        """A resolved inline node as markdown text, its references as links."""
        if isinstance(node, nodes.Text):
            return node.astext()
        inner = "".join(self.markdown_of(child) for child in node.children)
        if isinstance(node, nodes.reference) and node.get("refuri"):
            return f"[{inner}]({self.url(node['refuri'])})"
        if isinstance(node, nodes.reference) and node.get("refid"):
            return f"[{inner}]({self.page_url(self.pagename, '#' + node['refid'])})"
        return inner

    # ----- roles -----

    def resolve_xref(self, domain: str, typ: str, target: str) -> str:
        contnode = nodes.inline(target, target)
        node = pending_xref(
            "", contnode, refdomain=domain, reftype=typ, reftarget=target, refexplicit=False
        )
        node["refdoc"] = self.pagename
        env = self.app.env
        resolved = env.get_domain(domain).resolve_xref(
            env, self.pagename, self.app.builder, typ, target, node, contnode
        )
        if resolved is None:
            logger.warning(
                f"notebook of {self.pagename}: {{{domain}:{typ}}}`{target}` did not resolve",
                type="notebooks",
            )
            return target
        return self.markdown_of(resolved)

    def glued(self, key: str) -> dict[str, str]:
        """The output that ``glue(key, ...)`` recorded in this page's notebook."""
        for cell in self.notebook.cells:
            for output in cell.get("outputs", []):
                if output.get("metadata", {}).get("scrapbook", {}).get("name") == key:
                    prefix = output["metadata"]["scrapbook"]["mime_prefix"]
                    return {mime.removeprefix(prefix): v for mime, v in output["data"].items()}
        raise KeyError(f"notebook of {self.pagename}: nothing glued as {key!r}")

    def role(self, name: str, content: str) -> str:
        if name == "eq":
            return self.resolve_xref("math", "eq", content)
        if name == "numref":
            return self.resolve_xref("std", "numref", content)
        if name == "cite" or name.startswith("cite:"):
            return self.resolve_xref("cite", name.partition(":")[2] or "p", content)
        if name == "glue:text":
            # MyST-NB's rule: the text after the last colon is a format spec
            key, fmt = content.rsplit(":", 1) if ":" in content else (content, "s")
            text = self.glued(key)["text/plain"]
            try:
                return format_plain_text(text, fmt)
            except ValueError as error:  # e.g. "np.float64(0.5)" with a float format
                raise ValueError(
                    f"notebook of {self.pagename}: glued {key!r} is {text!r}, which the format"
                    f" {fmt!r} cannot take; glue a plain int or float ({error})"
                ) from None
        if name == "glue:md":
            key = content.rsplit(":", 1)[0]  # glue:md`key:format`: the format is MyST's
            return self.markdown(self.glued(key)["text/markdown"])
        if name == "prf:ref" or name == "ref":
            domain, typ = name.split(":") if ":" in name else ("std", name)
            explicit = EXPLICIT_TITLE.fullmatch(content)  # {ref}`shown text <label>`
            if not explicit:
                return self.resolve_xref(domain, typ, content)
            title, target = explicit.groups()
            link = MARKDOWN_LINK.fullmatch(self.resolve_xref(domain, typ, target))
            return f"[{title.strip()}]({link.group(2)})" if link else title.strip()
        if name == "index":
            # {index}`shown text <entry>` shows its text; the entry is only for the index
            explicit = EXPLICIT_TITLE.fullmatch(content)
            return explicit.group(1) if explicit else content
        logger.warning(
            f"notebook of {self.pagename}: role {{{name}}} kept as text", type="notebooks"
        )
        return content

    # ----- directives -----

    def figure(self, image: dict[str, str], options: dict[str, str], caption: str) -> str:
        """An image attached to the cell, its number and its caption below it."""
        mime = next(m for m in ("image/png", "image/jpeg", "image/svg+xml") if m in image)
        attachment = f"figure{len(self.attachments) + 1}.{mime.split('/')[1].split('+')[0]}"
        self.attachments[attachment] = {mime: image[mime]}
        alt = options.get("alt", "")
        text = self.markdown(caption.strip())
        if options.get("name"):
            text = f"**{self.resolve_xref('std', 'numref', options['name'])}.** {text}"
        return f"![{alt}](attachment:{attachment})\n\n{text}".rstrip()

    def directive(self, name: str, argument: str, body: str) -> str:
        lines = body.splitlines()
        options = {}
        while lines and lines[0].startswith(":"):
            key, _, value = lines.pop(0)[1:].partition(":")
            options[key.strip()] = value.strip()
        rest = "\n".join(lines)
        if name == "glue:math":
            latex = self.glued(argument)["text/latex"].strip().strip("$").strip()
            return f"$$\n{latex}\n$$"
        if name == "glue:figure":
            return self.figure(self.glued(argument), options, rest)
        if name == "glue:md":
            return self.markdown(self.glued(argument)["text/markdown"])
        if name == "figure":
            path = Path(self.app.srcdir, posixpath.dirname(self.pagename), argument)
            data = base64.b64encode(path.read_bytes()).decode()
            return self.figure({mimetypes.guess_type(path)[0]: data}, options, rest)
        if name == "admonition":
            text = f"**{self.markdown(argument)}**\n\n{self.markdown(rest)}"
            return "\n".join(f"> {line}".rstrip() for line in text.splitlines())
        if name.startswith("prf:") or name in ("exercise", "solution"):
            return self.numbered_block(name, argument, options, rest)
        if name == "index":
            return ""  # entries of the book's index, not text
        # what the book's own directives (concordance, ...) build is on the page
        page = self.page_url(self.pagename)
        return f"*(The book's build makes this part: see [the page]({page}).)*"

    def numbered_block(self, name: str, argument: str, options: dict[str, str], body: str) -> str:
        """A theorem, proof, exercise or solution: its heading as the page shows it ("Theorem
        1 (Cauchy-Schwarz)", "Proof.", "Exercise 2", "Solution to Exercise 2") in bold, then its
        body; a solution is folded as on the page."""
        kind, body = name.removeprefix("prf:"), self.markdown(body.strip())
        if kind == "proof":
            return f"*Proof.* {body} $\\square$"
        if kind == "solution":
            summary = f"Solution to {self.plain(self.resolve_xref('std', 'numref', argument))}"
            return f"<details><summary>{summary}</summary>\n\n{body}\n\n</details>"
        label, shown = options.get("label"), kind.capitalize()
        if label:  # the block's number, as the page shows it
            domain, typ = ("prf", "ref") if name.startswith("prf:") else ("std", "numref")
            shown = self.plain(self.resolve_xref(domain, typ, label))
        title = f" ({self.markdown(argument)})" if argument else ""
        # not a block quote, where Jupyter's display math would need a "> " on every line
        return f"**{shown}{title}.** {body}"

    @staticmethod
    def plain(markdown: str) -> str:
        """``markdown`` with its links replaced by their text."""
        return MARKDOWN_LINK.sub(r"\1", markdown)

    def markdown(self, text: str) -> str:
        return to_jupyter(text, self.role, self.directive)

    # ----- the notebook -----

    def links_to_pages(self, text: str) -> str:
        """``[text](page.md)``: the page's notebook if it has one, else its HTML page."""

        def target(match) -> str:
            path, anchor = match.group(1), match.group(2) or ""
            docname = posixpath.normpath(posixpath.join(posixpath.dirname(self.pagename), path))
            if docname not in self.app.env.found_docs:
                return match.group(0)
            if "kernelspec" in self.app.env.metadata.get(docname, {}) and not anchor:
                return f"]({posixpath.basename(path)}.ipynb)"
            return f"]({self.page_url(docname, anchor)})"

        return PAGE_LINK.sub(target, text)

    def install_cell(self) -> nbformat.NotebookNode:
        config = self.app.config
        repository = config.html_theme_options.get("repository_url")
        if repository in (None, "", JUPYTER_BOOK_REPOSITORY):  # Jupyter Book's stand-in
            repository = "<repository-url>"
        folder = posixpath.dirname(self.pagename)
        install = posixpath.join(folder, "install")  # book/install.md, where the book has one
        more = f" The book's page [Install and run]({self.page_url(install)}) says more."
        text = INSTALL.format(
            title=self.app.env.titles[self.pagename].astext(),
            book=config.html_title,
            repository=repository,
            folder=f"the folder `{folder}/`" if folder else "the root folder",
            path=f"{self.pagename}.ipynb",
            more=more if install in self.app.env.found_docs else "",
        )
        return nbformat.v4.new_markdown_cell(text)

    def for_jupyter(self) -> nbformat.NotebookNode:
        for cell in self.notebook.cells:
            if cell.cell_type != "markdown":
                continue
            self.attachments = {}
            cell.source = self.markdown(self.links_to_pages(cell.source))
            if self.attachments:
                cell["attachments"] = self.attachments
        self.notebook.cells.insert(0, self.install_cell())
        return self.notebook


def offer_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """``html-page-context``: write the page's notebook for Jupyter and offer it for download."""
    if doctree is None or "kernelspec" not in app.env.metadata.get(pagename, {}):
        return
    executed = nbformat.read(executed_notebook_path(app, pagename), as_version=4)
    download = Path(app.outdir, "_sources", *f"{pagename}.ipynb".split("/"))
    download.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(PageNotebook(app, pagename, executed).for_jupyter(), download)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app: Sphinx) -> dict[str, Any]:
    # before the theme builds its header buttons (priority 501)
    app.connect("html-page-context", offer_notebook, priority=450)
    return {"version": "2", "parallel_read_safe": True, "parallel_write_safe": True}
