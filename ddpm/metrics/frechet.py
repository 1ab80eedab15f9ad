"""Frechet distance between Gaussians fitted to two sets of features, and its digits instance.

For N(mu_a, S_a) and N(mu_b, S_b) the squared 2-Wasserstein (Frechet) distance is

    d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)),

the formula behind FID (Heusel et al. 2017). Fitted to samples it is biased upwards by an amount
that shrinks like 1/N, so two finite sets from one distribution score above zero: compare a model's
score with the real-vs-real floor (`digits_frechet_floor`) at the same sample size.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ddpm.metrics.classifier import DigitsClassifier, digits_classifier


def _as_float64(x: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix [F, F]."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(feats_a: np.ndarray | Tensor, feats_b: np.ndarray | Tensor) -> float:
    """Squared Frechet distance between Gaussians fitted to features [N, F] and [M, F].

    Means and unbiased covariances (N, M >= 2) in float64; the result is in squared feature units.
    The trace of (S_a S_b)^(1/2) is the sum of the square roots of the eigenvalues of
    S_a^(1/2) S_b S_a^(1/2), a symmetric PSD matrix similar to S_a S_b: no complex square root
    arises, and eigenvalues pushed below zero by round-off are clipped to zero.
    """
    a, b = _as_float64(feats_a), _as_float64(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected feature arrays [N, F] and [M, F], got {a.shape}, {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError("need at least two feature vectors per set to estimate a covariance")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a = np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1])  # [F, F] also when F = 1
    s_b = np.cov(b, rowvar=False).reshape(b.shape[1], b.shape[1])
    root_a = _sqrt_psd(s_a)
    cross = np.linalg.eigvalsh(root_a @ s_b @ root_a)  # eigenvalues of S_a S_b
    trace_sqrt = np.sqrt(np.clip(cross, 0.0, None)).sum()
    d2 = np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * trace_sqrt
    return float(max(d2, 0.0))


def digits_frechet_distance(
    samples: Tensor, reference: Tensor, classifier: DigitsClassifier | None = None
) -> float:
    """Frechet distance between two sets of digits images in the classifier's feature space.

    samples: [N, 1, 8, 8] and reference: [M, 1, 8, 8], in [-1, 1] (e.g. generated images and
    `load_digits().test`); classifier defaults to `digits_classifier()`.
    """
    if classifier is None:
        classifier = digits_classifier()
    return frechet_distance(classifier.features(samples), classifier.features(reference))


def digits_frechet_floor(
    n: int | None = None, seed: int = 0, classifier: DigitsClassifier | None = None
) -> float:
    """Real-vs-real floor: `digits_frechet_distance` between the digits train and test splits.

    With n, a random subset of n train images (chosen with `seed`) stands in for n samples, so the
    floor matches a comparison of n generated images against the test split; n=None uses the
    whole train split (1,438 images).
    """
    from ddpm.data import load_digits

    data = load_digits()
    train = data.train
    if n is not None:
        if not 2 <= n <= len(train):
            raise ValueError(f"n must lie in 2..{len(train)}, got {n}")
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
        train = train[pick]
    return digits_frechet_distance(train, data.test, classifier)
