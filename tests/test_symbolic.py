"""The SymPy derivations against the paper's closed forms and against independent numerics."""

import numpy as np
import pytest
import sympy as sp
from scipy import integrate

from ddpm import symbolic as S

s = S.SYMBOLS
# The paper's names for the two-timestep quantities, in the derivations' symbols.
BETA = 1 - s.alpha_t
ALPHA_BAR = s.alpha_t * s.alpha_bar_prev


def numeric(expr, *symbols):
    return sp.lambdify(symbols, expr, modules="numpy")


# --- the identity check itself ---------------------------------------------------------------


def test_identity_holds_accepts_true_and_rejects_false_identities():
    a, b = sp.symbols("a b", positive=True)
    assert S.identity_holds((a + b) ** 2, a**2 + 2 * a * b + b**2)
    assert S.identity_holds(
        sp.Eq(
            sp.sqrt(a * b) * (a - b),
            sp.sqrt(a) * sp.sqrt(b) * a - sp.sqrt(a * b**3),
            evaluate=False,
        )
    )
    assert S.identity_holds(sp.Eq(a, a))  # sympy reduces this to True
    assert not S.identity_holds(sp.Eq(a, b, evaluate=False))
    assert S.identity_holds(sp.log((1 - a) * (1 - b)), sp.log(1 - a) + sp.log(1 - b))
    assert not S.identity_holds((a + b) ** 2, a**2 + b**2)
    assert not S.identity_holds(sp.log(1 - a), sp.log(a - 1))
    assert not S.identity_holds(sp.log(1 - a) + sp.Rational(1, 10**30), sp.log(1 - a))


def test_complete_square_reads_precision_mean_and_remainder():
    x = sp.Symbol("x", real=True)
    c, m = sp.symbols("c m", positive=True)
    square = S.complete_square(-c * (x - m) ** 2 + 5, x)
    assert S.identity_holds(square.precision, 2 * c)
    assert S.identity_holds(square.mean, m)
    assert S.identity_holds(square.remainder, 5)
    with pytest.raises(ValueError, match="quadratic"):
        S.complete_square(x**3, x)


def test_standard_normal_moments_are_the_double_factorials():
    # E[eps^k] = (k-1)!! for even k, 0 for odd k.
    assert S.standard_normal_moments(6) == (1, 0, 1, 0, 3, 0, 15)


def test_expectation_of_a_polynomial_in_independent_noises():
    e1, e2 = sp.symbols("e1 e2", real=True)
    moments = dict.fromkeys((e1, e2), S.standard_normal_moments(4))
    assert S.expectation((e1 + 2 * e2) ** 2, moments) == 5
    assert S.expectation(e1**2 * e2**2 + e1**4, moments) == 4


# --- Gaussian facts ----------------------------------------------------------------------------


def test_linear_combination_of_independent_gaussians():
    a, b, mx, my = sp.symbols("a b m_x m_y", real=True)
    vx, vy = sp.symbols("v_x v_y", positive=True)
    law = S.derive_linear_combination(a, mx, vx, b, my, vy)
    assert S.identity_holds(law.mean, a * mx + b * my)
    assert S.identity_holds(law.variance, a**2 * vx + b**2 * vy)


def test_linear_combination_matches_monte_carlo():
    law = S.derive_linear_combination(2, 1, 3, -1, 4, sp.Rational(1, 2))
    rng = np.random.default_rng(0)
    z = 2 * rng.normal(1, np.sqrt(3), 400_000) - rng.normal(4, np.sqrt(0.5), 400_000)
    assert abs(z.mean() - float(law.mean)) < 0.02
    assert abs(z.var() / float(law.variance) - 1) < 0.01


def test_reparameterisation_gives_the_gaussian_density():
    d = S.derive_reparameterisation()
    x, mu, sigma = d.params
    assert S.identity_holds(
        d.density, sp.exp(-((x - mu) ** 2) / (2 * sigma**2)) / sp.sqrt(2 * sp.pi * sigma**2)
    )


