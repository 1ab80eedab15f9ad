"""A small residual MLP denoiser for 2-D toy data.

forward(x [N, dim], t [N] LongTensor) -> [N, dim] (or [N, 2 * dim] with `learn_sigma`, the second
half being the learned-range variance's v). The timestep enters through the same sinusoidal
embedding as the U-Net, mapped by a two-layer MLP and added inside every residual layer.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ddpm.unet import timestep_embedding


class _ResidualLayer(nn.Module):
    """h + W2 SiLU(W1 SiLU(LayerNorm(h)) + U temb): pre-norm keeps the residual stream's scale."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.temb_proj = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: Tensor, temb: Tensor) -> Tensor:
        z = self.fc1(F.silu(self.norm(h))) + self.temb_proj(temb)
        return h + self.fc2(F.silu(z))


class MLPDenoiser(nn.Module):
    """Residual MLP for points in R^dim.

    Args:
        dim: data dimension (2 for the toy distributions).
        hidden: width of every hidden layer and of the time embedding (even).
        depth: number of residual layers.
        learn_sigma: also output v for the learned-range variance, doubling the output width.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, learn_sigma: bool = False):
        super().__init__()
        if dim < 1 or depth < 1 or hidden < 2 or hidden % 2:
            raise ValueError(
                f"MLPDenoiser needs dim >= 1, depth >= 1 and an even hidden >= 2; "
                f"got dim={dim}, hidden={hidden}, depth={depth}"
            )
        self.dim = dim
        self.hidden = hidden
        self.out_dim = 2 * dim if learn_sigma else dim
        self.time_mlp = nn.Sequential(
            nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(_ResidualLayer(hidden) for _ in range(depth))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, self.out_dim)
        # Zero output layer: the untrained model predicts zeros, as the U-Net does.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"MLPDenoiser expects x of shape [N, {self.dim}], got {tuple(x.shape)}"
            )
        if t.shape != (x.shape[0],):
            raise ValueError(
                f"MLPDenoiser expects t of shape [N] = [{x.shape[0]}], got {tuple(t.shape)}"
            )
        temb = self.time_mlp(timestep_embedding(t, self.hidden))
        h = self.inp(x)
        for layer in self.layers:
            h = layer(h, temb)
        return self.out(F.silu(self.out_norm(h)))
