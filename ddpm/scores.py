"""Scores: exact ones for a Gaussian mixture, a network's implied one, and two samplers built on
them, annealed Langevin dynamics (Song & Ermon 2019) and the probability-flow ODE (Song et al.
2021).

The score of a density q is grad_x log q(x). A noise-predicting network estimates the score of the
noised marginal q(x_t) as -eps_theta(x_t, t) / sqrt(1 - alpha_bar_t) (Ho et al. 2020, Sec. 3.2);
:func:`model_score` turns one into a :data:`Score`. For an isotropic Gaussian mixture the noised
marginal is again such a mixture (:func:`noised`), so its score is known in closed form
(:func:`mixture_score`), which is what a trained network can be held against.

Shapes: points x are [N, D]; timesteps are indices in {0, ..., T-1} (see :mod:`ddpm.schedule`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ddpm.data import EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_STD
from ddpm.diffusion import GaussianDiffusion, Model

__all__ = [
    "GaussianMixture",
    "Score",
    "annealed_langevin_sample",
    "eight_gaussians_mixture",
    "mixture_log_density",
    "mixture_score",
    "model_score",
    "noised",
    "probability_flow_sample",
]

Score = Callable[[Tensor, int], Tensor]  # (x [N, D], timestep index t) -> grad log q_t(x) [N, D]


class GaussianMixture(NamedTuple):
    """An equal-weight mixture of isotropic Gaussians N(means[k], variance I)."""

    means: Tensor  # [K, D]
    variance: float


def eight_gaussians_mixture() -> GaussianMixture:
    """The density of ``toy_samples("eight_gaussians")``: centres at radius
    ``EIGHT_GAUSSIANS_RADIUS``, angles 2 pi k / 8, standard deviation ``EIGHT_GAUSSIANS_STD``."""
    angle = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    means = EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return GaussianMixture(means, EIGHT_GAUSSIANS_STD**2)


def noised(mixture: GaussianMixture, alpha_bar: float) -> GaussianMixture:
    """The law of x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps for x_0 from ``mixture``:
    component k becomes N(sqrt(alpha_bar) m_k, (alpha_bar s^2 + 1 - alpha_bar) I)."""
    means = math.sqrt(alpha_bar) * mixture.means
    return GaussianMixture(means, alpha_bar * mixture.variance + 1 - alpha_bar)


def _log_components(mixture: GaussianMixture, x: Tensor) -> Tensor:
    """log N(x_i; m_k, v I) for every point and component, [N, K], in float64."""
    x = x.to(torch.float64)
    squared = ((x[:, None, :] - mixture.means[None].to(x.device)) ** 2).sum(-1)
    D = x.shape[1]
    return -squared / (2 * mixture.variance) - D / 2 * math.log(2 * math.pi * mixture.variance)


def mixture_log_density(mixture: GaussianMixture, x: Tensor) -> Tensor:
    """log q(x) [N] (nats) for points x [N, D], float64."""
    K = mixture.means.shape[0]
    return torch.logsumexp(_log_components(mixture, x), dim=1) - math.log(K)


def mixture_score(mixture: GaussianMixture, x: Tensor) -> Tensor:
    """grad_x log q(x) [N, D], float64: the components' scores -(x - m_k) / v averaged with the
    posterior weights q(k | x) (a softmax of the log densities)."""
    weights = torch.softmax(_log_components(mixture, x), dim=1)  # [N, K]
    mean = weights @ mixture.means.to(weights)  # E[m_k | x], [N, D]
    return -(x.to(torch.float64) - mean) / mixture.variance


def model_score(diffusion: GaussianDiffusion, model: Model) -> Score:
    """The score a noise-predicting network implies: -eps_theta(x_t, t) / sqrt(1 - alpha_bar_t)."""

    @torch.no_grad()
    def score(x: Tensor, t: int) -> Tensor:
        index = torch.full((x.shape[0],), t, device=x.device)
        return diffusion.score_from_eps(model(x, index), index)

    return score


@torch.no_grad()
def annealed_langevin_sample(
    score: Score,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    *,
    levels: Sequence[int],
    steps_per_level: int,
    step_scale: float,
    generator: torch.Generator | None = None,
    x_init: Tensor | None = None,
) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) through noised marginals q_t.

    From ``x_init`` (default: a draw from N(0, I), about q_T), for each timestep index t of
    ``levels`` from the noisiest to the cleanest, ``steps_per_level`` Langevin steps
        x <- x + delta_t / 2 * score(x, t) + sqrt(delta_t) z,   z ~ N(0, I),
    with delta_t = step_scale * (1 - alpha_bar_t): the step shrinks with the noise variance, as
    Song & Ermon's alpha_i = eps sigma_i^2 / sigma_L^2 does. Returns x [N, D], a sample of about
    q at the last level (at index 0, noise of standard deviation sqrt(beta_1) remains). Network
    calls: len(levels) * steps_per_level.
    """
    T = diffusion.T
    order = sorted({int(t) for t in levels}, reverse=True)
    if not order or not all(0 <= t < T for t in order):
        raise ValueError(f"levels must be timestep indices in [0, {T - 1}], got {list(levels)}")
    if steps_per_level < 1 or not step_scale > 0:
        raise ValueError(
            f"need steps_per_level >= 1 and step_scale > 0, got {steps_per_level}, {step_scale}"
        )
    if x_init is None:
        device = generator.device if generator is not None else "cpu"
        x_init = torch.randn(tuple(shape), generator=generator, device=device)
    x = x_init
    for t in order:
        delta = step_scale * (1.0 - float(diffusion.schedule.alpha_bar[t]))
        for _ in range(steps_per_level):
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            x = x + delta / 2 * score(x, t).to(x.dtype) + math.sqrt(delta) * z
    return x