def test_product_of_gaussian_densities():
    d = S.derive_gaussian_product()
    x, m1, s1, m2, s2 = d.params
    assert S.identity_holds(d.variance, s1**2 * s2**2 / (s1**2 + s2**2))
    assert S.identity_holds(d.mean, (m1 / s1**2 + m2 / s2**2) * d.variance)
    # The scale is N(mu_a; mu_b, sigma_a^2 + sigma_b^2).
    assert S.identity_holds(d.log_scale, S.gaussian_log_pdf(m1, m2, s1**2 + s2**2))
    pdf = numeric(S.gaussian_pdf(x, m1, s1**2) * S.gaussian_pdf(x, m2, s2**2), *d.params)
    rhs = numeric(sp.exp(d.log_scale) * S.gaussian_pdf(x, d.mean, d.variance), *d.params)
    grid = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(pdf(grid, 0.3, 0.7, -0.5, 1.2), rhs(grid, 0.3, 0.7, -0.5, 1.2))


def test_gaussian_kl_closed_form():
    d = S.derive_gaussian_kl()
    m1, s1, m2, s2 = d.params
    textbook = sp.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - sp.Rational(1, 2)
    assert S.identity_holds(d.kl, textbook)
    assert S.gaussian_kl(m1, s1, m1, s1) == 0


def test_gaussian_kl_equals_the_direct_integral():
    d = S.derive_gaussian_kl()
    m1, s1, m2, s2 = d.params
    x = sp.Symbol("x", real=True)
    p = S.gaussian_pdf(x, m1, s1**2)
    log_ratio = S.gaussian_log_pdf(x, m1, s1**2) - S.gaussian_log_pdf(x, m2, s2**2)
    direct = sp.integrate(p * sp.expand(log_ratio), (x, -sp.oo, sp.oo), conds="none")
    assert S.identity_holds(d.kl, direct)


@pytest.mark.parametrize(
    "params", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -1.0, 2.0), (2.0, 1.5, 1.0, 0.4)]
)
def test_gaussian_kl_matches_quadrature(params):
    m1, s1, m2, s2 = params
    kl = numeric(S.derive_gaussian_kl().kl, *S.derive_gaussian_kl().params)(*params)

    def integrand(x):
        log_p = -((x - m1) ** 2) / (2 * s1**2) - np.log(np.sqrt(2 * np.pi) * s1)
        log_q = -((x - m2) ** 2) / (2 * s2**2) - np.log(np.sqrt(2 * np.pi) * s2)
        return np.exp(log_p) * (log_p - log_q)

    expected, _ = integrate.quad(integrand, m1 - 12 * s1, m1 + 12 * s1)
    assert kl == pytest.approx(expected, rel=1e-9, abs=1e-12)


# --- the forward process -----------------------------------------------------------------------


def test_marginal_induction_step_closes():
    d = S.derive_marginal_step()
    assert S.identity_holds(d.mean_coef, sp.sqrt(ALPHA_BAR))
    assert S.identity_holds(d.variance, 1 - ALPHA_BAR)
    # Base case: from x_0 itself (alpha_bar_0 = 1) one step gives N(sqrt(alpha_1) x_0, 1 - alpha_1).
    assert S.identity_holds(d.mean_coef.subs(s.alpha_bar_prev, 1), sp.sqrt(s.alpha_t))
    assert S.identity_holds(d.variance.subs(s.alpha_bar_prev, 1), 1 - s.alpha_t)


@pytest.mark.parametrize("t", [1, 2, 3, 5])
def test_unrolled_chain_gives_the_closed_form(t):
    d = S.unroll_marginal(t)
    alpha_bar = sp.Mul(*d.alphas)
    assert S.identity_holds(d.mean_coef, sp.sqrt(alpha_bar))
    assert S.identity_holds(d.variance, 1 - alpha_bar)


