"""The options of `ddpm {train,sample,bpd,info}`, with their defaults and help.

Strings become enums in one place, `ddpm.schedule.parse_choice`, whose message lists the valid
names.
"""

from __future__ import annotations

import argparse
import difflib
from dataclasses import fields
from enum import Enum
from pathlib import Path

from ddpm.config import MODEL_PRESETS, RECIPES, TrainConfig
from ddpm.diffusion import MeanType, VarType
from ddpm.losses import LossType
from ddpm.samplers import SamplerKind
from ddpm.schedule import ScheduleKind, parse_choice

DEFAULT_RUN = TrainConfig().out_dir  # where `ddpm train` with no options writes


class Parser(argparse.ArgumentParser):
    """argparse, but an unknown option is answered with the valid ones (and a close match)."""

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = self._subparser(getattr(parsed, "command", None))
            parser.error(_unknown_message(parser, extras))
        return parsed

    def _subparser(self, command: str | None) -> argparse.ArgumentParser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command]
        return self


def _unknown_message(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    options = sorted(s for a in parser._actions for s in a.option_strings if s.startswith("--"))
    unknown = [e for e in extras if e.startswith("-")] or extras
    hints = []
    for word in unknown:
        close = difflib.get_close_matches(word.split("=")[0], options, n=1)
        hints.append(f"{word} (did you mean {close[0]}?)" if close else word)
    return f"unrecognized arguments: {' '.join(hints)}\nvalid options: {', '.join(options)}"


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


def _add_train(sub) -> None:
    d = _defaults()
    p = sub.add_parser(
        "train",
        # Options left out are absent from the namespace: only the ones given reach TrainConfig,
        # so that --resume can tell them from the checkpoint's settings.
        argument_default=argparse.SUPPRESS,
        help="train a model (defaults: the digits preset on the embedded digits data)",
        description="Train a DDPM with the paper's recipe (Adam, warm-up, clipping, EMA). Options "
        "left out take TrainConfig's defaults; with --resume, the checkpoint's settings.",
    )
    _add_what_to_train(p.add_argument_group("what to train").add_argument, d)
    _add_optimisation(p.add_argument_group("optimisation").add_argument, d)
    _add_running(p.add_argument_group("running").add_argument, d)
    p.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="continue the checkpoint in the output directory",
    )
    p.add_argument("--no-progress", action="store_true", default=False, help="no progress bar")


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
        type=int,
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
        type=int,
        help=f"optimizer updates (default: the preset's recipe: {_recipes('steps')})",
    )
    add(
        "--batch-size",
        type=int,
        help="global batch size, over all processes (default: the preset's recipe: "
        f"{_recipes('batch_size')})",
    )
    add(
        "--lr",
        type=float,
        help=f"Adam learning rate (default: the preset's recipe: {_recipes('lr')})",
    )
    add(
        "--warmup-steps",
        type=int,
        help="steps of linear learning-rate warm-up (default: the preset's recipe: "
        f"{_recipes('warmup_steps')})",
    )
    add("--grad-clip", type=float, help=f"gradient-norm clipping (default: {d['grad_clip']})")
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
    add("--seed", type=int, help=f"seed of every random draw (default: {d['seed']})")


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
    add("--log-every", type=int, help=f"steps per line of log.jsonl (default: {d['log_every']})")
    add("--ckpt-every", type=int, help=f"steps per checkpoint (default: {d['ckpt_every']})")
    add(
        "--out-dir",
        help="directory for checkpoints and log.jsonl (default: runs/<data name>, "
        f"e.g. {DEFAULT_RUN})",
    )


def _add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run_dir",
        nargs="?",
        default=DEFAULT_RUN,
        help=f"checkpoint directory written by 'ddpm train' (default: {DEFAULT_RUN})",
    )


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--weights",
        choices=("ema", "model"),
        default="ema",
        help="the EMA weights, or the trained weights themselves (default: ema)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="'auto' (CUDA, then MPS, then CPU), 'cpu', 'cuda', 'mps' (default: auto)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_sample(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="draw samples from a checkpoint",
        description="Sample with the ancestral sampler (Algorithm 2) or DDIM; "
        "write an image grid (PNG; a scatter plot for 2-D data) and the raw array "
        "(.npy, values in [-1, 1]).",
    )
    _add_run_dir(p)
    p.add_argument(
        "--sampler",
        type=choice(SamplerKind),
        metavar=_metavar(SamplerKind),
        default=SamplerKind.ANCESTRAL,
        help="ancestral: all T steps of p; ddim: any number of steps (default: ancestral)",
    )
    p.add_argument(
        "--steps",
        type=int,
        help="DDIM steps (default: 50, or T if smaller); ancestral sampling always takes all T",
    )
    p.add_argument(
        "--eta",
        type=float,
        default=0.0,
        help="DDIM noise: 0 deterministic, 1 like ancestral (default: 0)",
    )
    p.add_argument("--num", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument(
        "--out",
        type=Path,
        help="output PNG; the .npy goes next to it (default: <run_dir>/samples.png)",
    )
    _add_model_options(p)


def _add_bpd(sub) -> None:
    p = sub.add_parser(
        "bpd",
        help="evaluate the variational bound in bits/dim",
        description="Evaluate every term of the bound (L_T, L_{T-1}, ..., L_0; "
        "paper Eq. 5) in bits per dimension on a data split, print a summary and "
        "write the per-term means to a JSON or CSV file.",
    )
    _add_run_dir(p)
    p.add_argument(
        "--split", choices=("train", "test"), default="test", help="data split (default: test)"
    )
    p.add_argument(
        "--num",
        type=int,
        default=64,
        help="examples to evaluate, the first of the split; the printed standard error shows "
        "the precision (default: 64)",
    )
    p.add_argument("--batch-size", type=int, default=64, help="examples per batch (default: 64)")
    p.add_argument(
        "--out",
        type=Path,
        help="per-term output, .json or .csv (default: <run_dir>/bpd-<split>.json)",
    )
    _add_model_options(p)


def _add_info(sub) -> None:
    p = sub.add_parser(
        "info",
        help="show a checkpoint's step and configuration",
        description="Show a checkpoint's step, data and configuration.",
    )
    _add_run_dir(p)


def build_parser() -> Parser:
    parser = Parser(
        prog="ddpm",
        description="Denoising diffusion probabilistic models "
        "(Ho, Jain & Abbeel 2020): train, sample, evaluate.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=argparse.ArgumentParser
    )
    _add_train(sub)
    _add_sample(sub)
    _add_bpd(sub)
    _add_info(sub)
    return parser
