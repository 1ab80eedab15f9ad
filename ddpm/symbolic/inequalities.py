"""The Cauchy-Schwarz inequality through Lagrange's identity, for a fixed n and for every n,
and its use in DDPM: the correlation between x_t and x_0 is at most 1."""

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
    identity_holds,
    label,
    positive_factors,
    standard_normal_moments,
)


class CauchySchwarzDerivation(NamedTuple):
    """(sum a_k b_k)^2 <= (sum a_k^2)(sum b_k^2) for real a_1..a_n, b_1..b_n.

    `gap` = rhs - lhs; `sum_of_squares` = sum over i < j of (a_i b_j - a_j b_i)^2 (Lagrange);
    `proven` says that sympy confirmed gap == sum_of_squares and that the latter is >= 0.
    """

    steps: Steps
    a: tuple[sp.Symbol, ...]
    b: tuple[sp.Symbol, ...]
    lhs: sp.Expr
    rhs: sp.Expr
    gap: sp.Expr
    sum_of_squares: sp.Expr
    proven: bool


@cache
def derive_cauchy_schwarz(n: int) -> CauchySchwarzDerivation:
    """Lagrange's identity for n terms by expansion; a sum of real squares is non-negative."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    a = sp.symbols(f"a_1:{n + 1}", real=True)
    b = sp.symbols(f"b_1:{n + 1}", real=True)
    lhs = sp.Add(*(ak * bk for ak, bk in zip(a, b, strict=True))) ** 2
    rhs = sp.Add(*(ak**2 for ak in a)) * sp.Add(*(bk**2 for bk in b))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    sum_of_squares = sp.Add(*((a[i] * b[j] - a[j] * b[i]) ** 2 for i, j in pairs))
    gap = rhs - lhs
    proven = identity_holds(gap, sum_of_squares) and bool(sum_of_squares.is_nonnegative)
    steps = (
        Step("the claim", sp.Le(lhs, rhs, evaluate=False)),
        Step("the gap, expanded", equation(label(r"\Delta"), sp.expand(gap))),
        Step(
            "Lagrange's identity: the gap is a sum of squares",
            equation(label(r"\Delta"), sum_of_squares),
        ),
        Step("a sum of real squares is non-negative", sp.Ge(sum_of_squares, 0, evaluate=False)),
    )
    return CauchySchwarzDerivation(steps, a, b, lhs, rhs, gap, sum_of_squares, proven)


class LagrangeGeneral(NamedTuple):
    """Lagrange's identity for symbolic n with indexed a_i, b_i.

    lhs = (sum a_i^2)(sum b_j^2) - (sum a_i b_i)^2, rhs = 1/2 sum_i sum_j (a_i b_j - a_j b_i)^2,
    both `Sum`s in `n` (`write_out_sums` evaluates them for a given n); `summand_gap` is the
    pointwise identity behind it (zero by expansion).
    """

    steps: Steps
    n: sp.Symbol
    lhs: sp.Expr
    rhs: sp.Expr
    summand_gap: sp.Expr


@cache
def derive_lagrange_general() -> LagrangeGeneral:
    """The argument for every n: both products of sums are double sums over (i, j); expanding
    (a_i b_j - a_j b_i)^2 gives a_i^2 b_j^2 + a_j^2 b_i^2 - 2 a_i b_i a_j b_j, and renaming
    i <-> j shows the first two terms have the same double sum."""
    n = sp.Symbol("n", integer=True, positive=True)
    i, j = sp.symbols("i j", integer=True, positive=True)
    a, b = sp.IndexedBase("a", real=True), sp.IndexedBase("b", real=True)

    def double_sum(term: sp.Expr) -> sp.Sum:
        return sp.Sum(term, (i, 1, n), (j, 1, n))

    lhs = (
        sp.Sum(a[i] ** 2, (i, 1, n)) * sp.Sum(b[j] ** 2, (j, 1, n))
        - sp.Sum(a[i] * b[i], (i, 1, n)) ** 2
    )
    square = (a[i] * b[j] - a[j] * b[i]) ** 2
    rhs = double_sum(square) / 2
    expanded = a[i] ** 2 * b[j] ** 2 + a[j] ** 2 * b[i] ** 2 - 2 * a[i] * b[i] * a[j] * b[j]
    steps = (
        Step(
            "products of sums are double sums",
            equation(lhs, double_sum(a[i] ** 2 * b[j] ** 2 - a[i] * b[i] * a[j] * b[j])),
        ),
        Step("expand one square", equation(square, expanded)),
        Step(
            "rename i <-> j in the second term",
            equation(double_sum(a[j] ** 2 * b[i] ** 2), double_sum(a[i] ** 2 * b[j] ** 2)),
        ),
        Step("so the gap is half the double sum of squares", equation(lhs, rhs)),
        Step(
            "terms with i = j vanish, (i, j) and (j, i) are equal",
            equation(rhs, sp.Sum(square, (j, i + 1, n), (i, 1, n))),
        ),
    )
    return LagrangeGeneral(steps, n, lhs, rhs, sp.expand(square - expanded))


def write_out_sums(expr: sp.Expr, n: sp.Symbol, value: int) -> sp.Expr:
    """`expr` with n = value and every `Sum` written out term by term (limits may depend on
    outer indices, which `Sum.doit` does not handle for indexed terms)."""

    def write_out(total: sp.Sum) -> sp.Expr:
        def nest(level: int, values: dict) -> sp.Expr:
            if level < 0:
                return total.function.subs(values)
            index, low, high = total.limits[level]
            low, high = int(low.subs(values)), int(high.subs(values))
            return sp.Add(*(nest(level - 1, {**values, index: k}) for k in range(low, high + 1)))

        return nest(len(total.limits) - 1, {})

    return expr.subs(n, value).replace(lambda e: isinstance(e, sp.Sum), write_out)


class CorrelationDerivation(NamedTuple):
    """corr(x_t, x_0) per coordinate, for x_0 of standard deviation `SYMBOLS.std_x0` and any law.

    `correlation` is in `SYMBOLS.alpha_bar_t`, `correlation_snr` in `SYMBOLS.snr`;
    `cs_gap` = Var[x_0] Var[x_t] - Cov[x_0, x_t]^2 (>= 0 by Cauchy-Schwarz); `bounded` says sympy
    confirmed 1 - corr^2 > 0 for every positive SNR.
    """

    steps: Steps
    covariance: sp.Expr
    correlation: sp.Expr
    cs_gap: sp.Expr
    correlation_snr: sp.Expr
    bounded: bool


@cache
def derive_xt_x0_correlation() -> CorrelationDerivation:
    """Write x_0 = mean + std z with E z = 0, E z^2 = 1 (no other assumption on its law) and
    x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps, then take second moments."""
    s = SYMBOLS
    abar, std = s.alpha_bar_t, s.std_x0
    z, mean_x0 = sp.Symbol("z", real=True), sp.Symbol(r"\mu_{x_0}", real=True)
    x0 = mean_x0 + std * z
    x_t = sp.sqrt(abar) * x0 + sp.sqrt(1 - abar) * s.eps
    moments = {z: (1, 0, 1), s.eps: standard_normal_moments(2)}
    centred_x0, centred_xt = x0 - expectation(x0, moments), x_t - expectation(x_t, moments)
    cov = expectation(centred_x0 * centred_xt, moments)
    var_x0, var_xt = expectation(centred_x0**2, moments), expectation(centred_xt**2, moments)
    corr = sp.simplify(cov / sp.sqrt(var_x0 * var_xt))
    cs_gap = positive_factors(var_x0 * var_xt - cov**2)
    corr_snr = sp.simplify(corr.subs(abar, s.snr / (1 + s.snr)))
    one_minus = sp.factor(1 - corr_snr**2)
    steps = (
        Step("covariance", equation(label(r"\operatorname{Cov}[x_0, x_t]"), cov)),
        Step("variance of x_t", equation(label(r"\operatorname{Var}[x_t]"), var_xt)),
        Step("correlation", equation(label(r"\rho_t"), corr)),
        Step("Cauchy-Schwarz gap Var Var - Cov^2", equation(label(r"\Delta"), cs_gap)),
        Step("in terms of SNR = alpha_bar / (1 - alpha_bar)", equation(label(r"\rho_t"), corr_snr)),
        Step("hence rho^2 < 1", equation(label(r"1 - \rho_t^2"), one_minus)),
    )
    return CorrelationDerivation(steps, cov, corr, cs_gap, corr_snr, bool(one_minus.is_positive))
