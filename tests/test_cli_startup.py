"""`ddpm --help`, `ddpm --version` and every `ddpm COMMAND --help` answer without loading torch or
the other heavy libraries; the tables their help reads stay those of the modules they describe.

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


@pytest.mark.parametrize("name", ["train", "sample", "bpd", "info"])
def test_every_commands_help_answers_without_heavy_imports(name):
    done, imported = run_ddpm(name, "--help")
    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: ddpm {name} ")
    assert "exit status: 0 done;" in done.stdout
    assert not imported & HEAVY


@pytest.mark.parametrize(
    "argv", [["train", "--stepz", "1"], ["sample", "--num", "0"], ["bpd", "--split", "dev"]]
)
def test_a_bad_option_is_refused_before_torch_is_loaded(argv):
    done, imported = run_ddpm(*argv)
    assert done.returncode == 2 and f"ddpm {argv[0]}: error: " in done.stderr
    assert not imported & HEAVY


def test_a_command_that_runs_does_load_torch(tmp_path):
    """The checks above can see torch: a command that gets as far as running imports it."""
    done, imported = run_ddpm("info", str(tmp_path / "none"))
    assert done.returncode == 1 and "no such checkpoint" in done.stderr
    assert "torch" in imported


def test_the_help_tables_are_those_of_the_modules_they_describe():
    from dataclasses import asdict, fields
    from enum import Enum

    from ddpm import config
    from ddpm.cli import defaults
    from ddpm.diffusion import MeanType, VarType
    from ddpm.losses import LossType
    from ddpm.samplers import SamplerKind
    from ddpm.schedule import ScheduleKind

    def values(enum_cls):
        return tuple(member.value for member in enum_cls)

    assert defaults.SCHEDULES == values(ScheduleKind)
    assert defaults.MEAN_TYPES == values(MeanType)
    assert defaults.VAR_TYPES == values(VarType)
    assert defaults.LOSS_TYPES == values(LossType)
    assert defaults.SAMPLERS == values(SamplerKind)
    assert defaults.MODEL_PRESETS == config.MODEL_PRESETS
    assert defaults.RECIPES == {name: asdict(r) for name, r in config.RECIPES.items()}
    own = {
        f.name: f.default.value if isinstance(f.default, Enum) else f.default
        for f in fields(config.TrainConfig)
        if f.default is not None
    }
    assert defaults.TRAIN_DEFAULTS == own
    assert defaults.DEFAULT_RUN == config.TrainConfig().out_dir
