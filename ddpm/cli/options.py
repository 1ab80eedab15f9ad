"""The options of `ddpm train`, `sample`, `bpd` and `info`, with their defaults and help.

The defaults are read from `ddpm.config` and the choices from the enums they name, so this module
imports torch: `ddpm.cli` loads it only once a command is named. Strings become enums in one
place, `ddpm.schedule.parse_choice`, whose message lists the valid names.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from enum import Enum
from pathlib import Path

from ddpm.cli.parser import Parser, count, examples, nonnegative, positive, seed
from ddpm.config import MODEL_PRESETS, RECIPES, TrainConfig
from ddpm.diffusion import MeanType, VarType
from ddpm.losses import LossType
from ddpm.samplers import SamplerKind
from ddpm.schedule import ScheduleKind, parse_choice

DEFAULT_RUN = TrainConfig().out_dir  # where `ddpm train` with no options writes


def choice(enum_cls: type[Enum]):
    """An argparse type for `enum_cls`; a bad value gets parse_choice's list of the valid names."""

    def convert(value: str) -> Enum:
        try:
            return parse_choice(enum_cls, value)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from err

    convert.__name__ = enum_cls.__name__
    return convert


def _metavar(enum_cls: type[Enum]) -> str:
    return "{" + ",".join(str(m.value) for m in enum_cls) + "}"


def _defaults() -> dict[str, object]:
    return {f.name: f.default for f in fields(TrainConfig)}


def _recipes(name: str) -> str:
    return ", ".join(f"{preset} {getattr(recipe, name)}" for preset, recipe in RECIPES.items())


def _train() -> Parser:
    d = _defaults()
    p = Parser(
        prog="ddpm train",
        description="Train a DDPM with the paper's recipe (Adam, warm-up, clipping, EMA). Options "
        "left out take TrainConfig's defaults; with --resume, the checkpoint's settings.",
        # Options left out are absent from the namespace: only the ones given reach TrainConfig,
        # so that --resume can tell them from the checkpoint's settings.
        argument_default=argparse.SUPPRESS,
    )
    _add_what_to_train(p.adder("what to train"), d)
    _add_optimisation(p.adder("optimisation"), d)
    _add_running(p.adder("running"), d)
    p.add(
        "--resume",
        action="store_true",
        default=False,
        help="continue the checkpoint in the output directory; --lr and --grad-clip may be "
        "given to change them from its step on (reported, and recorded in the checkpoint)",
    )
    p.add(
        "--share-dir",
        action="store_true",
        default=False,
        help="start in an output directory that holds other files (they are left alone)",
    )
    p.add("--no-progress", action="store_true", default=False, help="no progress bar")
    return p


def _add_what_to_train(add, d: dict) -> None:
    add(
        "--data",
        help=f"dataset: 'digits', 'toy:<name>' (swiss_roll, two_moons, eight_gaussians, "
        f"checkerboard), an image folder or a .npy/.npz file (default: {d['data']})",
    )
    add(
        "--preset",
        choices=MODEL_PRESETS,
        help="network: the U-Net presets, or 'mlp' for 2-D "
        f"toy data (which always use it) (default: {d['preset']})",
    )
    add(
        "--schedule",
        type=choice(ScheduleKind),
        metavar=_metavar(ScheduleKind),
        help=f"noise schedule (default: {d['schedule'].value})",
    )
    add(
        "--timesteps",
        dest="T",
        type=count,
        metavar="T",
        help=f"number of diffusion steps T (default: {d['T']})",
    )
    add(
        "--mean-type",
        type=choice(MeanType),
        metavar=_metavar(MeanType),
        help=f"what the network predicts (default: {d['mean_type'].value})",
    )
    add(
        "--var-type",
        type=choice(VarType),
        metavar=_metavar(VarType),
        help=f"reverse-process variance (default: {d['var_type'].value})",
    )
    add(
        "--loss-type",
        type=choice(LossType),
        metavar=_metavar(LossType),
        help=f"training loss (default: {d['loss_type'].value})",
    )


def _add_optimisation(add, d: dict) -> None:
    add(
        "--steps",
        type=count,
        help=f"optimizer updates (default: the preset's recipe: {_recipes('steps')})",
    )
    add(
        "--batch-size",
        type=count,
        help="global batch size, over all processes (default: the preset's recipe: "
        f"{_recipes('batch_size')})",
    )
    add(
        "--lr",
        type=positive,
        help=f"Adam learning rate (default: the preset's recipe: {_recipes('lr')})",
    )
    add(
        "--warmup-steps",
        type=nonnegative,
        help="steps of linear learning-rate warm-up (default: the preset's recipe: "
        f"{_recipes('warmup_steps')})",
    )
    add("--grad-clip", type=positive, help=f"gradient-norm clipping (default: {d['grad_clip']})")
    add(
        "--ema-decay",
        type=float,
        help=f"EMA decay of the weights, warmed up as "
        f"min(decay, (1+step)/(10+step)) (default: {d['ema_decay']})",
    )
    add(
        "--dropout",
        type=float,
        help="dropout in the residual blocks (default: the preset's, 0.1 for cifar10)",
    )
    add(
        "--hflip",
        action=argparse.BooleanOptionalAction,
        help="random horizontal flips (default: on for image folders and arrays, off for digits)",
    )
    add("--seed", type=seed, help=f"seed of every random draw (default: {d['seed']})")


