"""The book's downloadable notebooks, run as a reader runs them (``make notebooks``).

After ``make book``, every notebook the download menu offers (``_build/html/_sources/**.ipynb``)
must read right in Jupyter: no markdown cell may keep a MyST role or directive or an inline
``$$``. Each one whose page executed in under ``--under`` seconds during the build (the
execution cache records the time) is then run top to bottom by ``jupyter execute`` in a fresh
kernel, from the folder of the page's source, as the notebook's first cell tells a reader to.
The copy that runs is named with a leading dot, which the book's build ignores, and is removed.

    python tests/run_notebooks.py [--build _build] [--under 60]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from jupyter_cache import get_cache

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "book" / "_ext"))
from jupyter_markdown import myst_left_in  # noqa: E402

JUPYTER = Path(sys.executable).with_name("jupyter")


def raw_myst(notebook: Path) -> list[str]:
    """What the notebook's markdown cells would show raw in Jupyter, as ``cell N: text``."""
    cells = nbformat.read(notebook, as_version=4).cells
    return [
        f"cell {n}: {left[:120]!r}"
        for n, cell in enumerate(cells)
        if cell.cell_type == "markdown"
        for left in myst_left_in(cell.source)
    ]


def execution_seconds(build: Path) -> dict[Path, float]:
    """Source page -> seconds it took to execute, as the build's execution cache recorded."""
    cache = get_cache(build / ".jupyter_cache")
    return {
        Path(record.uri).resolve(): record.data["execution_seconds"]
        for record in cache.list_cache_records()
        if "execution_seconds" in record.data
    }


def run(notebook: Path, source: Path) -> subprocess.CompletedProcess:
    """``jupyter execute`` on a copy of ``notebook`` beside ``source``, the copy removed after."""
    copy = source.with_name(f".download-{source.stem}.ipynb")
    copy.write_bytes(notebook.read_bytes())
    try:
        command = [JUPYTER, "execute", "--timeout=1200", copy.name]
        return subprocess.run(command, cwd=copy.parent, capture_output=True, text=True)
    finally:
        copy.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=REPO / "_build", help="the book's build")
    parser.add_argument("--under", type=float, default=60.0, help="seconds: run faster pages")
    args = parser.parse_args()
    sources = args.build / "html" / "_sources"
    seconds = execution_seconds(args.build)
    notebooks = sorted(sources.rglob("*.ipynb"))
    if not notebooks:
        print(f"no notebooks under {sources}: run `make book` first")
        return 1
    failed = []
    for notebook in notebooks:
        name = notebook.relative_to(sources).as_posix()
        source = REPO / Path(name).with_suffix(".md")
        for left in raw_myst(notebook):
            failed.append(name)
            print(f"{name}: raw MyST in {left}")
        took = seconds.get(source.resolve())
        if took is None or took >= args.under:
            why = "no execution time recorded" if took is None else f"executed in {took:.0f} s"
            print(f"{name}: not run ({why} during the build)")
            continue
        start = time.perf_counter()
        result = run(notebook, source)
        print(f"{name}: jupyter execute, {time.perf_counter() - start:.0f} s (build: {took:.0f} s)")
        if result.returncode:
            failed.append(name)
            print(result.stdout[-4000:] + result.stderr[-4000:])
    print(f"{len(notebooks)} notebooks, {len(set(failed))} failed: {sorted(set(failed))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
