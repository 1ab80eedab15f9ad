"""Samplers: reproducibility, DDIM's limits (eta = 0 and eta = 1), its marginals and noise
scale, DPM-Solver++(2M) against diffusers, and memory that does not grow with the steps."""

import math
import weakref

import numpy as np
import pytest
import torch

from ddpm.diffusion import GaussianDiffusion
from ddpm.samplers import (
    DDIM,
    Ancestral,
    DPMSolverPP,
    SamplerKind,
    ancestral_sample,
    ancestral_sample_progressive,
    ddim_sample,
    ddim_sample_progressive,
    ddim_timesteps,
    make_sampler,
    sample,
    sample_progressive,
)
from ddpm.schedule import NoiseSchedule, linear_schedule

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
        ValueError,
        match=r"unknown SamplerKind 'euler'; valid names: ancestral, ddim, dpmsolver\+\+$",
    ):
        sample(d, model, SHAPE, "euler")
    with pytest.raises(ValueError, match=rf"steps = 10; ancestral sampling runs all T = {T}"):
        sample(d, model, SHAPE, "ancestral", steps=10)
    with pytest.raises(ValueError, match=r"x_T has shape \(2, 3\) but shape is \(4, 3\)"):
        ancestral_sample(d, model, SHAPE, x_T=torch.zeros(2, 3))


def test_sample_builds_every_named_sampler_and_rejects_options_it_cannot_use():
    d = diffusion()
    x_T = torch.randn(SHAPE, generator=gen(6))
    kw = dict(x_T=x_T, progress=False)
    torch.testing.assert_close(
        sample(d, model, SHAPE, "dpmsolver++", steps=6, **kw),
        sample(d, model, SHAPE, DPMSolverPP(steps=6), **kw),
    )
    assert make_sampler("dpmsolver++", T) == DPMSolverPP(steps=20)
    assert make_sampler(SamplerKind.DDIM, 8) == DDIM(steps=8)
    assert make_sampler("ancestral", T, steps=T) == Ancestral()
    with pytest.raises(ValueError, match=r"eta = 0\.5; DPM-Solver\+\+\(2M\) is deterministic"):
        make_sampler("dpmsolver++", T, eta=0.5)
    with pytest.raises(ValueError, match=r"steps and eta configure a sampler given by name"):
        sample(d, model, SHAPE, DDIM(steps=5), steps=5)


@pytest.mark.parametrize("eta", [0.3, 1.0])
def test_ddim_skipping_steps_with_eta_has_the_jump_noise_scale(eta):
    """One DDIM step from t = 20 to s = 11 (Song et al. Eq. 16): given x_t, x_s is Gaussian with
    mean sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps_hat and variance
    sigma^2 = eta^2 (1 - ab_s) / (1 - ab_t) (1 - ab_t / ab_s), which over a skip differs from
    beta_t and from beta_tilde_t."""
    t, s, n = 20, 11, 40_000
    ab = np.cumprod(1 - BETAS)
    var = eta**2 * (1 - ab[s]) / (1 - ab[t]) * (1 - ab[t] / ab[s])
    x_t = torch.tensor([[0.8, -1.5, 0.1]]).expand(n, 3)
    eps = model(x_t[:1], torch.tensor([t]))
    x0 = (x_t[:1] - math.sqrt(1 - ab[t]) * eps) / math.sqrt(ab[t])
    mean = math.sqrt(ab[s]) * x0 + math.sqrt(1 - ab[s] - var) * eps
    first = next(
        ddim_sample_progressive(
            diffusion(),
            model,
            (n, 3),
            timesteps=[0, s, t],
            eta=eta,
            generator=gen(7),
            clip_denoised=False,
            progress=False,
            x_T=x_t,
        )
    )
    assert first.t == t
    torch.testing.assert_close(first.x_t.mean(0), mean[0], rtol=0, atol=5 * math.sqrt(var / n))
    torch.testing.assert_close(
        first.x_t.var(0), torch.full((3,), var), rtol=5 * math.sqrt(2 / n), atol=0
    )


class CountingModel:
    """An eps model that records, at every call, how many of the inputs it was ever given are
    still alive: what the sampling loop keeps."""

    def __init__(self):
        self.inputs = []
        self.most_alive = 0

    def __call__(self, x_t, t):
        self.inputs.append(weakref.ref(x_t))
        self.most_alive = max(self.most_alive, sum(r() is not None for r in self.inputs))
        return torch.tanh(x_t) * 0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda T: Ancestral(),
        lambda T: DDIM(timesteps=range(T), eta=1.0),
        lambda T: DPMSolverPP(timesteps=range(T)),
    ],
    ids=["ancestral", "ddim", "dpmsolver++"],
)
def test_memory_does_not_grow_with_the_number_of_steps(make):
    """Every step's x_t is dropped once the next step is made: the live count is one, the input
    of the current call, for T = 10 and for T = 40 alike (keeping the whole trajectory gives T)."""
    for steps in (10, 40):
        counting = CountingModel()
        d = GaussianDiffusion(linear_schedule(T=steps))
        sample(d, counting, SHAPE, make(steps), generator=gen(8), progress=False)
        assert len(counting.inputs) == steps
        assert counting.most_alive == 1


