"""Which device a run computes on: `pick_device` turns the `--device` string into a torch.device.

Training, sampling and the book all ask here, so "auto" means the same everywhere: CUDA when
there is a GPU (under torchrun, this process's own GPU), then Apple's MPS, then the CPU.
"""

from __future__ import annotations

import torch

from ddpm.distributed import local_rank


def pick_device(name: str = "auto") -> torch.device:
    """ "auto", "cpu", "cuda", "cuda:N" or "mps"; ValueError for a name torch does not know or a
    device this machine does not have. A bare "cuda" is this process's GPU under torchrun."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank())
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
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank())
    return device
