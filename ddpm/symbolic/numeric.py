"""Float64 schedule tables evaluated from the derived expressions, independently of
`ddpm.schedule`, so that the package's tables can be compared with the derivations."""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import numpy as np
import sympy as sp

from ddpm.symbolic.algebra import SYMBOLS
from ddpm.symbolic.forward import derive_marginal_step
from ddpm.symbolic.posterior import derive_posterior


class SymbolicTables(NamedTuple):
    """Length-T float64 arrays, index t meaning the paper's step t + 1 (as in `ddpm.schedule`)."""

    alphas: np.ndarray
    alpha_bar: np.ndarray
    alpha_bar_prev: np.ndarray
    sqrt_alpha_bar: np.ndarray
    sqrt_one_minus_alpha_bar: np.ndarray
    beta_tilde: np.ndarray
    posterior_mean_coef_x0: np.ndarray
    posterior_mean_coef_xt: np.ndarray


@cache
def _compiled():
    """numpy functions of (beta_t, alpha_t, alpha_bar_{t-1}) for each derived expression.

    beta_t enters as its own argument: 1 - alpha_t in float64 loses ~1e-12 of a beta of 1e-4.
    """
    s = SYMBOLS
    step, post = derive_marginal_step(), derive_posterior()
    args = (s.beta_t, s.alpha_t, s.alpha_bar_prev)
    exprs = (
        sp.expand(step.mean_coef**2),  # alpha_bar_t, the recursion's closed form
        step.mean_coef,
        step.variance,
        post.variance,
        post.mean_coef_x0,
        post.mean_coef_xt,
    )
    as_beta = {1 - s.alpha_t: s.beta_t, s.alpha_t - 1: -s.beta_t}
    return tuple(sp.lambdify(args, e.subs(as_beta), modules="numpy") for e in exprs)


def schedule_tables_numeric(betas: np.ndarray) -> SymbolicTables:
    """Evaluate the derived marginal (Eq. 4) and posterior (Eq. 7) coefficients for `betas`.

    alpha_bar is built by iterating the derived step alpha_bar_{t-1} -> alpha_bar_t from
    alpha_bar_0 = 1 (x_0 is exact); everything else is evaluated at (alpha_t, alpha_bar_{t-1}).
    """
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or betas.size == 0:
        raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
    if not np.all(np.isfinite(betas)) or np.any(betas <= 0) or np.any(betas >= 1):
        raise ValueError("betas must be finite and in the open interval (0, 1)")
    next_alpha_bar, sqrt_ab, var, beta_tilde, coef_x0, coef_xt = _compiled()
    alphas = 1.0 - betas
    alpha_bar_prev = np.empty_like(alphas)
    previous = 1.0
    for t, alpha in enumerate(alphas):
        alpha_bar_prev[t] = previous
        previous = next_alpha_bar(betas[t], alpha, previous)
    alpha_bar = np.append(alpha_bar_prev[1:], previous)
    at = (betas, alphas, alpha_bar_prev)
    return SymbolicTables(
        alphas=alphas,
        alpha_bar=alpha_bar,
        alpha_bar_prev=alpha_bar_prev,
        sqrt_alpha_bar=sqrt_ab(*at),
        sqrt_one_minus_alpha_bar=np.sqrt(var(*at)),
        beta_tilde=beta_tilde(*at),
        posterior_mean_coef_x0=coef_x0(*at),
        posterior_mean_coef_xt=coef_xt(*at),
    )
