"""The full-chain bound against a loop written out by hand in numpy and scipy."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ddpm.diffusion import GaussianDiffusion
from ddpm.likelihood import calc_bpd_loop, prior_bpd
from ddpm.schedule import NoiseSchedule

T, K = 6, 17
BETAS = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.7])
LEVELS = -1 + 2 * np.arange(K) / (K - 1)


def recording_model(calls):
    """An eps model (a fixed nonlinear map) that records every (t, x_t) it is called with."""

    def model(x_t, t):
        calls[int(t[0])] = x_t.numpy().copy()
        return torch.tanh(0.8 * x_t) + 0.05 * t[:, None].to(x_t.dtype)

    return model


def bound_by_hand(x0, x_ts):
    """Every term of Eq. 5 in bits/dim, for fixed-large variances and clipped x0 estimates."""
    ab = np.cumprod(1 - BETAS)
    ab_prev = np.append(1.0, ab[:-1])
    beta_tilde = BETAS * (1 - ab_prev) / (1 - ab)
    terms = np.zeros((x0.shape[0], T))
    for t in range(T):
        x_t = x_ts[t]
        eps_hat = np.tanh(0.8 * x_t) + 0.05 * t
        pred_x0 = np.clip((x_t - math.sqrt(1 - ab[t]) * eps_hat) / math.sqrt(ab[t]), -1, 1)
        coef_x0 = math.sqrt(ab_prev[t]) * BETAS[t] / (1 - ab[t])
        coef_xt = math.sqrt(1 - BETAS[t]) * (1 - ab_prev[t]) / (1 - ab[t])
        mu_p = coef_x0 * pred_x0 + coef_xt * x_t
        var_p = BETAS[t] if t > 0 else beta_tilde[1]
        if t > 0:
            mu_q, var_q = coef_x0 * x0 + coef_xt * x_t, beta_tilde[t]
            nats = 0.5 * (np.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1)
        else:
            lo = np.where(x0 <= -1 + 1e-9, -np.inf, x0 - 1 / (K - 1))
            hi = np.where(x0 >= 1 - 1e-9, np.inf, x0 + 1 / (K - 1))
            sd = math.sqrt(var_p)
            nats = -np.log(stats.norm.cdf(hi, mu_p, sd) - stats.norm.cdf(lo, mu_p, sd))
        terms[:, t] = nats.mean(axis=1) / math.log(2)
    m, v = math.sqrt(ab[-1]) * x0, 1 - ab[-1]
    prior = (0.5 * (v + m**2 - 1 - math.log(v))).mean(axis=1) / math.log(2)
    return prior, terms


def test_bound_matches_hand_written_loop():
    d = GaussianDiffusion(NoiseSchedule.from_betas(BETAS), "eps", "fixed_large")
    rng = np.random.default_rng(1)
    x0 = rng.choice(LEVELS, size=(3, 4))
    calls = {}
    result = calc_bpd_loop(
        d, recording_model(calls), torch.tensor(x0), K, generator=torch.Generator().manual_seed(0)
    )
    assert sorted(calls) == list(range(T))
    prior, terms = bound_by_hand(x0, calls)
    np.testing.assert_allclose(result.prior_bpd.numpy(), prior, rtol=1e-10)
    np.testing.assert_allclose(result.terms_bpd.numpy(), terms, rtol=1e-9)
    np.testing.assert_allclose(result.total_bpd.numpy(), prior + terms.sum(1), rtol=1e-10)
    # mse: the eps implied by the clipped x0 estimate against the noise that made each x_t.
    ab = np.cumprod(1 - BETAS)
    for t in range(T):
        x_t, a, b = calls[t], math.sqrt(ab[t]), math.sqrt(1 - ab[t])
        noise = (x_t - a * x0) / b
        pred_x0 = np.clip((x_t - b * (np.tanh(0.8 * x_t) + 0.05 * t)) / a, -1, 1)
        expected = (((x_t - a * pred_x0) / b - noise) ** 2).mean(1)
        np.testing.assert_allclose(result.mse[:, t].numpy(), expected, rtol=1e-9)


def test_total_is_prior_plus_terms_and_shapes():
    d = GaussianDiffusion(NoiseSchedule.from_betas(np.linspace(0.01, 0.3, 40)))
    x0 = torch.randint(0, 256, (5, 1, 3, 3)) / 127.5 - 1
    r = calc_bpd_loop(d, lambda x, _: 0.1 * x, x0, 256)
    assert r.total_bpd.shape == (5,) and r.prior_bpd.shape == (5,)
    assert r.terms_bpd.shape == (5, 40) and r.mse.shape == (5, 40)
    torch.testing.assert_close(r.total_bpd, r.prior_bpd + r.terms_bpd.sum(1), rtol=1e-12, atol=0)
    assert (r.terms_bpd[:, 1:] >= 0).all()


def test_oracle_denoiser_leaves_only_prior_and_decoder():
    """For a single data point and a model that knows it, every KL term (t >= 1) vanishes."""
    betas = np.linspace(1e-3, 0.2, 30)
    d = GaussianDiffusion(NoiseSchedule.from_betas(betas), "x0", "fixed_small")
    x0 = torch.tensor([[0.25, -1.0, 1.0]], dtype=torch.float64)
    r = calc_bpd_loop(d, lambda x, _: x0, x0, 9)
    torch.testing.assert_close(r.terms_bpd[:, 1:], torch.zeros(1, 29, dtype=torch.float64))
    # The decoder N(x0, beta_tilde_1): an interior level loses mass on both sides of its bin, an
    # edge level (whose bin is open) on one side only.
    ab = np.cumprod(1 - betas)
    z = (1 / 8) / math.sqrt(betas[1] * (1 - ab[0]) / (1 - ab[1]))
    nats = [-math.log(stats.norm.cdf(z) - stats.norm.cdf(-z)), -math.log(stats.norm.cdf(z))]
    decoder = (nats[0] + 2 * nats[1]) / 3 / math.log(2)
    assert r.terms_bpd[0, 0].item() == pytest.approx(decoder, rel=1e-9)
    ab_T = np.prod(1 - betas)
    kl = 0.5 * (1 - ab_T + ab_T * x0.numpy() ** 2 - 1 - math.log(1 - ab_T))
    assert r.prior_bpd.item() == pytest.approx(kl.mean() / math.log(2), rel=1e-12)


def test_seeded_generator_makes_the_bound_reproducible():
    d = GaussianDiffusion(NoiseSchedule.from_betas(BETAS))
    x0 = torch.tensor(np.random.default_rng(2).choice(LEVELS, size=(2, 3)))
    model = lambda x, _: torch.sin(x)  # noqa: E731
    a = calc_bpd_loop(d, model, x0, K, generator=torch.Generator().manual_seed(5))
    b = calc_bpd_loop(d, model, x0, K, generator=torch.Generator().manual_seed(5))
    c = calc_bpd_loop(d, model, x0, K, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.terms_bpd, b.terms_bpd)
    assert not torch.equal(a.terms_bpd, c.terms_bpd)


def test_prior_bpd_formula():
    d = GaussianDiffusion(NoiseSchedule.from_betas(BETAS))
    x0 = torch.tensor([[0.5, -0.5], [1.0, 0.0]], dtype=torch.float64)
    ab_T = np.prod(1 - BETAS)
    kl = 0.5 * (1 - ab_T + ab_T * x0.numpy() ** 2 - 1 - math.log(1 - ab_T))
    np.testing.assert_allclose(prior_bpd(d, x0).numpy(), kl.mean(1) / math.log(2), rtol=1e-12)


def test_bf16_autocast_of_the_network_changes_the_bound_by_little():
    d = GaussianDiffusion(NoiseSchedule.from_betas(BETAS))
    x0 = torch.tensor(np.random.default_rng(3).choice(LEVELS, size=(4, 5)), dtype=torch.float32)
    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 5)
    seen = []

    def model(x_t, t):
        h = layer(x_t)
        seen.append(h.dtype)
        return torch.tanh(h) + 0.05 * t[:, None]

    full = calc_bpd_loop(d, model, x0, K, generator=torch.Generator().manual_seed(5))
    half = calc_bpd_loop(
        d, model, x0, K, generator=torch.Generator().manual_seed(5), autocast_dtype=torch.bfloat16
    )
    assert set(seen) == {torch.float32, torch.bfloat16}
    assert not torch.equal(half.total_bpd, full.total_bpd)
    # The eps estimate is off by about 2^-8 (bf16's precision) of its size; the bound moves by
    # a similar fraction.
    torch.testing.assert_close(half.total_bpd, full.total_bpd, rtol=2.0**-8, atol=0)
