"""The repository's packaging and CI files agree with each other and with what they describe.

Each expectation comes from a second file that says the same thing independently: the license
from pyproject.toml, the paper from the book's bibliography, the hook versions from the pins in
requirements.txt, the workflow's caches from the Makefile, _config.yml and MyST-NB's rule for
where the execution cache lives.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path, PurePosixPath

import pytest
import tomllib
import yaml
from support import toc_pages

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "book.yml"
ON_MAIN = "github.ref == 'refs/heads/main' && github.event_name != 'pull_request'"


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def book_config() -> dict:
    return yaml.safe_load((REPO / "_config.yml").read_text())


def pins() -> dict[str, str]:
    """requirements.txt as {distribution: pinned version}."""
    found = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            found[name.strip().lower()] = version.strip()
    return found


def words(text: str) -> str:
    return " ".join(text.split())


# ----- license and citation -----


def test_the_license_file_is_the_mit_license_that_pyproject_declares():
    project = pyproject()["project"]
    assert project["license"] == "MIT"
    assert "LICENSE" in project["license-files"]
    text = words((REPO / "LICENSE").read_text())
    assert text.startswith("MIT License Copyright (c) 2026 ")
    # the holder is the book's author, as _config.yml names it
    assert f"Copyright (c) 2026 {book_config()['author']} Permission is hereby granted" in text
    for clause in (
        "Permission is hereby granted, free of charge, to any person obtaining a copy of this "
        'software and associated documentation files (the "Software"), to deal in the Software '
        "without restriction",
        "The above copyright notice and this permission notice shall be included in all copies or "
        "substantial portions of the Software.",
        'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND',
    ):
        assert clause in text


def bib_entry(key: str) -> dict[str, str]:
    """One entry of book/references.bib as {field: value}."""
    bib = (REPO / "book" / "references.bib").read_text()
    body = re.search(rf"@\w+\{{{key},(.*?)\n\}}", bib, flags=re.S).group(1)
    return {k.lower(): v for k, v in re.findall(r"(\w+)\s*=\s*\{(.*?)\},?\s*$", body, flags=re.M)}


def test_citation_cff_names_the_paper_as_the_bibliography_does():
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software"
    assert [a["name"] for a in cff["authors"]] == [book_config()["author"]]
    assert cff["license"] == pyproject()["project"]["license"]

    paper, bib = cff["preferred-citation"], bib_entry("ho2020denoising")
    assert paper["title"].lower() == bib["title"].lower()
    family = [name.split(",")[0].strip() for name in bib["author"].split(" and ")]
    assert [a["family-names"] for a in paper["authors"]] == family
    assert str(paper["year"]) == bib["year"]
    assert (paper["start"], paper["end"]) == tuple(int(p) for p in bib["pages"].split("--"))
    assert f"arXiv:{bib['eprint']}" in [i["value"] for i in paper["identifiers"]]
    assert paper["url"] == f"https://arxiv.org/abs/{bib['eprint']}"


# ----- distribution -----


def test_the_distribution_has_its_own_name_and_installs_the_ddpm_package_and_command():
    project = pyproject()["project"]
    assert project["name"] != "ddpm"  # PyPI's `ddpm` is an unrelated project
    assert project["scripts"] == {"ddpm": "ddpm.cli:main"}
    # the environment the tests run in has the package from this distribution
    assert project["name"] in metadata.packages_distributions()["ddpm"]


# ----- pre-commit -----


def test_pre_commit_runs_the_linters_at_the_versions_pinned_in_requirements():
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    repos = {r["repo"].rsplit("/", 1)[-1]: r for r in config["repos"]}
    pinned = pins()
    ruff, schema = repos["ruff-pre-commit"], repos["check-jsonschema"]
    assert ruff["rev"] == f"v{pinned['ruff']}"
    assert {h["id"] for h in ruff["hooks"]} == {"ruff-check", "ruff-format"}
    assert schema["rev"] == pinned["check-jsonschema"]
    assert [h["id"] for h in schema["hooks"]] == ["check-github-workflows"]


# ----- the workflow -----


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(job: dict) -> list[dict]:
    return job["steps"]


def step_using(job: dict, action: str) -> list[dict]:
    return [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]


def test_the_workflow_runs_on_main_and_pull_requests(workflow):
    on = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert on["push"]["branches"] == ["main"]
    assert on["pull_request"]["branches"] == ["main"]
    assert "workflow_dispatch" in on
    assert workflow["permissions"] == {"contents": "read"}


def test_the_workflow_runs_the_readme_commands_tests_first(workflow):
    quick_start = re.search(r"```bash\n(make .*?)```", (REPO / "README.md").read_text(), re.S)
    readme = sorted(line.split("#")[0].strip() for line in quick_start.group(1).splitlines())
    runs = [s["run"].strip() for s in steps(workflow["jobs"]["build"]) if "run" in s]
    made = [r for r in runs if r.startswith("make ")]
    # the notebooks and the browser need the built book
    assert made == ["make test", "make book", "make notebooks", "make browser"]
    assert sorted(made[:2]) == readme
    # CI=true turns the browser test's skip into a failure: the job must install chromium first
    install = next(i for i, r in enumerate(runs) if "apt-get install" in r)
    assert {"chromium", "chromium-driver"} <= set(runs[install].split())
    assert install < runs.index("make test")


def test_the_screenshots_are_kept_even_when_a_check_fails(workflow):
    build = workflow["jobs"]["build"]
    (keep,) = step_using(build, "actions/upload-artifact")
    assert keep["if"] == "always()"
    assert keep["with"]["path"] == "_build/screenshots"
    runs = [s.get("run", "").strip() for s in steps(build)]
    assert steps(build).index(keep) > runs.index("make browser")


def test_only_a_passing_build_on_main_is_published(workflow):
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build"
    assert deploy["if"] == ON_MAIN
    (upload,) = step_using(build, "actions/upload-pages-artifact")
    assert upload["if"] == ON_MAIN
    assert steps(build).index(upload) == len(steps(build)) - 1  # after `make book`
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert deploy["concurrency"]["cancel-in-progress"] is False
    uses = [s["uses"].split("@")[0] for s in steps(deploy)]
    assert uses == ["actions/configure-pages", "actions/deploy-pages"]


def hashed(key: str) -> list[str]:
    """The file patterns of the hashFiles(...) in a cache key."""
    return re.findall(r"'([^']+)'", re.search(r"hashFiles\((.*?)\)", key).group(1))


def test_the_pip_cache_is_keyed_on_what_makes_the_makefile_reinstall(workflow):
    build = workflow["jobs"]["build"]
    caches = {s["with"]["path"]: s["with"] for s in step_using(build, "actions/cache")}
    pip = caches[build["env"]["PIP_CACHE_DIR"]]
    stamp = re.search(r"^\$\(STAMP\):(.*)$", (REPO / "Makefile").read_text(), re.M).group(1)
    for needed in stamp.split():
        assert any(PurePosixPath(needed).match(pattern) for pattern in hashed(pip["key"])), needed
    assert pip["key"].startswith(pip["restore-keys"])


def test_the_jupyter_cache_is_where_the_build_keeps_it_and_keyed_on_what_it_executes(workflow):
    build = workflow["jobs"]["build"]
    (upload,) = step_using(build, "actions/upload-pages-artifact")
    caches = {s["with"]["path"]: s["with"] for s in step_using(build, "actions/cache")}
    # MyST-NB keeps the execution cache beside the HTML output folder, as `.jupyter_cache`
    where = str(PurePosixPath(upload["with"]["path"]).parent / ".jupyter_cache")
    patterns = hashed(caches[where]["key"])
    assert caches[where]["key"].startswith(caches[where]["restore-keys"])
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    pages = toc_pages(toc)
    sources = [f"{page}.md" for page in pages] + ["_config.yml", "_toc.yml"]
    sources += [f"{path}/x.py" for path in book_config()["sphinx"]["config"]["package_cache_paths"]]
    for source in sources:
        assert any(PurePosixPath(source).match(p) for p in patterns), source


CHECK_WORKFLOW = ["--builtin-schema", "vendor.github-workflows"]


def check_jsonschema() -> list[str]:
    found = Path(sys.executable).with_name("check-jsonschema")
    if not found.exists() and shutil.which("check-jsonschema") is None:
        pytest.fail("check-jsonschema is missing: install requirements.txt")
    return [str(found) if found.exists() else "check-jsonschema", *CHECK_WORKFLOW]


def test_make_lint_checks_the_workflow_with_the_schema():
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), re.M).group(1)
    command = ["$(BIN)/check-jsonschema", *CHECK_WORKFLOW, ".github/workflows/*.yml"]
    assert command in [line.split() for line in recipe.splitlines()]


def test_the_workflow_lint_accepts_the_workflow_and_rejects_a_broken_one(tmp_path):
    ok = subprocess.run([*check_jsonschema(), str(WORKFLOW)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "book.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:"))
    bad = subprocess.run([*check_jsonschema(), str(broken)], capture_output=True, text=True)
    assert bad.returncode != 0
    assert "runs-on" in bad.stdout
