"""Loss terms against numerical integrals, scipy's normal CDF and hand-written closed forms."""

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from ddpm.diffusion import GaussianDiffusion
from ddpm.losses import (
    LossType,
    discretized_gaussian_log_likelihood,
    normal_kl,
    training_losses,
    vlb_term_bpd,
)
from ddpm.schedule import NoiseSchedule

T = 20
BETAS = np.linspace(0.01, 0.4, T)
ALPHA_BAR = np.cumprod(1 - BETAS)


def scalar(v):
    return torch.tensor(v, dtype=torch.float64)


# ----- normal_kl -----


def test_kl_of_identical_gaussians_is_zero():
    m, lv = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    torch.testing.assert_close(normal_kl(m, lv, m, lv), torch.zeros(5, dtype=torch.float64))


@pytest.mark.parametrize("m1, s1, m2, s2", [(0.0, 1.0, 0.5, 2.0), (1.3, 0.2, -0.7, 0.9)])
def test_kl_matches_numerical_integral(m1, s1, m2, s2):
    p, q = stats.norm(m1, s1), stats.norm(m2, s2)
    expected, _ = integrate.quad(
        lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), m1 - 30 * s1, m1 + 30 * s1, limit=200
    )
    got = normal_kl(
        scalar(m1), scalar(2 * math.log(s1)), scalar(m2), scalar(2 * math.log(s2))
    ).item()
    assert got == pytest.approx(expected, rel=1e-8)


# ----- discretized Gaussian decoder -----


def decoder_probs(mean, std, K):
    """Probabilities of the K levels from scipy's CDF: bins of half-width 1/(K-1), open edges.

    Bins above the mean use the survival function, so no probability is a difference of two
    numbers near 1.
    """
    levels = -1 + 2 * np.arange(K) / (K - 1)
    edges = np.concatenate([[-np.inf], levels[:-1] + 1 / (K - 1), [np.inf]])
    lower = np.diff(stats.norm.cdf(edges, loc=mean, scale=std))
    upper = -np.diff(stats.norm.sf(edges, loc=mean, scale=std))
    return levels, np.where(edges[:-1] >= mean, upper, lower)


@pytest.mark.parametrize("K", [2, 17, 256])
@pytest.mark.parametrize("mean, std", [(0.0, 0.1), (0.93, 0.02), (-0.4, 1.5), (0.2, 0.001)])
def test_decoder_matches_normal_cdf_and_sums_to_one(K, mean, std):
    levels, expected = decoder_probs(mean, std, K)
    x = torch.tensor(levels)
    log_p = discretized_gaussian_log_likelihood(
        x, torch.full_like(x, mean), torch.full_like(x, math.log(std)), K
    )
    p = log_p.exp().numpy()
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    significant = expected > 1e-200
    np.testing.assert_allclose(p[significant], expected[significant], rtol=1e-9, atol=1e-300)


def test_decoder_is_accurate_far_in_the_tails():
    """An interior bin 20 standard deviations away: log P computed from 50-digit erfc."""
    mpmath.mp.dps = 50
    K, mean, std = 256, -0.5, 0.05
    x = 0.5
    lo, hi = (x - 1 / (K - 1) - mean) / std, (x + 1 / (K - 1) - mean) / std
    sf = lambda z: mpmath.erfc(mpmath.mpf(z) / mpmath.sqrt(2)) / 2  # noqa: E731
    expected = float(mpmath.log(sf(lo) - sf(hi)))
    got = discretized_gaussian_log_likelihood(
        scalar([x]), scalar([mean]), scalar([math.log(std)]), K
    ).item()
    assert got == pytest.approx(expected, rel=1e-10)


@settings(max_examples=40, deadline=None)
@given(
    K=st.integers(2, 300),
    mean=st.floats(-3, 3),
    log_std=st.floats(-7, 2),
)
def test_decoder_probabilities_sum_to_one(K, mean, log_std):
    x = torch.tensor(-1 + 2 * np.arange(K) / (K - 1))
    log_p = discretized_gaussian_log_likelihood(
        x, torch.full_like(x, mean), torch.full_like(x, log_std), K
    )
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("K", [1, 0, 2.5, True])
def test_decoder_rejects_fewer_than_two_levels(K):
    x = torch.zeros(3)
    with pytest.raises(ValueError, match=rf"num_levels = {K!r}; need an integer K >= 2"):
        discretized_gaussian_log_likelihood(x, x, x, K)


