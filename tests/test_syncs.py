"""No host-device synchronisation in the hot loops: a training loss, a sampler step, a bits/dim
timestep.

On a GPU the host waits for the device whenever it asks for a value (``.item()``, ``bool(t)``,
``.tolist()``, ``.numpy()``, ``float(t)``) or copies a tensor to the host with a blocking copy.
A CPU run has no such waits, so the tests record the calls that would cause one, through a
``TorchFunctionMode`` that sees every tensor method and torch function. ``.any()`` and ``.all()``
count too: their only use is to be read back as a bool. As a second, independent check the same
work runs on the "meta" device, whose tensors have shapes but no values: there, any such read or
copy to the host raises.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import SyncCounter
from torch import nn

from ddpm.diffusion import GaussianDiffusion, MeanType, VarType
from ddpm.likelihood import calc_bpd_loop
from ddpm.losses import LossType, training_losses
from ddpm.samplers import DDIM, Ancestral, DPMSolverPP, sample_progressive
from ddpm.schedule import NoiseSchedule

T = 8
SHAPE = (3, 2, 4, 4)  # [N, C, H, W]


class TinyNet(nn.Module):
    """A 1x1 convolution plus a learned per-timestep offset: x_t and t both matter."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, 1)
        self.offset = nn.Embedding(T, out_channels)

    def forward(self, x_t, t):
        return self.conv(x_t) + self.offset(t)[:, :, None, None]


def setup(device, mean_type=MeanType.EPS, var_type=VarType.FIXED_LARGE):
    diffusion = GaussianDiffusion(
        NoiseSchedule.from_betas(np.linspace(0.02, 0.3, T)), mean_type, var_type
    )
    torch.manual_seed(0)
    net = TinyNet(SHAPE[1], diffusion.model_out_channels(SHAPE[1])).to(device)
    x0 = torch.rand(SHAPE).mul(2).sub(1).to(device)
    return diffusion, net, x0


LOSSES = [
    (loss_type, mean_type, var_type)
    for mean_type in MeanType
    for loss_type, var_type in [
        (LossType.SIMPLE, VarType.FIXED_LARGE),
        (LossType.HYBRID, VarType.LEARNED_RANGE),
        (LossType.KL, VarType.LEARNED_RANGE),
    ]
]


def one_training_loss(device, loss_type, mean_type, var_type):
    diffusion, net, x0 = setup(device, mean_type, var_type)
    t = torch.randint(T, (SHAPE[0],), device=device)  # drawn on the device, as a trainer does
    noise = torch.randn(SHAPE, device=device)
    with SyncCounter() as counter:
        terms = training_losses(diffusion, net, x0, t, noise, loss_type, num_levels=256)
        terms.loss.mean().backward()
    return counter.calls


SAMPLERS = {"ancestral": Ancestral(), "ddim": DDIM(steps=4, eta=0.5), "dpmsolver++": DPMSolverPP(4)}


def two_sampler_steps(device, name):
    """The first two steps (the second is DPM-Solver++'s multistep update)."""
    diffusion, net, _ = setup(device)
    steps = sample_progressive(diffusion, net, SHAPE, SAMPLERS[name], device=device, progress=False)
    with torch.no_grad(), SyncCounter() as counter:
        first, second = next(steps), next(steps)
    assert second.x_t.shape == SHAPE and first.t > second.t
    return counter.calls


def bits_per_dim(device):
    """The whole bound: T timesteps and the prior term."""
    diffusion, net, x0 = setup(device)
    x0 = (x0 * 127.5).round() / 127.5
    with SyncCounter() as counter:
        result = calc_bpd_loop(diffusion, net, x0, num_levels=256)
    assert result.terms_bpd.shape == (SHAPE[0], T)
    return counter.calls


@pytest.mark.parametrize("loss_type, mean_type, var_type", LOSSES)
def test_a_training_loss_asks_the_device_nothing(loss_type, mean_type, var_type):
    calls = one_training_loss("cpu", loss_type, mean_type, var_type)
    assert sum(calls.values()) == 0, dict(calls)


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_sampler_step_asks_the_device_nothing(name):
    calls = two_sampler_steps("cpu", name)
    assert sum(calls.values()) == 0, dict(calls)


def test_a_bits_per_dim_timestep_asks_the_device_at_most_once():
    calls = bits_per_dim("cpu")
    assert sum(calls.values()) <= T, dict(calls)


def test_the_counter_sees_each_kind_of_sync():
    # The counter itself: each way of waiting for the device is recorded, and plain arithmetic,
    # a copy that follows a tensor's own device and a non-blocking copy are not.
    x = torch.arange(4.0)
    with SyncCounter() as counter:
        y = x * 2 + 1
        y.to(x.device)
        y.to("cpu", non_blocking=True)
    assert sum(counter.calls.values()) == 0, dict(counter.calls)
    with SyncCounter() as counter:
        x.sum().item()
        bool((x > 1).any())
        (x > 1).all()
        x.tolist()
        x.numpy()
        x.cpu()
        float(x[0])
        int(x[1])
        x.to("cpu")
        if x[2]:
            pass
    assert counter.calls == {
        "item": 1,
        "any": 1,
        "all": 1,
        "__bool__": 2,
        "tolist": 1,
        "numpy": 1,
        "cpu": 1,
        "__float__": 1,
        "__int__": 1,
        "to": 1,
    }


# ----- the same work on the meta device: a read of a value or a copy to the host raises there


@pytest.mark.parametrize("loss_type, mean_type, var_type", LOSSES)
def test_a_training_loss_runs_on_a_device_without_values(loss_type, mean_type, var_type):
    assert sum(one_training_loss("meta", loss_type, mean_type, var_type).values()) == 0


@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_steps_run_on_a_device_without_values(name):
    assert sum(two_sampler_steps("meta", name).values()) == 0


def test_meta_tensors_refuse_reads_and_copies_to_the_host():
    # What makes the meta runs above a check: the calls the counter looks for fail there.
    t = torch.zeros(3, device="meta")
    for read in (lambda: t.sum().item(), lambda: bool(t.any()), lambda: t.cpu(), t.tolist):
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


def test_a_bound_runs_on_a_device_without_values():
    assert sum(bits_per_dim("meta").values()) == 0
