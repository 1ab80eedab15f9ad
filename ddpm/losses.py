"""Training objectives: L_simple (paper Eq. 14), the variational bound (Eq. 5) and the hybrid loss.

Units: ``normal_kl`` and ``discretized_gaussian_log_likelihood`` work elementwise in nats; the
per-example terms returned here are means over the data dimensions, in bits for bound terms.
"""

from __future__ import annotations

import enum
import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ddpm.diffusion import GaussianDiffusion, MeanType, Model, PMeanVar, VarType
from ddpm.schedule import parse_choice

__all__ = [
    "LossTerms",
    "LossType",
    "discretized_gaussian_log_likelihood",
    "mean_flat",
    "normal_kl",
    "training_losses",
    "vlb_term_bpd",
]

# Weight of L_vlb in the hybrid loss (Nichol & Dhariwal 2021, Sec. 3.1).
HYBRID_LAMBDA = 0.001


class LossType(enum.Enum):
    SIMPLE = "simple"  # L_simple: unweighted MSE on the model's target (paper Eq. 14)
    KL = "kl"  # the variational bound L_vlb itself (paper Eq. 5)
    HYBRID = "hybrid"  # L_simple + lambda L_vlb, the bound training only the variance (N&D 2021)


class LossTerms(NamedTuple):
    """Per-example losses, each [N]: the one minimised, the MSE, the bound estimate (bits/dim;
    None when `training_losses` was told not to compute it)."""

    loss: Tensor
    mse: Tensor
    vlb: Tensor | None


def mean_flat(x: Tensor) -> Tensor:
    """Mean over all but the batch dimension: [N, ...] -> [N]."""
    return x.flatten(1).mean(dim=1)


def normal_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats (broadcasting)."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def discretized_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, log_scale: Tensor, num_levels: int
) -> Tensor:
    """log p(x) for data on K = ``num_levels`` levels under a Gaussian cut into bins (paper Eq. 13).

    x: [N, ...] on the grid x_k = -1 + 2k/(K-1); mean: same shape; log_scale: log standard
    deviation, broadcastable to x. Each level owns the interval of half-width 1/(K-1) around it,
    except that the lowest and highest levels extend to -inf and +inf, so the K probabilities sum
    to 1. Returns nats, elementwise [N, ...].
    """
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise ValueError(f"num_levels = {num_levels!r}; need an integer K >= 2 data levels")
    if x.shape != mean.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but mean has {tuple(mean.shape)}")
    half_width = 1.0 / (num_levels - 1)
    inv_std = torch.exp(-log_scale)
    lo = (x - half_width - mean) * inv_std  # bin edges in standard units
    hi = (x + half_width - mean) * inv_std
    log_cdf_hi = torch.special.log_ndtr(hi)  # lowest level: P(z < hi)
    log_sf_lo = torch.special.log_ndtr(-lo)  # highest level: P(z > lo)
    # Interior levels: P(lo < z < hi), taken on the side of zero where the bin's tail is small,
    # P = Phi(b) - Phi(a) with b >= a, b + a <= 0, so that it is not a difference of two numbers
    # near 1. The clamp keeps the log finite when the bin is tiny next to the scale.
    flip = lo + hi > 0
    a = torch.where(flip, -hi, lo)
    b = torch.where(flip, -lo, hi)
    log_b = torch.special.log_ndtr(b)
    ratio = (torch.special.log_ndtr(a) - log_b).clamp(max=-1e-12)
    log_mid = log_b + torch.log(-torch.expm1(ratio))
    return torch.where(
        x < -1 + half_width, log_cdf_hi, torch.where(x > 1 - half_width, log_sf_lo, log_mid)
    )


