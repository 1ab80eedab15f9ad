"""Classical density models scored in bits/dim, the yardstick for the diffusion model's bound.

Both models see the data as the diffusion model does: D pixels, each one of K grey levels
k = 0..K-1 (x_k = -1 + 2k/(K-1) in [-1, 1]), fitted on the train split and scored on the test split.

- `categorical_bpd`: every pixel its own categorical distribution over K levels, pixels independent,
  with add-alpha (Laplace) smoothing so that a level never seen in train keeps some probability.
  This is an exact discrete likelihood.
- `gmm_bpd`: scikit-learn's `GaussianMixture` on uniformly dequantized data, z = (k + u) / K with
  u ~ U(0, 1)^D, so that z lies in [0, 1)^D and the level-k cell is a cube of side 1/K. The discrete
  probability of y is the mass of its cell, P(y) = int_cell p(z) dz = K^-D E_u[p((y + u) / K)], and
  by Jensen's inequality

      log P(y) >= E_u[log p((y + u) / K)] - D log K,

  so  -log2 P(y) / D  <=  -E_u[log2 p(z)] / D + log2 K:  an upper bound on the model's discrete
  bits/dim, in the same sense as the diffusion model's variational bound. With S draws of u per
  image, log((1/S) sum_s p(z_s)) is still a lower bound on log P(y) + D log K in expectation, and a
  tighter one as S grows (the importance-weighted bound of Burda, Grosse & Salakhutdinov 2016);
  S = 1 is the plain bound above. The reported number is that estimate, converted as above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch


class BaselineBPD(NamedTuple):
    """A density baseline's score on held-out data."""

    name: str  # "categorical" or "gmm"
    bpd: float  # bits per dimension on the evaluation set (an upper bound for "gmm")
    details: str  # the settings used, including those chosen on validation data, in words


