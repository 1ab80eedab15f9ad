"""The command line: `python -m ddpm {train,sample,bpd,info}`, installed as `ddpm`.

    ddpm train                       # the digits model in runs/digits, a few CPU minutes
    ddpm sample                      # 64 samples from runs/digits: samples.png and samples.npy
    ddpm sample --sampler ddim --steps 50 --eta 0
    ddpm bpd --split test            # the variational bound in bits/dim, every term to a file
    ddpm info runs/digits            # a checkpoint's step and configuration
    torchrun --nproc_per_node 4 -m ddpm train --data cifar10.npz --preset cifar10

The options are declared in `ddpm.cli.parser`, the commands carried out in `ddpm.cli.commands`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ddpm import checkpoint as ckpt
from ddpm.cli.commands import run_bpd, run_info, run_sample, run_train
from ddpm.cli.parser import build_parser
from ddpm.train import NonFiniteLossError, TrainingInterrupted

COMMANDS = {"train": run_train, "sample": run_sample, "bpd": run_bpd, "info": run_info}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (ckpt.CheckpointError, NonFiniteLossError, ValueError, FileNotFoundError) as err:
        print(f"ddpm {args.command}: error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stopped:
        print(f"ddpm train: {stopped}; continue with --resume", file=sys.stderr)
        return 130  # the shell's code for a process stopped by SIGINT
    except KeyboardInterrupt:
        print(f"ddpm {args.command}: stopped; files already written are kept", file=sys.stderr)
        return 130
    return 0
