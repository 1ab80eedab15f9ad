"""Gaussian facts the chapters lean on, each derived: linear combinations of independent
Gaussians (through moment generating functions), the reparameterisation (change of variables),
the product of two densities (completing the square) and the KL divergence (integration)."""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import sympy as sp

from ddpm.symbolic.algebra import (
    Step,
    Steps,
    complete_square,
    equation,
    gaussian_log_pdf,
    gaussian_pdf,
    label,
    tidy,
)

_u, _x = sp.symbols("u x", real=True)
_ma, _mb = sp.symbols("mu_a mu_b", real=True)
_sa, _sb = sp.symbols("sigma_a sigma_b", positive=True)


@cache
def _gaussian_mgf() -> sp.Expr:
    """E[exp(u X)] for X ~ N(mu_a, sigma_a^2), as a function of u, by integration."""
    integrand = sp.exp(_u * _x) * gaussian_pdf(_x, _ma, _sa**2)
    return sp.simplify(sp.integrate(integrand, (_x, -sp.oo, sp.oo), conds="none"))


class LinearCombinationDerivation(NamedTuple):
    """Z = a X + b Y for independent X ~ N(m_x, v_x), Y ~ N(m_y, v_y) is N(mean, variance)."""

    steps: Steps
    mean: sp.Expr
    variance: sp.Expr


@cache
def derive_linear_combination(
    a: sp.Expr, m_x: sp.Expr, v_x: sp.Expr, b: sp.Expr, m_y: sp.Expr, v_y: sp.Expr
) -> LinearCombinationDerivation:
    """Law of a X + b Y through moment generating functions.

    The MGF of a Gaussian is found by integration; independence makes the MGF of the sum the
    product of the two; its logarithm (the cumulant generating function) is a quadratic in u,
    which is the signature of a Gaussian, and its first two derivatives at 0 give mean and variance.
    """
    mgf = _gaussian_mgf()
    m_z = mgf.subs({_u: a * _u, _ma: m_x, _sa: sp.sqrt(v_x)}) * mgf.subs(
        {_u: b * _u, _ma: m_y, _sa: sp.sqrt(v_y)}
    )
    cgf = sp.expand(sp.expand_log(sp.log(m_z), force=True))
    if sp.degree(cgf, _u) > 2:
        raise ValueError("the cumulant generating function is not quadratic")
    mean = sp.simplify(sp.diff(cgf, _u).subs(_u, 0))
    variance = sp.simplify(sp.diff(cgf, _u, 2).subs(_u, 0))
    steps = (
        Step("MGF of a Gaussian, by integration", equation(label(r"\operatorname{M}_X(u)"), mgf)),
        Step("independence: the MGF of a X + b Y is a product", equation(label("M_Z(u)"), m_z)),
        Step("its log is quadratic in u, so Z is Gaussian", equation(label(r"\log M_Z(u)"), cgf)),
        Step("mean: the first derivative of log M_Z at 0", equation(label(r"\mathbb{E}[Z]"), mean)),
        Step(
            "variance: the second derivative of log M_Z at 0",
            equation(label(r"\operatorname{Var}[Z]"), variance),
        ),
    )
    return LinearCombinationDerivation(steps, mean, variance)


class ReparameterisationDerivation(NamedTuple):
    """The density of x = mu + sigma * eps for eps ~ N(0, 1); params = (x, mu, sigma)."""

    steps: Steps
    density: sp.Expr
    params: tuple[sp.Symbol, sp.Symbol, sp.Symbol]


@cache
def derive_reparameterisation() -> ReparameterisationDerivation:
    """Change of variables: p_x(x) = p_eps((x - mu) / sigma) |d eps / d x| = N(x; mu, sigma^2)."""
    eps = sp.Symbol("epsilon", real=True)
    inverse = sp.solve(sp.Eq(_x, _ma + _sa * eps), eps)[0]
    jacobian = sp.Abs(sp.diff(inverse, _x))
    density = sp.simplify(gaussian_pdf(inverse, 0, 1) * jacobian)
    steps = (
        Step("the map and its inverse", equation(label(r"\epsilon(x)"), inverse)),
        Step("its Jacobian", equation(label(r"\left|d\epsilon/dx\right|"), jacobian)),
        Step("change of variables", equation(label("p_x(x)"), density)),
    )
    return ReparameterisationDerivation(steps, density, (_x, _ma, _sa))