def test_decoder_rejects_shape_mismatch():
    with pytest.raises(ValueError, match=r"x has shape \(3,\) but mean has \(4,\)"):
        discretized_gaussian_log_likelihood(torch.zeros(3), torch.zeros(4), torch.zeros(3), 17)


def test_decoder_gradient_is_finite_in_the_tails():
    mean = torch.tensor([0.9, -0.9, 0.0], dtype=torch.float32, requires_grad=True)
    x = torch.tensor([-1.0, 1.0, 0.0])
    log_scale = torch.tensor([-8.0, -8.0, 3.0], requires_grad=True)
    discretized_gaussian_log_likelihood(x, mean, log_scale, 256).sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()


# ----- bound terms and training losses -----


def diffusion(mean_type="eps", var_type="fixed_large"):
    return GaussianDiffusion(NoiseSchedule.from_betas(BETAS), mean_type, var_type)


def test_vlb_term_by_hand():
    """KL of two Gaussians (t >= 1) and the decoder NLL (t = 0), written out from the paper."""
    d = diffusion()
    K = 17
    levels = -1 + 2 * np.arange(K) / (K - 1)
    rng = np.random.default_rng(0)
    x0 = rng.choice(levels, size=(2, 3))
    x_t = rng.normal(size=(2, 3))
    eps_hat = 0.5 * x_t  # the model, a fixed linear map
    beta_tilde = BETAS * (1 - np.append(1, ALPHA_BAR[:-1])) / (1 - ALPHA_BAR)
    for step in (0, 1, 13):
        ab, ab_prev, beta = ALPHA_BAR[step], (1 if step == 0 else ALPHA_BAR[step - 1]), BETAS[step]
        coef_x0 = math.sqrt(ab_prev) * beta / (1 - ab)
        coef_xt = math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)
        pred_x0 = (x_t - math.sqrt(1 - ab) * eps_hat) / math.sqrt(ab)
        mu_p = coef_x0 * pred_x0 + coef_xt * x_t
        var_p = beta if step > 0 else beta_tilde[1]  # fixed-large, first step corrected
        if step > 0:
            mu_q, var_q = coef_x0 * x0 + coef_xt * x_t, beta_tilde[step]
            nats = 0.5 * (np.log(var_p / var_q) + (var_q + (mu_q - mu_p) ** 2) / var_p - 1)
        else:
            probs = [decoder_probs(m, math.sqrt(var_p), K) for m in mu_p.ravel()]
            idx = np.round((x0.ravel() + 1) * (K - 1) / 2).astype(int)
            nats = -np.log([p[1][i] for p, i in zip(probs, idx, strict=True)]).reshape(2, 3)
        expected = nats.mean(axis=1) / math.log(2)

        t = torch.full((2,), step)
        x0_, x_t_ = torch.tensor(x0), torch.tensor(x_t)
        p = d.p_mean_variance(lambda x, _: 0.5 * x, x_t_, t, clip_denoised=False)
        got = vlb_term_bpd(d, x0_, x_t_, t, p, K)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-9)


def posterior_mean(x0, x_t, t):
    """mu_tilde_t(x_t, x_0) of the paper's Eq. 7, from the betas; x0, x_t [N, ...], t [N]."""
    ab = torch.tensor(ALPHA_BAR[t.numpy()]).reshape(-1, *[1] * (x0.dim() - 1))
    ab_prev = torch.tensor(np.append(1, ALPHA_BAR[:-1])[t.numpy()]).reshape(ab.shape)
    beta = torch.tensor(BETAS[t.numpy()]).reshape(ab.shape)
    return (ab_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_prev) * x_t) / (1 - ab)


@pytest.mark.parametrize("mean_type", ["eps", "x0", "v", "mu"])
def test_simple_loss_is_mse_on_the_target(mean_type):
    d = diffusion(mean_type)
    x0 = torch.rand(4, 2, 3, dtype=torch.float64) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 5, 11, 19])
    ab = torch.tensor(ALPHA_BAR[t.numpy()]).reshape(-1, 1, 1)
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    target = {
        "eps": noise,
        "x0": x0,
        "v": ab.sqrt() * noise - (1 - ab).sqrt() * x0,
        "mu": posterior_mean(x0, x_t, t),
    }[mean_type]

    def oracle(x, t_in):
        torch.testing.assert_close(x, x_t)
        return target

    terms = training_losses(d, oracle, x0, t, noise)
    torch.testing.assert_close(terms.loss, torch.zeros(4, dtype=torch.float64))
    off = training_losses(d, lambda x, _: target + 0.1, x0, t, noise, loss_type="simple")
    torch.testing.assert_close(off.mse, torch.full((4,), 0.01, dtype=torch.float64))
    torch.testing.assert_close(off.loss, off.mse)


