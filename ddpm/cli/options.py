"""The options of `ddpm train`, `sample`, `bpd` and `info`, with their defaults and help.

The choices and defaults the help shows come from `ddpm.cli.defaults`, so this module imports
no torch and `ddpm COMMAND --help` answers at once. A choice is passed on as its value (a
string); `ddpm.schedule.parse_choice` turns it into the enum where the run starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ddpm.cli.defaults import (
    DEFAULT_RUN,
    LOSS_TYPES,
    MEAN_TYPES,
    MODEL_PRESETS,
    RECIPES,
    SAMPLERS,
    SCHEDULES,
    TRAIN_DEFAULTS,
    VAR_TYPES,
)
from ddpm.cli.parser import (
    Parser,
    count,
    examples,
    fraction,
    nonnegative,
    nonnegative_float,
    positive,
    seed,
)


def choice(what: str, names: tuple[str, ...]) -> Callable[[str], str]:
    """An argparse type accepting one of `names`, case-insensitively and with - for _ (as
    parse_choice reads them); a bad value gets the list of the valid names."""

    def convert(value: str) -> str:
        key = value.strip().lower().replace("-", "_")
        if key not in names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {value!r}; valid names: {', '.join(names)}"
            )
        return key

    convert.__name__ = what
    return convert


def _metavar(names: tuple[str, ...]) -> str:
    return "{" + ",".join(names) + "}"


def _recipes(name: str) -> str:
    return ", ".join(f"{preset} {recipe[name]}" for preset, recipe in RECIPES.items())


def _train() -> Parser:
    d = TRAIN_DEFAULTS
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
    _add_conditioning(p.adder("class conditioning and guidance"))
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
        type=choice("schedule", SCHEDULES),
        metavar=_metavar(SCHEDULES),
        help=f"noise schedule (default: {d['schedule']})",
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
        type=choice("mean type", MEAN_TYPES),
        metavar=_metavar(MEAN_TYPES),
        help=f"what the network predicts (default: {d['mean_type']})",
    )
    add(
        "--var-type",
        type=choice("variance type", VAR_TYPES),
        metavar=_metavar(VAR_TYPES),
        help=f"reverse-process variance (default: {d['var_type']})",
    )
    add(
        "--loss-type",
        type=choice("loss type", LOSS_TYPES),
        metavar=_metavar(LOSS_TYPES),
        help=f"training loss (default: {d['loss_type']})",
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
        type=fraction,
        help=f"EMA decay of the weights, warmed up as "
        f"min(decay, (1+step)/(10+step)) (default: {d['ema_decay']})",
    )
    add(
        "--dropout",
        type=fraction,
        help="dropout in the residual blocks (default: the preset's, 0.1 for cifar10)",
    )
    add(
        "--hflip",
        action=argparse.BooleanOptionalAction,
        help="random horizontal flips (default: on for image folders and arrays, off for digits)",
    )
    add("--seed", type=seed, help=f"seed of every random draw (default: {d['seed']})")


def _add_conditioning(add) -> None:
    add(
        "--class-conditional",
        action="store_true",
        help="condition the network on the data's class labels (digits: 0-9), for "
        "'ddpm sample --class K --guidance W'",
    )
    add(
        "--label-dropout",
        type=fraction,
        metavar="P",
        help="share of labels replaced by 'no label' in training, which teaches the "
        "unconditional model that guidance needs (default with --class-conditional: 0.1)",
    )


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
        "--checkpoint",
        metavar="DIR",
        help="the model, instead of run_dir: a run directory, or a diffusers-format folder "
        "(config.json and weights), such as a download of google/ddpm-cifar10-32",
    )
    p.add(
        "--var-type",
        choices=("fixed_small", "fixed_large"),
        help="reverse-process variance of a diffusers folder (default: its "
        "scheduler_config.json's, else the paper's fixed_large)",
    )
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
    p.add(
        "--bf16",
        action="store_true",
        help="run the network in bf16 (autocast); the process's arithmetic stays float32",
    )
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
        type=choice("sampler", SAMPLERS),
        metavar=_metavar(SAMPLERS),
        default="ancestral",
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
        type=nonnegative_float,
        default=0.0,
        help="DDIM noise: 0 deterministic, 1 like ancestral (default: 0)",
    )
    p.add("--num", type=count, default=64, help="number of samples (default: 64)")
    p.add(
        "--batch-size",
        type=count,
        default=64,
        help="samples drawn at once; a stop signal keeps the finished batches (default: 64)",
    )
    p.add(
        "--class",
        dest="class_label",
        type=nonnegative,
        metavar="K",
        help="sample class K of a class-conditional model (default: no class, unconditional)",
    )
    p.add(
        "--guidance",
        type=nonnegative_float,
        metavar="W",
        help="classifier-free guidance weight w >= 0 with --class: eps = (1 + w) "
        "eps(class K) - w eps(no class); 0 is the conditional model (default: 0)",
    )
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
    p.add(
        "--data",
        help="the data a diffusers folder is evaluated on, as 'ddpm train --data' takes it "
        "(e.g. cifar10.npz); a run is evaluated on its own",
    )
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