def probability_flow_sample(
    diffusion: GaussianDiffusion,
    model: Model,
    x_T: Tensor,
    *,
    rtol: float = 1e-8,
    atol: float = 1e-8,
) -> Tensor:
    """x at index 0 (the paper's x_1) from x_T by solving the probability-flow ODE accurately.

    With xbar = x / sqrt(alpha_bar) and sigma = sqrt((1 - alpha_bar) / alpha_bar), the ODE of the
    VP diffusion is d xbar / d sigma = eps_theta(x, t) (Song, Meng & Ermon 2021, Eq. 14), of which
    DDIM with eta = 0 is the Euler method. Between the timesteps the index t is continuous:
    log sigma is a cubic spline through the table's values at t = 0, ..., T-1, and the ODE is
    integrated in t from T-1 to 0 by ``scipy.integrate.solve_ivp`` (DOP853, tolerances ``rtol``,
    ``atol`` on xbar), the network evaluated at non-integer t. x_T: [N, D]; returns [N, D] float64.
    """
    from scipy.integrate import solve_ivp
    from scipy.interpolate import CubicSpline

    alpha_bar = diffusion.schedule.alpha_bar
    log_sigma = CubicSpline(np.arange(diffusion.T), 0.5 * np.log((1 - alpha_bar) / alpha_bar))
    d_log_sigma = log_sigma.derivative()
    shape = tuple(x_T.shape)

    def velocity(t: float, xbar_flat: np.ndarray) -> np.ndarray:
        sigma = math.exp(float(log_sigma(t)))
        x = torch.from_numpy(xbar_flat.reshape(shape)) / math.sqrt(1 + sigma**2)
        with torch.no_grad():
            eps = model(x.float(), torch.full((shape[0],), t)).double()
        return (eps * sigma * float(d_log_sigma(t))).numpy().ravel()  # d xbar/dt

    T = diffusion.T
    xbar_T = x_T.double().numpy().ravel() * math.sqrt((1 - alpha_bar[-1]) / alpha_bar[-1] + 1)
    solution = solve_ivp(velocity, (T - 1, 0), xbar_T, method="DOP853", rtol=rtol, atol=atol)
    if not solution.success:
        raise RuntimeError(f"the probability-flow ODE solver failed: {solution.message}")
    xbar_0 = torch.from_numpy(solution.y[:, -1].reshape(shape))
    return xbar_0 * math.sqrt(float(alpha_bar[0]))
