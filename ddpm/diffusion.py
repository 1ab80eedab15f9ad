"""The forward process q and the reverse process p of a DDPM (Ho et al. 2020, Sec. 2-3).

Shapes: data x0, x_t, eps are [N, C, ...] (any number of trailing dims); timesteps t are integer
tensors [N] of indices in {0, ..., T-1} (see :mod:`ddpm.schedule` for the convention). A model is
any callable ``model(x_t, t, **model_kwargs) -> Tensor``; the process is handed the model, it
never owns it. ``model_kwargs`` (a dict, default None: no keywords) carries conditioning such as
class labels ``{"y": labels [N]}``; every method that calls the model passes it on unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ddpm.schedule import NoiseSchedule, check_timesteps, extract, parse_choice, table_dtype

__all__ = [
    "GaussianDiffusion",
    "MeanType",
    "MeanVar",
    "Model",
    "PMeanVar",
    "VarType",
    "autocast_model",
    "parse_choice",
]

Model = Callable[..., Tensor]  # model(x_t [N, C, ...], t [N], **model_kwargs) -> [N, C', ...]


class MeanType(enum.Enum):
    """What the network's (first C) output channels predict."""

    EPS = "eps"  # the noise eps, the paper's choice (Eq. 11)
    X0 = "x0"  # the clean data x_0 directly
    V = "v"  # v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans & Ho 2022)
    MU = "mu"  # the posterior mean mu_tilde_t itself, the paper's baseline (Table 2)


class VarType(enum.Enum):
    """How the reverse-process variance sigma_t^2 is chosen (paper Sec. 3.2)."""

    FIXED_SMALL = "fixed_small"  # sigma_t^2 = beta_tilde_t, optimal for a point-mass x_0
    FIXED_LARGE = "fixed_large"  # sigma_t^2 = beta_t, optimal for x_0 ~ N(0, I)
    LEARNED_RANGE = "learned_range"  # log-interpolated between the two (Nichol & Dhariwal 2021)


class MeanVar(NamedTuple):
    """A diagonal Gaussian; each field [N, C, ...] (the variances are numbers for one int t)."""

    mean: Tensor
    variance: Tensor | float
    log_variance: Tensor | float


class PMeanVar(NamedTuple):
    """p(x_{t-1} | x_t) together with the model's estimates of x_0 and eps; each [N, C, ...]
    (a fixed variance is a number when t is one int for the whole batch)."""

    mean: Tensor
    variance: Tensor | float
    log_variance: Tensor | float
    pred_x0: Tensor
    pred_eps: Tensor


class _Tables(NamedTuple):
    """The tables the process reads, each [T]: float64 numpy arrays, or torch copies of them on
    one device (read with `extract`)."""

    sqrt_alpha_bar: np.ndarray | Tensor
    sqrt_one_minus_alpha_bar: np.ndarray | Tensor
    one_minus_alpha_bar: np.ndarray | Tensor
    log_one_minus_alpha_bar: np.ndarray | Tensor
    sqrt_recip_alpha_bar: np.ndarray | Tensor
    sqrt_recipm1_alpha_bar: np.ndarray | Tensor
    posterior_mean_coef_x0: np.ndarray | Tensor
    posterior_mean_coef_xt: np.ndarray | Tensor
    beta_tilde: np.ndarray | Tensor
    log_beta_tilde_clipped: np.ndarray | Tensor
    log_betas: np.ndarray | Tensor
    sigma2: np.ndarray | Tensor | None  # a fixed reverse variance sigma_t^2; None when learned
    log_sigma2: np.ndarray | Tensor | None


