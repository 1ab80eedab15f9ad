"""Time a cold and a warm build of the book, as `make book` builds it.

cold: a fresh output folder, so every page is executed; warm: the same build again with nothing
changed, so every output comes from the execution cache. The builds go to a temporary folder and
leave the book's own _build alone. Budgets on the 2-core machine: warm <= 60 s (the book issue),
cold <= 600 s (the chapters issue). Prints a table and writes bench/results/book_build.json with
the machine, the versions and the date; exits non-zero if a build fails or a budget is missed.

    python bench/book_build.py [--book .] [--output bench/results/book_build.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGETS_S = {"cold": 600.0, "warm": 60.0}
PACKAGES = ["jupyter-book", "sphinx", "myst-nb", "myst-parser", "jupyter-cache", "torch", "numpy"]


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


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", type=Path, default=REPO, help="the book's folder (default: .)")
    parser.add_argument(
        "--output", type=Path, default=REPO / "bench" / "results" / "book_build.json"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="book-build-") as folder:
        runs = {kind: timed_build(args.book, Path(folder)) for kind in ("cold", "warm")}
        html = Path(folder, "_build", "html")
        pages = sum(
            not any(part.startswith("_") for part in page.relative_to(html).parts)
            for page in html.glob("**/*.html")
        )

    seconds = {kind: run[0] for kind, run in runs.items()}
    result = {
        "benchmark": "book_build",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "book": os.path.relpath(args.book.resolve(), REPO),
        "command": "jupyter-book build BOOK --path-output TMP -W -n --keep-going",
        "html_pages": pages,
        "seconds": {kind: round(value, 2) for kind, value in seconds.items()},
        # a warm build executes nothing, unless ddpm/ changed while the benchmark ran
        "pages_executed": {kind: run[1] for kind, run in runs.items()},
        "budget_seconds": BUDGETS_S,
        "within_budget": {kind: seconds[kind] <= BUDGETS_S[kind] for kind in seconds},
        "machine": machine(),
        "versions": versions(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    print(f"{'build':<6} {'seconds':>8} {'budget':>8} {'executed':>9}  ok")
    for kind, (value, executed) in runs.items():
        ok = "yes" if result["within_budget"][kind] else "NO"
        print(f"{kind:<6} {value:8.1f} {BUDGETS_S[kind]:8.0f} {executed:9d}  {ok}")
    print(f"wrote {args.output}")
    return 0 if all(result["within_budget"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
