"""The executed notebook of each page holds the outputs that the page shows.

MyST-NB writes every page's notebook to its output folder (``_build/jupyter_execute``), where
the verification report (``checks_report``) reads the check records and the download menu
(``notebooks_download``) finds the notebook. When the outputs come from the execution cache
(``execute_notebooks: cache``, page unchanged), MyST-NB renders the cached outputs but writes
the notebook as it was read, without any: an incremental build that reads a page again without
executing it would drop that page's checks from the report and offer a notebook with no outputs.
So after a page is read, its written notebook gets the cached outputs merged in, as MyST-NB
merged them for rendering.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
from docutils import nodes
from jupyter_cache import get_cache
from myst_nb.sphinx_ import NbMetadataCollector
from sphinx.application import Sphinx


def executed_notebook_path(app: Sphinx, docname: str) -> Path:
    """Where MyST-NB writes the executed notebook of ``docname``."""
    return Path(app.env.mystnb_config.output_folder, *f"{docname}.ipynb".split("/"))


def merge_cached_outputs(app: Sphinx, doctree: nodes.document) -> None:
    """``doctree-read``: write the page's notebook with the outputs it was rendered with."""
    env = app.env
    if "kernelspec" not in env.metadata[env.docname]:
        return
    executed = NbMetadataCollector.get_exec_data(env, env.docname)
    path = executed_notebook_path(app, env.docname)
    if not executed or executed["method"] != "cache" or not path.exists():
        return
    cache = get_cache(env.mystnb_config.execution_cache_path or ".jupyter_cache")
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    try:
        _pk, merged = cache.merge_match_into_notebook(notebook)
    except KeyError:  # not in the cache: the page failed, and the build reports it
        return
    nbformat.write(merged, path)


def setup(app: Sphinx) -> dict[str, Any]:
    # before checks_report reads the check records (default priority 500)
    app.connect("doctree-read", merge_cached_outputs, priority=400)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
