"""The forward process: the closed-form marginal q(x_t | x_0) (Eq. 4), by induction and by
unrolling the chain, and the relations among x_0, eps, v and the score that it implies."""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import sympy as sp

from ddpm.symbolic.algebra import (
    SYMBOLS,
    Step,
    Steps,
    equation,
    expectation,
    gaussian_log_pdf,
    label,
    standard_normal_moments,
)
from ddpm.symbolic.gaussians import derive_linear_combination


def _alpha_product() -> sp.Product:
    """alpha_bar_t = prod_{tau=1}^t alpha_tau, unevaluated, for display."""
    k, t = sp.symbols("tau t", integer=True, positive=True)
    return sp.Product(sp.Indexed("alpha", k), (k, 1, t))


class MarginalStepDerivation(NamedTuple):
    """The induction step from t-1 to t, in `SYMBOLS.alpha_t` and `SYMBOLS.alpha_bar_prev`.

    `mean_coef` and `variance` are those of q(x_t | x_0) when q(x_{t-1} | x_0) has the closed
    form; they are sqrt(alpha_bar_t) and 1 - alpha_bar_t, alpha_bar_t = alpha_t alpha_bar_{t-1}.
    """

    steps: Steps
    mean_coef: sp.Expr
    variance: sp.Expr


@cache
def derive_marginal_step() -> MarginalStepDerivation:
    """Compose the kernel x_t = sqrt(alpha_t) x_{t-1} + sqrt(1 - alpha_t) eps with any Gaussian
    q(x_{t-1} | x_0) = N(m x_0, w), solve the recursion in (m, w), and close the induction."""
    s = SYMBOLS
    m, w = sp.Symbol("m_{t-1}", positive=True), sp.Symbol("w_{t-1}", positive=True)
    law = derive_linear_combination(sp.sqrt(s.alpha_t), m * s.x0, w, sp.sqrt(1 - s.alpha_t), 0, 1)
    m_t, w_t = sp.simplify(law.mean / s.x0), sp.factor(law.variance)
    # Both m^2 and 1 - w are multiplied by alpha_t at every step and start at 1 (x_0 is exact,
    # m_0 = 1, w_0 = 0), so after t steps both equal alpha_1 ... alpha_t = alpha_bar_t.
    closed = {m: sp.sqrt(s.alpha_bar_prev), w: 1 - s.alpha_bar_prev}
    mean_coef, variance = m_t.subs(closed), sp.factor(w_t.subs(closed))
    steps = (
        Step(
            "the kernel",
            equation(s.x_t, sp.sqrt(s.alpha_t) * s.x_prev + sp.sqrt(1 - s.alpha_t) * s.eps),
        ),
        Step(
            "a Gaussian for x_{t-1}",
            equation(label(r"q(x_{t-1} \mid x_0)"), label(r"\mathcal{N}(m_{t-1} x_0,\, w_{t-1})")),
        ),
        Step(
            "x_t = a Z_1 + b Z_2: independent Gaussians Z_1 = x_{t-1}, Z_2 = eps", law.steps[0].expr
        ),
        *law.steps[1:],
        Step("mean coefficient recursion", equation(label("m_t"), m_t)),
        Step("variance recursion", equation(label("w_t"), w_t)),
        Step("1 - w shrinks by alpha_t", equation(label("1 - w_t"), sp.factor(1 - w_t))),
        Step("m^2 grows by alpha_t", equation(label("m_t^2"), m_t**2)),
        Step(
            "from m_0 = 1, w_0 = 0 (x_0 itself)",
            equation(label(r"m_t^2 = 1 - w_t"), _alpha_product()),
        ),
        Step(
            "induction hypothesis: m = sqrt(alpha_bar_{t-1}), w = 1 - alpha_bar_{t-1}",
            equation(label(r"\sqrt{\bar\alpha_t}"), mean_coef),
        ),
        Step(
            "the variance closes as 1 - alpha_bar_t", equation(label(r"1 - \bar\alpha_t"), variance)
        ),
    )
    return MarginalStepDerivation(steps, mean_coef, variance)


class UnrolledMarginal(NamedTuple):
    """x_t after `t` kernel steps from x_0, with symbols alpha_1..alpha_t and eps_1..eps_t.

    `mean_coef` simplifies to sqrt(prod(alphas)) and `variance` to 1 - prod(alphas).
    """

    steps: Steps
    alphas: tuple[sp.Symbol, ...]
    x_t: sp.Expr
    mean_coef: sp.Expr
    variance: sp.Expr


