"""ddpm.scores against independent computations: scipy's Gaussian densities, finite differences,
Monte Carlo from the toy sampler, and closed forms for Gaussian targets and linear networks."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from ddpm.data import ToyKind, toy_samples
from ddpm.diffusion import GaussianDiffusion
from ddpm.samplers import ddim_sample_progressive
from ddpm.schedule import linear_schedule
from ddpm.scores import (
    GaussianMixture,
    annealed_langevin_sample,
    eight_gaussians_mixture,
    mixture_log_density,
    mixture_score,
    model_score,
    noised,
    probability_flow_sample,
)


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(linear_schedule(100, 1e-3, 0.2))


def scipy_log_density(mixture, x):
    """log of the equal-weight mixture density, from scipy's Gaussians."""
    means = mixture.means.numpy()
    cov = mixture.variance * np.eye(means.shape[1])
    pdfs = [multivariate_normal(m, cov).pdf(x) for m in means]
    return np.log(np.mean(pdfs, axis=0))


@pytest.mark.parametrize("alpha_bar", [1.0, 0.3])
def test_log_density_matches_scipy(alpha_bar):
    mixture = noised(eight_gaussians_mixture(), alpha_bar)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.testing.assert_allclose(
        mixture_log_density(mixture, x).numpy(), scipy_log_density(mixture, x.numpy()), rtol=1e-10
    )


