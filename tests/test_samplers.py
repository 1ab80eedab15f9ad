"""Samplers: reproducibility, DDIM's limits (eta = 0 and eta = 1) and its marginals."""

import math

import numpy as np
import pytest
import torch

from ddpm.diffusion import GaussianDiffusion
from ddpm.samplers import (
    SamplerKind,
    ancestral_sample,
    ancestral_sample_progressive,
    ddim_sample,
    ddim_sample_progressive,
    ddim_timesteps,
    sample,
)
from ddpm.schedule import NoiseSchedule

T = 30
BETAS = np.linspace(1e-3, 0.3, T)


def diffusion(mean_type="eps", var_type="fixed_large"):
    return GaussianDiffusion(NoiseSchedule.from_betas(BETAS), mean_type, var_type)


def model(x_t, t):
    """A fixed nonlinear eps model."""
    return torch.tanh(x_t) * 0.5 + 0.01 * t[:, None].to(x_t.dtype)


def gen(seed):
    return torch.Generator().manual_seed(seed)


SHAPE = (4, 3)


def test_ancestral_is_reproducible_with_a_seeded_generator():
    d = diffusion()
    torch.manual_seed(0)
    a = ancestral_sample(d, model, SHAPE, generator=gen(1), progress=False)
    torch.manual_seed(99)  # the global RNG plays no part
    b = ancestral_sample(d, model, SHAPE, generator=gen(1), progress=False)
    c = ancestral_sample(d, model, SHAPE, generator=gen(2), progress=False)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_ddim_eta0_is_deterministic_given_x_T():
    d = diffusion()
    x_T = torch.randn(SHAPE, generator=gen(0))
    a = ddim_sample(d, model, SHAPE, steps=10, generator=gen(1), x_T=x_T, progress=False)
    b = ddim_sample(d, model, SHAPE, steps=10, generator=gen(2), x_T=x_T, progress=False)
    assert torch.equal(a, b)
    noisy = ddim_sample(d, model, SHAPE, steps=10, eta=0.5, generator=gen(2), x_T=x_T)
    assert not torch.equal(a, noisy)


