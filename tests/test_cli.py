"""The command line, end to end on tiny settings, and its help and error messages."""

import argparse
import csv
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from ddpm.cli import main
from ddpm.cli.commands import GRID_PAD, RUN
from ddpm.cli.options import command_parser
from ddpm.cli.parser import SUMMARIES, build_parser
from ddpm.config import TrainConfig
from ddpm.diffusion import MeanType
from ddpm.samplers import SamplerKind

TINY = "--preset tiny --timesteps 40 --batch-size 8 --log-every 2 --device cpu --no-progress"
COMMANDS = {"train", "sample", "bpd", "info"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny model trained through the command line, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY.split(), "--steps", "4", "--out-dir", str(out)]) == 0
    return out


def _usage_options(parser):
    """The long options named in a parser's usage line, as argparse itself writes it."""
    return set(re.findall(r"--[a-z][a-z0-9-]*", parser.format_usage()))


def test_every_command_has_a_summary_a_parser_and_a_runner():
    assert set(SUMMARIES) == set(RUN) == COMMANDS
    for name in COMMANDS:
        assert command_parser(name).prog == f"ddpm {name}"


@pytest.mark.parametrize("name", [None, *sorted(COMMANDS)])
def test_every_option_of_every_command_has_help(name):
    parser = build_parser() if name is None else command_parser(name)
    listed = {s for action in parser.arguments for s in action.option_strings}
    assert _usage_options(parser) <= listed  # `arguments` misses none of the parser's options
    for action in parser.arguments:
        assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)
    parser.format_help()  # every help string formats


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_shows_the_commands_options(capsys, name):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    # The command's own parser answers, not the top level's placeholder for it.
    assert capsys.readouterr().out == command_parser(name).format_help()


def test_no_options_means_the_digits_defaults():
    args = command_parser("train").parse_args([])
    given = {k for k in vars(args) if k not in ("resume", "share_dir", "no_progress")}
    assert not given  # nothing but TrainConfig's own defaults reaches the run
    assert (TrainConfig().data, TrainConfig().preset) == ("digits", "digits")


def test_an_unknown_option_lists_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--stepz", "5"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--stepz (did you mean --steps?)" in err
    listed = err.split("valid options:")[1]
    assert all(option in listed for option in _usage_options(command_parser("train")))


