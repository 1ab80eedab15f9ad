"""The site works without a network: nothing on a page is fetched from outside the site.

- MathJax comes from the site (the ``sphinx-mathjax-offline`` extension sets ``mathjax_path``).
- Jupyter Book 1 always loads ``sphinx-thebe``, whose scripts fetch thebe and a Binder kernel from
  the internet on demand, and whose configuration script it adds twice (a console error on every
  page). The book has no live kernels, so its scripts and stylesheet are left out of the pages.
- Any script, stylesheet or image that a page would still fetch from another host is a warning,
  so ``-W`` fails the build.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

EXTERNAL = ("http://", "https://", "//")


def is_thebe(asset: Any) -> bool:
    filename = str(getattr(asset, "filename", "") or "")
    return "thebe" in filename or "THEBE" in getattr(asset, "attributes", {}).get("body", "")


def keep_pages_offline(
    app: Sphinx, pagename: str, templatename: str, context: dict, doctree: nodes.document | None
) -> None:
    """``html-page-context``: drop thebe's assets, warn about anything fetched from elsewhere."""
    for key in ("script_files", "css_files"):
        context[key] = [asset for asset in context.get(key, []) if not is_thebe(asset)]
        for asset in context[key]:
            if str(getattr(asset, "filename", "") or "").startswith(EXTERNAL):
                logger.warning(
                    f"{pagename} would load {asset.filename} from the internet",
                    location=pagename,
                    type="offline",
                )
    for image in doctree.findall(nodes.image) if doctree is not None else ():
        if image["uri"].startswith(EXTERNAL):
            logger.warning(
                f"image {image['uri']} would be fetched from the internet",
                location=image,
                type="offline",
            )


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("html-page-context", keep_pages_offline, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