def test_unrolled_chain_matches_a_simulated_chain():
    d = S.unroll_marginal(4)
    alphas = np.array([0.9, 0.7, 0.95, 0.8])
    rng = np.random.default_rng(1)
    x = np.full(400_000, 0.6)
    for a in alphas:
        x = np.sqrt(a) * x + np.sqrt(1 - a) * rng.standard_normal(x.shape)
    mean = float(d.mean_coef.subs(dict(zip(d.alphas, alphas, strict=True)))) * 0.6
    variance = float(d.variance.subs(dict(zip(d.alphas, alphas, strict=True))))
    assert abs(x.mean() - mean) < 0.005
    assert abs(x.var() / variance - 1) < 0.01
    with pytest.raises(ValueError, match="t must be"):
        S.unroll_marginal(0)


def test_parameterisation_relations():
    d = S.derive_parameterisations()
    a = s.alpha_bar_t
    assert S.identity_holds(d.x0_from_eps, (s.x_t - sp.sqrt(1 - a) * s.eps) / sp.sqrt(a))
    assert S.identity_holds(d.eps_from_x0, (s.x_t - sp.sqrt(a) * s.x0) / sp.sqrt(1 - a))
    assert S.identity_holds(d.x0_from_v, sp.sqrt(a) * s.x_t - sp.sqrt(1 - a) * s.v)
    assert S.identity_holds(d.eps_from_v, sp.sqrt(1 - a) * s.x_t + sp.sqrt(a) * s.v)
    assert S.identity_holds(d.score, -s.eps / sp.sqrt(1 - a))


def test_parameterisation_round_trip_in_numbers():
    d = S.derive_parameterisations()
    a, x0, eps = 0.37, 0.8, -1.3
    x_t = np.sqrt(a) * x0 + np.sqrt(1 - a) * eps
    v = numeric(d.v_from_x0_eps, s.alpha_bar_t, s.x0, s.eps)(a, x0, eps)
    assert numeric(d.x0_from_v, s.alpha_bar_t, s.x_t, s.v)(a, x_t, v) == pytest.approx(x0)
    assert numeric(d.eps_from_v, s.alpha_bar_t, s.x_t, s.v)(a, x_t, v) == pytest.approx(eps)
    # The score of N(sqrt(a) x0, 1 - a) at x_t, by a central difference of the log density.
    log_q = numeric(S.gaussian_log_pdf(s.x_t, sp.sqrt(a) * x0, 1 - a), s.x_t)
    h = 1e-5
    finite_diff = (log_q(x_t + h) - log_q(x_t - h)) / (2 * h)
    assert numeric(d.score, s.alpha_bar_t, s.eps)(a, eps) == pytest.approx(finite_diff, rel=1e-7)


# --- the posterior and the loss ----------------------------------------------------------------


def test_posterior_by_completing_the_square():
    d = S.derive_posterior()
    alpha_bar_prev = s.alpha_bar_prev
    assert S.identity_holds(d.variance, (1 - alpha_bar_prev) / (1 - ALPHA_BAR) * BETA)
    assert S.identity_holds(d.mean_coef_x0, sp.sqrt(alpha_bar_prev) * BETA / (1 - ALPHA_BAR))
    assert S.identity_holds(
        d.mean_coef_xt, sp.sqrt(s.alpha_t) * (1 - alpha_bar_prev) / (1 - ALPHA_BAR)
    )


def test_posterior_square_is_exact():
    residual = S.derive_posterior().residual
    assert S.identity_holds(sp.diff(residual, s.x_prev), 0)
    # Bayes: what is left is log q(x_t | x_0), normalising constants included.
    marginal = S.gaussian_log_pdf(s.x_t, sp.sqrt(ALPHA_BAR) * s.x0, 1 - ALPHA_BAR)
    assert S.identity_holds(residual, marginal)


