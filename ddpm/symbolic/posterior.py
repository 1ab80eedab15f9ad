"""The forward-process posterior q(x_{t-1} | x_t, x_0) (Eqs. 6-7) by completing the square, the
eps-parameterised mean (Eq. 11), and the weight that turns L_{t-1} into an eps-MSE (Eq. 12).

All results are in `SYMBOLS.alpha_t` and `SYMBOLS.alpha_bar_prev`, with beta_t = 1 - alpha_t and
alpha_bar_t = alpha_t alpha_bar_{t-1}; `paper_notation` rewrites them in beta_t and alpha_bar_t.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import sympy as sp

from ddpm.symbolic.algebra import (
    SYMBOLS,
    Step,
    Steps,
    complete_square,
    equation,
    gaussian_log_pdf,
    label,
    positive_factors,
    tidy,
)
from ddpm.symbolic.forward import derive_parameterisations
from ddpm.symbolic.gaussians import gaussian_kl

_s = SYMBOLS
_beta = 1 - _s.alpha_t
_alpha_bar = _s.alpha_t * _s.alpha_bar_prev


class PosteriorDerivation(NamedTuple):
    """q(x_{t-1} | x_t, x_0) = N(mean_coef_x0 x_0 + mean_coef_xt x_t, variance).

    `residual` is log q(x_t | x_{t-1}) + log q(x_{t-1} | x_0) - log q(x_{t-1} | x_t, x_0), with
    every normalising constant; Bayes' rule says it is log q(x_t | x_0), free of x_{t-1}.
    """

    steps: Steps
    mean_coef_x0: sp.Expr
    mean_coef_xt: sp.Expr
    variance: sp.Expr
    residual: sp.Expr


@cache
def derive_posterior() -> PosteriorDerivation:
    """Bayes' rule in logs: the two Gaussian factors in x_{t-1} add to a quadratic whose x^2
    coefficient gives the precision and whose x coefficient, over the precision, the mean."""
    x = _s.x_prev
    log_kernel = gaussian_log_pdf(_s.x_t, sp.sqrt(_s.alpha_t) * x, _beta)
    log_prior = gaussian_log_pdf(x, sp.sqrt(_s.alpha_bar_prev) * _s.x0, 1 - _s.alpha_bar_prev)
    square = complete_square(log_kernel + log_prior, x)
    variance = positive_factors(1 / square.precision)
    mean = sp.expand(square.mean)
    coef_x0, coef_xt = (positive_factors(mean.coeff(z)) for z in (_s.x0, _s.x_t))
    evidence = complete_square(square.remainder, _s.x_t)
    residual = log_kernel + log_prior - gaussian_log_pdf(x, mean, variance)
    quadratic = sp.collect(sp.expand(log_kernel + log_prior), [x**2, x], evaluate=False)
    steps = (
        Step(
            "Bayes: q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0)",
            equation(
                label(r"\log q(x_t \mid x_{t-1}) + \log q(x_{t-1} \mid x_0)"),
                log_kernel + log_prior,
            ),
        ),
        Step(
            "coefficient of x_{t-1}^2",
            equation(label(r"[x_{t-1}^2]"), positive_factors(quadratic[x**2])),
        ),
        Step(
            "coefficient of x_{t-1}", equation(label(r"[x_{t-1}]"), positive_factors(quadratic[x]))
        ),
        Step("precision = -2 [x^2]", equation(label(r"1/\tilde\beta_t"), square.precision)),
        Step("variance", equation(label(r"\tilde\beta_t"), variance)),
        Step(
            "mean = [x] / precision",
            equation(label(r"\tilde\mu_t"), coef_x0 * _s.x0 + coef_xt * _s.x_t),
        ),
        Step(
            "what is left is a quadratic in x_t: precision",
            equation(label(r"1/(1 - \bar\alpha_t)"), evidence.precision),
        ),
        Step(
            "and mean: Bayes' rule hands back q(x_t | x_0)",
            equation(label(r"\sqrt{\bar\alpha_t}\, x_0"), evidence.mean),
        ),
    )
    return PosteriorDerivation(steps, coef_x0, coef_xt, variance, residual)


class EpsMeanDerivation(NamedTuple):
    """The posterior mean with x_0 written through the noise: coef_xt x_t + coef_eps eps, which
    is (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) (Eq. 11)."""

    steps: Steps
    mean: sp.Expr
    coef_xt: sp.Expr
    coef_eps: sp.Expr


@cache
def derive_eps_mean() -> EpsMeanDerivation:
    """Substitute x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) into the posterior
    mean and collect the coefficients of x_t and eps."""
    post = derive_posterior()
    x0_from_eps = derive_parameterisations().x0_from_eps.subs(_s.alpha_bar_t, _alpha_bar)
    mean = sp.expand(post.mean_coef_x0 * x0_from_eps + post.mean_coef_xt * _s.x_t)
    coef_xt, coef_eps = (positive_factors(mean.coeff(z)) for z in (_s.x_t, _s.eps))
    mu = label(r"\tilde\mu_t")
    steps = (
        Step("x_0 from the noise", equation(_s.x0, x0_from_eps)),
        Step(
            "into the posterior mean",
            equation(mu, post.mean_coef_x0 * x0_from_eps + post.mean_coef_xt * _s.x_t),
        ),
        Step("coefficient of x_t", equation(label(r"[x_t]"), coef_xt)),
        Step("coefficient of eps", equation(label(r"[\epsilon]"), coef_eps)),
        Step("the mean in x_t and eps", equation(mu, coef_xt * _s.x_t + coef_eps * _s.eps)),
    )
    return EpsMeanDerivation(steps, coef_xt * _s.x_t + coef_eps * _s.eps, coef_xt, coef_eps)


class LossWeightDerivation(NamedTuple):
    """L_{t-1} = weight (eps - eps_theta)^2 + constant for p_theta(x_{t-1} | x_t) with the eps
    mean and fixed variance sigma_t^2 (Eq. 12); `constant` does not depend on eps_theta and is 0
    when sigma_t^2 = beta_tilde_t. Per coordinate: over a vector the squares sum."""

    steps: Steps
    weight: sp.Expr
    constant: sp.Expr


@cache
def derive_eps_loss_weight() -> LossWeightDerivation:
    """Put both means in eps form into the Gaussian KL: their difference is a multiple of
    eps - eps_theta, so the KL is quadratic in eps - eps_theta (its weight is half the second
    derivative in eps) plus variance terms that do not involve the network at all."""
    post, eps_mean = derive_posterior(), derive_eps_mean()
    model_mean = eps_mean.mean.subs(_s.eps, _s.eps_theta)
    kl = gaussian_kl(eps_mean.mean, sp.sqrt(post.variance), model_mean, _s.sigma_t)
    weight = positive_factors(sp.simplify(sp.diff(kl, _s.eps, 2) / 2))
    # A perfect eps prediction leaves only the variance terms.
    constant = tidy(kl.subs(_s.eps_theta, _s.eps))
    mu_tilde, mu_theta = label(r"\tilde\mu_t"), label(r"\mu_\theta")
    generic_kl = gaussian_kl(mu_tilde, sp.sqrt(label(r"\tilde\beta_t")), mu_theta, _s.sigma_t)
    steps = (
        Step("the model's mean: eps_theta in place of eps", equation(mu_theta, model_mean)),
        Step(
            "the means differ by a multiple of eps - eps_theta",
            equation(mu_tilde - mu_theta, sp.factor(eps_mean.mean - model_mean)),
        ),
        Step("KL between the Gaussians", equation(label("L_{t-1}"), generic_kl)),
        Step("weight of (eps - eps_theta)^2", equation(label(r"\lambda_t"), weight)),
        Step(
            "the rest is free of eps_theta",
            equation(label(r"L_{t-1} - \lambda_t (\epsilon - \epsilon_\theta)^2"), constant),
        ),
    )
    return LossWeightDerivation(steps, weight, constant)