class GaussianProductDerivation(NamedTuple):
    """N(x; mu_a, sigma_a^2) N(x; mu_b, sigma_b^2) = exp(log_scale) N(x; mean, variance);
    params = (x, mu_a, sigma_a, mu_b, sigma_b)."""

    steps: Steps
    mean: sp.Expr
    variance: sp.Expr
    log_scale: sp.Expr
    params: tuple[sp.Symbol, ...]


@cache
def derive_gaussian_product() -> GaussianProductDerivation:
    """Product of two Gaussian densities in the same variable, by completing the square."""
    log_product = gaussian_log_pdf(_x, _ma, _sa**2) + gaussian_log_pdf(_x, _mb, _sb**2)
    square = complete_square(log_product, _x)
    variance = sp.factor(1 / square.precision)
    # What is left after taking out a normalised Gaussian in x.
    log_scale = tidy(square.remainder + sp.log(2 * sp.pi * variance) / 2)
    steps = (
        Step("the sum of the two log densities", equation(label(r"\log(p_1 p_2)"), log_product)),
        Step("precision: the precisions add", equation(label(r"1/\sigma^2"), square.precision)),
        Step("mean: precision-weighted average", equation(label(r"\mu"), square.mean)),
        Step("the scale left over", equation(label(r"\log Z"), log_scale)),
    )
    params = (_x, _ma, _sa, _mb, _sb)
    return GaussianProductDerivation(steps, square.mean, variance, log_scale, params)


class KLDerivation(NamedTuple):
    """KL(N(mu_a, sigma_a^2) || N(mu_b, sigma_b^2)); params = (mu_a, sigma_a, mu_b, sigma_b)."""

    steps: Steps
    kl: sp.Expr
    params: tuple[sp.Symbol, sp.Symbol, sp.Symbol, sp.Symbol]


@cache
def derive_gaussian_kl() -> KLDerivation:
    """KL = E_p[log p(x) - log q(x)]. The log ratio is a quadratic in x, so only E_p[x] and
    E_p[x^2] are needed; both are integrals against the density p."""
    p = gaussian_pdf(_x, _ma, _sa**2)
    log_ratio = sp.expand(gaussian_log_pdf(_x, _ma, _sa**2) - gaussian_log_pdf(_x, _mb, _sb**2))
    moments = [sp.simplify(sp.integrate(_x**k * p, (_x, -sp.oo, sp.oo))) for k in (1, 2)]
    c0, c1, c2 = (log_ratio.coeff(_x, k) for k in (0, 1, 2))
    kl = tidy(c0 + c1 * moments[0] + c2 * moments[1])
    steps = (
        Step(
            "the log ratio, a quadratic in x", equation(label(r"\log\frac{p(x)}{q(x)}"), log_ratio)
        ),
        Step("first moment of p, by integration", equation(label(r"\mathbb{E}_p[x]"), moments[0])),
        Step("second moment of p", equation(label(r"\mathbb{E}_p[x^2]"), moments[1])),
        Step("take the expectation term by term", equation(label(r"D_{\mathrm{KL}}(p\|q)"), kl)),
    )
    return KLDerivation(steps, kl, (_ma, _sa, _mb, _sb))


def gaussian_kl(m1: sp.Expr, s1: sp.Expr, m2: sp.Expr, s2: sp.Expr) -> sp.Expr:
    """The derived KL(N(m1, s1^2) || N(m2, s2^2)) at the given means and standard deviations."""
    derivation = derive_gaussian_kl()
    return derivation.kl.subs(dict(zip(derivation.params, (m1, s1, m2, s2), strict=True)))
