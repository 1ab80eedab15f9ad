"""Progressive coding and interpolation with a trained DDPM (Ho et al. 2020, Sec. 4.3-4.4).

Timesteps: the package's index t (0-based, see :mod:`ddpm.schedule`) is the paper's step t + 1.
Results indexed by the paper's step carry it explicitly (``paper_t``).

- `rate_distortion`: the bound split along the chain (Fig. 5): after the receiver of Algorithm 4
  holds x_t, it has been sent L_T + L_{T-1} + ... + L_t bits (the rate), and its best guess of x_0
  is the estimate of Eq. 15, whose root-mean-square error is the distortion.
- `reverse_from`: ancestral sampling (Algorithm 2) started at an intermediate x_t, i.e. samples of
  p_theta(x_0 | x_t) (Fig. 7), and the decoder of the interpolation of Fig. 8.
- `interpolate`: encode two images with q(x_t | x_0), mix the latents linearly and decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ddpm.diffusion import GaussianDiffusion, Model
from ddpm.likelihood import calc_bpd_loop

__all__ = ["PIXEL_SCALE", "RateDistortion", "interpolate", "rate_distortion", "reverse_from"]

# Half the range of 8-bit pixels: data in [-1, 1] times this is on the paper's 0..255 scale.
PIXEL_SCALE = 127.5


class RateDistortion(NamedTuple):
    """Rate and distortion along the reverse chain, one entry per paper step t = T, ..., 1.

    paper_t [T]: the steps, descending (T first: the order in which Algorithm 3 sends).
    rate_bpd [T]: bits/dim sent once x_t is known, L_T + sum_{s=t}^{T-1} L_s, mean over images.
    distortion_rmse [T]: root-mean-square error of the Eq. 15 estimate of x_0 from x_t, over all
    pixels of all images, on the 0..255 scale.
    total_bpd: the whole bound (the rate at t = 1 plus the decoder's L_0), mean over images.
    """

    paper_t: np.ndarray
    rate_bpd: np.ndarray
    distortion_rmse: np.ndarray
    total_bpd: float


@torch.no_grad()
def rate_distortion(
    diffusion: GaussianDiffusion,
    model: Model,
    x0: Tensor,
    num_levels: int,
    *,
    generator: torch.Generator | None = None,
    clip_denoised: bool = True,
) -> RateDistortion:
    """The rate-distortion curve of Fig. 5 for images x0 [N, C, ...] in [-1, 1] on K levels.

    One pass of `ddpm.likelihood.calc_bpd_loop` (x_t drawn once per step from ``generator``)
    gives both: the rate from its terms, the distortion from its noise errors, since
    x0_hat - x_0 = -sqrt(1/alpha_bar_t - 1) (eps_hat - eps) for the eps implied by the estimate.
    ``clip_denoised`` clamps the estimate to [-1, 1] (what a receiver would show, and the reverse
    process the sampler uses); False keeps Eq. 15 as printed.
    """
    bound = calc_bpd_loop(
        diffusion, model, x0, num_levels, clip_denoised=clip_denoised, generator=generator
    )
    terms = bound.terms_bpd.mean(0).cpu().numpy()  # [T]; index s holds L_s (s >= 1), L_0 at 0
    prior = bound.prior_bpd.mean().item()
    # Rate at paper step t = index t - 1: the prior plus L_s for s = t .. T-1 (indices t .. T-1).
    sent_after = np.append(np.cumsum(terms[::-1])[::-1][1:], 0.0)  # [T]: sum of terms[i+1:]
    x0_mse = bound.mse.mean(0).cpu().numpy() * diffusion.schedule.sqrt_recipm1_alpha_bar**2
    order = slice(None, None, -1)  # paper step T first
    return RateDistortion(
        paper_t=np.arange(1, diffusion.T + 1)[order],
        rate_bpd=(prior + sent_after)[order],
        distortion_rmse=(PIXEL_SCALE * np.sqrt(x0_mse))[order],
        total_bpd=bound.total_bpd.mean().item(),
    )


@torch.no_grad()
def reverse_from(
    diffusion: GaussianDiffusion,
    model: Model,
    x_t: Tensor,
    t: int,
    *,
    generator: torch.Generator | None = None,
    clip_denoised: bool = True,
    groups: int = 1,
) -> Tensor:
    """Samples of p_theta(x_0 | x_t): the last t steps of Algorithm 2, from the paper's x_t.

    x_t [N, C, ...] is the paper's x_t, 0 <= t <= T (t = T: the chain's start; t = 0 returns x_t).
    ``groups`` G splits the batch into G consecutive blocks of N / G that all receive the same
    noise at every step, so that they differ only in where they start.
    """
    if not 0 <= t <= diffusion.T:
        raise ValueError(f"t = {t}: need 0 <= t <= T = {diffusion.T}")
    if groups < 1 or len(x_t) % groups:
        raise ValueError(f"groups = {groups} does not divide the batch of {len(x_t)}")
    block = (len(x_t) // groups, *x_t.shape[1:])
    x = x_t
    for index in range(t - 1, -1, -1):  # index i produces the paper's x_i from x_{i+1}
        p = diffusion.p_mean_variance(model, x, index, clip_denoised=clip_denoised)
        x = p.mean
        if index > 0:
            z = torch.randn(block, generator=generator, dtype=x.dtype, device=x.device)
            x = x + p.variance**0.5 * z.repeat(groups, *[1] * (x.dim() - 1))
    return x


@torch.no_grad()
def interpolate(
    diffusion: GaussianDiffusion,
    model: Model,
    x0_a: Tensor,
    x0_b: Tensor,
    t: int,
    lambdas: Sequence[float],
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fig. 8: decode (1 - lambda) x_t + lambda x_t' for x_t ~ q(x_t | x0_a), x_t' ~ q(x_t | x0_b).

    x0_a, x0_b: [N, C, ...]; t: the paper's step, 1 <= t <= T. Returns [L, N, C, ...] for the L
    lambdas. Both encodings and the reverse chain's noise are shared by every lambda, so the rows
    differ only through lambda.
    """
    if not 1 <= t <= diffusion.T:
        raise ValueError(f"t = {t}: need 1 <= t <= T = {diffusion.T}")
    if x0_a.shape != x0_b.shape:
        raise ValueError(f"x0_a has shape {tuple(x0_a.shape)} but x0_b {tuple(x0_b.shape)}")
    index = torch.full((len(x0_a),), t - 1, dtype=torch.long, device=x0_a.device)
    noise = [
        torch.randn(x0_a.shape, generator=generator, dtype=x0_a.dtype, device=x0_a.device)
        for _ in range(2)
    ]
    x_t_a = diffusion.q_sample(x0_a, index, noise[0])
    x_t_b = diffusion.q_sample(x0_b, index, noise[1])
    lam = torch.as_tensor(lambdas, dtype=x0_a.dtype, device=x0_a.device)
    lam = lam.reshape(-1, *[1] * x0_a.dim())  # [L, 1, 1, ...]
    mixed = ((1 - lam) * x_t_a + lam * x_t_b).flatten(0, 1)  # [L * N, C, ...]
    x0 = reverse_from(diffusion, model, mixed, t, generator=generator, groups=len(lam))
    return x0.reshape(len(lam), *x0_a.shape)
