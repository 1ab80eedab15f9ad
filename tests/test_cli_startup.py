"""`ddpm --help` and `ddpm --version` answer without loading torch or the other heavy libraries.

Each case runs `python -X importtime -m ddpm ...` in a fresh interpreter and reads the list of
modules it imported, so nothing here depends on how fast the machine is.
"""

import re
import subprocess
import sys

import pytest

import ddpm

HEAVY = {"torch", "numpy", "sympy", "safetensors", "sklearn", "matplotlib", "PIL", "tqdm"}


def run_ddpm(*argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """The finished `python -m ddpm *argv`, and the top-level packages it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ddpm", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # -X importtime writes one "import time: self | cumulative | module" line per import.
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "ddpm" in imported  # the listing was read
    return done, imported


def test_help_lists_the_commands_without_heavy_imports():
    done, imported = run_ddpm("--help")
    assert done.returncode == 0
    assert not imported & HEAVY
    for name in ("train", "sample", "bpd", "info"):
        assert re.search(rf"^ +{name} +\w", done.stdout, re.M)  # the name, then its summary


def test_version_prints_the_package_version_without_heavy_imports():
    done, imported = run_ddpm("--version")
    assert done.returncode == 0
    assert done.stdout == f"ddpm {ddpm.__version__}\n"
    assert not imported & HEAVY


def test_an_unknown_command_is_answered_without_heavy_imports():
    done, imported = run_ddpm("trian")
    assert done.returncode == 2 and "invalid choice: 'trian'" in done.stderr
    assert not imported & HEAVY


@pytest.mark.parametrize("argv", [["info", "--help"], ["train", "--stepz", "1"]])
def test_a_named_command_does_load_its_modules(argv):
    """The check above can see torch: naming a command imports it (for the options' defaults)."""
    done, imported = run_ddpm(*argv)
    assert done.returncode in (0, 2)
    assert "torch" in imported
