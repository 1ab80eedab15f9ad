"""Shared pieces of the derivations: the paper's symbols, the step record, Gaussian log densities,
expectations over independent noise, completing the square, and the identity check."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import cache
from typing import NamedTuple

import sympy as sp


class Step(NamedTuple):
    """One displayable line of a derivation: what was done, and what it gave."""

    description: str
    expr: sp.Basic


Steps = tuple[Step, ...]


def label(latex: str) -> sp.Symbol:
    """A display-only symbol (the left side of a step's equation), printed verbatim by
    `sympy.latex` (the braces stop sympy from reading `_` as its own subscript marker)."""
    return sp.Symbol("{" + latex + "}")


def _rationalise(expr: sp.Expr) -> tuple[sp.Expr, dict[sp.Symbol, sp.Expr]]:
    """Replace each positive symbol z that appears under a root by r**q (q the least common
    denominator of its exponents), so the expression becomes rational in r; also return the
    substitution back. Polynomial algorithms are fast and reliable on the result."""
    forward, back = {}, {}
    for z in sorted(expr.free_symbols, key=str):
        exps = [p.exp for p in expr.atoms(sp.Pow) if p.base == z and not p.exp.is_integer]
        if not exps or not z.is_positive or not all(e.is_Rational for e in exps):
            continue
        q = math.lcm(*(int(e.q) for e in exps))
        r = sp.Dummy(f"{z.name}_root", positive=True)
        forward[z], back[r] = r**q, z ** sp.Rational(1, q)
    return expr.subs(forward), back


def positive_factors(expr: sp.Expr) -> sp.Expr:
    """Factor, writing each factor with a negative constant term the other way round
    (1 - alpha_t rather than alpha_t - 1), so that logarithms of it can be split safely."""
    sign, parts = sp.S.One, ([], [])
    for part, factors in zip(sp.fraction(sp.factor(expr)), parts, strict=True):
        for factor in sp.Mul.make_args(part):
            base, exp = factor.as_base_exp()
            if base.is_Add and base.as_coeff_Add()[0].is_negative and exp.is_integer:
                base, sign = -base, sign * (-1) ** exp
            factors.append(base**exp)
    return sign * sp.Mul(*parts[0]) / sp.Mul(*parts[1])


def tidy(expr: sp.Expr) -> sp.Expr:
    """A readable form of a sum of logarithms and rational terms: the logarithms combined into
    one (their arguments taken as positive, as in every formula here), the rest factored."""
    terms = sp.Add.make_args(sp.expand(expr, deep=False))
    logs = sp.Add(*(term for term in terms if term.has(sp.log)))
    rest, back = _rationalise(sp.Add(*(term for term in terms if not term.has(sp.log))))
    return sp.factor(rest).subs(back) + sp.logcombine(sp.expand_log(logs, force=True), force=True)


def equation(lhs: sp.Basic, rhs: sp.Basic) -> sp.Equality:
    """`lhs = rhs`, kept as written (sympy would otherwise reduce a true equation to `True`)."""
    return sp.Eq(lhs, rhs, evaluate=False)


class PaperSymbols(NamedTuple):
    """The paper's symbols, with the assumptions the derivations rely on."""

    x0: sp.Symbol
    x_t: sp.Symbol
    x_prev: sp.Symbol  # x_{t-1}
    eps: sp.Symbol
    eps_theta: sp.Symbol
    v: sp.Symbol
    alpha_t: sp.Symbol
    alpha_bar_prev: sp.Symbol  # alpha_bar_{t-1}; alpha_bar_t = alpha_t * alpha_bar_prev
    alpha_bar_t: sp.Symbol  # for the relations that involve one timestep only
    beta_t: sp.Symbol  # display only: see `paper_notation`
    sigma_t: sp.Symbol  # the reverse process's fixed standard deviation
    std_x0: sp.Symbol  # per-coordinate standard deviation of the data
    snr: sp.Symbol  # alpha_bar_t / (1 - alpha_bar_t)


_real = {"real": True}
_pos = {"positive": True}
SYMBOLS = PaperSymbols(
    x0=sp.Symbol("x_0", **_real),
    x_t=sp.Symbol("x_t", **_real),
    x_prev=sp.Symbol("x_{t-1}", **_real),
    eps=sp.Symbol("epsilon", **_real),
    eps_theta=sp.Symbol("epsilon_theta", **_real),
    v=sp.Symbol("v", **_real),
    alpha_t=sp.Symbol("alpha_t", **_pos),
    alpha_bar_prev=sp.Symbol(r"\bar{\alpha}_{t-1}", **_pos),
    alpha_bar_t=sp.Symbol(r"\bar{\alpha}_t", **_pos),
    beta_t=sp.Symbol("beta_t", **_pos),
    sigma_t=sp.Symbol("sigma_t", **_pos),
    std_x0=sp.Symbol(r"\sigma_{\mathrm{data}}", **_pos),
    snr=sp.Symbol(r"\mathrm{SNR}_t", **_pos),
)


def paper_notation(expr: sp.Basic) -> sp.Basic:
    """Write `alpha_t alpha_bar_{t-1}` as `alpha_bar_t` and `1 - alpha_t` as `beta_t`, for display.

    The derivations keep `alpha_t` and `alpha_bar_{t-1}` as their only schedule symbols, so that
    `sqrt(alpha_bar_t)` can split into `sqrt(alpha_t) sqrt(alpha_bar_{t-1})` while simplifying.
    """
    s = SYMBOLS
    expr = expr.subs(s.alpha_t * s.alpha_bar_prev, s.alpha_bar_t)
    return expr.subs({1 - s.alpha_t: s.beta_t, s.alpha_t - 1: -s.beta_t})


def _vanishes(expr: sp.Expr) -> bool:
    """True when `expr` is zero as a function, shown by expansion or as a rational function
    (after `_rationalise`); `sympy.simplify` is the last resort for expressions without logs."""
    if sp.expand(expr) == 0:
        return True
    rational, _ = _rationalise(expr)
    if sp.expand(sp.numer(sp.together(rational))) == 0:
        return True
    return not expr.has(sp.log) and sp.simplify(expr) == 0


def _sample_point(symbols: set[sp.Symbol]) -> dict[sp.Symbol, sp.Rational]:
    """Distinct values in (0, 1/2] for the symbols (in the domain of every formula here)."""
    ordered = sorted(symbols, key=str)
    return {z: sp.Rational(k + 1, 2 * len(ordered) + 3) for k, z in enumerate(ordered)}


def identity_holds(lhs: sp.Basic, rhs: sp.Basic = sp.S.Zero) -> bool:
    """True when `lhs - rhs` is identically zero; `lhs` may be an equation (`rhs` is then ignored).

    Rational and radical expressions are decided by polynomial arithmetic. With logarithms, whose
    sums sympy cannot always merge (it does not know 1 - alpha_t > 0), the difference is shown to
    have zero partial derivatives (so it is constant) and to vanish at one point (to 50 digits).
    False means no proof was found.
    """
    if lhs is sp.true:  # an equation that sympy already decided when it was built
        return True
    if isinstance(lhs, sp.Equality):
        lhs, rhs = lhs.lhs, lhs.rhs
    diff = sp.sympify(lhs) - sp.sympify(rhs)
    if _vanishes(diff):
        return True
    if not diff.has(sp.log):
        return False
    if not all(identity_holds(sp.diff(diff, z)) for z in diff.free_symbols):
        return False
    return abs(sp.N(diff.subs(_sample_point(diff.free_symbols)), 50)) < 1e-40


def gaussian_log_pdf(x: sp.Expr, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    """log N(x; mean, var) for a scalar x, normalising constant included."""
    return -((x - mean) ** 2) / (2 * var) - sp.log(2 * sp.pi * var) / 2


def gaussian_pdf(x: sp.Expr, mean: sp.Expr, var: sp.Expr) -> sp.Expr:
    """N(x; mean, var) for a scalar x."""
    return sp.exp(-((x - mean) ** 2) / (2 * var)) / sp.sqrt(2 * sp.pi * var)


@cache
def standard_normal_moments(order: int) -> tuple[sp.Expr, ...]:
    """E[eps^k] for k = 0..order, eps ~ N(0, 1), each computed as an integral."""
    z = sp.Symbol("z", real=True)
    density = gaussian_pdf(z, 0, 1)
    return tuple(sp.integrate(z**k * density, (z, -sp.oo, sp.oo)) for k in range(order + 1))


def expectation(expr: sp.Expr, moments: Mapping[sp.Symbol, Sequence[sp.Expr]]) -> sp.Expr:
    """E[expr] for a polynomial in independent random symbols.

    `moments[z][k]` is E[z^k]; by independence the expectation of a monomial is the product of
    its factors' moments. Symbols not in `moments` are constants.
    """
    noise = list(moments)
    poly = sp.Poly(sp.expand(expr), *noise)
    total = sp.S.Zero
    for powers, coeff in poly.terms():
        total += coeff * sp.Mul(*(moments[z][k] for z, k in zip(noise, powers, strict=True)))
    return sp.simplify(total)


class CompletedSquare(NamedTuple):
    """`expr = -precision/2 * (x - mean)^2 + remainder`, remainder free of x."""

    precision: sp.Expr
    mean: sp.Expr
    remainder: sp.Expr


def complete_square(expr: sp.Expr, x: sp.Symbol) -> CompletedSquare:
    """Write a quadratic in `x` as a scaled square plus a remainder, reading the coefficients.

    For a log density, `precision` is the inverse variance and `mean` the mean of the Gaussian
    in x that the expression describes.
    """
    poly = sp.expand(expr)
    if sp.degree(poly, x) != 2:
        raise ValueError(f"expected a quadratic in {x}, got degree {sp.degree(poly, x)}")
    c2, c1, c0 = (poly.coeff(x, k) for k in (2, 1, 0))
    precision = positive_factors(sp.simplify(-2 * c2))
    mean = sp.simplify(c1 / precision)
    remainder = tidy(c0 + precision * mean**2 / 2)
    return CompletedSquare(precision, mean, remainder)
