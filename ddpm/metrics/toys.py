"""Two-sample distances for low-dimensional point clouds (the 2-D toys): samples vs fresh data.

Both take point sets a: [N, D] and b: [M, D] (tensors or arrays, any device) and compute in
float64 on the CPU; both are in the units of the points. Two finite samples of one distribution
give a small nonzero value (of either sign for the energy distance), so compare a model's score
with the data-vs-data floor at the same sample sizes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_BLOCK_ENTRIES = 1 << 22  # pairwise distances held at once (32 MiB of float64)


def _points(x: np.ndarray | Tensor, name: str) -> Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(
            f"{name} must be a point set [N, D] with N >= 2, got shape {tuple(x.shape)}"
        )
    return x


def _distance_sum(a: Tensor, b: Tensor) -> float:
    """Sum over all pairs (i, j) of the distance |a_i - b_j|, a block of rows at a time."""
    block = max(1, _BLOCK_ENTRIES // len(b))
    total = 0.0
    for i in range(0, len(a), block):
        # The direct difference formula: the matmul shortcut loses digits for nearby points.
        d = torch.cdist(a[i : i + block], b, compute_mode="donot_use_mm_for_euclid_dist")
        total += d.sum().item()
    return total


def energy_distance(a: np.ndarray | Tensor, b: np.ndarray | Tensor) -> float:
    """Unbiased (U-statistic) estimate of the squared energy distance of Szekely & Rizzo,

        E(P, Q) = 2 E|X - Y| - E|X - X'| - E|Y - Y'|,   X, X' ~ P and Y, Y' ~ Q independent,

    from a: [N, D] ~ P and b: [M, D] ~ Q: the within-set means average over the N(N-1) (M(M-1))
    pairs of distinct points. E(P, Q) >= 0 with equality iff P = Q, and the estimate's expectation
    is E(P, Q) itself, so for two samples of one distribution it scatters around zero and can be
    negative. (The V-statistic, which also averages the zero self-distances, is >= 0 but biased
    upwards by O(1/N + 1/M).) Units: those of the points. Cost O((N + M)^2 D).
    """
    a, b = _points(a, "a"), _points(b, "b")
    n, m = len(a), len(b)
    between = _distance_sum(a, b) / (n * m)
    within_a = _distance_sum(a, a) / (n * (n - 1))  # the diagonal terms are exactly zero
    within_b = _distance_sum(b, b) / (m * (m - 1))
    return 2.0 * between - within_a - within_b


def sliced_wasserstein(
    a: np.ndarray | Tensor,
    b: np.ndarray | Tensor,
    n_projections: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced 2-Wasserstein distance between the empirical distributions of a: [N, D], b: [M, D].

        SW_2(P, Q)^2 = E_theta[W_2(theta.P, theta.Q)^2],  theta uniform on the unit sphere,

    estimated with n_projections random directions drawn from `generator` (a CPU
    torch.Generator; None uses torch's global RNG). Along each direction the 1-D W_2 between the
    projected point sets is exact: the integral over u in (0, 1) of the squared difference of the
    two quantile functions, which are step functions with steps at i/N and j/M. N and M may differ.
    Units: those of the points.
    """
    a, b = _points(a, "a"), _points(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b have different dimensions: {a.shape[1]} and {b.shape[1]}")
    theta = torch.randn(n_projections, a.shape[1], generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)  # [P, D] unit directions
    proj_a = torch.sort(a @ theta.T, dim=0).values  # [N, P], column p the sorted projections
    proj_b = torch.sort(b @ theta.T, dim=0).values  # [M, P]
    n, m = len(a), len(b)
    grid = [torch.arange(k + 1, dtype=torch.float64) / k for k in (n, m)]
    edges = torch.cat(grid).unique()  # sorted
    mid = (edges[:-1] + edges[1:]) / 2  # quantile levels, one inside each constant piece
    width = (edges[1:] - edges[:-1])[:, None]  # [I, 1]
    gap = proj_a[(mid * n).long()] - proj_b[(mid * m).long()]  # [I, P]
    w2_squared = (width * gap**2).sum(dim=0)  # [P]
    return w2_squared.mean().sqrt().item()