def test_posterior_matches_bayes_on_a_grid():
    d = S.derive_posterior()
    alpha_t, alpha_bar_prev, x0, x_t = 0.93, 0.41, 0.7, -0.2
    grid = np.linspace(-8, 8, 200_001)
    kernel = np.exp(-((x_t - np.sqrt(alpha_t) * grid) ** 2) / (2 * (1 - alpha_t)))
    prior = np.exp(-((grid - np.sqrt(alpha_bar_prev) * x0) ** 2) / (2 * (1 - alpha_bar_prev)))
    weights = kernel * prior / np.sum(kernel * prior)
    mean = np.sum(weights * grid)
    variance = np.sum(weights * (grid - mean) ** 2)
    at = {s.alpha_t: alpha_t, s.alpha_bar_prev: alpha_bar_prev}
    expected_mean = float((d.mean_coef_x0 * x0 + d.mean_coef_xt * x_t).subs(at))
    assert mean == pytest.approx(expected_mean, rel=1e-8)
    assert variance == pytest.approx(float(d.variance.subs(at)), rel=1e-8)


def test_paper_notation_rewrites_in_beta_and_alpha_bar():
    shown = S.paper_notation(S.derive_posterior().variance)
    textbook = s.beta_t * (1 - s.alpha_bar_prev) / (1 - s.alpha_bar_t)
    assert S.identity_holds(shown, textbook)


def test_eps_parameterised_mean_is_eq_11():
    d = S.derive_eps_mean()
    eq11 = (s.x_t - BETA / sp.sqrt(1 - ALPHA_BAR) * s.eps) / sp.sqrt(s.alpha_t)
    assert S.identity_holds(d.mean, eq11)
    assert S.identity_holds(d.coef_xt, 1 / sp.sqrt(s.alpha_t))


def test_eps_loss_weight_is_eq_12():
    d = S.derive_eps_loss_weight()
    sigma2 = s.sigma_t**2
    assert S.identity_holds(d.weight, BETA**2 / (2 * sigma2 * s.alpha_t * (1 - ALPHA_BAR)))
    # The rest does not see the network, and vanishes when sigma_t^2 is the posterior variance.
    assert S.identity_holds(sp.diff(d.constant, s.eps_theta), 0)
    beta_tilde = S.derive_posterior().variance
    assert S.identity_holds(d.constant.subs(s.sigma_t, sp.sqrt(beta_tilde)), 0)


def test_eps_loss_decomposition_reassembles_the_kl():
    post, mean = S.derive_posterior(), S.derive_eps_mean()
    d = S.derive_eps_loss_weight()
    kl = S.gaussian_kl(
        mean.mean, sp.sqrt(post.variance), mean.mean.subs(s.eps, s.eps_theta), s.sigma_t
    )
    assert S.identity_holds(kl, d.weight * (s.eps - s.eps_theta) ** 2 + d.constant)


# --- Cauchy-Schwarz ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_lagrange_identity_proves_cauchy_schwarz(n):
    d = S.derive_cauchy_schwarz(n)
    assert d.proven
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    lagrange = sum((d.a[i] * d.b[j] - d.a[j] * d.b[i]) ** 2 for i, j in pairs)
    assert S.identity_holds(d.rhs - d.lhs, lagrange)
    rng = np.random.default_rng(n)
    values = dict(zip(d.a + d.b, rng.normal(size=2 * n), strict=True))
    assert float(d.lhs.subs(values)) <= float(d.rhs.subs(values))


def test_a_wrong_sum_of_squares_is_rejected():
    d = S.derive_cauchy_schwarz(3)
    a, b = d.a, d.b
    missing_a_term = (a[0] * b[1] - a[1] * b[0]) ** 2 + (a[0] * b[2] - a[2] * b[0]) ** 2
    assert not S.identity_holds(d.gap, missing_a_term)


def test_write_out_sums_expands_dependent_limits():
    n = sp.Symbol("n", integer=True, positive=True)
    i, j = sp.symbols("i j", integer=True, positive=True)
    a = sp.IndexedBase("a")
    assert S.write_out_sums(sp.Sum(a[i], (i, 1, n)), n, 3) == a[1] + a[2] + a[3]
    pairs = S.write_out_sums(sp.Sum(a[i] * a[j], (j, i + 1, n), (i, 1, n)), n, 3)
    assert pairs == a[1] * a[2] + a[1] * a[3] + a[2] * a[3]