@pytest.mark.parametrize("clip", [True, False])
def test_ddim_eta1_full_chain_is_ancestral_with_posterior_variance(clip):
    """Song et al. (2021): eta = 1 over all T steps gives sigma_t^2 = beta_tilde_t (fixed-small)."""
    d = diffusion(var_type="fixed_small")
    kw = dict(generator=gen(3), clip_denoised=clip, progress=False)
    ancestral = ancestral_sample(d, model, SHAPE, **kw)
    kw["generator"] = gen(3)
    ddim = ddim_sample(d, model, SHAPE, timesteps=range(T), eta=1.0, **kw)
    torch.testing.assert_close(ddim, ancestral, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_keeps_the_forward_marginals(eta):
    """With an x0 oracle for one data point, every DDIM iterate x_s ~ q(x_s | x_0) (Song et al.
    Lemma 1), for any eta and any subsequence of timesteps."""
    d = diffusion("x0")
    x0 = torch.tensor([0.6, -0.2])
    n = 20_000
    seq = [0, 4, 11, 20, 29]
    ab = np.cumprod(1 - BETAS)
    g = gen(4)
    x_T = math.sqrt(ab[29]) * x0 + math.sqrt(1 - ab[29]) * torch.randn(n, 2, generator=g)
    steps = list(
        ddim_sample_progressive(
            d, lambda x, _: x0.expand_as(x), (n, 2), timesteps=seq, eta=eta, generator=g, x_T=x_T
        )
    )
    assert [s.t for s in steps] == seq[::-1]
    for step, prev in zip(steps[:-1], seq[-2::-1], strict=True):
        mean, var = math.sqrt(ab[prev]) * x0, 1 - ab[prev]
        torch.testing.assert_close(step.x_t.mean(0), mean, rtol=0, atol=5 * math.sqrt(var / n))
        torch.testing.assert_close(
            step.x_t.var(0), torch.full((2,), var), rtol=0, atol=5 * var * math.sqrt(2 / n) + 1e-6
        )
    torch.testing.assert_close(steps[-1].x_t, x0.expand(n, 2))


def test_ancestral_with_an_oracle_ends_at_the_data_point():
    d = diffusion("x0", "fixed_small")
    x0 = torch.tensor([0.3, -0.9, 1.0])
    out = ancestral_sample(d, lambda x, _: x0.expand_as(x), (5, 3), generator=gen(0))
    torch.testing.assert_close(out, x0.expand(5, 3))


def test_progressive_yields_every_step_and_ends_with_the_sample():
    d = diffusion()
    steps = list(ancestral_sample_progressive(d, model, SHAPE, generator=gen(5), progress=False))
    assert [s.t for s in steps] == list(range(T - 1, -1, -1))
    assert all(s.x_t.shape == SHAPE and s.pred_x0.shape == SHAPE for s in steps)
    assert torch.equal(steps[-1].x_t, ancestral_sample(d, model, SHAPE, generator=gen(5)))
    ddim_steps = list(ddim_sample_progressive(d, model, SHAPE, steps=7, generator=gen(5)))
    assert [s.t for s in ddim_steps] == ddim_timesteps(T, 7)[::-1]


def test_sampling_builds_no_graph():
    d = diffusion()
    w = torch.nn.Parameter(torch.ones(()))
    out = sample(d, lambda x, t: w * x, SHAPE, "ddim", steps=5, generator=gen(0))
    assert not out.requires_grad


def test_progress_bar_can_be_turned_off(capsys):
    d = diffusion()
    ancestral_sample(d, model, SHAPE, progress=False)
    assert capsys.readouterr().err == ""
    ancestral_sample(d, model, SHAPE, progress=True)
    assert "sampling" in capsys.readouterr().err


def test_sample_dispatches_by_kind():
    d = diffusion()
    x_T = torch.randn(SHAPE)
    kw = dict(x_T=x_T, progress=False)
    torch.testing.assert_close(
        sample(d, model, SHAPE, "DDIM", steps=6, **kw),
        ddim_sample(d, model, SHAPE, steps=6, **kw),
    )
    torch.testing.assert_close(
        sample(d, model, SHAPE, SamplerKind.ANCESTRAL, generator=gen(1), **kw),
        ancestral_sample(d, model, SHAPE, generator=gen(1), **kw),
    )


# ----- timesteps and validation -----


def test_ddim_timesteps_are_evenly_spaced_and_include_both_ends():
    assert ddim_timesteps(T, T) == list(range(T))
    assert ddim_timesteps(T, 1) == [T - 1]
    seq = ddim_timesteps(1000, 50)
    assert len(seq) == 50 and seq[0] == 0 and seq[-1] == 999
    assert set(np.diff(seq)) <= {20, 21}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), rf"steps = 0; need an integer in \[1, {T}\]"),
        (dict(steps=T + 1), rf"steps = {T + 1}; need an integer in \[1, {T}\]"),
        (dict(timesteps=[0, T]), rf"timestep {T} is out of range; valid indices are 0\.\.{T - 1}"),
        (dict(timesteps=[-1, 5]), r"timestep -1 is out of range"),
        (dict(timesteps=[5, 3]), r"strictly increasing"),
        (dict(timesteps=[2, 4, 4]), r"strictly increasing"),
        (dict(timesteps=[]), r"timesteps is empty"),
        (dict(steps=5, eta=1.5), r"eta = 1\.5; need 0 <= eta <= 1"),
        (dict(steps=None), r"give either steps"),
    ],
)
def test_ddim_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ddim_sample(diffusion(), model, SHAPE, progress=False, **kwargs)


def test_sample_rejects_bad_kind_and_step_count():
    d = diffusion()
    with pytest.raises(
        ValueError, match=r"unknown SamplerKind 'euler'; valid names: ancestral, ddim"
    ):
        sample(d, model, SHAPE, "euler")
    with pytest.raises(ValueError, match=rf"steps = 10; ancestral sampling runs all T = {T}"):
        sample(d, model, SHAPE, "ancestral", steps=10)
    with pytest.raises(ValueError, match=r"x_T has shape \(2, 3\) but shape is \(4, 3\)"):
        ancestral_sample(d, model, SHAPE, x_T=torch.zeros(2, 3))