def to_levels(x: torch.Tensor | np.ndarray, num_levels: int) -> np.ndarray:
    """Map data on the grid x_k = -1 + 2k/(K-1) back to integer levels k.

    x: any shape, values in [-1, 1] on the K-level grid (to within 1e-4); returns an int64 array of
    the same shape with values in 0..K-1. Raises ValueError for data off the grid, since rounding
    continuous samples silently would score something other than what was asked.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    scaled = (np.asarray(x, dtype=np.float64) + 1.0) * (num_levels - 1) / 2.0
    levels = np.rint(scaled)
    if np.any((np.abs(scaled - levels) > 1e-4) | (levels < 0) | (levels > num_levels - 1)):
        raise ValueError(f"data are not on the {num_levels}-level grid in [-1, 1]")
    return levels.astype(np.int64)


def _flat_levels(levels: np.ndarray, num_levels: int) -> np.ndarray:
    """[N, ...] integer levels -> [N, D] int64, checked to lie in 0..K-1."""
    flat = np.asarray(levels).reshape(len(levels), -1)
    if not np.issubdtype(flat.dtype, np.integer):
        raise TypeError("levels must be integers 0..K-1 (see to_levels)")
    if flat.min() < 0 or flat.max() >= num_levels:
        raise ValueError(f"levels must lie in 0..{num_levels - 1}")
    return flat.astype(np.int64)


def categorical_bpd(
    train: np.ndarray, test: np.ndarray, num_levels: int, alpha: float = 1.0
) -> BaselineBPD:
    """Bits/dim of independent per-pixel categoricals with add-alpha smoothing.

    train: [N, ...] and test: [M, ...] integer levels in 0..K-1 (same number D of values per row).
    Pixel d's probability of level k is (count_d(k) + alpha) / (N + K alpha), counted on train;
    the result is the mean over test rows and pixels of -log2 of that probability.
    """
    train = _flat_levels(train, num_levels)
    test = _flat_levels(test, num_levels)
    n, d = train.shape
    counts = np.zeros((d, num_levels))
    np.add.at(counts, (np.arange(d)[None, :], train), 1.0)  # counts[d, k]
    log2_p = np.log2((counts + alpha) / (n + num_levels * alpha))  # [D, K]
    bits = -log2_p[np.arange(d)[None, :], test]  # [M, D]
    return BaselineBPD("categorical", float(bits.mean()), f"add-{alpha:g} smoothing")


def _dequantize(levels: np.ndarray, num_levels: int, rng: np.random.Generator) -> np.ndarray:
    """Integer levels [N, D] -> z = (k + u) / K in [0, 1)^D, u ~ U(0, 1) drawn from rng."""
    return (levels + rng.random(levels.shape)) / num_levels


def _dequantized_bpd(
    model, levels: np.ndarray, num_levels: int, samples: int, rng: np.random.Generator
) -> float:
    """Upper bound on discrete bits/dim of a density on dequantized data (module docstring).

    levels: [N, D] integers; samples: draws of the dequantization noise per row (S).
    """
    from scipy.special import logsumexp

    log_p = np.stack(
        [model.score_samples(_dequantize(levels, num_levels, rng)) for _ in range(samples)]
    )  # [S, N], nats, log p(z) summed over the D dimensions
    log_p_cell = logsumexp(log_p, axis=0) - math.log(samples)  # [N], <= log P(y) + D log K
    return float(-log_p_cell.mean() / (levels.shape[1] * math.log(2)) + math.log2(num_levels))


# (n_components, covariance_type) pairs tried by `gmm_bpd`. A full covariance has D(D+1)/2 = 2080
# parameters on 8x8 digits, so a handful of full components already overfits ~1,400 training
# images; diagonal components are cheap enough to use many.
GMM_CANDIDATES = ((1, "full"), (4, "full"), (16, "full"), (16, "diag"), (64, "diag"), (128, "diag"))


def gmm_bpd(
    train: np.ndarray,
    test: np.ndarray,
    num_levels: int,
    candidates: Sequence[tuple[int, str]] = GMM_CANDIDATES,
    validation_fraction: float = 0.2,
    samples: int = 100,
    seed: int = 0,
) -> BaselineBPD:
    """Upper bound on bits/dim of the best Gaussian mixture on dequantized data (module docstring).

    train: [N, ...] and test: [M, ...] integer levels in 0..K-1. Every candidate (n_components,
    covariance_type) is fitted on one dequantization of the first (1 - validation_fraction)
    of a fixed shuffle of train and scored on the rest; the best pair is refitted on all of train
    and scored on test. Scores use `samples` fresh dequantizations per row. Deterministic for a
    given seed.
    """
    from sklearn.mixture import GaussianMixture

    train = _flat_levels(train, num_levels)
    test = _flat_levels(test, num_levels)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    n_val = round(validation_fraction * len(train))
    fit_part, val_part = train[order[n_val:]], train[order[:n_val]]

    def fit(levels, k, cov):
        z = _dequantize(levels, num_levels, rng)
        return GaussianMixture(k, covariance_type=cov, random_state=seed).fit(z)

    scores = {
        (k, cov): _dequantized_bpd(fit(fit_part, k, cov), val_part, num_levels, samples, rng)
        for k, cov in candidates
    }
    (k, cov), val_bpd = min(scores.items(), key=lambda item: item[1])
    bpd = _dequantized_bpd(fit(train, k, cov), test, num_levels, samples, rng)
    details = (
        f"n_components={k}, covariance_type={cov!r} (validation bpd {val_bpd:.4f}), "
        f"{samples} dequantization samples per image"
    )
    return BaselineBPD("gmm", bpd, details)


def digits_baselines(seed: int = 0) -> tuple[BaselineBPD, BaselineBPD]:
    """(categorical, gmm) bits/dim on the test split of `ddpm.data.load_digits()` (K = 17)."""
    from ddpm.data import load_digits

    data = load_digits()
    train = to_levels(data.train, data.num_levels)
    test = to_levels(data.test, data.num_levels)
    return (
        categorical_bpd(train, test, data.num_levels),
        gmm_bpd(train, test, data.num_levels, seed=seed),
    )
