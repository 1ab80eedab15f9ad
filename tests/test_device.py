"""pick_device: "auto" prefers CUDA, then MPS, then the CPU; a named device must exist here."""

import pytest
import torch

from ddpm.device import pick_device


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has the given accelerators, under torchrun's LOCAL_RANK."""

    def have(cuda: bool = False, mps: bool = False, local_rank: int = 0) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))

    return have


def test_auto_prefers_cuda_then_mps_then_the_cpu(machine):
    machine(cuda=True, mps=True, local_rank=2)
    assert pick_device("auto") == torch.device("cuda", 2)  # this process's GPU under torchrun
    machine(cuda=False, mps=True)
    assert pick_device() == torch.device("mps")
    machine()
    assert pick_device("auto") == torch.device("cpu")


def test_named_devices(machine):
    machine(cuda=True, local_rank=3)
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("cuda") == torch.device("cuda", 3)
    assert pick_device("cuda:1") == torch.device("cuda", 1)  # an explicit index is kept


def test_a_device_this_machine_lacks_or_torch_does_not_know_is_refused(machine):
    machine()
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        pick_device("mps")
    with pytest.raises(ValueError, match="unknown device 'gpu'; use auto, cpu, cuda"):
        pick_device("gpu")
