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
    return seconds, result.stdout.count("Executing notebook")


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
        runs = {kind: timed_build(args.book, Path(folder)) for kind in ("cold", "warm")}
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
