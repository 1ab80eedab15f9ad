"""Execute the pages that the build will read, several at once, before Sphinx reads them.

MyST-NB executes a page when Sphinx reads it, one page after another, so a cold build of the book
keeps one core busy while the others wait (most pages run their network on one thread). This
extension runs first: on ``env-before-read-docs`` it reads every page about to be read into a
notebook exactly as MyST-NB will, asks the execution cache whether that notebook's outputs are
there, and executes those that are not in ``parallel_execution_workers`` processes at once
(default: one per core), longest first. Each executed notebook goes into the cache the way
MyST-NB's cache mode puts it there, so that when Sphinx reads the page, MyST-NB finds its outputs
and renders them.

Nothing is decided here that MyST-NB would not decide: a page whose execution fails is not
cached, so MyST-NB executes it again when it reads it and fails the build with its traceback; a
page is matched to its outputs by MyST-NB's own cache lookup. Each kernel runs with
``OMP_NUM_THREADS=1`` when more than one runs at a time, so that they do not fight for the cores.

Longest first needs the pages' times: they are taken from the previous execution of the same page
in this cache, else from ``bench/results/book_build.json`` (written by ``python -m
bench.book_build``), else the page counts as short.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import suppress
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

logger = logging.getLogger(__name__)

TIMES_FILE = "bench/results/book_build.json"  # relative to the book's root


def execute_one(notebook, cwd: str | None, timeout: int | None) -> dict:
    """Run in a worker process: execute one notebook, return it with its time or its error.

    ``cwd`` None: a temporary folder, as MyST-NB's ``nb_execution_in_temp``.
    """
    import tempfile

    from jupyter_cache.executors.utils import single_nb_execution

    # the kernel inherits this process's environment: one thread each, as several run at once
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    with tempfile.TemporaryDirectory() as temporary:
        result = single_nb_execution(
            notebook,
            cwd=temporary if cwd is None else cwd,
            timeout=timeout,
            allow_errors=False,
            meta_override=True,
        )
    if result.err is not None:
        return {"error": f"{type(result.err).__name__}: {result.err}", "seconds": result.time}
    return {"notebook": notebook, "seconds": result.time, "error": None}


def read_notebook(app: Sphinx, env: BuildEnvironment, docname: str):
    """The page as MyST-NB reads it, with its reader's format; None if it is not a notebook.

    The source goes through the ``source-read`` handlers first (the front matter's dates are
    quoted there), as Sphinx passes it before MyST-NB sees it; what they keep for the page's
    reading (``env.temp_data``) is put back as it was.
    """
    from myst_nb.core.read import create_nb_reader

    path = Path(env.doc2path(docname))
    saved = dict(env.temp_data)
    try:
        env.temp_data["docname"] = docname
        source = [path.read_text(encoding="utf-8")]
        app.events.emit("source-read", docname, source)
        content = source[0]
    finally:
        env.temp_data.clear()
        env.temp_data.update(saved)
    reader = create_nb_reader(str(path), env.myst_config, env.mystnb_config, content)
    if reader is None:
        return None
    notebook = reader.read(content)
    kernel = notebook.metadata.get("kernelspec", {}).get("name")
    if kernel is not None:  # MyST-NB's kernel aliases, as its parser applies them
        import re

        for pattern, alias in (env.mystnb_config.kernel_rgx_aliases or {}).items():
            if re.fullmatch(pattern, kernel):
                notebook.metadata["kernelspec"]["name"] = alias
                break
    return path, notebook, reader.read_fmt


def known_times(root: Path, cache) -> dict[str, float]:
    """Seconds each page (by path) took when last executed, as far as anything recorded it."""
    times: dict[str, float] = {}
    try:
        recorded = json.loads((root / TIMES_FILE).read_text())
        for page, seconds in recorded.get("page_seconds", {}).items():
            times[str((root / page).resolve())] = float(seconds)
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    for record in cache.list_cache_records():
        seconds = (record.data or {}).get("execution_seconds")
        if seconds is not None:
            times[record.uri] = float(seconds)
    return times


def execute_ahead(app: Sphinx, env: BuildEnvironment, docnames: list[str]) -> None:
    """``env-before-read-docs``: fill the execution cache for the pages about to be read."""
    config = env.mystnb_config
    if config.execution_mode != "cache":
        return
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    workers = app.config.parallel_execution_workers or os.cpu_count() or 1
    cache = get_cache(config.execution_cache_path or ".jupyter_cache")
    todo = []
    for docname in docnames:
        read = read_notebook(app, env, docname)
        if read is None:
            continue
        path, notebook, read_fmt = read
        if not any(cell.cell_type == "code" for cell in notebook.cells):
            continue
        try:
            cache.match_cache_notebook(notebook)
            continue  # its outputs are cached
        except KeyError:
            todo.append((path, notebook, read_fmt))
    if len(todo) < 2 or workers < 2:
        return  # MyST-NB executes it as it reads it
    times = known_times(Path(app.confdir), cache)
    todo.sort(key=lambda item: -times.get(str(item[0]), 0.0))
    logger.info(
        f"parallel_execution: executing {len(todo)} pages, {workers} at a time", color="green"
    )
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    timeout = config.execution_timeout
    in_temp = config.execution_in_temp
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {}
        for path, notebook, read_fmt in todo:
            cwd = None if in_temp else str(path.parent)
            futures[pool.submit(execute_one, notebook, cwd, timeout)] = (path, notebook, read_fmt)
        for future in as_completed(futures):
            path, notebook, read_fmt = futures[future]
            name = os.path.relpath(path, app.confdir)
            try:
                outcome = future.result()
            except Exception as error:  # the worker itself died: MyST-NB will try again
                logger.info(f"parallel_execution: {name}: the worker failed ({error})")
                continue
            if outcome["error"] is not None:
                logger.info(
                    f"parallel_execution: {name} failed after {outcome['seconds']:.1f} s; "
                    "it is executed again as it is read, to report the error"
                )
                continue
            try:
                record = cache.add_nb_to_project(str(path), read_data=read_fmt)
                cache.cache_notebook_bundle(
                    CacheBundleIn(
                        outcome["notebook"],
                        record.uri,
                        data={"execution_seconds": outcome["seconds"]},
                    ),
                    check_validity=False,
                    overwrite=True,
                )
            except Exception as error:  # leave no half-written record: MyST-NB executes it
                with suppress(KeyError):
                    cache.remove_cache_record(cache.match_cache_notebook(notebook).pk)
                logger.info(f"parallel_execution: {name} could not be cached ({error})")
                continue
            logger.info(f"parallel_execution: {name} executed in {outcome['seconds']:.1f} s")
    logger.info(
        f"parallel_execution: {len(todo)} pages in {time.perf_counter() - start:.1f} s",
        color="green",
    )


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("parallel_execution_workers", 0, "", [int])  # 0: one per core
    app.connect("env-before-read-docs", execute_ahead)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