def test_dpm_solver_pp_2m_is_second_order_where_ddim_is_first():
    """Data ~ N(0, c^2 I) has the exact eps(x_t, t) = sqrt(1 - ab) x_t / (ab c^2 + 1 - ab), and
    the probability-flow ODE then maps x_T to x_t = x_T std_t / std_T, with
    std_t^2 = ab_t c^2 + 1 - ab_t.
    Doubling the steps divides the error at index 0 by about 2^2 for DPM-Solver++(2M) (Lu et al.
    2022: a second-order method) and by about 2 for DDIM (first order)."""
    c, T = 0.5, 1000
    betas = linear_schedule(T=T).betas
    ab = np.cumprod(1 - betas)
    d = GaussianDiffusion(NoiseSchedule.from_betas(betas))
    ab_t = torch.tensor(ab)

    def exact_eps(x, t):
        a = ab_t[t][:, None]
        return (1 - a).sqrt() * x / (a * c**2 + 1 - a)

    x_T = torch.randn(4, 2, generator=gen(10), dtype=torch.float64)
    exact = x_T * math.sqrt((ab[0] * c**2 + 1 - ab[0]) / (ab[-1] * c**2 + 1 - ab[-1]))

    def error(sampler):
        *_, at_0, _ = sample_progressive(
            d, exact_eps, x_T.shape, sampler, x_T=x_T, clip_denoised=False, progress=False
        )
        return (at_0.x_t - exact).abs().max().item()

    dpm = error(DPMSolverPP(steps=80)) / error(DPMSolverPP(steps=160))
    ddim = error(DDIM(steps=80)) / error(DDIM(steps=160))
    assert 3.5 < dpm < 4.5
    assert 1.8 < ddim < 2.2


def diffusers_dpm_solver(betas, eps_model, x_T, timesteps=None, steps=None):
    """x_0 by diffusers' DPMSolverMultistepScheduler: DPM-Solver++, second order, midpoint,
    eps prediction, no thresholding, last step to sigma = 0."""
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=len(betas),
        trained_betas=betas,
        prediction_type="epsilon",
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        thresholding=False,
        final_sigmas_type="zero",
    )
    scheduler.set_timesteps(num_inference_steps=steps, timesteps=timesteps)
    x = x_T
    for t in scheduler.timesteps:
        x = scheduler.step(eps_model(x, t.expand(x.shape[0])), t, x).prev_sample
    return x, sorted(scheduler.timesteps.tolist())


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
@pytest.mark.parametrize("steps", [2, 5, 12, 25])
def test_dpm_solver_pp_2m_matches_diffusers(steps):
    """Same schedule (T = 1000, linear), same fixed network, same timesteps: diffusers' default
    spacing, and ours (`ddim_timesteps`) handed to diffusers as custom timesteps. diffusers keeps
    its tables in float32, ours are float64: hence 1e-4, not equality."""
    betas = linear_schedule(T=1000).betas
    d = GaussianDiffusion(NoiseSchedule.from_betas(betas))
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(8, 1, 3, padding=1)
    )

    ab = torch.tensor(np.cumprod(1 - betas), dtype=torch.float32)

    def eps_model(x, t):
        """Nearly the exact eps of data ~ N(0, I), sqrt(1 - ab_t) x_t, plus a nonlinear term
        small enough (in x_0 units) to keep every x_0 estimate of order one."""
        a = ab[t][:, None, None, None]
        out = net(torch.cat([x, (t / 1000)[:, None, None, None].expand_as(x).float()], 1))
        return (1 - a).sqrt() * x + 0.3 * a.sqrt() * out

    x_T = torch.randn(3, 1, 8, 8, generator=gen(9))
    kw = dict(x_T=x_T, clip_denoised=False, progress=False)
    with torch.no_grad():
        theirs, seq = diffusers_dpm_solver(betas, eps_model, x_T, steps=steps)
        ours = sample(d, eps_model, x_T.shape, DPMSolverPP(timesteps=seq), **kw)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)
        seq = ddim_timesteps(1000, steps)
        theirs, _ = diffusers_dpm_solver(betas, eps_model, x_T, timesteps=seq[::-1])
        ours = sample(d, eps_model, x_T.shape, DPMSolverPP(steps=steps), **kw)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


@pytest.mark.parametrize("sampler", [Ancestral(), DDIM(steps=6), DPMSolverPP(steps=6)])
def test_bf16_autocast_runs_the_network_in_bf16_and_stays_close_to_float32(sampler):
    d = diffusion()
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(3, 3, 1)
    seen = []

    def net(x_t, t):
        h = conv(x_t[..., None])[..., 0]
        seen.append(h.dtype)
        return torch.tanh(h) + 0.01 * t[:, None]

    kw = dict(x_T=torch.randn(SHAPE, generator=gen(4)), generator=gen(5), progress=False)
    full = sample(d, net, SHAPE, sampler, **kw)
    kw["generator"] = gen(5)
    half = sample(d, net, SHAPE, sampler, autocast_dtype=torch.bfloat16, **kw)
    assert set(seen) == {torch.float32, torch.bfloat16}  # the network did run in bf16
    assert half.dtype == torch.float32 and not torch.equal(half, full)
    # bf16 keeps 8 significant bits: each network output is off by about 2^-8 of its size (of
    # order one here), and the chain adds up a few such errors.
    torch.testing.assert_close(half, full, rtol=0, atol=4 * 2.0**-8)