@pytest.mark.parametrize("alpha_bar", [1.0, 0.9, 0.2])
def test_score_is_the_gradient_of_the_log_density(alpha_bar):
    mixture = noised(eight_gaussians_mixture(), alpha_bar)
    x = 0.9 * torch.randn(40, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    h = 1e-6
    columns = []
    for d in range(2):  # central differences of scipy's log density
        step = np.zeros(2)
        step[d] = h
        up = scipy_log_density(mixture, x.numpy() + step)
        down = scipy_log_density(mixture, x.numpy() - step)
        columns.append((up - down) / (2 * h))
    expected = np.stack(columns, axis=1)
    np.testing.assert_allclose(mixture_score(mixture, x).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_eight_gaussians_mixture_is_the_toy_density():
    # Each coordinate's second moment: R^2 / 2 from the centres (cos^2 averages 1/2 over the
    # eight angles) plus s^2; noised, alpha_bar times that plus 1 - alpha_bar. Monte Carlo check.
    mixture = eight_gaussians_mixture()
    alpha_bar = 0.6
    gen = torch.Generator().manual_seed(2)
    x0 = toy_samples(ToyKind.EIGHT_GAUSSIANS, 200_000, gen).double()
    x_t = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * torch.randn(
        x0.shape, generator=gen, dtype=torch.float64
    )
    for points, mix in ((x0, mixture), (x_t, noised(mixture, alpha_bar))):
        second_moment = float((mix.means**2).sum(1).mean()) / 2 + mix.variance
        np.testing.assert_allclose((points**2).mean(0).numpy(), second_moment, rtol=0.01)
    # The mean log density of the toy samples is minus the entropy: with the modes far apart
    # (radius 0.8, standard deviation 0.08), log(1/8) minus the entropy of one component.
    entropy = math.log(8) + math.log(2 * math.pi * math.e * 0.08**2)
    assert float(mixture_log_density(mixture, x0[:20_000]).mean()) == pytest.approx(
        -entropy, abs=0.03
    )


def test_noised_component_matches_monte_carlo():
    # One wide component, so that the data variance's share of the noised variance is large.
    mixture = GaussianMixture(torch.tensor([[1.0, -2.0]], dtype=torch.float64), 4.0)
    alpha_bar = 0.5
    gen = torch.Generator().manual_seed(7)
    x0 = mixture.means + 2.0 * torch.randn(200_000, 2, generator=gen, dtype=torch.float64)
    x_t = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * torch.randn(
        x0.shape, generator=gen, dtype=torch.float64
    )
    law = noised(mixture, alpha_bar)
    np.testing.assert_allclose(x_t.mean(0).numpy(), law.means[0].numpy(), atol=0.01)
    np.testing.assert_allclose(x_t.var(0).numpy(), law.variance, rtol=0.01)


def test_model_score_divides_the_noise_by_the_noise_scale(diffusion):
    eps = torch.tensor([[0.3, -1.2]], dtype=torch.float64).repeat(5, 1)
    score = model_score(diffusion, lambda x, t: eps)
    alpha_bar = np.cumprod(1 - np.linspace(1e-3, 0.2, 100))
    for t in (0, 40, 99):
        expected = -eps / math.sqrt(1 - alpha_bar[t])
        torch.testing.assert_close(score(torch.zeros(5, 2, dtype=torch.float64), t), expected)


def gaussian_score(diffusion, mean, var):
    """The exact score of q_t for data N(mean, var I): -(x - sqrt(ab) mean) / (ab var + 1 - ab)."""

    def score(x, t):
        ab = float(diffusion.schedule.alpha_bar[t])
        return -(x - math.sqrt(ab) * mean) / (ab * var + 1 - ab)

    return score


def test_langevin_reaches_its_stationary_law_for_a_gaussian(diffusion):
    # Unadjusted Langevin on N(m, v) with step delta is a linear recursion; its fixed point has
    # mean m and variance v / (1 - delta / (4 v)).
    mean, var = torch.tensor([0.5, -0.3], dtype=torch.float64), 0.04
    t, scale = 5, 0.5
    ab = float(diffusion.schedule.alpha_bar[t])
    v = ab * var + 1 - ab
    delta = scale * (1 - ab)
    x = annealed_langevin_sample(
        gaussian_score(diffusion, mean, var),
        diffusion,
        (40_000, 2),
        levels=[t],
        steps_per_level=200,
        step_scale=scale,
        generator=torch.Generator().manual_seed(3),
        x_init=torch.zeros(40_000, 2, dtype=torch.float64),
    )
    expected_var = v / (1 - delta / (4 * v))
    np.testing.assert_allclose(x.mean(0).numpy(), math.sqrt(ab) * mean.numpy(), atol=5e-3)
    np.testing.assert_allclose(x.var(0).numpy(), expected_var, rtol=0.03)


def test_annealing_carries_noise_to_the_data(diffusion):
    # Narrow data (variance 1e-3, like the noise at the last level): the chain that starts in
    # N(0, I) must end in the law of the last level, up to the step's variance inflation.
    mean, var, scale = torch.tensor([1.5, -1.0]), 1e-3, 0.5
    x = annealed_langevin_sample(
        gaussian_score(diffusion, mean, var),
        diffusion,
        (20_000, 2),
        levels=range(0, 100, 10),
        steps_per_level=100,
        step_scale=scale,
        generator=torch.Generator().manual_seed(4),
    )
    ab = float(diffusion.schedule.alpha_bar[0])
    v = ab * var + 1 - ab
    np.testing.assert_allclose(x.mean(0).numpy(), math.sqrt(ab) * mean.numpy(), atol=1e-3)
    np.testing.assert_allclose(x.var(0).numpy(), v / (1 - scale * (1 - ab) / (4 * v)), rtol=0.05)


def test_langevin_rejects_bad_arguments(diffusion):
    score = gaussian_score(diffusion, torch.zeros(2), 1.0)
    for kwargs in (
        dict(levels=[100], steps_per_level=1, step_scale=0.1),
        dict(levels=[], steps_per_level=1, step_scale=0.1),
        dict(levels=[3], steps_per_level=0, step_scale=0.1),
        dict(levels=[3], steps_per_level=1, step_scale=0.0),
    ):
        with pytest.raises(ValueError):
            annealed_langevin_sample(score, diffusion, (4, 2), **kwargs)


def test_probability_flow_for_a_linear_network(diffusion):
    # eps_theta(x, t) = c x gives d xbar / d sigma = c xbar / sqrt(1 + sigma^2), so
    # xbar(sigma_1) = xbar(sigma_T) exp(c (asinh sigma_1 - asinh sigma_T)).
    c = 0.7
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(5))
    x = probability_flow_sample(diffusion, lambda x, t: c * x, x_T)
    ab = diffusion.schedule.alpha_bar
    sigma = np.sqrt((1 - ab) / ab)
    xbar_T = x_T.double().numpy() / math.sqrt(ab[-1])
    xbar = xbar_T * math.exp(c * (math.asinh(sigma[0]) - math.asinh(sigma[-1])))
    # the network sees float32 points: round-off of about 1e-7 per evaluation
    np.testing.assert_allclose(x.numpy(), xbar * math.sqrt(ab[0]), rtol=5e-5)


def test_ddim_converges_to_the_probability_flow(diffusion):
    # DDIM with eta = 0 is Euler's method for the same ODE: first order, so the error at the
    # state before DDIM's last step roughly halves when the steps double.
    def model(x, t):
        return torch.tanh(2 * x) * (0.5 + t[:, None].float() / 100)

    x_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(6))
    exact = probability_flow_sample(diffusion, model, x_T)
    errors = []
    for steps in (10, 20, 40):
        *_, before_last, _ = ddim_sample_progressive(
            diffusion, model, (8, 2), steps=steps, x_T=x_T, clip_denoised=False, progress=False
        )
        errors.append(float((before_last.x_t.double() - exact).norm()))
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 1.6) & (ratios < 2.6)), errors
