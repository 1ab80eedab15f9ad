"""Which device a run computes on: `pick_device` turns the `--device` string into a torch.device.

Training, sampling and the book all ask here, so "auto" means the same everywhere: CUDA when
there is a GPU (under torchrun, this process's own GPU), then Apple's MPS, then the CPU.
"""

from __future__ import annotations

import torch

from ddpm.distributed import launched_world_size, local_rank


def pick_device(name: str = "auto") -> torch.device:
    """ "auto", "cpu", "cuda", "cuda:N" or "mps"; ValueError for a name torch does not know or a
    device this machine does not have.

    Under torchrun (more than one process) each process takes the GPU of its LOCAL_RANK, from
    "auto" or a bare "cuda"; "cuda:N" is refused there, since it would put every process on the
    same GPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return _own_gpu()
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available here")
    if device.type != "cuda":
        return device
    if device.index is None:
        return _own_gpu()
    if launched_world_size() > 1:
        raise ValueError(
            f"device {name!r} would put all {launched_world_size()} torchrun processes on one "
            "GPU; use 'cuda' or 'auto', which give each process the GPU of its LOCAL_RANK"
        )
    return device


def _own_gpu() -> torch.device:
    """This process's GPU: the one numbered by its LOCAL_RANK (0 without torchrun)."""
    index, count = local_rank(), torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"LOCAL_RANK is {index}, but this machine has {count} GPU(s): start at most one "
            "process per GPU (torchrun --nproc_per_node)"
        )
    return torch.device("cuda", index)


def allow_tf32(device: torch.device) -> None:
    """On CUDA, let float32 matmuls and convolutions use TF32 tensor cores (10 mantissa bits
    instead of 23, several times the throughput): ample for training a network, which by default
    runs in bf16 (7 bits) anyway. A process-wide setting; nothing changes on other devices."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
