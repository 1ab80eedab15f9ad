"""Forward and reverse processes against closed forms computed here, apart from the package."""

import math

import numpy as np
import pytest
import torch

from ddpm.diffusion import GaussianDiffusion, MeanType, VarType, parse_choice
from ddpm.schedule import NoiseSchedule, linear_schedule

T = 50
BETAS = np.linspace(1e-3, 0.3, T)
# alpha_bar by an explicit running product, the paper's Eq. 4 definition
ALPHA_BAR = np.array([math.prod(1 - b for b in BETAS[: t + 1]) for t in range(T)])
ALPHA_BAR_PREV = np.array([1.0, *ALPHA_BAR[:-1]])


def make(mean_type="eps", var_type="fixed_large"):
    return GaussianDiffusion(NoiseSchedule.from_betas(BETAS), mean_type, var_type)


def col(values, ndim=2):
    """Per-example values [N] as a float64 tensor [N, 1, ...] that broadcasts against data."""
    return torch.tensor(np.asarray(values), dtype=torch.float64).reshape(-1, *[1] * (ndim - 1))


# ----- forward process -----


def test_q_sample_moments_match_closed_form():
    d = make()
    torch.manual_seed(0)
    n = 100_000
    x0 = torch.tensor([[0.7, -0.4]]).expand(n, 2)
    for step in (0, 10, 49):
        t = torch.full((n,), step)
        x_t = d.q_sample(x0, t).double()
        mean, var = math.sqrt(ALPHA_BAR[step]) * x0[0].double(), 1 - ALPHA_BAR[step]
        # Five standard errors of the sample mean and variance.
        torch.testing.assert_close(x_t.mean(0), mean, rtol=0, atol=5 * math.sqrt(var / n))
        torch.testing.assert_close(
            x_t.var(0),
            torch.full((2,), var, dtype=torch.float64),
            rtol=0,
            atol=5 * var * 2 / n**0.5,
        )


def test_q_sample_and_q_mean_variance_formulas():
    d = make()
    t = torch.tensor([0, 7, 49])
    x0 = torch.randn(3, 2, 4, dtype=torch.float64)
    noise = torch.randn(3, 2, 4, dtype=torch.float64)
    ab = col(ALPHA_BAR[t.numpy()], 3)
    torch.testing.assert_close(d.q_sample(x0, t, noise), ab.sqrt() * x0 + (1 - ab).sqrt() * noise)
    q = d.q_mean_variance(x0, t)
    torch.testing.assert_close(q.mean, ab.sqrt() * x0)
    torch.testing.assert_close(q.variance, (1 - ab).expand_as(x0))
    torch.testing.assert_close(q.log_variance, (1 - ab).log().expand_as(x0))


