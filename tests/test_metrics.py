"""Tests for ddpm.metrics: expectations come from closed forms and independent computations."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.stats import norm

from ddpm.data import load_digits
from ddpm.metrics import (
    BaselineBPD,
    ClassifierConfig,
    categorical_bpd,
    digits_classifier,
    digits_frechet_distance,
    digits_frechet_floor,
    energy_distance,
    frechet_distance,
    gmm_bpd,
    sliced_wasserstein,
    to_levels,
    train_digits_classifier,
)

K_DIGITS = 17
QUICK = ClassifierConfig(epochs=1)  # the default recipe's code path, a twentieth of the time


def _with_moments(z: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Affine map of samples z [N, F] whose sample mean and (unbiased) covariance are exactly
    mean and cov."""
    z = z - z.mean(axis=0)
    sample_cov = np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1])
    white = z @ np.linalg.inv(np.linalg.cholesky(sample_cov).T)
    return white @ np.linalg.cholesky(cov).T + mean


# ---------------------------------------------------------------- Frechet distance


def test_frechet_of_identical_sets_is_zero():
    a = np.random.default_rng(0).normal(size=(300, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_1d_is_mean_and_std_gaps_squared():
    rng = np.random.default_rng(1)
    a = _with_moments(rng.normal(size=(50, 1)), np.array([0.3]), np.array([[2.0**2]]))
    b = _with_moments(rng.normal(size=(80, 1)), np.array([-1.2]), np.array([[0.5**2]]))
    expected = (0.3 + 1.2) ** 2 + (2.0 - 0.5) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)


def test_frechet_diagonal_covariances_closed_form():
    rng = np.random.default_rng(2)
    mu_a, mu_b = np.array([1.0, 0.0, -2.0]), np.array([0.0, 0.5, -2.0])
    sd_a, sd_b = np.array([1.0, 2.0, 0.1]), np.array([3.0, 2.0, 0.4])
    a = _with_moments(rng.normal(size=(40, 3)), mu_a, np.diag(sd_a**2))
    b = _with_moments(rng.normal(size=(60, 3)), mu_b, np.diag(sd_b**2))
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((sd_a - sd_b) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)


def test_frechet_matches_scipy_sqrtm_and_is_symmetric():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(150, 5)) @ rng.normal(size=(5, 5)) + 1.0
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b).real  # the textbook route, in complex arithmetic
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a + s_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected)


def test_frechet_rejects_mismatched_features():
    with pytest.raises(ValueError, match=r"\[N, F\]"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))


# ---------------------------------------------------------------- energy distance


def test_energy_distance_matches_brute_force():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(7, 2)), rng.normal(size=(5, 2)) + 0.3

    def mean_distance(x, y, distinct):
        pairs = itertools.product(enumerate(x), enumerate(y))
        distances = [math.dist(p, q) for (i, p), (j, q) in pairs if not (distinct and i == j)]
        return sum(distances) / len(distances)

    expected = (
        2 * mean_distance(a, b, False) - mean_distance(a, a, True) - mean_distance(b, b, True)
    )
    assert energy_distance(a, b) == pytest.approx(expected, rel=1e-12)


def test_energy_distance_is_unbiased_for_one_distribution():
    gen = torch.Generator().manual_seed(5)
    values = [
        energy_distance(torch.randn(20, 2, generator=gen), torch.randn(30, 2, generator=gen))
        for _ in range(300)
    ]
    mean, se = np.mean(values), np.std(values) / math.sqrt(len(values))
    # The V-statistic's bias here is E|X - X'| (1/20 + 1/30) ~ 0.15, tens of standard errors.
    assert abs(mean) < 4 * se


def test_energy_distance_of_shifted_gaussians_matches_closed_form():
    # 1-D: X - Y ~ N(-d, 2) and X - X' ~ N(0, 2); E|N(mu, s^2)| = s sqrt(2/pi) e^(-mu^2/2s^2)
    # + mu (1 - 2 Phi(-mu/s)).
    d, s = 1.0, math.sqrt(2.0)
    e_xy = s * math.sqrt(2 / math.pi) * math.exp(-(d**2) / (2 * s**2)) + d * (
        1 - 2 * norm.cdf(-d / s)
    )
    expected = 2 * e_xy - 2 * (2 / math.sqrt(math.pi))
    gen = torch.Generator().manual_seed(6)
    a, b = torch.randn(3000, 1, generator=gen), torch.randn(3000, 1, generator=gen) + d
    value = energy_distance(a, b)
    assert value > 0
    assert value == pytest.approx(expected, abs=0.03)


# ---------------------------------------------------------------- sliced Wasserstein


def test_sliced_wasserstein_of_shifted_cloud():
    # Projections of a shifted copy are shifted copies: W_2 along theta is |theta . s|, and
    # E[(theta . s)^2] = |s|^2 / 2 for theta uniform on the circle.
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(500, 2, generator=gen) * torch.tensor([1.0, 0.2])
    shift = torch.tensor([0.6, -0.8])
    value = sliced_wasserstein(a, a + shift, n_projections=4000, generator=gen)
    assert value == pytest.approx(shift.norm().item() / math.sqrt(2), rel=0.03)


