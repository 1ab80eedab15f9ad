"""pick_device: "auto" prefers CUDA, then MPS, then the CPU; a named device must exist here."""

import pytest
import torch

from ddpm.device import allow_tf32, pick_device


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has the given accelerators (`gpus` of them with CUDA), as process
    `local_rank` of `world_size` started by torchrun."""

    def have(
        cuda: bool = False, mps: bool = False, local_rank: int = 0, world_size: int = 1, gpus=4
    ) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus if cuda else 0)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))
        monkeypatch.setenv("WORLD_SIZE", str(world_size))

    return have


def test_auto_prefers_cuda_then_mps_then_the_cpu(machine):
    machine(cuda=True, mps=True, local_rank=2)
    assert pick_device("auto") == torch.device("cuda", 2)  # this process's GPU under torchrun
    machine(cuda=False, mps=True)
    assert pick_device() == torch.device("mps")
    machine()
    assert pick_device("auto") == torch.device("cpu")


def test_named_devices(machine):
    machine(cuda=True)
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("cuda") == torch.device("cuda", 0)
    assert pick_device("cuda:1") == torch.device("cuda", 1)  # one process: any GPU it names


def test_under_torchrun_each_process_takes_its_own_gpu(machine):
    # Process 3 of 4: "cuda" and "auto" mean GPU 3; "cuda:0" would send all four processes to
    # GPU 0 (where NCCL fails with "Duplicate GPU detected"), so it is refused on every rank,
    # including the one whose own GPU it names.
    machine(cuda=True, local_rank=3, world_size=4)
    assert pick_device("cuda") == pick_device("auto") == torch.device("cuda", 3)
    assert pick_device("cpu") == torch.device("cpu")  # gloo ranks on the CPU are fine
    for rank in range(4):
        machine(cuda=True, local_rank=rank, world_size=4)
        with pytest.raises(ValueError, match=r"'cuda:0' would put all 4 torchrun processes"):
            pick_device("cuda:0")
    machine(cuda=True, local_rank=2, world_size=4, gpus=2)  # more processes than GPUs
    with pytest.raises(ValueError, match="LOCAL_RANK is 2, but this machine has 2 GPU"):
        pick_device("cuda")


def test_a_device_this_machine_lacks_or_torch_does_not_know_is_refused(machine):
    machine()
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="MPS is not available"):
        pick_device("mps")
    with pytest.raises(ValueError, match="unknown device 'gpu'; use auto, cpu, cuda"):
        pick_device("gpu")


@pytest.fixture
def tf32_flags():
    """Both TF32 flags off for the test, and as they were afterwards."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def test_tf32_is_allowed_on_cuda_only(tf32_flags):
    allow_tf32(torch.device("cpu"))
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    allow_tf32(torch.device("cuda", 0))  # only flags: no GPU needed
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