def test_kl_terms_of_an_exact_mean_predictor_vanish():
    # Predicting mu_tilde exactly with sigma_t^2 = beta_tilde_t makes p equal to the posterior
    # q(x_{t-1} | x_t, x_0), so every KL term (t >= 1) is zero; a mean off by 0.1 costs
    # 0.01 / (2 beta_tilde_t) nats per dimension.
    d = diffusion("mu", "fixed_small")
    x0 = torch.randint(0, 17, (3, 4)).double() / 8 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([1, 7, 19])
    x_t = d.q_sample(x0, t, noise)
    mu = posterior_mean(x0, x_t, t)
    exact = training_losses(d, lambda *_: mu, x0, t, noise, "kl", num_levels=17)
    torch.testing.assert_close(exact.loss, torch.zeros(3, dtype=torch.float64))
    off = training_losses(d, lambda *_: mu + 0.1, x0, t, noise, "kl", num_levels=17)
    ab_prev = np.append(1, ALPHA_BAR[:-1])
    beta_tilde = (BETAS * (1 - ab_prev) / (1 - ALPHA_BAR))[t.numpy()]
    expected = T * 0.01 / (2 * beta_tilde) / math.log(2)
    np.testing.assert_allclose(off.loss.numpy(), expected, rtol=1e-9)


def test_kl_loss_is_T_times_the_bound_term():
    d = diffusion()
    x0 = torch.randint(0, 17, (3, 4)).double() / 8 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 3, 19])
    terms = training_losses(d, lambda x, _: 0.3 * x, x0, t, noise, "kl", num_levels=17)
    x_t = d.q_sample(x0, t, noise)
    p = d.p_mean_variance(lambda x, _: 0.3 * x, x_t, t, clip_denoised=False)
    torch.testing.assert_close(terms.loss, T * vlb_term_bpd(d, x0, x_t, t, p, 17))
    torch.testing.assert_close(terms.vlb, terms.loss)
    # Under the simple loss the bound term is reported only on request, with the same value.
    simple = training_losses(d, lambda x, _: 0.3 * x, x0, t, noise, "simple", num_levels=17)
    assert simple.vlb is None
    asked = training_losses(d, lambda x, _: 0.3 * x, x0, t, noise, "simple", 17, with_vlb=True)
    torch.testing.assert_close(asked.vlb, terms.vlb)
    torch.testing.assert_close(asked.loss, simple.loss)


def test_hybrid_loss_stops_the_bound_gradient_at_the_mean():
    d = diffusion(var_type="learned_range")
    x0 = torch.rand(3, 2) * 2 - 1
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 4, 12])
    out = torch.randn(3, 4, requires_grad=True)  # the "network output": [eps_hat | v]
    hybrid = training_losses(d, lambda *_: out, x0, t, noise, LossType.HYBRID)
    (grad_hybrid,) = torch.autograd.grad(hybrid.loss.sum(), out, retain_graph=True)
    (grad_mse,) = torch.autograd.grad(hybrid.mse.sum(), out, retain_graph=True)
    (grad_vlb,) = torch.autograd.grad(hybrid.vlb.sum(), out)
    torch.testing.assert_close(grad_hybrid[:, :2], grad_mse[:, :2])
    torch.testing.assert_close(grad_hybrid[:, 2:], 0.001 * grad_vlb[:, 2:])
    assert (grad_vlb[:, :2] == 0).all() and (grad_vlb[:, 2:] != 0).any()
    # The plain bound (KL) trains the mean as well.
    kl = training_losses(d, lambda *_: out, x0, t, noise, "kl")
    (grad_kl,) = torch.autograd.grad(kl.loss.sum(), out)
    assert (grad_kl[:, :2] != 0).any()


def test_simple_loss_with_learned_variance_is_rejected():
    d = diffusion(var_type="learned_range")
    with pytest.raises(ValueError, match=r"simple.*learned_range.*hybrid or kl"):
        training_losses(
            d, lambda x, _: torch.cat([x, x], 1), torch.zeros(2, 3), torch.tensor([0, 1])
        )


def test_unknown_loss_type_lists_valid_names():
    with pytest.raises(
        ValueError, match=r"unknown LossType 'mse'; valid names: simple, kl, hybrid"
    ):
        training_losses(
            diffusion(), lambda x, _: x, torch.zeros(2, 3), torch.tensor([0, 1]), loss_type="mse"
        )
