"""The noise schedule beta_1..beta_T and every float64 table derived from it.

Timestep convention (written here once; every module follows it)
-----------------------------------------------------------------
A timestep is an integer index ``t`` in ``{0, ..., T-1}``; index ``t`` is the paper's step ``t+1``.
So ``betas[0]`` is the paper's beta_1, ``alpha_bar[t]`` is alpha_bar_{t+1}, the noisy sample drawn
at index ``t`` is the paper's x_{t+1}, and the reverse step at index ``t`` maps x_{t+1} to x_t
(index 0 is the decoder step x_1 -> x_0). Every table has length T and is read with one helper,
:func:`extract`, which gathers ``table[t]`` for a batch of indices and shapes the result to
broadcast against the data. Tables are float64 numpy arrays; data live in [-1, 1]. Timesteps are
checked once, where they enter the package's functions, by :func:`check_timesteps`, never in a
table read: a read on a GPU then never waits for the device.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "NoiseSchedule",
    "ScheduleKind",
    "check_timesteps",
    "cosine_schedule",
    "extract",
    "linear_schedule",
    "make_schedule",
    "parse_choice",
    "table_dtype",
]

E = TypeVar("E", bound=enum.Enum)


def parse_choice(enum_cls: type[E], value: E | str) -> E:
    """Turn a name such as ``"eps"`` or ``"FIXED_LARGE"`` into a member of ``enum_cls``.

    The one place where strings (command line, config files) become enums. Names and values match
    case-insensitively, with ``-`` read as ``_``; a member of ``enum_cls`` is returned unchanged.
    """
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        key = value.strip().lower().replace("-", "_")
        for member in enum_cls:
            if key in (member.name.lower(), str(member.value).lower()):
                return member
    valid = ", ".join(str(m.value) for m in enum_cls)
    raise ValueError(f"unknown {enum_cls.__name__} {value!r}; valid names: {valid}")


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """Float64 tables of length T, all indexed by timestep index t (see the module docstring).

    Build one with :meth:`from_betas`, :func:`linear_schedule`, :func:`cosine_schedule` or
    :func:`make_schedule`; the tables are read-only.
    """

    betas: np.ndarray  # beta_t, the forward-process variances (paper Eq. 2)
    alphas: np.ndarray  # alpha_t = 1 - beta_t
    alpha_bar: np.ndarray  # alpha_bar_t = prod_{s<=t} alpha_s (paper Eq. 4)
    alpha_bar_prev: np.ndarray  # alpha_bar_{t-1}, with alpha_bar_0 = 1
    sqrt_alpha_bar: np.ndarray  # mean coefficient of q(x_t | x_0)
    sqrt_one_minus_alpha_bar: np.ndarray  # standard deviation of q(x_t | x_0)
    sqrt_recip_alpha_bar: np.ndarray  # 1 / sqrt(alpha_bar_t)
    sqrt_recipm1_alpha_bar: np.ndarray  # sqrt(1 / alpha_bar_t - 1)
    beta_tilde: np.ndarray  # posterior variance of q(x_{t-1} | x_t, x_0) (paper Eq. 7); 0 at t=0
    log_beta_tilde_clipped: np.ndarray  # log beta_tilde with the t=0 entry set to the t=1 entry
    posterior_mean_coef_x0: np.ndarray  # weight of x_0 in the posterior mean (paper Eq. 7)
    posterior_mean_coef_xt: np.ndarray  # weight of x_t in the posterior mean (paper Eq. 7)
    snr: np.ndarray  # signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t)

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return len(self.betas)

    @classmethod
    def from_betas(cls, betas: Iterable[float] | np.ndarray) -> NoiseSchedule:
        """Check beta_1..beta_T (each finite, in the open interval (0, 1)) and derive the tables."""
        betas = np.array(betas, dtype=np.float64)
        if betas.ndim != 1:
            raise ValueError(f"betas must be one-dimensional, got shape {betas.shape}")
        if len(betas) < 1:
            raise ValueError("T = 0 steps; need T >= 1 betas")
        bad = np.flatnonzero(~np.isfinite(betas) | (betas <= 0) | (betas >= 1))
        if len(bad):
            i = bad[0]
            raise ValueError(
                f"betas[{i}] = {float(betas[i])!r}; every beta must be finite and in (0, 1)"
            )

        alphas = 1.0 - betas
        alpha_bar = np.cumprod(alphas)
        alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
        one_minus_alpha_bar = 1.0 - alpha_bar
        beta_tilde = betas * (1.0 - alpha_bar_prev) / one_minus_alpha_bar
        # beta_tilde[0] = 0, so its log is -inf. Like the official DDPM code, reuse the t=1 value
        # there; it only enters as the lower end of a learned variance range. With T = 1 there is no
        # t=1 entry, and beta_1 stands in for it.
        first = beta_tilde[1] if len(betas) > 1 else betas[0]
        tables = dict(
            betas=betas,
            alphas=alphas,
            alpha_bar=alpha_bar,
            alpha_bar_prev=alpha_bar_prev,
            sqrt_alpha_bar=np.sqrt(alpha_bar),
            sqrt_one_minus_alpha_bar=np.sqrt(one_minus_alpha_bar),
            sqrt_recip_alpha_bar=np.sqrt(1.0 / alpha_bar),
            sqrt_recipm1_alpha_bar=np.sqrt(1.0 / alpha_bar - 1.0),
            beta_tilde=beta_tilde,
            log_beta_tilde_clipped=np.log(np.append(first, beta_tilde[1:])),
            posterior_mean_coef_x0=betas * np.sqrt(alpha_bar_prev) / one_minus_alpha_bar,
            posterior_mean_coef_xt=(1.0 - alpha_bar_prev) * np.sqrt(alphas) / one_minus_alpha_bar,
            snr=alpha_bar / one_minus_alpha_bar,
        )
        for table in tables.values():
            table.setflags(write=False)
        return cls(**tables)


def linear_schedule(
    T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> NoiseSchedule:
    """The paper's schedule (Sec. 4): betas rising linearly from ``beta_start`` to ``beta_end``."""
    _check_T(T)
    return NoiseSchedule.from_betas(np.linspace(beta_start, beta_end, T, dtype=np.float64))


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Nichol & Dhariwal (2021, Eq. 17): alpha_bar(u) proportional to cos^2(pi/2 (u + s) / (1 + s)).

    beta_t = 1 - alpha_bar(t/T) / alpha_bar((t-1)/T), clipped at ``max_beta`` because the last
    steps would otherwise approach 1 (the offset ``s`` keeps the first betas from being too small).
    """
    _check_T(T)
    # With phi(u) = pi/2 (u + s) / (1 + s): beta_t = 1 - cos^2(phi_t) / cos^2(phi_{t-1})
    # = sin(phi_t + phi_{t-1}) sin(phi_t - phi_{t-1}) / cos^2(phi_{t-1}), which avoids the
    # cancellation in 1 - ratio for the small early betas.
    phi = (np.arange(T + 1, dtype=np.float64) / T + s) / (1 + s) * (math.pi / 2)
    step = math.pi / 2 / (T * (1 + s))  # phi_t - phi_{t-1}
    betas = np.sin(phi[1:] + phi[:-1]) * math.sin(step) / np.cos(phi[:-1]) ** 2
    betas = np.minimum(betas, max_beta)
    return NoiseSchedule.from_betas(betas)


class ScheduleKind(enum.Enum):
    LINEAR = "linear"  # Ho et al. 2020: 1e-4 to 0.02 at T = 1000
    COSINE = "cosine"  # Nichol & Dhariwal 2021: gentler at both ends


def make_schedule(kind: ScheduleKind | str, T: int = 1000) -> NoiseSchedule:
    """A named schedule with T steps.

    The paper's linear endpoints are for T = 1000; for other T both are scaled by 1000 / T (as
    Nichol & Dhariwal do) so that the sum of the betas, and with it alpha_bar at the last step,
    stays about the same. Below T = 21 the scaled beta_T would reach 1, which is rejected.
    """
    kind = parse_choice(ScheduleKind, kind)
    _check_T(T)
    if kind is ScheduleKind.LINEAR:
        scale = 1000 / T
        return linear_schedule(T, 1e-4 * scale, 0.02 * scale)
    return cosine_schedule(T)


def _check_T(T: int) -> None:
    if not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T = {T!r}; the number of steps must be an integer >= 1")


# Devices where torch._assert_async checks a value without the host waiting for it (on the CPU
# and the shape-only meta device it acts at once).
_ASYNC_ASSERT_DEVICES = ("cpu", "cuda", "meta")


def check_timesteps(t: torch.Tensor | int, T: int, x: torch.Tensor) -> None:
    """Check timesteps where they enter: an int in {0, ..., T-1}, or an integer tensor [N] of such
    indices, one per element of the batch x [N, ...]; a ValueError says what is wrong.

    The range of a tensor is checked without waiting for its device: on the CPU at once, on a CUDA
    device by an asynchronous assertion that fails the next synchronising call (a device-side
    assert) instead of making the host read the indices back. :func:`extract` checks no range, so
    that a table read never asks the device a question.
    """
    if not isinstance(t, torch.Tensor):
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
            raise ValueError(f"timestep {t!r} must be an integer index in [0, {T - 1}]")
        if not 0 <= t < T:
            raise ValueError(
                f"timestep {t} is out of range; valid indices are 0..{T - 1} (T = {T})"
            )
        return
    _check_index_tensor(t, T, x)
    if t.numel() == 0:
        return
    low, high = torch.aminmax(t)
    in_range = (low >= 0) & (high < T)
    message = f"timesteps out of range; valid indices are 0..{T - 1} (T = {T})"
    if t.device.type not in _ASYNC_ASSERT_DEVICES:
        if not in_range:  # no asynchronous assertion here: ask the device
            raise ValueError(message)
        return
    try:
        torch._assert_async(in_range, message)
    except RuntimeError:  # raised at once on the CPU, where reading t back costs nothing
        bad = t[(t < 0) | (t >= T)][0].item()
        raise ValueError(
            f"timestep {bad} is out of range; valid indices are 0..{T - 1} (T = {T})"
        ) from None


def _check_index_tensor(t: torch.Tensor, T: int, x: torch.Tensor) -> None:
    """dtype and shape of a timestep tensor: integer, [N] for x [N, ...] (no values read)."""
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"timesteps must be an integer tensor, indices in [0, {T - 1}]; got {t!r}")
    if t.dtype == torch.bool:
        raise ValueError(f"timesteps must be integer indices in [0, {T - 1}], got a bool tensor")
    if t.dim() != 1 or x.dim() < 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"timesteps have shape {tuple(t.shape)} but x has shape {tuple(x.shape)}; "
            "need one timestep per batch element, t of shape [N] for x of shape [N, ...]"
        )


def table_dtype(device: torch.device) -> torch.dtype:
    """The dtype of a table copied to ``device``: float64, except on MPS, which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def extract(
    table: np.ndarray | torch.Tensor, t: torch.Tensor | int, x: torch.Tensor
) -> torch.Tensor | float:
    """Gather ``table[t]`` for a batch of timestep indices and shape it to broadcast against ``x``.

    table: float64 array [T], or a torch copy of it on x's device (what `GaussianDiffusion` keeps
    per device, so that a read copies nothing). t: integer tensor [N] of indices in
    {0, ..., T-1}, whose range is *not* checked here (see :func:`check_timesteps`). x: [N, ...].
    Returns [N, 1, ..., 1] (as many dims as ``x``) with x's dtype and device; the gather happens in
    float64 (float32 on MPS) and only the result is cast.
    A Python int t is one index shared by the whole batch (a sampler's step): read from a numpy
    table, the entry is returned as a Python float, which broadcasts without a gather.
    """
    T = len(table)
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        check_timesteps(t, T, x)
        return table[t].to(x.dtype) if isinstance(table, torch.Tensor) else float(table[t])
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"timesteps must be an integer tensor, indices in [0, {T - 1}]; got {t!r}")
    _check_index_tensor(t, T, x)
    if not isinstance(table, torch.Tensor):
        table = torch.tensor(table, dtype=table_dtype(x.device), device=x.device)
    values = table[t.to(table.device)]
    return values.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
