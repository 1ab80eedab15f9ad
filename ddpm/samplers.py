"""Sampling: a sampler is a timestep sequence plus a step rule, run by one loop.

The samplers: ancestral sampling (paper Algorithm 2), DDIM (Song, Meng & Ermon 2021) over any
subsequence of timesteps with any eta, and DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++:
Fast Solver for Guided Sampling of Diffusion Probabilistic Models"). Each is one small class;
:func:`sample_progressive` runs any of them, yielding one :class:`SampleStep` per reverse step,
and :func:`sample` returns the final x_0. ``SAMPLERS`` maps the names the command line and the
benchmarks use (:class:`SamplerKind`) to the classes.

All randomness, x_T included, is drawn from the optional ``generator``, so a seeded generator makes
a run reproducible. The loop keeps only what the next step needs: the current x_t and the previous
step (DPM-Solver++(2M) reads its x_0 estimate), so memory does not grow with the number of steps.
"""

from __future__ import annotations

import abc
import collections
import enum
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from ddpm.diffusion import GaussianDiffusion, Model, PMeanVar, autocast_model
from ddpm.schedule import parse_choice

__all__ = [
    "DDIM",
    "SAMPLERS",
    "Ancestral",
    "DPMSolverPP",
    "SampleStep",
    "Sampler",
    "SamplerKind",
    "ancestral_sample",
    "ancestral_sample_progressive",
    "ddim_sample",
    "ddim_sample_progressive",
    "ddim_timesteps",
    "make_sampler",
    "sample",
    "sample_progressive",
]


class SampleStep(NamedTuple):
    """One reverse step: the index t the model was evaluated at, the sample the step produced
    (x_0 after the last step), and the model's estimate of x_0 at that step; tensors [N, C, ...]."""

    t: int
    x_t: Tensor
    pred_x0: Tensor


class Sampler(abc.ABC):
    """A timestep sequence plus a step rule; :func:`sample_progressive` runs it."""

    @abc.abstractmethod
    def sequence(self, T: int) -> list[int]:
        """The increasing indices in {0, ..., T-1} the model is evaluated at (run last first)."""

    @abc.abstractmethod
    def step(
        self,
        diffusion: GaussianDiffusion,
        x_t: Tensor,
        p: PMeanVar,
        t: int,
        s: int | None,
        previous: SampleStep | None,
        generator: torch.Generator | None,
    ) -> Tensor:
        """x_s [N, C, ...] from x_t and the model's output at t (``p``, from `p_mean_variance`).

        s is the next index of the sequence, None after the last (x_0, alpha_bar = 1);
        ``previous`` is the step that produced x_t (None at the first step).
        """

    @classmethod
    @abc.abstractmethod
    def from_options(cls, T: int, steps: int | None, eta: float) -> Sampler:
        """The sampler for the command line's options (a step count and DDIM's eta)."""


@dataclass(frozen=True)
class Ancestral(Sampler):
    """All T steps of p(x_{t-1} | x_t) (paper Algorithm 2): x_{t-1} = mu_theta + sigma_t z,
    with z = 0 at the last step."""

    def sequence(self, T: int) -> list[int]:
        return list(range(T))

    def step(self, diffusion, x_t, p, t, s, previous, generator):
        if s is None:
            return p.mean
        return p.mean + p.variance**0.5 * _randn_like(p.mean, generator)

    @classmethod
    def from_options(cls, T: int, steps: int | None, eta: float) -> Ancestral:
        """The command-line options: ``steps`` must be None or T; ``eta`` plays no part."""
        if steps not in (None, T):
            raise ValueError(
                f"steps = {steps}; ancestral sampling runs all T = {T} steps, "
                "use the ddim or dpmsolver++ sampler for fewer"
            )
        return cls()


@dataclass(frozen=True)
class DDIM(Sampler):
    """DDIM (Song et al. 2021, Eq. 12) over an increasing subsequence of timestep indices.

    Give ``steps`` (evenly spaced, see :func:`ddim_timesteps`) or explicit ``timesteps``, which
    take precedence. From index t to the next chosen index s (alpha_bar_s = 1 after the last):
        x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma^2) eps_hat + sigma z,
        sigma = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s)
    (Song et al. Eq. 16). eta = 0 is deterministic given x_T; eta = 1 over all T steps is
    ancestral sampling with sigma_t^2 = beta_tilde_t.
    """

    steps: int | None = 50
    timesteps: Sequence[int] | None = None
    eta: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta = {self.eta!r}; need 0 <= eta <= 1")

    def sequence(self, T: int) -> list[int]:
        return _respaced(T, self.steps, self.timesteps)

    def step(self, diffusion, x_t, p, t, s, previous, generator):
        alpha_bar = diffusion.schedule.alpha_bar
        ab_t = float(alpha_bar[t])
        ab_s = float(alpha_bar[s]) if s is not None else 1.0
        sigma = self.eta * math.sqrt((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s))
        x = math.sqrt(ab_s) * p.pred_x0 + math.sqrt(max(1 - ab_s - sigma**2, 0.0)) * p.pred_eps
        if sigma > 0:
            x = x + sigma * _randn_like(x, generator)
        return x

    @classmethod
    def from_options(cls, T: int, steps: int | None, eta: float) -> DDIM:
        """The command-line options: ``steps`` evenly spaced (default 50, or T if smaller)."""
        return cls(steps=min(50, T) if steps is None else steps, eta=eta)