def vlb_term_bpd(
    diffusion: GaussianDiffusion, x0: Tensor, x_t: Tensor, t: Tensor, p: PMeanVar, num_levels: int
) -> Tensor:
    """One term of the bound (paper Eq. 5) in bits per dimension, [N].

    At index t >= 1 this is L_t = KL(q(x_t | x_{t+1}, x_0) || p(x_t | x_{t+1})) in the paper's
    numbering; at t = 0 it is L_0 = -log p(x_0 | x_1), the discretized decoder. ``p`` is the
    output of ``diffusion.p_mean_variance`` at (x_t, t).
    """
    q = diffusion.q_posterior(x0, x_t, t)
    kl = mean_flat(normal_kl(q.mean, q.log_variance, p.mean, p.log_variance))
    nll = -mean_flat(
        discretized_gaussian_log_likelihood(x0, p.mean, 0.5 * p.log_variance, num_levels)
    )
    return torch.where(t == 0, nll, kl) / math.log(2.0)


def training_losses(
    diffusion: GaussianDiffusion,
    model: Model,
    x0: Tensor,
    t: Tensor,
    noise: Tensor | None = None,
    loss_type: LossType | str = LossType.SIMPLE,
    num_levels: int = 256,
    with_vlb: bool | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> LossTerms:
    """The training loss at one timestep index per example (paper Algorithm 1).

    x0: [N, C, ...] in [-1, 1]; t: [N] indices, drawn uniformly by the caller. ``vlb`` is T times
    the bound term at t (bits/dim), an unbiased estimate of the bound's sum over timesteps (L_T
    excluded: with a fixed schedule it does not depend on the model). Under HYBRID the bound sees
    the mean as a constant, so it trains only a learned variance (Nichol & Dhariwal Sec. 3.1).
    ``with_vlb``: None computes the bound term only where the loss needs it (KL, HYBRID); True
    also reports it under SIMPLE, where it costs a decoder and a KL per step for nothing but a log.
    ``model_kwargs``: extra keyword inputs of the model (e.g. ``{"y": labels [N]}``), or None.
    """
    loss_type = parse_choice(LossType, loss_type)
    if loss_type is LossType.SIMPLE and diffusion.var_type is VarType.LEARNED_RANGE:
        raise ValueError(
            "loss_type simple gives a learned_range variance no gradient; use hybrid or kl, "
            "or a fixed variance type (fixed_small, fixed_large)"
        )
    if noise is None:
        noise = torch.randn_like(x0)
    x_t = diffusion.q_sample(x0, t, noise)
    out = model(x_t, t, **(model_kwargs or {}))
    C = x0.shape[1]
    mse = mean_flat((out[:, :C] - _target(diffusion, x0, x_t, t, noise)) ** 2)
    if loss_type is LossType.SIMPLE and not with_vlb:
        return LossTerms(mse, mse, None)

    if loss_type is LossType.HYBRID:
        out = torch.cat([out[:, :C].detach(), out[:, C:]], dim=1)
    p = diffusion.p_mean_variance(lambda *_: out, x_t, t, clip_denoised=False)
    vlb = diffusion.T * vlb_term_bpd(diffusion, x0, x_t, t, p, num_levels)

    if loss_type is LossType.SIMPLE:
        return LossTerms(mse, mse, vlb.detach())
    if loss_type is LossType.KL:
        return LossTerms(vlb, mse, vlb)
    return LossTerms(mse + HYBRID_LAMBDA * vlb, mse, vlb)


def _target(
    diffusion: GaussianDiffusion, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor
) -> Tensor:
    """What the network's first C channels should output under ``diffusion.mean_type`` (only
    that one is computed)."""
    if diffusion.mean_type is MeanType.EPS:
        return noise
    if diffusion.mean_type is MeanType.X0:
        return x0
    if diffusion.mean_type is MeanType.V:
        return diffusion.v_from_x0_eps(x0, t, noise)
    # the posterior mean: the MSE is then the paper's ||mu_tilde - mu_theta||^2 (Table 2)
    return diffusion.q_posterior(x0, x_t, t).mean