@pytest.mark.parametrize(
    ("argv", "enum_cls"),
    [
        (["train", "--mean-type", "noise"], MeanType),
        (["sample", "--sampler", "euler"], SamplerKind),
    ],
)
def test_an_unknown_value_lists_the_valid_ones(capsys, argv, enum_cls):
    with pytest.raises(SystemExit):
        main(argv)
    err = capsys.readouterr().err
    assert f"'{argv[-1]}'" in err
    assert all(member.value in err for member in enum_cls)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--num", "0"], "argument --num: must be at least 1, got 0"),
        (["sample", "--steps", "-5"], "argument --steps: must be at least 1, got -5"),
        (
            ["bpd", "--num", "-3"],
            "argument --num: must be at least 2 (for a standard error), got -3",
        ),
        (["bpd", "--num", "1"], "argument --num: must be at least 2"),
        (["bpd", "--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["train", "--timesteps", "0"], "argument --timesteps: must be at least 1, got 0"),
        (["train", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["train", "--warmup-steps", "-1"], "argument --warmup-steps: must be 0 or more"),
        (["train", "--log-every", "0"], "argument --log-every: must be at least 1"),
        (["train", "--lr=-1e-3"], "argument --lr: must be a finite number > 0, got -1e-3"),
        (["train", "--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
        (["train", "--grad-clip", "inf"], "argument --grad-clip: must be a finite number > 0"),
        (["train", "--seed", str(2**70)], f"argument --seed: must be in [0, 2**63), got {2**70}"),
        (["sample", "--seed", "-1"], "argument --seed: must be in [0, 2**63), got -1"),
        (["sample", "--num", "many"], "argument --num: invalid count value: 'many'"),
    ],
)
def test_a_count_seed_or_rate_out_of_range_is_refused_before_any_work(capsys, argv, message):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


def test_the_largest_seed_a_generator_takes_is_accepted():
    args = command_parser("sample").parse_args(["--seed", str(2**63 - 1)])
    assert args.seed == 2**63 - 1
    torch = pytest.importorskip("torch")
    torch.Generator().manual_seed(args.seed)  # inside torch's range, which ends before 2**64
    with pytest.raises((RuntimeError, ValueError), match="[Oo]verflow"):
        torch.Generator().manual_seed(2**70)


def test_an_unknown_preset_or_command_lists_the_valid_ones(capsys):
    for argv in (["train", "--preset", "huge"], ["trian"]):
        with pytest.raises(SystemExit):
            main(argv)
    err = capsys.readouterr().err
    assert "'huge'" in err and all(p in err for p in ("cifar10", "digits", "tiny", "mlp"))
    assert "'trian'" in err and all(c in err for c in ("train", "sample", "bpd", "info"))


@pytest.mark.parametrize("command", ["sample", "bpd", "info"])
def test_a_missing_checkpoint_is_a_clear_error(capsys, tmp_path, command):
    assert main([command, str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ddpm {command}: error:") and "nothing: no such checkpoint" in err
    assert "Traceback" not in err


def test_info_shows_step_and_configuration(capsys, run_dir):
    assert main(["info", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "step: 4 of 4" in out and "preset: tiny" in out and "T: 40" in out


def test_sample_writes_a_grid_and_the_array(run_dir, tmp_path):
    out = tmp_path / "s.png"
    argv = ["sample", str(run_dir), "--num", "10", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (10, 1, 8, 8) and x.dtype == np.float32
    assert np.abs(x).max() <= 1  # clipped to the data range at every step
    # 10 images: a 4 x 3 grid of 8x8 images upscaled to 64x64, with gaps around each.
    cols, rows = math.ceil(math.sqrt(10)), math.ceil(10 / math.ceil(math.sqrt(10)))
    assert Image.open(out).size == (
        cols * (64 + GRID_PAD) + GRID_PAD,
        rows * (64 + GRID_PAD) + GRID_PAD,
    )


def test_ddim_with_eta_zero_is_deterministic_and_the_seed_matters(run_dir, tmp_path):
    def ddim(name, seed):
        out = tmp_path / f"{name}.png"
        argv = ["sample", str(run_dir), "--sampler", "ddim", "--steps", "5", "--eta", "0"]
        argv += ["--num", "4", "--seed", str(seed), "--out", str(out), "--no-progress"]
        assert main(argv) == 0
        return np.load(out.with_suffix(".npy"))

    assert np.array_equal(ddim("a", 0), ddim("b", 0))
    assert not np.array_equal(ddim("a", 0), ddim("c", 1))


def test_sampling_in_batches_gives_every_sample_once(run_dir, tmp_path):
    out = tmp_path / "s.png"
    argv = ["sample", str(run_dir), "--num", "7", "--batch-size", "3", "--out", str(out)]
    assert main([*argv, "--sampler", "ddim", "--steps", "4", "--no-progress"]) == 0
    x = np.load(out.with_suffix(".npy"))
    assert x.shape == (7, 1, 8, 8)
    # Three batches drew their own starting noise: no two samples are the same.
    assert len({row.tobytes() for row in x}) == 7


@pytest.mark.parametrize("command", ["sample", "bpd"])
def test_bf16_runs_the_network_in_bf16_and_stays_near_float32(
    run_dir, tmp_path, monkeypatch, command
):
    """bf16 keeps 8 bits of mantissa: a relative error of about 2**-8 per network output, which
    DDIM (eta 0, few steps) and the bound pass on without growing much."""
    import torch

    calls = []
    original = torch.autocast.__init__

    def spy(self, device_type, dtype=None, *args, **kwargs):
        calls.append(dtype)
        original(self, device_type, dtype, *args, **kwargs)

    def run(name, *extra):
        out = tmp_path / (f"{name}.png" if command == "sample" else f"{name}.json")
        argv = [command, str(run_dir), "--num", "4", "--out", str(out), "--no-progress", *extra]
        if command == "sample":
            argv += ["--sampler", "ddim", "--steps", "5"]
        assert main(argv) == 0
        if command == "sample":
            return np.load(out.with_suffix(".npy"))
        return np.array(json.loads(out.read_text())["total_bpd_per_example"])

    plain = run("plain")
    monkeypatch.setattr(torch.autocast, "__init__", spy)
    low = run("low", "--bf16")
    assert calls and set(calls) == {torch.bfloat16}
    assert not np.array_equal(plain, low)  # the network did run in bf16
    np.testing.assert_allclose(low, plain, rtol=0.05, atol=0.05)


def test_ancestral_sampling_refuses_a_step_count(capsys, run_dir, tmp_path):
    assert main(["sample", str(run_dir), "--steps", "5", "--out", str(tmp_path / "x.png")]) == 1
    assert "ddim" in capsys.readouterr().err


def test_bpd_writes_every_term(capsys, run_dir, tmp_path):
    argv = ["bpd", str(run_dir), "--num", "6", "--batch-size", "4", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "b.json")]) == 0
    summary = capsys.readouterr().out
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["num_examples"] == 6 and len(result["terms_bpd"]) == 40
    # The bound is L_T + L_{T-1} + ... + L_0, averaged over the examples.
    total = result["prior_bpd"] + sum(result["terms_bpd"])
    assert result["total_bpd"] == pytest.approx(total, rel=1e-9)
    per_example = result["total_bpd_per_example"]
    assert len(per_example) == 6 and result["num_requested"] == 6
    assert result["total_bpd"] == pytest.approx(np.mean(per_example), rel=1e-9)
    assert result["total_bpd_stderr"] == pytest.approx(np.std(per_example, ddof=1) / math.sqrt(6))
    assert result["decoder_bpd"] == result["terms_bpd"][0]
    assert f"{result['total_bpd']:.4f}" in summary

    assert main([*argv, "--out", str(tmp_path / "b.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "b.csv")))
    assert [r["term"] for r in rows] == [f"L_{t}" for t in range(40)] + ["L_T", "total"]
    assert float(rows[-1]["bpd"]) == pytest.approx(result["total_bpd"], rel=1e-9)


def test_train_resume_extends_with_the_saved_settings(run_dir, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    assert main(["train", "--resume", "--steps", "6", "--out-dir", str(copy), "--no-progress"]) == 0
    steps = [json.loads(line)["step"] for line in (copy / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    assert main(["train", "--resume", "--seed", "1", "--out-dir", str(copy), "--no-progress"]) == 1


def test_toy_data_train_sample_as_a_scatter_and_refuse_bpd(capsys, tmp_path):
    run = tmp_path / "toy"
    argv = ["train", "--data", "toy:eight_gaussians", "--timesteps", "40", "--steps", "2"]
    assert main([*argv, "--out-dir", str(run), "--no-progress", "--device", "cpu"]) == 0
    out = tmp_path / "toy.png"
    argv = ["sample", str(run), "--sampler", "ddim", "--steps", "5", "--num", "50"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert np.load(tmp_path / "toy.npy").shape == (50, 2)
    assert Image.open(out).format == "PNG"
    assert main(["bpd", str(run), "--no-progress"]) == 1
    assert "discrete levels" in capsys.readouterr().err