def test_sliced_wasserstein_unequal_sizes_matches_quantile_integral():
    a, b = (
        np.random.default_rng(8).normal(size=(7, 1)),
        np.array([[0.0], [1.0], [5.0], [2.0], [-1]]),
    )
    u = (np.arange(35) + 0.5) / 35  # 35 = lcm(7, 5): one point inside every constant piece
    qa = np.quantile(a[:, 0], u, method="inverted_cdf")
    qb = np.quantile(b[:, 0], u, method="inverted_cdf")
    expected = math.sqrt(np.mean((qa - qb) ** 2))  # in 1-D both directions give W_2 itself
    gen = torch.Generator().manual_seed(9)
    assert sliced_wasserstein(a, b, n_projections=3, generator=gen) == pytest.approx(expected)
    assert sliced_wasserstein(a, np.concatenate([a, a]), generator=gen) == pytest.approx(0.0)


# ---------------------------------------------------------------- digits classifier


def _global_state():
    return torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()


def test_classifier_training_is_deterministic_and_leaves_global_state_alone():
    before, rng_before = _global_state(), torch.get_rng_state()
    first, second = train_digits_classifier(QUICK), train_digits_classifier(QUICK)
    assert _global_state() == before
    assert torch.equal(torch.get_rng_state(), rng_before)
    w1, w2 = first.net.state_dict(), second.net.state_dict()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    changed = train_digits_classifier(dataclasses.replace(QUICK, seed=1)).net.state_dict()
    assert not all(torch.equal(w1[k], changed[k]) for k in w1)


def test_classifier_is_accurate_and_features_have_documented_shape():
    classifier = digits_classifier()
    data = load_digits()
    assert classifier.test_accuracy >= 0.95
    predicted = classifier.predict(data.test)
    assert (predicted == data.test_labels).double().mean().item() == classifier.test_accuracy
    feats = classifier.features(data.test[:10])
    assert feats.shape == (10, ClassifierConfig().feature_dim) and feats.dtype == np.float64


def test_classifier_disk_cache_round_trip(tmp_path):
    trained = digits_classifier(QUICK, cache_dir=tmp_path)
    (file,) = tmp_path.glob("digits-classifier-*.safetensors")
    loaded = digits_classifier(QUICK, cache_dir=str(tmp_path))  # a new lru key: read from disk
    assert loaded is not trained
    assert loaded.train_seconds == trained.train_seconds
    assert loaded.test_accuracy == trained.test_accuracy
    w1, w2 = trained.net.state_dict(), loaded.net.state_dict()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert file.exists()


def test_digits_frechet_floor_is_far_below_noise():
    data = load_digits()
    noise = torch.rand(len(data.test), 1, 8, 8, generator=torch.Generator().manual_seed(10)) * 2 - 1
    floor = digits_frechet_floor(n=len(data.test))
    assert 0 < floor < 0.1 * digits_frechet_distance(noise, data.test)
    assert digits_frechet_floor() < floor  # the finite-sample bias shrinks with more images


# ---------------------------------------------------------------- density baselines


def test_to_levels_round_trips_and_rejects_off_grid_data():
    k = np.arange(K_DIGITS)
    assert np.array_equal(to_levels(torch.tensor(-1 + 2 * k / 16), K_DIGITS), k)
    with pytest.raises(ValueError, match="17-level grid"):
        to_levels(np.array([0.01]), K_DIGITS)


def test_categorical_bpd_matches_hand_computation():
    train = np.array([[0, 1], [0, 2], [1, 1]])
    test = np.array([[0, 1], [2, 2]])
    # add-one with K = 3 and N = 3: pixel 0 has p = (3, 2, 1)/6, pixel 1 has p = (1, 3, 2)/6.
    bits = -math.log2(3 / 6) - math.log2(3 / 6) - math.log2(1 / 6) - math.log2(2 / 6)
    result = categorical_bpd(train, test, num_levels=3)
    assert isinstance(result, BaselineBPD) and result.name == "categorical"
    assert result.bpd == pytest.approx(bits / 4, rel=1e-12)


def test_categorical_bpd_of_uniform_levels_is_log2_k():
    rng = np.random.default_rng(11)
    train, test = rng.integers(0, K_DIGITS, (5000, 4)), rng.integers(0, K_DIGITS, (5000, 4))
    assert categorical_bpd(train, test, K_DIGITS).bpd == pytest.approx(
        math.log2(K_DIGITS), abs=0.01
    )


def test_gmm_bpd_matches_jensen_bound_and_importance_weighted_limit():
    # Levels 7 and 8 at random: dequantized, z is uniform on [7/K, 9/K), so the fitted Gaussian is
    # N(8/K, s^2) with s = (2/K) / sqrt(12) in each of the 2 dimensions. One dequantization sample
    # gives the Jensen bound log2 K - E log2 p(z) = log2 K + log2(2/K) + log2(2 pi e / 12) / 2;
    # many samples approach the exact discrete NLL, -log2 of the cell mass Phi(sqrt 3) - Phi(0).
    rng = np.random.default_rng(12)
    train, test = rng.integers(7, 9, (20000, 2)), rng.integers(7, 9, (5000, 2))
    jensen = 1 + 0.5 * math.log2(2 * math.pi * math.e / 12)
    exact = -math.log2(norm.cdf(math.sqrt(3)) - 0.5)

    def bpd(samples):
        return gmm_bpd(train, test, K_DIGITS, candidates=((1, "diag"),), samples=samples).bpd

    assert bpd(1) == pytest.approx(jensen, abs=0.01)
    assert bpd(100) == pytest.approx(exact, abs=0.01)


def test_gmm_bpd_on_digits_is_finite_and_beats_uniform():
    data = load_digits()
    train, test = to_levels(data.train, K_DIGITS), to_levels(data.test, K_DIGITS)
    result = gmm_bpd(train, test, K_DIGITS, candidates=((16, "diag"),), samples=10)
    assert math.isfinite(result.bpd) and result.bpd < math.log2(K_DIGITS)
    assert "n_components=" in result.details
