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
by `ddpm.cli.options`; neither imports torch, so every `--help` answers at once.
`ddpm.cli.commands` carries the commands out, and `ddpm.cli.failures` turns what stops one into a
one-line message and an exit status (listed in every command's help).
"""

from __future__ import annotations

from collections.abc import Sequence

from ddpm.cli.options import command_parser
from ddpm.cli.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    top, rest = build_parser().parse_known_args(argv)  # exits here for --help and --version
    args = command_parser(top.command).parse_args(rest, top)  # and here for COMMAND --help
    # Only now the modules that import torch: every option has been checked before any work.
    from ddpm.cli.commands import run

    return run(args)