@dataclass(frozen=True)
class DPMSolverPP(Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): a deterministic multistep solver of the
    diffusion ODE in its data-prediction form, over timesteps chosen as for :class:`DDIM`.

    With alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t) and the half log-SNR
    lambda_t = log(alpha_t / sigma_t), a step from t to s, h = lambda_s - lambda_t, is
        x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D
    (D = x0_hat_t at the first step: the first-order update, which is DDIM with eta = 0),
    and from the second step on, with r = h_prev / h and x0_hat_prev of the previous index,
        D = (1 + 1 / (2 r)) x0_hat_t - 1 / (2 r) x0_hat_prev.
    The last step lands on sigma = 0, where the update is x_0 = x0_hat_t; diffusers'
    `DPMSolverMultistepScheduler` (solver_order 2, final_sigmas_type "zero") does the same.
    """

    steps: int | None = 20
    timesteps: Sequence[int] | None = None

    def sequence(self, T: int) -> list[int]:
        return _respaced(T, self.steps, self.timesteps)

    def step(self, diffusion, x_t, p, t, s, previous, generator):
        if s is None:
            return p.pred_x0
        ab_t, ab_s = float(diffusion.schedule.alpha_bar[t]), float(diffusion.schedule.alpha_bar[s])
        h = _half_log_snr(ab_s) - _half_log_snr(ab_t)
        d = p.pred_x0
        if previous is not None:
            ab_prev = float(diffusion.schedule.alpha_bar[previous.t])
            r = (_half_log_snr(ab_t) - _half_log_snr(ab_prev)) / h
            d = (1 + 1 / (2 * r)) * p.pred_x0 - 1 / (2 * r) * previous.pred_x0
        sigma_ratio = math.sqrt((1 - ab_s) / (1 - ab_t))
        return sigma_ratio * x_t - math.sqrt(ab_s) * math.expm1(-h) * d

    @classmethod
    def from_options(cls, T: int, steps: int | None, eta: float) -> DPMSolverPP:
        """The command-line options: ``steps`` (default 20, or T if smaller); eta must be 0."""
        if eta != 0:
            raise ValueError(f"eta = {eta!r}; DPM-Solver++(2M) is deterministic, leave eta at 0")
        return cls(steps=min(20, T) if steps is None else steps)


def _half_log_snr(alpha_bar: float) -> float:
    """lambda = log(alpha / sigma) = log(alpha_bar / (1 - alpha_bar)) / 2, the half log-SNR."""
    return 0.5 * (math.log(alpha_bar) - math.log1p(-alpha_bar))


class SamplerKind(enum.Enum):
    ANCESTRAL = "ancestral"  # all T steps of p(x_{t-1} | x_t) (paper Algorithm 2)
    DDIM = "ddim"  # any subsequence of timesteps; eta = 0 deterministic, eta = 1 like ancestral
    DPM_SOLVER_PP = "dpmsolver++"  # DPM-Solver++(2M): deterministic, second order, few steps


# The one table from names to samplers: the command line, `sample` and the benchmarks use it.
SAMPLERS: dict[SamplerKind, type[Sampler]] = {
    SamplerKind.ANCESTRAL: Ancestral,
    SamplerKind.DDIM: DDIM,
    SamplerKind.DPM_SOLVER_PP: DPMSolverPP,
}


def make_sampler(
    kind: SamplerKind | str, T: int, steps: int | None = None, eta: float = 0.0
) -> Sampler:
    """The sampler named ``kind`` for T diffusion steps, from the command line's options."""
    return SAMPLERS[parse_choice(SamplerKind, kind)].from_options(T, steps, eta)


