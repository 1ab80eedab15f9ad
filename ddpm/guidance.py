"""Classifier-free guidance (Ho and Salimans 2022): a class-conditional model, trained with some
of its labels replaced by a "no label" value, mixes its conditional and unconditional outputs:

    eps_guided = (1 + w) eps(x_t, t, y) - w eps(x_t, t, no label),    w >= 0

w is the guidance weight in the paper's convention: w = 0 is the conditional model itself, and a
larger w pushes samples towards what the label makes likely, at the cost of diversity.
`ClassifierFreeGuidance` wraps the network into another network with the same signature, so every
sampler runs it unchanged, with the labels as ``model_kwargs={"y": labels}``.

The two weights sum to one, so the same mixture of x_0, v or posterior-mean predictions gives
the x_0 of the mixed eps: the wrapper works for every `ddpm.diffusion.MeanType`. A model that also
outputs a variance (2C channels) has only its first C channels mixed; the variance channels are
the conditional model's, as in GLIDE (Nichol et al. 2022).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ddpm.diffusion import Model

__all__ = ["ClassifierFreeGuidance"]


class ClassifierFreeGuidance:
    """``guided(x_t [N, C, ...], t [N], y=labels [N]) -> [N, C', ...]`` with the first C
    channels (1 + w) model(x_t, t, y) - w model(x_t, t, null_label).

    Both branches run as one batch of 2N through ``model``; at w = 0 only the conditional one
    runs. Other keyword inputs go to both branches: tensors (batch first) repeated for the two
    halves, anything else unchanged.
    """

    def __init__(self, model: Model, guidance: float, null_label: int):
        if not guidance >= 0:  # also refuses NaN
            raise ValueError(f"guidance = {guidance!r}; need a weight w >= 0 (0: no guidance)")
        self.model, self.guidance, self.null_label = model, float(guidance), null_label

    def __call__(self, x_t: Tensor, t: Tensor, *, y: Tensor, **kwargs: Any) -> Tensor:
        if self.guidance == 0:
            return self.model(x_t, t, y=y, **kwargs)
        both = self.model(
            torch.cat([x_t, x_t]),
            torch.cat([t, t]),
            y=torch.cat([y, torch.full_like(y, self.null_label)]),
            **{name: _twice(value) for name, value in kwargs.items()},
        )
        cond, uncond = both.chunk(2)
        C = x_t.shape[1]
        mixed = (1 + self.guidance) * cond[:, :C] - self.guidance * uncond[:, :C]
        return torch.cat([mixed, cond[:, C:]], dim=1)


def _twice(value: Any) -> Any:
    return torch.cat([value, value]) if isinstance(value, Tensor) else value
