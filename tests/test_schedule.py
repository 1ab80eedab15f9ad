"""Schedule tables against an independent high-precision recomputation, and their invariants."""

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm.schedule import (
    NoiseSchedule,
    ScheduleKind,
    check_timesteps,
    cosine_schedule,
    extract,
    linear_schedule,
    make_schedule,
)

mpmath.mp.dps = 40

TABLES = [
    "betas",
    "alphas",
    "alpha_bar",
    "alpha_bar_prev",
    "sqrt_alpha_bar",
    "sqrt_one_minus_alpha_bar",
    "sqrt_recip_alpha_bar",
    "sqrt_recipm1_alpha_bar",
    "beta_tilde",
    "log_beta_tilde_clipped",
    "posterior_mean_coef_x0",
    "posterior_mean_coef_xt",
    "snr",
]


def reference_tables(betas):
    """Every table by a running product in 40-digit arithmetic, from the paper's formulas."""
    ref = {name: [] for name in TABLES}
    prod = mpmath.mpf(1)
    for beta in betas:
        beta = mpmath.mpf(beta)
        prev, prod = prod, prod * (1 - beta)
        posterior_var = beta * (1 - prev) / (1 - prod)
        row = {
            "betas": beta,
            "alphas": 1 - beta,
            "alpha_bar": prod,
            "alpha_bar_prev": prev,
            "sqrt_alpha_bar": mpmath.sqrt(prod),
            "sqrt_one_minus_alpha_bar": mpmath.sqrt(1 - prod),
            "sqrt_recip_alpha_bar": 1 / mpmath.sqrt(prod),
            "sqrt_recipm1_alpha_bar": mpmath.sqrt(1 / prod - 1),
            "beta_tilde": posterior_var,
            "posterior_mean_coef_x0": beta * mpmath.sqrt(prev) / (1 - prod),
            "posterior_mean_coef_xt": (1 - prev) * mpmath.sqrt(1 - beta) / (1 - prod),
            "snr": prod / (1 - prod),
        }
        for name, value in row.items():
            ref[name].append(value)
    # The t=0 posterior variance is 0; its log is clipped to the t=1 value.
    clipped = [ref["beta_tilde"][1], *ref["beta_tilde"][1:]]
    ref["log_beta_tilde_clipped"] = [mpmath.log(v) for v in clipped]
    return {name: np.array([float(v) for v in values]) for name, values in ref.items()}


def assert_tables_match(schedule, ref, rtol=1e-12):
    for name in TABLES:
        got = getattr(schedule, name)
        assert got.dtype == np.float64, name
        assert got.shape == (schedule.T,), name
        np.testing.assert_allclose(got, ref[name], rtol=rtol, atol=1e-300, err_msg=name)


def test_linear_schedule_tables_match_high_precision_recomputation():
    T = 1000
    step = (mpmath.mpf("0.02") - mpmath.mpf("1e-4")) / (T - 1)
    betas = [mpmath.mpf("1e-4") + i * step for i in range(T)]
    schedule = linear_schedule()
    assert schedule.T == T
    assert_tables_match(schedule, reference_tables(betas))


def test_cosine_schedule_follows_the_squared_cosine_until_clipped():
    T, s = 1000, mpmath.mpf("0.008")

    def f(u):
        return mpmath.cos((u + s) / (1 + s) * mpmath.pi / 2) ** 2

    betas = [min(1 - f(mpmath.mpf(i + 1) / T) / f(mpmath.mpf(i) / T), 0.999) for i in range(T)]
    schedule = cosine_schedule()
    assert_tables_match(schedule, reference_tables(betas))
    # Before any clipping alpha_bar_t is f(t/T) / f(0) (Nichol & Dhariwal Eq. 17).
    assert schedule.betas[-1] == 0.999
    first_clipped = int(np.argmax(schedule.betas == 0.999))
    for t in range(0, first_clipped, 7):
        expected = float(f(mpmath.mpf(t + 1) / T) / f(0))
        assert math.isclose(schedule.alpha_bar[t], expected, rel_tol=1e-12)


