"""The README's digits commands and its sample grid belong to one recorded run of
`python -m bench.cli_digits`, made with the digits recipe the package has now."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import pytest

from bench import cli_digits
from ddpm.config import RECIPES

REPO = Path(__file__).resolve().parents[1]
RESULT = REPO / "bench" / "results" / "cli_digits.json"


@pytest.fixture(scope="module")
def recorded() -> dict:
    assert RESULT.exists(), "run `python -m bench.cli_digits` to record the README's grid"
    return json.loads(RESULT.read_text())


def test_the_readme_commands_are_the_recorded_ones(recorded):
    commands = cli_digits.readme_commands((REPO / "README.md").read_text())
    assert [shlex.join(c) for c in commands] == recorded["settings"]["readme_commands"]
    assert recorded["settings"]["quick"] is False
    assert [s["command"] for s in recorded["steps"]] == recorded["settings"]["readme_commands"]


def test_the_readme_grid_is_the_recorded_one(recorded):
    readme = (REPO / "README.md").read_text()
    assert f"]({cli_digits.GRID.relative_to(REPO)})" in readme  # the README shows this file
    digest = hashlib.sha256(cli_digits.GRID.read_bytes()).hexdigest()
    assert digest == recorded["grid_sha256"], "the grid changed since bench.cli_digits ran"


def test_the_run_used_the_current_digits_recipe(recorded):
    recipe, config = RECIPES["digits"], recorded["train_config"]
    assert (config["steps"], config["batch_size"], config["lr"], config["warmup_steps"]) == (
        recipe.steps,
        recipe.batch_size,
        recipe.lr,
        recipe.warmup_steps,
    ), "the digits recipe changed: re-run `python -m bench.cli_digits`"
    assert config["data"] == "digits" and config["preset"] == "digits"
    assert recorded["train_step_reached"] == recipe.steps


def test_readme_commands_parsing():
    text = "x\n```bash\nddpm train   # a comment\nddpm sample --out 'a b.png'\n```\n"
    assert cli_digits.readme_commands(text) == [
        ["ddpm", "train"],
        ["ddpm", "sample", "--out", "a b.png"],
    ]
    assert cli_digits.sample_output(["ddpm", "sample", "--out=x.png"]) == "x.png"
    with pytest.raises(ValueError, match="no --out"):
        cli_digits.sample_output(["ddpm", "sample"])
    with pytest.raises(ValueError, match="exactly"):
        cli_digits.readme_commands("```bash\nddpm train\nddpm bpd\n```\n")
    with pytest.raises(ValueError, match="no ```bash block"):
        cli_digits.readme_commands("```bash\nmake book\n```\n")