def ddim_timesteps(T: int, steps: int) -> list[int]:
    """``steps`` indices spread evenly over {0, ..., T-1}, always including T-1 (pure noise)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps = {steps!r}; need an integer in [1, {T}] (T = {T})")
    return sorted({int(round(u)) for u in np.linspace(T - 1, 0, steps)})


def _respaced(T: int, steps: int | None, timesteps: Sequence[int] | None) -> list[int]:
    """Explicit ``timesteps`` (checked), else ``steps`` evenly spaced indices."""
    if timesteps is not None:
        return _check_timesteps(T, timesteps)
    if steps is not None:
        return ddim_timesteps(T, steps)
    raise ValueError("give either steps (a count in [1, T]) or timesteps (indices)")


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
def sample_progressive(
    diffusion: GaussianDiffusion,
    model: Model,
    shape: Sequence[int],
    sampler: Sampler | None = None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    clip_denoised: bool = True,
    progress: bool = True,
    x_T: Tensor | None = None,
    autocast_dtype: torch.dtype | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> Iterator[SampleStep]:
    """Runs ``sampler`` (default :class:`Ancestral`) from x_T to x_0, one step per index.

    shape: [N, C, ...] of the samples; ``x_T`` (default: a draw from N(0, I)) starts the chain;
    ``clip_denoised`` clamps every x_0 estimate to [-1, 1] (see `p_mean_variance`);
    ``autocast_dtype`` (e.g. torch.bfloat16) runs the network under autocast, the chain's own
    arithmetic staying float32 (see `autocast_model`); ``model_kwargs`` (e.g. ``{"y": labels}``,
    each [N]) goes to every call of the model.
    """
    model = autocast_model(model, autocast_dtype)
    sampler = Ancestral() if sampler is None else sampler
    seq = sampler.sequence(diffusion.T)
    x = _start(shape, generator, device, x_T)
    pairs = zip(reversed(seq), [*reversed(seq[:-1]), None], strict=True)
    previous = None
    for t, s in tqdm(pairs, total=len(seq), disable=not progress, desc="sampling"):
        p = diffusion.p_mean_variance(
            model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs
        )
        x = sampler.step(diffusion, x, p, t, s, previous, generator)
        previous = SampleStep(t, x, p.pred_x0)
        yield previous


def sample(
    diffusion: GaussianDiffusion,
    model: Model,
    shape: Sequence[int],
    sampler: Sampler | SamplerKind | str | None = None,
    steps: int | None = None,
    eta: float = 0.0,
    **kwargs: Any,
) -> Tensor:
    """Samples x_0 [N, C, ...] with ``sampler``: a :class:`Sampler`, or a name
    ("ancestral", "ddim", "dpmsolver++") built with ``steps`` and ``eta`` by
    :func:`make_sampler`; the default is ancestral sampling.

    Ancestral sampling always runs all T steps (``steps`` must be None or T) and ignores ``eta``;
    DDIM defaults to 50 steps and DPM-Solver++(2M) to 20 (T if fewer). Other keywords
    (generator, device, clip_denoised, progress, x_T, autocast_dtype, model_kwargs) go to
    :func:`sample_progressive`.
    """
    if not isinstance(sampler, Sampler):
        sampler = make_sampler(
            SamplerKind.ANCESTRAL if sampler is None else sampler, diffusion.T, steps, eta
        )
    elif steps is not None or eta != 0.0:
        raise ValueError("steps and eta configure a sampler given by name; set them on the object")
    return _last(sample_progressive(diffusion, model, shape, sampler, **kwargs))


def _last(trajectory: Iterator[SampleStep]) -> Tensor:
    """x_0 of a run; each step is dropped as soon as the next one is made."""
    return collections.deque(trajectory, maxlen=1)[0].x_t


# ----- the paper's names for the two classic samplers -----


def ancestral_sample_progressive(
    diffusion: GaussianDiffusion, model: Model, shape: Sequence[int], **kwargs: Any
) -> Iterator[SampleStep]:
    """Algorithm 2 step by step; keywords as :func:`sample_progressive`."""
    return sample_progressive(diffusion, model, shape, Ancestral(), **kwargs)


def ancestral_sample(
    diffusion: GaussianDiffusion, model: Model, shape: Sequence[int], **kwargs: Any
) -> Tensor:
    """Samples x_0 [N, C, ...] by Algorithm 2; keywords as :func:`sample_progressive`."""
    return _last(ancestral_sample_progressive(diffusion, model, shape, **kwargs))


def ddim_sample_progressive(
    diffusion: GaussianDiffusion,
    model: Model,
    shape: Sequence[int],
    *,
    steps: int | None = 50,
    timesteps: Sequence[int] | None = None,
    eta: float = 0.0,
    **kwargs: Any,
) -> Iterator[SampleStep]:
    """:class:`DDIM` step by step; other keywords as :func:`sample_progressive`."""
    sampler = DDIM(steps, timesteps, eta)
    return sample_progressive(diffusion, model, shape, sampler, **kwargs)


def ddim_sample(
    diffusion: GaussianDiffusion,
    model: Model,
    shape: Sequence[int],
    *,
    steps: int | None = 50,
    timesteps: Sequence[int] | None = None,
    eta: float = 0.0,
    **kwargs: Any,
) -> Tensor:
    """Samples x_0 [N, C, ...] by :class:`DDIM`; other keywords as :func:`sample_progressive`."""
    trajectory = ddim_sample_progressive(
        diffusion, model, shape, steps=steps, timesteps=timesteps, eta=eta, **kwargs
    )
    return _last(trajectory)