@cache
def unroll_marginal(t: int) -> UnrolledMarginal:
    """Apply the kernel t times to x_0 with independent noises, then take moments.

    x_t is a linear combination of x_0 and independent standard normals, hence Gaussian
    (`derive_linear_combination`, applied step by step); its mean and variance are expectations of
    polynomials in the noises, computed from the normal moments.
    """
    if t < 1:
        raise ValueError(f"t must be >= 1, got {t}")
    s = SYMBOLS
    alphas = sp.symbols(f"alpha_1:{t + 1}", positive=True)
    noises = sp.symbols(f"epsilon_1:{t + 1}", real=True)
    x = s.x0
    for alpha, eps in zip(alphas, noises, strict=True):
        x = sp.sqrt(alpha) * x + sp.sqrt(1 - alpha) * eps
    moments = dict.fromkeys(noises, standard_normal_moments(2))
    mean = expectation(x, moments)
    mean_coef = sp.simplify(mean / s.x0)
    variance = sp.factor(expectation((x - mean) ** 2, moments))
    steps = (
        Step(f"{t} kernel steps from x_0", equation(label("x_t"), sp.expand(x))),
        Step("mean (the noises have mean 0)", equation(label(r"\mathbb{E}[x_t]"), mean)),
        Step(
            "variance (independent, unit variance)",
            equation(label(r"\operatorname{Var}[x_t]"), variance),
        ),
        Step(
            "the mean coefficient is sqrt(alpha_bar_t)",
            equation(label(r"\sqrt{\bar\alpha_t}"), mean_coef),
        ),
        Step(
            "and the variance 1 - alpha_bar_t",
            equation(label(r"1 - \bar\alpha_t"), sp.expand(variance)),
        ),
    )
    return UnrolledMarginal(steps, alphas, x, mean_coef, variance)


class ParameterisationRelations(NamedTuple):
    """What a network may predict, each in terms of the others at one timestep, in
    `SYMBOLS.alpha_bar_t` (x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps)."""

    steps: Steps
    x0_from_eps: sp.Expr  # in x_t, eps
    eps_from_x0: sp.Expr  # in x_t, x_0
    v_from_x0_eps: sp.Expr  # in x_0, eps
    x0_from_v: sp.Expr  # in x_t, v
    eps_from_v: sp.Expr  # in x_t, v
    score: sp.Expr  # d/dx_t log q(x_t | x_0), in eps


@cache
def derive_parameterisations() -> ParameterisationRelations:
    """Solve the reparameterised marginal for x_0 and eps; solve the pair (x_t, v) for (x_0, eps);
    differentiate log q(x_t | x_0) for the score and substitute x_t."""
    s = SYMBOLS
    a = s.alpha_bar_t
    x_t_def = sp.sqrt(a) * s.x0 + sp.sqrt(1 - a) * s.eps
    v_def = sp.sqrt(a) * s.eps - sp.sqrt(1 - a) * s.x0
    x0_from_eps = sp.solve(sp.Eq(s.x_t, x_t_def), s.x0)[0]
    eps_from_x0 = sp.solve(sp.Eq(s.x_t, x_t_def), s.eps)[0]
    pair = sp.solve([sp.Eq(s.x_t, x_t_def), sp.Eq(s.v, v_def)], [s.x0, s.eps], dict=True)[0]
    x0_from_v, eps_from_v = (sp.simplify(pair[k]) for k in (s.x0, s.eps))
    score_x = sp.cancel(sp.diff(gaussian_log_pdf(s.x_t, sp.sqrt(a) * s.x0, 1 - a), s.x_t))
    score = sp.simplify(score_x.subs(s.x_t, x_t_def))
    steps = (
        Step("the marginal, reparameterised", equation(s.x_t, x_t_def)),
        Step("solved for x_0", equation(label(r"\hat{x}_0(x_t, \epsilon)"), x0_from_eps)),
        Step("solved for eps", equation(label(r"\epsilon(x_t, x_0)"), eps_from_x0)),
        Step("the v target", equation(s.v, v_def)),
        Step("x_0 from (x_t, v)", equation(label(r"\hat{x}_0(x_t, v)"), x0_from_v)),
        Step("eps from (x_t, v)", equation(label(r"\epsilon(x_t, v)"), eps_from_v)),
        Step(
            "score of q(x_t | x_0)", equation(label(r"\nabla_{x_t} \log q(x_t \mid x_0)"), score_x)
        ),
        Step(
            "at x_t from the marginal", equation(label(r"\nabla_{x_t} \log q(x_t \mid x_0)"), score)
        ),
    )
    return ParameterisationRelations(
        steps, x0_from_eps, eps_from_x0, v_def, x0_from_v, eps_from_v, score
    )
