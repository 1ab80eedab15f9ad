"""Sampling: ancestral sampling (paper Algorithm 2) and DDIM (Song, Meng & Ermon 2021).

All randomness, x_T included, is drawn from the optional ``generator``, so a seeded generator makes
a run reproducible. The progressive variants yield one :class:`SampleStep` per reverse step.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ddpm.diffusion import GaussianDiffusion, Model
from ddpm.schedule import parse_choice

__all__ = [
    "SampleStep",
    "SamplerKind",
    "ancestral_sample",
    "ancestral_sample_progressive",
    "ddim_sample",
    "ddim_sample_progressive",
    "ddim_timesteps",
    "sample",
]


class SampleStep(NamedTuple):
    """One reverse step: the index t the model was evaluated at, the sample the step produced
    (x_0 after the last step), and the model's estimate of x_0 at that step; tensors [N, C, ...]."""

    t: int
    x_t: Tensor
    pred_x0: Tensor


class SamplerKind(enum.Enum):
    ANCESTRAL = "ancestral"  # all T steps of p(x_{t-1} | x_t) (paper Algorithm 2)
    DDIM = "ddim"  # any subsequence of timesteps; eta = 0 deterministic, eta = 1 like ancestral


def _start(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str | None,
    x_T: Tensor | None,
) -> Tensor:
    if x_T is not None:
        if tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape is {tuple(shape)}")
        return x_T
    if device is None:
        device = generator.device if generator is not None else "cpu"
    return torch.randn(tuple(shape), generator=generator, device=device)


def _randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


@torch.no_grad()
def ancestral_sample_progressive(
    diffusion: GaussianDiffusion,
    model: Model,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    clip_denoised: bool = True,
    progress: bool = True,
    x_T: Tensor | None = None,
) -> Iterator[SampleStep]:
    """Algorithm 2 step by step: x_{t-1} = mu_theta(x_t, t) + sigma_t z, with z = 0 at the end.

    shape: [N, C, ...] of the samples; ``x_T`` (default: a draw from N(0, I)) starts the chain.
    """
    x = _start(shape, generator, device, x_T)
    for step in tqdm(range(diffusion.T - 1, -1, -1), disable=not progress, desc="sampling"):
        p = diffusion.p_mean_variance(model, x, step, clip_denoised=clip_denoised)
        x = p.mean
        if step > 0:
            x = x + p.variance**0.5 * _randn_like(x, generator)
        yield SampleStep(step, x, p.pred_x0)


def ancestral_sample(
    diffusion: GaussianDiffusion,
    model: Model,
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    clip_denoised: bool = True,
    progress: bool = True,
    x_T: Tensor | None = None,
) -> Tensor:
    """Samples x_0 [N, C, ...] by Algorithm 2; arguments as :func:`ancestral_sample_progressive`."""
    trajectory = ancestral_sample_progressive(
        diffusion,
        model,
        shape,
        generator=generator,
        device=device,
        clip_denoised=clip_denoised,
        progress=progress,
        x_T=x_T,
    )
    return _last(trajectory)


