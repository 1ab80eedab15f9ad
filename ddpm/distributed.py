"""Data-parallel training with `torchrun --nproc_per_node N -m ddpm train ...`.

torchrun starts N copies of the command and tells each its place through environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Every rank draws the same global batch
from identically seeded generators and trains on its own equal slice of it; DistributedDataParallel
averages the gradients, so N ranks take the same optimizer steps as one process with the whole
batch. Only rank 0 writes checkpoints, logs and the progress bar.

Small decisions that every rank must share (stop after this step? did rank 0 accept the run
directory?) go through `max_over_ranks`, on a gloo group of CPU tensors even when the gradients
go through NCCL: reading a CUDA tensor's value back would wait for the GPU to finish its queue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This process's place among the training processes (a single process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # index among the processes on this machine: picks the GPU
    owns_group: bool = False  # whether `init_distributed` created the process group
    # The group of `max_over_ranks`: gloo, so its tensors stay on the CPU (None: the default one).
    cpu_group: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """How many processes torchrun started (1 when started without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment, if there is one.

    The backend is NCCL for CUDA devices and gloo otherwise (CPU, including tests). A group that
    the caller already initialised is used as it is and left for the caller to destroy.
    """
    owns_group = False
    if not (dist.is_available() and dist.is_initialized()):
        if launched_world_size() == 1:
            return DistContext()
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)  # reads MASTER_ADDR, RANK, ... from the env
        owns_group = True
    # Every rank calls new_group, as it must; a gloo default group serves as it is.
    cpu_group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank(), owns_group, cpu_group)


def shutdown(ctx: DistContext) -> None:
    """Leave what `init_distributed` joined: the whole group if it made it, else its CPU group."""
    if not dist.is_initialized():
        return
    if ctx.owns_group:
        dist.destroy_process_group()
    elif ctx.cpu_group is not None:
        dist.destroy_process_group(ctx.cpu_group)


def shard(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """This rank's slice of a global batch x [B, ...] (B divisible by the world size)."""
    if ctx.world_size == 1:
        return x
    per_rank = x.shape[0] // ctx.world_size
    return x[ctx.rank * per_rank : (ctx.rank + 1) * per_rank]


def max_over_ranks(value: int, ctx: DistContext) -> int:
    """The largest of the ranks' `value`s, known to every rank when this returns.

    One all-reduce of one CPU integer: cheap enough to call once per training step, and it never
    waits for a GPU."""
    if ctx.world_size == 1:
        return value
    x = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(x, op=dist.ReduceOp.MAX, group=ctx.cpu_group)
    return int(x[0])


def mean_over_ranks(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The element-wise mean of `x` over all ranks (gloo has no averaging reduction, so sum / N)."""
    if ctx.world_size == 1:
        return x
    x = x.clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / ctx.world_size
