"""Never show outputs of old package code: a package change re-executes every page.

jupyter-cache keys a page's outputs on the page's own cells, so editing ``ddpm/`` alone would let
an incremental build keep outputs computed with the old code. This extension hashes every file
under the directories in ``package_cache_paths`` (relative to the book's root) and compares the
hash with two records of the package that the outputs were made with:

- the stamp in the execution cache: when it differs, the cache is emptied and stamped anew
  (whatever is cached from then on is made with the current code);
- the hash kept in Sphinx's environment, which Sphinx saves only once a build has read every
  page: when it differs, every page is read, so executed, again. A build that fails half way
  leaves the old hash there, and the next build reads every page again.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

logger = logging.getLogger(__name__)

STAMP = "package-hash.txt"


def package_hash(root: Path, paths: list[str]) -> str:
    """sha256 over the names and contents of every file under ``paths`` (caches skipped)."""
    digest = hashlib.sha256()
    for path in paths:
        base = (root / path).resolve()
        if not base.is_dir():
            raise FileNotFoundError(f"package_cache_paths: {base} is not a directory")
        files = sorted(
            file
            for file in base.rglob("*")
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc"
        )
        for file in files:
            digest.update(f"{path}/{file.relative_to(base).as_posix()}\0".encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def check_package(app: Sphinx) -> None:
    """``builder-inited``: compare the package with the one the outputs were made with."""
    env = app.env
    current = package_hash(Path(app.confdir), app.config.package_cache_paths)
    env.package_cache_reread = getattr(env, "package_cache_hash", None) != current
    env.package_cache_hash = current
    stamp = Path(env.mystnb_config.execution_cache_path) / STAMP
    if stamp.exists() and stamp.read_text().strip() == current:
        return
    if stamp.parent.exists():
        logger.info(
            f"package_cache: {', '.join(app.config.package_cache_paths)} changed since the cached "
            "outputs were made; emptying the execution cache"
        )
        shutil.rmtree(stamp.parent)
    stamp.parent.mkdir(parents=True)
    stamp.write_text(current + "\n")


def reread_all(app: Sphinx, env: BuildEnvironment, added, changed, removed) -> list[str]:
    """``env-get-outdated``: after a package change every page is read (and executed) again."""
    return sorted(env.found_docs) if env.package_cache_reread else []


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("package_cache_paths", [], "env", [list])
    app.connect("builder-inited", check_package, priority=900)  # after myst-nb sets its paths
    app.connect("env-get-outdated", reread_all)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