def _last(trajectory: Iterator[SampleStep]) -> Tensor:
    *_, last = trajectory
    return last.x_t


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` indices spread evenly over {0, ..., T-1}, always including T-1 (pure noise)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps = {steps!r}; need an integer in [1, {T}] (T = {T})")
    return sorted({int(round(u)) for u in np.linspace(T - 1, 0, steps)})


def _check_timesteps(T: int, timesteps: Sequence[int]) -> list[int]:
    timesteps = [int(s) for s in timesteps]
    if not timesteps:
        raise ValueError("timesteps is empty; need at least one index in [0, T-1]")
    for s in timesteps:
        if not 0 <= s < T:
            raise ValueError(f"timestep {s} is out of range; valid indices are 0..{T - 1}")
    if any(b <= a for a, b in zip(timesteps, timesteps[1:], strict=False)):
        raise ValueError(f"timesteps {timesteps} must be strictly increasing")
    return timesteps


@torch.no_grad()
def ddim_sample_progressive(
    diffusion: GaussianDiffusion,
    model: Model,
    shape: Sequence[int],
    *,
    steps: int | None = 50,
    timesteps: Sequence[int] | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    clip_denoised: bool = True,
    progress: bool = True,
    x_T: Tensor | None = None,
) -> Iterator[SampleStep]:
    """DDIM (Song et al. 2021, Eq. 12) over an increasing subsequence of timestep indices.

    Give ``steps`` (evenly spaced, see :func:`ddim_timesteps`) or explicit ``timesteps``, which
    take precedence. From index t to the previous chosen index s (alpha_bar_s = 1 after the last):
        x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma^2) eps_hat + sigma z,
        sigma = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s).
    eta = 0 is deterministic given x_T; eta = 1 over all T steps is ancestral sampling with
    sigma_t^2 = beta_tilde_t.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta = {eta!r}; need 0 <= eta <= 1")
    T = diffusion.T
    if timesteps is not None:
        seq = _check_timesteps(T, timesteps)
    elif steps is not None:
        seq = ddim_timesteps(T, steps)
    else:
        raise ValueError("give either steps (a count in [1, T]) or timesteps (indices)")
    alpha_bar = diffusion.schedule.alpha_bar
    x = _start(shape, generator, device, x_T)
    pairs = list(zip(reversed(seq), [*reversed(seq[:-1]), None], strict=True))
    for step, prev in tqdm(pairs, disable=not progress, desc="ddim"):
        p = diffusion.p_mean_variance(model, x, step, clip_denoised=clip_denoised)
        ab_t = float(alpha_bar[step])
        ab_s = float(alpha_bar[prev]) if prev is not None else 1.0
        sigma = eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        x = math.sqrt(ab_s) * p.pred_x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * p.pred_eps
        if sigma > 0:
            x = x + sigma * _randn_like(x, generator)
        yield SampleStep(step, x, p.pred_x0)


def ddim_sample(
    diffusion: GaussianDiffusion,
    model: Model,
    shape: Sequence[int],
    *,
    steps: int | None = 50,
    timesteps: Sequence[int] | None = None,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    clip_denoised: bool = True,
    progress: bool = True,
    x_T: Tensor | None = None,
) -> Tensor:
    """Samples x_0 [N, C, ...] by DDIM; arguments as :func:`ddim_sample_progressive`."""
    trajectory = ddim_sample_progressive(
        diffusion,
        model,
        shape,
        steps=steps,
        timesteps=timesteps,
        eta=eta,
        generator=generator,
        device=device,
        clip_denoised=clip_denoised,
        progress=progress,
        x_T=x_T,
    )
    return _last(trajectory)


def sample(
    diffusion: GaussianDiffusion,
    model: Model,
    shape: Sequence[int],
    kind: SamplerKind | str = SamplerKind.ANCESTRAL,
    steps: int | None = None,
    eta: float = 0.0,
    **kwargs: Any,
) -> Tensor:
    """Samples x_0 [N, C, ...] with either sampler; ``kind`` accepts "ancestral" or "ddim".

    Ancestral sampling always runs all T steps (``steps`` must be None or T) and ignores ``eta``;
    DDIM defaults to 50 steps (T if fewer). Other keywords (generator, device, clip_denoised,
    progress, x_T) go to the sampler.
    """
    kind = parse_choice(SamplerKind, kind)
    if kind is SamplerKind.ANCESTRAL:
        if steps not in (None, diffusion.T):
            raise ValueError(
                f"steps = {steps}; ancestral sampling runs all T = {diffusion.T} steps, "
                "use kind='ddim' for fewer"
            )
        return ancestral_sample(diffusion, model, shape, **kwargs)
    steps = min(50, diffusion.T) if steps is None else steps
    return ddim_sample(diffusion, model, shape, steps=steps, eta=eta, **kwargs)
