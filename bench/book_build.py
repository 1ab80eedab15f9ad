"""Time a cold and a warm build of the book, as `make book` builds it.

cold: a fresh output folder, so every page is executed; warm: the same build again with nothing
changed, so every output comes from the execution cache. The builds go to a temporary folder and
leave the book's own _build alone. Budgets on the 2-core machine: warm <= 60 s (the book issue),
cold <= 600 s (the chapters issue). Prints a table and writes bench/results/book_build.json with
the machine, the versions and the date; exits non-zero if a build fails or a budget is missed.

    python -m bench.book_build [--book .] [--output bench/results/book_build.json]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    REPO,
    RESULTS,
    finish,
    print_table,
    run_metadata,
    versions,
    write_json,
)

BUDGETS_S = {"cold": 600.0, "warm": 60.0}
PACKAGES = ("jupyter-book", "sphinx", "myst-nb", "myst-parser", "jupyter-cache", "torch", "numpy")


def timed_build(book: Path, output: Path) -> tuple[float, int]:
    """Seconds one `jupyter-book build -W -n --keep-going` takes, and how many pages it executed.

    Raises SystemExit if the build fails.
    """
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [jupyter_book, "build", book, "--path-output", output, "-W", "-n", "--keep-going"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"the build of {book} failed (exit code {result.returncode})")
    # MyST-NB logs a page it executes as it reads it; book/_ext/parallel_execution.py one it
    # executed ahead, several at a time
    executed = result.stdout.count("Executing notebook") + len(
        re.findall(r"parallel_execution: \S+ executed in", result.stdout)
    )
    return seconds, executed


def page_seconds(output: Path) -> dict[str, float]:
    """Seconds each page's execution took, from the execution cache of a build in `output`."""
    from jupyter_cache import get_cache

    cache = get_cache(output / "_build" / ".jupyter_cache")
    times = {}
    for record in cache.list_cache_records():
        seconds = (record.data or {}).get("execution_seconds")
        if seconds is not None:
            page = Path(record.uri).resolve()
            page = page.relative_to(REPO).as_posix() if page.is_relative_to(REPO) else str(page)
            times[page] = round(float(seconds), 1)
    return dict(sorted(times.items()))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", type=Path, default=REPO, help="the book's folder (default: .)")
    parser.add_argument("--output", type=Path, default=RESULTS / "book_build.json")
    args = parser.parse_args(argv)
    book = os.path.relpath(args.book.resolve(), REPO)
    result = run_metadata("book_build", argv, {"book": book, "budget_seconds": BUDGETS_S})
    result["versions"] = versions(PACKAGES)

    with tempfile.TemporaryDirectory(prefix="book-build-") as folder:
        runs = {}
        runs["cold"] = timed_build(args.book, Path(folder))
        executed = page_seconds(Path(folder))
        runs["warm"] = timed_build(args.book, Path(folder))
        html = Path(folder, "_build", "html")
        pages = sum(
            not any(part.startswith("_") for part in page.relative_to(html).parts)
            for page in html.glob("**/*.html")
        )

    seconds = {kind: run[0] for kind, run in runs.items()}
    result["build_command"] = "jupyter-book build BOOK --path-output TMP -W -n --keep-going"
    result["html_pages"] = pages
    result["seconds"] = {kind: round(value, 2) for kind, value in seconds.items()}
    # a warm build executes nothing, unless ddpm/ changed while the benchmark ran
    result["pages_executed"] = {kind: run[1] for kind, run in runs.items()}
    result["within_budget"] = {kind: seconds[kind] <= BUDGETS_S[kind] for kind in seconds}
    # each page's own execution time in the cold build (pages run several at a time, so these
    # add up to more than the build took); book/_ext/parallel_execution.py starts the longest
    # first by them
    result["page_seconds"] = executed
    finish(result)
    print_table(
        ["build", "seconds", "budget", "executed", "ok"],
        [
            [kind, value, BUDGETS_S[kind], executed, result["within_budget"][kind]]
            for kind, (value, executed) in runs.items()
        ],
    )
    write_json(args.output, result)
    return 0 if all(result["within_budget"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