def test_lagrange_identity_for_every_n():
    d = S.derive_lagrange_general()
    assert sp.expand(d.summand_gap) == 0
    for k in range(1, 7):
        assert S.identity_holds(S.write_out_sums(d.lhs, d.n, k), S.write_out_sums(d.rhs, d.n, k))
        for step in d.steps:
            lhs, rhs = (S.write_out_sums(side, d.n, k) for side in (step.expr.lhs, step.expr.rhs))
            assert S.identity_holds(lhs, rhs), (k, step.description)


def test_correlation_of_x_t_and_x_0():
    d = S.derive_xt_x0_correlation()
    a, std = s.alpha_bar_t, s.std_x0
    assert S.identity_holds(d.correlation, sp.sqrt(a) * std / sp.sqrt(a * std**2 + 1 - a))
    assert S.identity_holds(d.cs_gap, std**2 * (1 - a))
    assert d.bounded


def test_correlation_matches_monte_carlo_for_non_gaussian_data():
    d = S.derive_xt_x0_correlation()
    a = 0.3
    rng = np.random.default_rng(2)
    x0 = rng.uniform(-1, 1, 400_000)  # standard deviation 1/sqrt(3)
    x_t = np.sqrt(a) * x0 + np.sqrt(1 - a) * rng.standard_normal(x0.shape)
    expected = float(d.correlation.subs({s.alpha_bar_t: a, s.std_x0: 1 / np.sqrt(3)}))
    assert np.corrcoef(x0, x_t)[0, 1] == pytest.approx(expected, abs=3e-3)


# --- every derivation can be displayed -----------------------------------------------------------


@pytest.mark.parametrize(
    "derive",
    [
        S.derive_reparameterisation,
        S.derive_gaussian_product,
        S.derive_gaussian_kl,
        S.derive_marginal_step,
        lambda: S.unroll_marginal(2),
        S.derive_parameterisations,
        S.derive_posterior,
        S.derive_eps_mean,
        S.derive_eps_loss_weight,
        lambda: S.derive_cauchy_schwarz(2),
        S.derive_lagrange_general,
        S.derive_xt_x0_correlation,
    ],
)
def test_steps_render_as_latex(derive):
    steps = derive().steps
    assert steps
    for step in steps:
        assert isinstance(step, S.Step) and step.description
        assert sp.latex(step.expr)


# --- float64 tables ------------------------------------------------------------------------------


def test_numeric_tables_match_direct_formulas():
    betas = np.linspace(1e-4, 0.02, 50)
    tables = S.schedule_tables_numeric(betas)
    alpha_bar = np.cumprod(1 - betas)
    alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
    np.testing.assert_allclose(tables.alpha_bar, alpha_bar, rtol=1e-14)
    np.testing.assert_allclose(
        tables.beta_tilde, betas * (1 - alpha_bar_prev) / (1 - alpha_bar), rtol=1e-12
    )
    assert tables.beta_tilde[0] == 0 and tables.posterior_mean_coef_xt[0] == 0
    for bad in ([0.1, 1.0], [0.0, 0.1], [np.nan], [], [[0.1]]):
        with pytest.raises(ValueError, match="betas"):
            S.schedule_tables_numeric(np.array(bad))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_package_schedule_tables_equal_the_derivations(kind):
    schedule_module = pytest.importorskip("ddpm.schedule")
    make = {"linear": schedule_module.linear_schedule, "cosine": schedule_module.cosine_schedule}
    schedule = make[kind](1000)
    tables = S.schedule_tables_numeric(schedule.betas)
    for name in tables._fields:
        np.testing.assert_allclose(
            getattr(schedule, name), getattr(tables, name), rtol=1e-12, atol=0, err_msg=name
        )