@pytest.mark.parametrize("step", [1, 5, 30, 49])
def test_q_posterior_matches_bayes_rule_on_a_grid(step):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), normalised numerically."""
    d = make()
    x0, x_t = 0.6, -0.3
    beta, ab_prev = BETAS[step], ALPHA_BAR_PREV[step]
    grid = np.linspace(-6, 6, 400_001)
    log_prior = -0.5 * (grid - math.sqrt(ab_prev) * x0) ** 2 / (1 - ab_prev)
    log_lik = -0.5 * (x_t - math.sqrt(1 - beta) * grid) ** 2 / beta
    w = np.exp(log_prior + log_lik - (log_prior + log_lik).max())
    w /= np.trapezoid(w, grid)
    mean = np.trapezoid(grid * w, grid)
    var = np.trapezoid((grid - mean) ** 2 * w, grid)

    t = torch.tensor([step])
    q = d.q_posterior(
        torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[x_t]], dtype=torch.float64), t
    )
    assert q.mean.item() == pytest.approx(mean, abs=1e-8)
    assert q.variance.item() == pytest.approx(var, rel=1e-6)
    assert q.log_variance.item() == pytest.approx(math.log(var), abs=1e-6)


def test_q_posterior_at_first_step_is_x0():
    d = make()
    x0, x_t = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    q = d.q_posterior(x0, x_t, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(q.mean, x0)
    assert (q.variance == 0).all()
    # The log variance is clipped to the t=1 value rather than log 0.
    beta_tilde_1 = BETAS[1] * (1 - ALPHA_BAR_PREV[1]) / (1 - ALPHA_BAR[1])
    torch.testing.assert_close(q.log_variance, torch.full_like(x0, math.log(beta_tilde_1)))


# ----- conversions -----


def test_conversions_round_trip():
    d = make()
    t = torch.arange(0, T, 7)
    x0 = torch.rand(len(t), 3, 5, dtype=torch.float64) * 2 - 1
    eps = torch.randn_like(x0)
    x_t = d.q_sample(x0, t, eps)
    torch.testing.assert_close(d.x0_from_eps(x_t, t, eps), x0)
    torch.testing.assert_close(d.eps_from_x0(x_t, t, x0), eps)
    v = d.v_from_x0_eps(x0, t, eps)
    ab = col(ALPHA_BAR[t.numpy()], 3)
    torch.testing.assert_close(v, ab.sqrt() * eps - (1 - ab).sqrt() * x0)
    torch.testing.assert_close(d.x0_from_v(x_t, t, v), x0)
    torch.testing.assert_close(d.eps_from_v(x_t, t, v), eps)


def test_score_from_eps_is_gradient_of_log_density():
    d = make()
    t = torch.tensor([0, 20, 49])
    x0 = torch.rand(3, 2, dtype=torch.float64)
    eps = torch.randn_like(x0)
    x_t = d.q_sample(x0, t, eps).requires_grad_(True)
    ab = col(ALPHA_BAR[t.numpy()])
    log_q = torch.distributions.Normal(ab.sqrt() * x0, (1 - ab).sqrt()).log_prob(x_t).sum()
    (score,) = torch.autograd.grad(log_q, x_t)
    torch.testing.assert_close(d.score_from_eps(eps, t), score)


# ----- reverse process -----


@pytest.mark.parametrize("mean_type", list(MeanType))
def test_perfect_predictor_gives_exact_x0_and_posterior_mean(mean_type):
    d = make(mean_type, "fixed_small")
    t = torch.arange(0, T, 6)
    x0 = torch.rand(len(t), 2, 3, dtype=torch.float64) * 2 - 1
    eps = torch.randn_like(x0)
    ab = col(ALPHA_BAR[t.numpy()], 3)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    beta, ab_prev = col(BETAS[t.numpy()], 3), col(ALPHA_BAR_PREV[t.numpy()], 3)
    # Paper Eq. 7, written out here from the betas.
    mu_tilde = (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x_t) / (1 - ab)
    target = {
        "eps": eps,
        "x0": x0,
        "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0,
        "mu": mu_tilde,
    }[mean_type.value]

    def oracle(x, t_in):
        assert x is x_t
        return target

    p = d.p_mean_variance(oracle, x_t, t, clip_denoised=False)
    torch.testing.assert_close(p.pred_x0, x0)
    torch.testing.assert_close(p.pred_eps, eps)
    # Paper Eq. 11: mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t).
    torch.testing.assert_close(p.mean, (x_t - beta / (1 - ab).sqrt() * eps) / (1 - beta).sqrt())
    torch.testing.assert_close(p.mean, d.q_posterior(x0, x_t, t).mean)


def test_fixed_variances_with_first_step_correction():
    t = torch.tensor([0, 1, 25, 49])
    x = torch.zeros(4, 3, dtype=torch.float64)
    beta_tilde = BETAS * (1 - ALPHA_BAR_PREV) / (1 - ALPHA_BAR)
    small = d_var(make(var_type="fixed_small"), x, t)
    large = d_var(make(var_type="fixed_large"), x, t)
    expected_small = [beta_tilde[1], beta_tilde[1], beta_tilde[25], beta_tilde[49]]
    expected_large = [beta_tilde[1], BETAS[1], BETAS[25], BETAS[49]]
    for p, expected in ((small, expected_small), (large, expected_large)):
        torch.testing.assert_close(p.variance, col(expected).expand_as(x))
        torch.testing.assert_close(p.log_variance, col(np.log(expected)).expand_as(x))


def d_var(d, x, t):
    return d.p_mean_variance(lambda x_t, t_: torch.zeros_like(x_t), x, t)


def test_learned_range_interpolates_log_variances():
    d = make(var_type="learned_range")
    assert d.model_out_channels(3) == 6 and make().model_out_channels(3) == 3
    t = torch.tensor([0, 10, 49])
    x = torch.zeros(3, 3, dtype=torch.float64)
    beta_tilde = BETAS * (1 - ALPHA_BAR_PREV) / (1 - ALPHA_BAR)
    log_small = np.log(np.where(np.arange(T) == 0, beta_tilde[1], beta_tilde))[t.numpy()]
    log_large = np.log(BETAS[t.numpy()])
    for v, expected in ((-1.0, log_small), (1.0, log_large), (0.0, (log_small + log_large) / 2)):
        out = torch.cat([torch.zeros_like(x), torch.full_like(x, v)], dim=1)
        p = d.p_mean_variance(lambda *_, out=out: out, x, t)
        torch.testing.assert_close(p.log_variance, col(expected).expand_as(x))
        torch.testing.assert_close(p.variance, col(np.exp(expected)).expand_as(x))


def test_clip_denoised_clamps_pred_x0():
    d = make("x0")
    x_t = torch.zeros(2, 3)
    t = torch.tensor([3, 4])
    p = d.p_mean_variance(lambda x, _: torch.full_like(x, 3.0), x_t, t, clip_denoised=True)
    assert (p.pred_x0 == 1.0).all()
    torch.testing.assert_close(p.pred_eps, d.eps_from_x0(x_t, t, p.pred_x0))
    p = d.p_mean_variance(lambda x, _: torch.full_like(x, 3.0), x_t, t, clip_denoised=False)
    assert (p.pred_x0 == 3.0).all()


def test_mu_mean_is_the_model_output_even_when_x0_is_clipped():
    # The paper's code: under mean prediction the clamp changes the x_0 estimate, not the mean.
    d = make("mu")
    x_t = torch.zeros(2, 3, dtype=torch.float64)
    t = torch.tensor([3, 4])
    out = torch.full_like(x_t, 2.0)
    p = d.p_mean_variance(lambda *_: out, x_t, t, clip_denoised=True)
    torch.testing.assert_close(p.mean, out)
    assert (p.pred_x0 == 1.0).all()  # 2 / b_t > 1 is clamped
    unclipped = d.p_mean_variance(lambda *_: out, x_t, t, clip_denoised=False)
    b = (BETAS * np.sqrt(ALPHA_BAR_PREV) / (1 - ALPHA_BAR))[t.numpy()]
    torch.testing.assert_close(unclipped.pred_x0, 2.0 / col(b).expand_as(x_t))


def test_float32_in_float32_out():
    d = make()
    x0 = torch.randn(2, 3)
    t = torch.tensor([1, 2])
    assert d.q_sample(x0, t).dtype == torch.float32
    assert d.p_mean_variance(lambda x, _: x, x0, t).mean.dtype == torch.float32


# ----- choices and validation -----


@pytest.mark.parametrize(
    "name, member",
    [
        ("eps", MeanType.EPS),
        ("EPS", MeanType.EPS),
        ("X0", MeanType.X0),
        ("v", MeanType.V),
        ("MU", MeanType.MU),
        ("fixed_large", VarType.FIXED_LARGE),
        ("Fixed-Small", VarType.FIXED_SMALL),
        ("learned_range", VarType.LEARNED_RANGE),
        (VarType.FIXED_SMALL, VarType.FIXED_SMALL),
    ],
)
def test_parse_choice_accepts_names(name, member):
    assert parse_choice(type(member), name) is member


def test_parse_choice_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown MeanType 'noise'; valid names: eps, x0, v, mu$"):
        parse_choice(MeanType, "noise")
    with pytest.raises(ValueError, match=r"fixed_small, fixed_large, learned_range"):
        GaussianDiffusion(linear_schedule(10), var_type="learned")


def test_shape_mismatches_are_rejected():
    d = make()
    with pytest.raises(ValueError, match=r"x0 has shape \(2, 3\) but noise has shape \(2, 4\)"):
        d.q_sample(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"timesteps have shape \(3,\) but x has shape \(2, 3\)"):
        d.q_sample(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"x0 has shape .* x_t has shape"):
        d.q_posterior(torch.zeros(2, 3), torch.zeros(3, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"model output has shape \(2, 3\); expected \(2, 6\)"):
        make(var_type="learned_range").p_mean_variance(
            lambda x, _: x, torch.zeros(2, 3), torch.tensor([0, 1])
        )


def test_out_of_range_timestep_is_rejected():
    with pytest.raises(ValueError, match=r"timestep 50 is out of range; valid indices are 0\.\.49"):
        make().q_sample(torch.zeros(2, 3), torch.tensor([0, 50]))


@pytest.mark.parametrize("mean_type", list(MeanType))
@pytest.mark.parametrize("var_type", list(VarType))
@pytest.mark.parametrize("clip", [True, False])
def test_one_int_timestep_agrees_with_per_example_timesteps(mean_type, var_type, clip):
    # The samplers' path (one int t, coefficients as numbers) against the per-example path, which
    # the tests above check against closed forms: same mean, spread, x_0 and eps estimates.
    d = make(mean_type, var_type)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, generator=gen) * 2
    weight = torch.randn(d.model_out_channels(3), 3, generator=gen)

    def model(x_t, t):  # depends on x_t and t, and leaves [-1, 1] now and then
        return torch.einsum("oc,ncl->nol", weight, x_t) * (1 + t.float()[:, None, None] / T)

    for step in (0, 1, 17, T - 1):
        want = d.p_mean_variance(model, x, torch.full((4,), step), clip_denoised=clip)
        got = d.p_mean_variance(model, x, step, clip_denoised=clip)
        torch.testing.assert_close(got.mean, want.mean)
        torch.testing.assert_close(got.pred_x0, want.pred_x0)
        torch.testing.assert_close(got.pred_eps, want.pred_eps)
        for name in ("variance", "log_variance"):
            value = torch.as_tensor(getattr(got, name), dtype=x.dtype).expand_as(x)
            torch.testing.assert_close(value, getattr(want, name))
        if var_type is not VarType.LEARNED_RANGE:
            assert isinstance(got.variance, float)  # no per-element work for a shared t


def test_one_int_timestep_rejects_bad_steps():
    d = make()
    x = torch.zeros(2, 3)
    for step in (-1, T):
        with pytest.raises(ValueError, match="out of range; valid indices are 0..49"):
            d.p_mean_variance(lambda x_t, t: x_t, x, step)
    for step in (2.0, True):
        with pytest.raises(ValueError, match="integer"):
            d.p_mean_variance(lambda x_t, t: x_t, x, step)
    with pytest.raises(ValueError, match="shape"):
        d.p_mean_variance(lambda x_t, t: x_t, x, torch.tensor(3))
    with pytest.raises(ValueError, match="model output has shape"):
        d.p_mean_variance(lambda x_t, t: x_t[:, :2], x, 3)