def _add_running(add, d: dict) -> None:
    add(
        "--device",
        help="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'cuda:1', 'mps' "
        f"(default: {d['device']})",
    )
    add(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        help="bf16 autocast of the network (default: on with CUDA, off on other devices)",
    )
    add(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help=f"torch.compile the network (default: {'on' if d['compile'] else 'off'})",
    )
    add("--log-every", type=count, help=f"steps per line of log.jsonl (default: {d['log_every']})")
    add("--ckpt-every", type=count, help=f"steps per checkpoint (default: {d['ckpt_every']})")
    add(
        "--out-dir",
        help="directory for checkpoints and log.jsonl (default: runs/<data name>, "
        f"e.g. {DEFAULT_RUN})",
    )


def _add_run_dir(p: Parser) -> None:
    p.add(
        "run_dir",
        nargs="?",
        default=DEFAULT_RUN,
        help=f"checkpoint directory written by 'ddpm train' (default: {DEFAULT_RUN})",
    )


def _add_model_options(p: Parser) -> None:
    p.add(
        "--weights",
        choices=("ema", "model"),
        default="ema",
        help="the EMA weights, or the trained weights themselves (default: ema)",
    )
    p.add(
        "--device",
        default="auto",
        help="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'mps' (default: auto)",
    )
    p.add("--seed", type=seed, default=0, help="seed of the random draws (default: 0)")
    p.add("--no-progress", action="store_true", help="no progress bar")


def _sample() -> Parser:
    p = Parser(
        prog="ddpm sample",
        description="Sample with the ancestral sampler (Algorithm 2), DDIM or DPM-Solver++(2M); "
        "write an image grid (PNG; a scatter plot for 2-D data) and the raw array "
        "(.npy, values in [-1, 1]).",
    )
    _add_run_dir(p)
    p.add(
        "--sampler",
        type=choice(SamplerKind),
        metavar=_metavar(SamplerKind),
        default=SamplerKind.ANCESTRAL,
        help="ancestral: all T steps of p; ddim: any number of steps; dpmsolver++: "
        "DPM-Solver++(2M), deterministic, few steps (default: ancestral)",
    )
    p.add(
        "--steps",
        type=count,
        help="steps of ddim (default: 50) or dpmsolver++ (default: 20), or T if smaller; "
        "ancestral sampling always takes all T",
    )
    p.add(
        "--eta",
        type=float,
        default=0.0,
        help="DDIM noise: 0 deterministic, 1 like ancestral (default: 0)",
    )
    p.add("--num", type=count, default=64, help="number of samples (default: 64)")
    p.add(
        "--out",
        type=Path,
        help="output PNG; the .npy goes next to it (default: <run_dir>/samples.png)",
    )
    _add_model_options(p)
    return p


def _bpd() -> Parser:
    p = Parser(
        prog="ddpm bpd",
        description="Evaluate every term of the bound (L_T, L_{T-1}, ..., L_0; "
        "paper Eq. 5) in bits per dimension on a data split, print a summary and "
        "write the per-term means to a JSON or CSV file.",
    )
    _add_run_dir(p)
    p.add("--split", choices=("train", "test"), default="test", help="data split (default: test)")
    p.add(
        "--num",
        type=examples,
        default=64,
        help="examples to evaluate, the first of the split; the printed standard error shows "
        "the precision (default: 64)",
    )
    p.add("--batch-size", type=count, default=64, help="examples per batch (default: 64)")
    p.add(
        "--out",
        type=Path,
        help="per-term output, .json or .csv (default: <run_dir>/bpd-<split>.json)",
    )
    _add_model_options(p)
    return p


def _info() -> Parser:
    p = Parser(prog="ddpm info", description="Show a checkpoint's step, data and configuration.")
    _add_run_dir(p)
    return p


_PARSERS = {"train": _train, "sample": _sample, "bpd": _bpd, "info": _info}


def command_parser(name: str) -> Parser:
    """The parser of `ddpm <name>`: it reads what follows the command's name."""
    return _PARSERS[name]()
