"""Every executed page can be downloaded as a notebook (.ipynb) that runs with ``import ddpm``.

The book theme offers an ``.ipynb`` download only when a launch service (Binder, Colab, ...) is
configured. This extension copies each page's executed notebook, written by MyST-NB (with the
outputs of the execution cache merged in by ``executed_notebooks``), next to the page's source
under ``_sources/`` and tells the theme, whose download menu then links to it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from executed_notebooks import executed_notebook_path
from sphinx.application import Sphinx


def offer_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """``html-page-context``: copy the executed notebook and point the download menu at it."""
    if doctree is None or "kernelspec" not in app.env.metadata.get(pagename, {}):
        return
    executed = executed_notebook_path(app, pagename)
    download = Path(app.outdir, "_sources", *f"{pagename}.ipynb".split("/"))
    download.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(executed, download)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app: Sphinx) -> dict[str, Any]:
    # before the theme builds its header buttons (priority 501)
    app.connect("html-page-context", offer_notebook, priority=450)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
