"""The full variational bound (paper Eq. 5) in bits per dimension, term by term (Table 1, Fig 5)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor
from tqdm import tqdm

from ddpm.diffusion import GaussianDiffusion, Model, autocast_model
from ddpm.losses import mean_flat, normal_kl, vlb_term_bpd

__all__ = ["BPDResult", "calc_bpd_loop", "prior_bpd"]


class BPDResult(NamedTuple):
    """The bound on -log p(x_0) per example, in bits per dimension.

    total_bpd [N] = prior_bpd [N] + terms_bpd.sum(1). terms_bpd [N, T]: column 0 is L_0 (the
    decoder's NLL), column t >= 1 the KL term at index t. mse [N, T]: mean squared error, at each
    index, of the eps implied by the model's (clipped) x_0 estimate; a diagnostic, not a bound term.
    """

    total_bpd: Tensor
    prior_bpd: Tensor
    terms_bpd: Tensor
    mse: Tensor


def prior_bpd(diffusion: GaussianDiffusion, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim, [N]; it has no learned parameters."""
    t = torch.full((x0.shape[0],), diffusion.T - 1, dtype=torch.long, device=x0.device)
    q = diffusion.q_mean_variance(x0, t)
    zero = torch.zeros_like(x0)
    return mean_flat(normal_kl(q.mean, q.log_variance, zero, zero)) / math.log(2.0)


@torch.no_grad()
def calc_bpd_loop(
    diffusion: GaussianDiffusion,
    model: Model,
    x0: Tensor,
    num_levels: int,
    progress: bool = False,
    *,
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> BPDResult:
    """Evaluate every term of the bound for a batch x0 [N, C, ...] in [-1, 1] on K levels.

    One x_t ~ q(x_t | x_0) is drawn per index (from ``generator`` if given), so the KL terms are
    single-sample estimates in x_t but exact in x_{t-1}. Clamping the x_0 estimate
    (``clip_denoised``) changes p, and the result is still a bound. ``autocast_dtype`` (e.g.
    torch.bfloat16) runs the network under autocast; the bound's arithmetic stays as it is.
    ``model_kwargs`` (e.g. ``{"y": labels [N]}``) goes to every call of the model.
    """
    model = autocast_model(model, autocast_dtype)
    N, T = x0.shape[0], diffusion.T
    terms = torch.zeros(N, T, dtype=torch.float64, device=x0.device)
    mse = torch.zeros_like(terms)
    for step in tqdm(range(T - 1, -1, -1), disable=not progress, desc="bound"):
        t = torch.full((N,), step, dtype=torch.long, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        x_t = diffusion.q_sample(x0, t, noise)
        p = diffusion.p_mean_variance(
            model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs
        )
        terms[:, step] = vlb_term_bpd(diffusion, x0, x_t, t, p, num_levels).double()
        mse[:, step] = mean_flat((p.pred_eps - noise) ** 2).double()
    prior = prior_bpd(diffusion, x0).double()
    return BPDResult(prior + terms.sum(dim=1), prior, terms, mse)