def test_clipped_log_posterior_variance_reuses_t1_value():
    schedule = linear_schedule(T=50)
    assert schedule.beta_tilde[0] == 0.0
    assert schedule.log_beta_tilde_clipped[0] == math.log(schedule.beta_tilde[1])
    np.testing.assert_allclose(
        schedule.log_beta_tilde_clipped[1:], np.log(schedule.beta_tilde[1:]), rtol=1e-15
    )


def test_single_step_schedule_is_valid():
    schedule = NoiseSchedule.from_betas([0.3])
    assert schedule.T == 1
    assert schedule.alpha_bar_prev[0] == 1.0
    assert schedule.posterior_mean_coef_x0[0] == pytest.approx(1.0)
    assert schedule.posterior_mean_coef_xt[0] == 0.0
    assert np.isfinite(schedule.log_beta_tilde_clipped).all()


def test_make_schedule_by_name():
    np.testing.assert_array_equal(make_schedule("linear", 1000).betas, linear_schedule().betas)
    np.testing.assert_array_equal(
        make_schedule(ScheduleKind.COSINE, 100).betas, cosine_schedule(100).betas
    )
    # Other T: the paper's endpoints scaled by 1000/T, keeping the sum of betas.
    small = make_schedule("LINEAR", 100)
    np.testing.assert_allclose(small.betas, np.linspace(1e-3, 0.2, 100), rtol=1e-14)
    assert small.betas.sum() == pytest.approx(linear_schedule().betas.sum(), rel=1e-12)


def test_tables_are_read_only():
    schedule = linear_schedule(T=10)
    with pytest.raises(ValueError):
        schedule.alpha_bar[0] = 0.5


# ----- invariants over random valid schedules -----

betas_strategy = st.lists(
    st.floats(min_value=1e-6, max_value=0.999, allow_nan=False), min_size=2, max_size=64
)


@settings(max_examples=60, deadline=None)
@given(betas_strategy)
def test_schedule_invariants(betas):
    s = NoiseSchedule.from_betas(betas)
    ab, ab_prev = s.alpha_bar, s.alpha_bar_prev
    assert ((ab > 0) & (ab < 1)).all()
    assert (np.diff(ab) < 0).all()
    assert ab_prev[0] == 1.0 and (ab_prev[1:] == ab[:-1]).all()
    assert (s.beta_tilde >= 0).all() and (s.beta_tilde <= s.betas * (1 + 1e-12)).all()
    assert (np.diff(s.snr) < 0).all()
    # Mean of x_{t-1} given x_0 is preserved by the posterior: E[mu_tilde(x_t, x_0)] over x_t.
    np.testing.assert_allclose(
        s.posterior_mean_coef_x0 + s.posterior_mean_coef_xt * s.sqrt_alpha_bar,
        np.sqrt(ab_prev),
        rtol=1e-9,
    )
    # Law of total variance: Var q(x_{t-1} | x_0) = beta_tilde + coef_xt^2 Var q(x_t | x_0).
    np.testing.assert_allclose(
        s.beta_tilde + s.posterior_mean_coef_xt**2 * (1 - ab), 1 - ab_prev, rtol=1e-9, atol=1e-15
    )
    # Posterior precision is the sum of the two precisions (t >= 1).
    np.testing.assert_allclose(
        1 / s.beta_tilde[1:], 1 / (1 - ab_prev[1:]) + s.alphas[1:] / s.betas[1:], rtol=1e-9
    )
    np.testing.assert_allclose(s.sqrt_alpha_bar**2 + s.sqrt_one_minus_alpha_bar**2, 1, rtol=1e-12)
    np.testing.assert_allclose(s.sqrt_recip_alpha_bar * s.sqrt_alpha_bar, 1, rtol=1e-12)


# ----- extract -----


def test_extract_gathers_in_float64_and_broadcasts():
    schedule = linear_schedule(T=100)
    t = torch.tensor([0, 57, 99])
    x64 = torch.zeros(3, 2, 4, 4, dtype=torch.float64)
    got = extract(schedule.alpha_bar, t, x64)
    assert got.shape == (3, 1, 1, 1) and got.dtype == torch.float64
    assert got.flatten().tolist() == [schedule.alpha_bar[i] for i in (0, 57, 99)]
    x32 = torch.zeros(3, 5)
    got32 = extract(schedule.alpha_bar, t, x32)
    assert got32.shape == (3, 1) and got32.dtype == torch.float32
    assert got32.flatten().tolist() == [np.float32(schedule.alpha_bar[i]) for i in (0, 57, 99)]
    # One index for the whole batch: the float64 entry itself, as a number.
    shared = extract(schedule.alpha_bar, 57, x32)
    assert isinstance(shared, float) and shared == schedule.alpha_bar[57]
    with pytest.raises(
        ValueError, match=r"timestep 100 is out of range; valid indices are 0\.\.99"
    ):
        extract(schedule.alpha_bar, 100, x32)