class GaussianDiffusion:
    """The forward and reverse processes for one noise schedule and one parameterisation.

    ``mean_type`` and ``var_type`` take enum members or names (``"eps"``, ``"fixed_large"``).
    Every method that takes timesteps checks them once (`ddpm.schedule.check_timesteps`). For
    tensor timesteps it reads torch copies of its tables, made once per device the first time data
    on that device arrives, so a call moves no table and never waits for the device.
    """

    def __init__(
        self,
        schedule: NoiseSchedule,
        mean_type: MeanType | str = MeanType.EPS,
        var_type: VarType | str = VarType.FIXED_LARGE,
    ) -> None:
        self.schedule = schedule
        self.mean_type = parse_choice(MeanType, mean_type)
        self.var_type = parse_choice(VarType, var_type)
        s = schedule
        # At the decoder step (index 0) both fixed choices use beta_tilde[1], as the paper's code
        # does: beta_tilde[0] = 0 would leave the decoder no spread at all, and beta_tilde[1] gives
        # a better decoder likelihood than betas[0]. It is the value that clips the log posterior
        # variance (NoiseSchedule.log_beta_tilde_clipped).
        first = np.exp(s.log_beta_tilde_clipped[0])
        small = np.append(first, s.beta_tilde[1:])
        large = np.append(first, s.betas[1:])
        sigma2, log_sigma2 = {
            VarType.FIXED_SMALL: (small, s.log_beta_tilde_clipped),
            VarType.FIXED_LARGE: (large, np.log(large)),
            VarType.LEARNED_RANGE: (None, None),
        }[self.var_type]
        self._host_tables = _Tables(
            sqrt_alpha_bar=s.sqrt_alpha_bar,
            sqrt_one_minus_alpha_bar=s.sqrt_one_minus_alpha_bar,
            one_minus_alpha_bar=1.0 - s.alpha_bar,
            log_one_minus_alpha_bar=np.log1p(-s.alpha_bar),
            sqrt_recip_alpha_bar=s.sqrt_recip_alpha_bar,
            sqrt_recipm1_alpha_bar=s.sqrt_recipm1_alpha_bar,
            posterior_mean_coef_x0=s.posterior_mean_coef_x0,
            posterior_mean_coef_xt=s.posterior_mean_coef_xt,
            beta_tilde=s.beta_tilde,
            log_beta_tilde_clipped=s.log_beta_tilde_clipped,
            log_betas=np.log(s.betas),
            sigma2=sigma2,
            log_sigma2=log_sigma2,
        )
        self._device_tables: dict[torch.device, _Tables] = {}

    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.schedule.T

    def model_out_channels(self, data_channels: int) -> int:
        """Channels the model returns: C, or 2C when it also outputs a variance (learned range)."""
        return 2 * data_channels if self.var_type is VarType.LEARNED_RANGE else data_channels

    def _tables(self, t: Tensor | int, x: Tensor) -> _Tables:
        """Check t against x [N, ...] and return the tables to read at t: the numpy ones for one
        int t (entries become numbers), else the copies on x's device, made on first use."""
        check_timesteps(t, self.T, x)
        if not isinstance(t, Tensor):
            return self._host_tables
        tables = self._device_tables.get(x.device)
        if tables is None:
            dtype = table_dtype(x.device)
            tables = _Tables(
                *(
                    None if a is None else torch.tensor(a, dtype=dtype, device=x.device)
                    for a in self._host_tables
                )
            )
            self._device_tables[x.device] = tables
        return tables

    # ----- forward process q -----

    def q_mean_variance(self, x0: Tensor, t: Tensor) -> MeanVar:
        """q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (paper Eq. 4)."""
        c = self._tables(t, x0)
        mean = extract(c.sqrt_alpha_bar, t, x0) * x0
        variance = _per_element(extract(c.one_minus_alpha_bar, t, x0), x0)
        log_variance = _per_element(extract(c.log_one_minus_alpha_bar, t, x0), x0)
        return MeanVar(mean, variance, log_variance)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """Draw x_t ~ q(x_t | x_0): sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Eq. 4).

        x0, noise: [N, C, ...]; t: [N]. ``noise`` defaults to a fresh standard normal draw.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        _check_same_shape(x0=x0, noise=noise)
        c = self._tables(t, x0)
        return (
            extract(c.sqrt_alpha_bar, t, x0) * x0
            + extract(c.sqrt_one_minus_alpha_bar, t, x0) * noise
        )

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor | int) -> MeanVar:
        """q(x_{t-1} | x_t, x_0) = N(mu_tilde_t(x_t, x_0), beta_tilde_t I) (paper Eqs. 6-7).

        The log variance is the clipped one: at index 0, where beta_tilde is 0, it holds
        log beta_tilde[1].
        """
        _check_same_shape(x0=x0, x_t=x_t)
        c = self._tables(t, x_t)
        variance = _per_element(extract(c.beta_tilde, t, x_t), x_t)
        log_variance = _per_element(extract(c.log_beta_tilde_clipped, t, x_t), x_t)
        return MeanVar(_posterior_mean(c, x0, x_t, t), variance, log_variance)

    # ----- reverse process p -----

    def p_mean_variance(
        self,
        model: Model,
        x_t: Tensor,
        t: Tensor | int,
        clip_denoised: bool = True,
        model_kwargs: dict[str, Any] | None = None,
    ) -> PMeanVar:
        """p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2 I) (paper Eq. 1 and Sec. 3.2).

        The mean is the posterior mean at the model's estimate of x_0 (for EPS this is Eq. 11),
        except under MU, where it is the model's output itself and x_0 is read back from it.
        ``clip_denoised`` clamps the x_0 estimate to the data range [-1, 1] (under MU, as in the
        paper's code, that changes the reported estimates but not the mean); ``pred_eps`` is the
        noise consistent with the (possibly clamped) estimate.
        t: indices [N], or one int for the whole batch (the samplers' case: every coefficient is
        then a number, see `extract`, and so are a fixed variance and its log).
        ``model_kwargs``: extra keyword inputs of the model (e.g. ``{"y": labels}``), or None.
        """
        c = self._tables(t, x_t)
        t_model = t if isinstance(t, Tensor) else torch.full((x_t.shape[0],), t, device=x_t.device)
        out = self._model_output(model, x_t, t_model, model_kwargs)
        C = x_t.shape[1]
        if self.var_type is VarType.LEARNED_RANGE:
            out, v = out.split(C, dim=1)
            # v in [-1, 1] interpolates log sigma^2 from log beta_tilde to log beta (N&D Eq. 15).
            frac = (v + 1) / 2
            log_variance = frac * extract(c.log_betas, t, x_t) + (1 - frac) * extract(
                c.log_beta_tilde_clipped, t, x_t
            )
            variance = torch.exp(log_variance)
        else:
            variance = _per_element(extract(c.sigma2, t, x_t), x_t)
            log_variance = _per_element(extract(c.log_sigma2, t, x_t), x_t)

        if self.mean_type is MeanType.EPS:
            pred_x0 = _x0_from_eps(c, x_t, t, out)
        elif self.mean_type is MeanType.X0:
            pred_x0 = out
        elif self.mean_type is MeanType.V:
            pred_x0 = _x0_from_v(c, x_t, t, out)
        else:
            pred_x0 = _x0_from_mu(c, x_t, t, out)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        if self.mean_type is MeanType.EPS and not clip_denoised:
            pred_eps = out
        else:
            pred_eps = _eps_from_x0(c, x_t, t, pred_x0)
        if self.mean_type is MeanType.MU:
            mean = out
        else:
            mean = _posterior_mean(c, pred_x0, x_t, t)
        return PMeanVar(mean, variance, log_variance, pred_x0, pred_eps)

    def _model_output(
        self, model: Model, x_t: Tensor, t: Tensor, model_kwargs: dict[str, Any] | None
    ) -> Tensor:
        out = model(x_t, t, **(model_kwargs or {}))
        expected = (x_t.shape[0], self.model_out_channels(x_t.shape[1]), *x_t.shape[2:])
        if tuple(out.shape) != expected:
            raise ValueError(
                f"model output has shape {tuple(out.shape)}; expected {expected} for x_t of shape "
                f"{tuple(x_t.shape)} with mean type {self.mean_type.value} and variance type "
                f"{self.var_type.value}"
            )
        return out

    # ----- conversions among x0, eps, v and the score (all from x_t = sqrt(ab) x0 + sqrt(1-ab) eps)

    def x0_from_eps(self, x_t: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
        """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (inverting Eq. 4)."""
        return _x0_from_eps(self._tables(t, x_t), x_t, t, eps)

    def eps_from_x0(self, x_t: Tensor, t: Tensor | int, x0: Tensor) -> Tensor:
        """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
        return _eps_from_x0(self._tables(t, x_t), x_t, t, x0)

    def v_from_x0_eps(self, x0: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
        """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022)."""
        c = self._tables(t, x0)
        return (
            extract(c.sqrt_alpha_bar, t, x0) * eps - extract(c.sqrt_one_minus_alpha_bar, t, x0) * x0
        )

    def x0_from_v(self, x_t: Tensor, t: Tensor | int, v: Tensor) -> Tensor:
        """x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v."""
        return _x0_from_v(self._tables(t, x_t), x_t, t, v)

    def eps_from_v(self, x_t: Tensor, t: Tensor | int, v: Tensor) -> Tensor:
        """eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v."""
        c = self._tables(t, x_t)
        return (
            extract(c.sqrt_one_minus_alpha_bar, t, x_t) * x_t
            + extract(c.sqrt_alpha_bar, t, x_t) * v
        )

    def x0_from_mu(self, x_t: Tensor, t: Tensor | int, mu: Tensor) -> Tensor:
        """x_0 = (mu_tilde_t - c_t x_t) / b_t, inverting the posterior mean of Eq. 7,
        mu_tilde_t = b_t x_0 + c_t x_t (b_t > 0 at every index, b_0 = 1)."""
        return _x0_from_mu(self._tables(t, x_t), x_t, t, mu)

    def score_from_eps(self, eps: Tensor, t: Tensor | int) -> Tensor:
        """The score grad_x log q(x_t | x_0) = -eps / sqrt(1 - alpha_bar_t) (paper Sec. 3.2).

        With the model's eps this estimates the score of the marginal q(x_t).
        """
        c = self._tables(t, eps)
        return -eps / extract(c.sqrt_one_minus_alpha_bar, t, eps)


# The formulas the methods above share, on tables already chosen (and t already checked) by
# `GaussianDiffusion._tables`: p_mean_variance checks its t once and then uses several of them.


def _posterior_mean(c: _Tables, x0: Tensor, x_t: Tensor, t: Tensor | int) -> Tensor:
    """mu_tilde_t(x_t, x_0) = b_t x_0 + c_t x_t (paper Eq. 7)."""
    return (
        extract(c.posterior_mean_coef_x0, t, x_t) * x0
        + extract(c.posterior_mean_coef_xt, t, x_t) * x_t
    )


def _x0_from_eps(c: _Tables, x_t: Tensor, t: Tensor | int, eps: Tensor) -> Tensor:
    return (
        extract(c.sqrt_recip_alpha_bar, t, x_t) * x_t
        - extract(c.sqrt_recipm1_alpha_bar, t, x_t) * eps
    )


def _eps_from_x0(c: _Tables, x_t: Tensor, t: Tensor | int, x0: Tensor) -> Tensor:
    return (extract(c.sqrt_recip_alpha_bar, t, x_t) * x_t - x0) / extract(
        c.sqrt_recipm1_alpha_bar, t, x_t
    )


def _x0_from_v(c: _Tables, x_t: Tensor, t: Tensor | int, v: Tensor) -> Tensor:
    return extract(c.sqrt_alpha_bar, t, x_t) * x_t - extract(c.sqrt_one_minus_alpha_bar, t, x_t) * v


def _x0_from_mu(c: _Tables, x_t: Tensor, t: Tensor | int, mu: Tensor) -> Tensor:
    return (mu - extract(c.posterior_mean_coef_xt, t, x_t) * x_t) / extract(
        c.posterior_mean_coef_x0, t, x_t
    )


def autocast_model(model: Model, dtype: torch.dtype | None) -> Model:
    """``model`` run under ``torch.autocast`` at ``dtype`` (e.g. torch.bfloat16) on the device type
    of its input, its output cast back to the input's dtype, so that the process's arithmetic
    around the network stays in full precision. None returns ``model`` itself."""
    if dtype is None:
        return model

    def network(x_t: Tensor, *args, **kwargs) -> Tensor:
        with torch.autocast(x_t.device.type, dtype=dtype):
            out = model(x_t, *args, **kwargs)
        return out.to(x_t.dtype)

    return network


def _per_element(value: Tensor | float, x: Tensor) -> Tensor | float:
    """A gathered [N, 1, ...] coefficient expanded to x's shape; a number (one shared t) as is."""
    return value.expand_as(x) if isinstance(value, Tensor) else value


def _check_same_shape(**tensors: Tensor) -> None:
    (name_a, a), (name_b, b) = tensors.items()
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; "
            "they must match"
        )
