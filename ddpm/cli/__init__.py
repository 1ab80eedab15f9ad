"""The command line: `python -m ddpm {train,sample,bpd,info}`, installed as `ddpm`.

    ddpm train                       # the digits model in runs/digits, a few CPU minutes
    ddpm sample                      # 64 samples from runs/digits: samples.png and samples.npy
                                     # (the shipped model, ddpm.pretrained, until you train one)
    ddpm sample --sampler ddim --steps 50 --eta 0
    ddpm bpd --split test            # the variational bound in bits/dim, every term to a file
    ddpm info runs/digits            # a checkpoint's step and configuration
    ddpm --version
    torchrun --nproc_per_node 4 -m ddpm train --data cifar10.npz --preset cifar10

The top level (commands, --help, --version) is read by `ddpm.cli.parser`, each command's options
by `ddpm.cli.options`; `ddpm.cli.commands` carries the commands out.
"""

from __future__ import annotations

from collections.abc import Sequence

from ddpm.cli.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    top, rest = build_parser().parse_known_args(argv)  # exits here for --help and --version
    # A command is named: only now the modules that import torch, so that the top level answers
    # at once.
    from ddpm.cli.commands import run
    from ddpm.cli.options import command_parser

    return run(command_parser(top.command).parse_args(rest, top))
