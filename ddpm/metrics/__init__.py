"""Yardsticks for samples and likelihoods, used by the benchmarks and the book.

- Sample quality on digits: the Frechet distance between Gaussians fitted to the penultimate-layer
  features of a small digits classifier that is trained here, from scikit-learn's digits, by code
  (`frechet_distance`, `digits_classifier`, `digits_frechet_distance`, `digits_frechet_floor`).
- Sample quality on low-dimensional toys: two-sample distances (`energy_distance`,
  `sliced_wasserstein`).
- Likelihood on digits: classical density models scored in bits/dim on the same discrete data as the
  diffusion model's bound (`categorical_bpd`, `gmm_bpd`, `digits_baselines`).
"""

from ddpm.metrics.baselines import (
    BaselineBPD,
    categorical_bpd,
    digits_baselines,
    gmm_bpd,
    to_levels,
)
from ddpm.metrics.classifier import (
    ClassifierConfig,
    DigitsClassifier,
    DigitsNet,
    digits_classifier,
    train_digits_classifier,
)
from ddpm.metrics.frechet import digits_frechet_distance, digits_frechet_floor, frechet_distance
from ddpm.metrics.toys import energy_distance, sliced_wasserstein

__all__ = [
    "BaselineBPD",
    "ClassifierConfig",
    "DigitsClassifier",
    "DigitsNet",
    "categorical_bpd",
    "digits_baselines",
    "digits_classifier",
    "digits_frechet_distance",
    "digits_frechet_floor",
    "energy_distance",
    "frechet_distance",
    "gmm_bpd",
    "sliced_wasserstein",
    "to_levels",
    "train_digits_classifier",
]