BAD_TIMESTEP_TENSORS = [
    (torch.tensor([0.0, 1.0]), r"integer"),
    (torch.tensor([True, False]), r"bool"),
    (torch.tensor([0, 1, 2]), r"shape \(3,\).*\(2, 3\)"),
    (torch.tensor([[0, 1]]), r"shape \(1, 2\)"),
]
OUT_OF_RANGE = [
    (torch.tensor([0, 10]), r"timestep 10 is out of range; valid indices are 0\.\.9"),
    (torch.tensor([-1, 0]), r"timestep -1 is out of range; valid indices are 0\.\.9"),
    (10, r"timestep 10 is out of range; valid indices are 0\.\.9"),
    (-1, r"timestep -1 is out of range; valid indices are 0\.\.9"),
    (2.0, r"timestep 2\.0 must be an integer"),
    (True, r"timestep True must be an integer"),
]


@pytest.mark.parametrize("t, match", BAD_TIMESTEP_TENSORS)
def test_extract_rejects_bad_timesteps(t, match):
    with pytest.raises(ValueError, match=match):
        extract(linear_schedule(T=10).betas, t, torch.zeros(2, 3))


@pytest.mark.parametrize("t, match", BAD_TIMESTEP_TENSORS + OUT_OF_RANGE)
def test_check_timesteps_rejects_bad_timesteps(t, match):
    with pytest.raises(ValueError, match=match):
        check_timesteps(t, 10, torch.zeros(2, 3))


def test_check_timesteps_accepts_every_valid_index():
    x = torch.zeros(10, 3)
    check_timesteps(torch.arange(10), 10, x)
    check_timesteps(torch.arange(10, dtype=torch.int32), 10, x)
    check_timesteps(torch.zeros(0, dtype=torch.long), 10, x[:0])
    for t in (0, 9, np.int64(5)):
        check_timesteps(t, 10, x)


def test_extract_reads_a_table_already_on_the_device_as_it_reads_the_numpy_one():
    schedule = linear_schedule(T=100)
    t = torch.tensor([3, 0, 99, 3])
    x = torch.zeros(4, 2, 5)
    on_device = torch.tensor(schedule.alpha_bar, dtype=torch.float64)
    got = extract(on_device, t, x)
    assert got.shape == (4, 1, 1)
    assert got.flatten().tolist() == [np.float32(schedule.alpha_bar[i]) for i in (3, 0, 99, 3)]
    assert torch.equal(got, extract(schedule.alpha_bar, t, x))


# ----- validation -----


@pytest.mark.parametrize(
    "betas, match",
    [
        ([], r"T = 0"),
        ([0.1, 0.0], r"betas\[1\] = 0\.0.*\(0, 1\)"),
        ([0.1, 1.0], r"betas\[1\] = 1\.0.*\(0, 1\)"),
        ([-0.2], r"betas\[0\] = -0\.2.*\(0, 1\)"),
        ([0.1, float("nan")], r"betas\[1\] = nan.*finite"),
        ([0.1, float("inf")], r"betas\[1\] = inf.*finite"),
        ([[0.1, 0.2]], r"one-dimensional"),
    ],
)
def test_from_betas_rejects_invalid(betas, match):
    with pytest.raises(ValueError, match=match):
        NoiseSchedule.from_betas(betas)


@pytest.mark.parametrize(
    "make", [linear_schedule, cosine_schedule, lambda T: make_schedule("cosine", T)]
)
@pytest.mark.parametrize("T", [0, -3])
def test_T_below_one_is_rejected(make, T):
    with pytest.raises(ValueError, match=rf"T = {T}.*>= 1"):
        make(T)


def test_unknown_schedule_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"'quadratic'.*linear, cosine"):
        make_schedule("quadratic", 100)
