"""The denoising U-Net of Ho et al. (2020), Appendix B.

The backbone follows PixelCNN++ (Salimans et al. 2017) as the paper's official code builds it:

- a sinusoidal embedding of the timestep index, passed through a two-layer MLP (ch -> 4ch -> 4ch)
  and added to the feature maps inside every residual block;
- per resolution, `num_res_blocks` residual blocks (GroupNorm, SiLU, 3x3 conv, + time embedding,
  GroupNorm, SiLU, dropout, 3x3 conv), each followed by single-head self-attention where the
  resolution is in `attn_resolutions` (16x16 for CIFAR-10);
- downsampling by a stride-2 3x3 conv, upsampling by nearest-neighbour doubling and a 3x3 conv;
- a middle of residual block, attention, residual block at the lowest resolution;
- on the way up, `num_res_blocks + 1` residual blocks per resolution, each fed the concatenation
  of the current features and one skip connection saved on the way down;
- a final GroupNorm, SiLU and 3x3 conv to the output channels.

Weights are initialised as in the official code: Xavier-uniform ("fan_avg") for every conv and
linear layer, zero biases, and zeros for the last conv of each residual block, the attention output
projection and the final conv. Every block therefore starts as the identity and the untrained
network outputs zeros.

A network here is any `model(x_t, t) -> Tensor` with `x_t` of shape [N, C, H, W] and `t` a
LongTensor [N] of timestep indices (see `ddpm.schedule` for the convention). A class-conditional
U-Net (`UNetConfig.num_classes`) also takes labels, `model(x_t, t, y=labels)`: a learned embedding
of the label is added to the time embedding, as in improved-diffusion. The label `num_classes`
itself means "no label", the unconditional model that classifier-free guidance needs
(`ddpm.guidance`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_GROUPS = 32  # the paper's GroupNorm group count


def timestep_embedding(
    t: Tensor, dim: int, max_period: float = 10000.0, freq_shift: int = 0
) -> Tensor:
    """Sinusoidal embedding of timesteps (Vaswani et al. 2017, section 3.5), as used by DDPM.

    Args:
        t: [N] timestep indices (any real or integer dtype).
        dim: embedding width, even.
        max_period: the longest wavelength, in timesteps.
        freq_shift: 0 or 1, see below; 1 makes the lowest frequency exactly 1 / max_period.

    Returns:
        [N, dim] float32 tensor: column i < dim/2 is sin(t * w_i), column dim/2 + i is cos(t * w_i),
        with frequencies w_i = max_period ** (-i / (dim/2 - freq_shift)), i = 0, ..., dim/2 - 1.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"timestep embedding width must be a positive even number, got {dim}")
    if freq_shift not in (0, 1) or dim // 2 <= freq_shift:
        raise ValueError(
            f"freq_shift must be 0 or 1 and below dim/2 = {dim // 2}, got {freq_shift}"
        )
    if t.ndim != 1:
        raise ValueError(f"timesteps must have shape [N], got {tuple(t.shape)}")
    half = dim // 2
    exponents = torch.arange(half, device=t.device, dtype=torch.float32) / (half - freq_shift)
    freqs = torch.exp(-math.log(max_period) * exponents)
    args = t.float()[:, None] * freqs[None, :]  # [N, half]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def num_groups(channels: int) -> int:
    """GroupNorm group count: 32 as in the paper, or, when `channels` is not a multiple of 32, the
    largest divisor of `channels` below 32, so that all groups have the same size."""
    return max(g for g in range(1, MAX_GROUPS + 1) if channels % g == 0)


def _group_norm(channels: int) -> nn.GroupNorm:
    # eps 1e-6 as in the official (TensorFlow) implementation.
    return nn.GroupNorm(num_groups(channels), channels, eps=1e-6)


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1)


class ResBlock(nn.Module):
    """Residual block with the time embedding added between the two convolutions.

    forward(x [N, in_ch, H, W], temb [N, temb_ch]) -> [N, out_ch, H, W]; `temb` has already been
    passed through SiLU (done once per forward pass, not once per block).
    """

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float):
        super().__init__()
        self.norm1 = _group_norm(in_ch)
        self.conv1 = _conv3x3(in_ch, out_ch)
        self.temb_proj = nn.Linear(temb_ch, out_ch)
        self.norm2 = _group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3x3(out_ch, out_ch)
        # A 1x1 conv matches the channel counts of the skip path when they differ.
        self.skip = nn.Conv2d(in_ch, out_ch, kernel_size=1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection.

    forward(x [N, C, H, W]) -> [N, C, H, W] = x + proj(softmax(q k^T / sqrt(C)) v), with q, k, v
    linear maps (1x1 convolutions) of GroupNorm(x) at each position.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)  # q, k, v stacked
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (N, HW, C); a view for channels_last
        q, k, v = self.qkv(tokens)[:, None].chunk(3, dim=-1)  # each (N, heads=1, HW, C)
        out = self.proj(F.scaled_dot_product_attention(q, k, v)[:, 0])  # (N, HW, C)
        return x + out.transpose(1, 2).reshape(n, c, h, w)


class _ResAttn(nn.Module):
    """A residual block, followed by attention at the resolutions that have it."""

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float, attn: bool):
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, temb_ch, dropout)
        self.attn = AttnBlock(out_ch) if attn else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.attn(self.res(x, temb))


# Down- and upsampling take (x, temb) like _ResAttn so that each path of the U-Net is one loop.
class _Downsample(nn.Module):
    def __init__(self, channels: int, pad_after: bool):
        super().__init__()
        self.pad_after = pad_after
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0 if pad_after else 1)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        if self.pad_after:  # one zero row below and one zero column to the right
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class _Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = _conv3x3(channels, channels)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a `UNet`. The defaults are the paper's CIFAR-10 model (Appendix B)."""

    in_channels: int = 3  # colour images; the output has the same channels (twice with learn_sigma)
    base_channels: int = 128  # the paper's width at full resolution for 32x32 data
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)  # width multiplier per resolution 32, 16, 8, 4
    num_res_blocks: int = 2  # the paper: two residual blocks per resolution
    attn_resolutions: tuple[int, ...] = (16,)  # the paper: self-attention at 16x16 only
    # The paper's CIFAR-10 value, best of {0.1, 0.2, 0.3, 0.4}; without dropout its samples showed
    # overfitting artifacts.
    dropout: float = 0.1
    image_size: int = 32  # side length the model is built for; places attention by resolution
    # Also output, per channel, the v in [-1, 1] of the learned-range variance (Nichol & Dhariwal
    # 2021); the paper itself fixes the variance, so this is off.
    learn_sigma: bool = False
    # The two choices below change no weight, only what the network computes with them. The
    # defaults follow improved-diffusion; the paper's own (TensorFlow) code, and the models it
    # released, use freq_shift=1 and downsample_pad_after=True (`ddpm.diffusers_io` reads both).
    freq_shift: int = 0  # frequencies max_period ** (-i / (half - freq_shift)) of the embedding
    # Downsampling pads one row and column after the image (TensorFlow's "SAME" padding for
    # stride 2) instead of one on every side.
    downsample_pad_after: bool = False
    # Class labels 0..num_classes-1 condition the network; None: unconditional (no label input).
    num_classes: int | None = None

    def __post_init__(self):
        # Lists (from a JSON config, say) become tuples so that configs compare and hash.
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        for name in ("in_channels", "base_channels", "num_res_blocks", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"UNetConfig.{name} must be positive, got {getattr(self, name)}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"UNetConfig.channel_mult must be positive, got {self.channel_mult}")
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 1
        ):
            raise ValueError(
                f"UNetConfig.num_classes must be None or a positive integer, got "
                f"{self.num_classes!r}"
            )
        if self.freq_shift not in (0, 1):
            raise ValueError(f"UNetConfig.freq_shift must be 0 or 1, got {self.freq_shift}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNetConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.image_size % self.min_divisor:
            raise ValueError(
                f"UNetConfig.image_size {self.image_size} must be divisible by "
                f"{self.min_divisor} (2 ** (len(channel_mult) - 1))"
            )
        resolutions = self.resolutions
        unused = [r for r in self.attn_resolutions if r not in resolutions]
        if unused:
            raise ValueError(
                f"UNetConfig.attn_resolutions {unused} are not among this U-Net's resolutions "
                f"{resolutions}"
            )

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def null_label(self) -> int | None:
        """The label that means "no label" (num_classes); None for an unconditional U-Net."""
        return self.num_classes

    @property
    def min_divisor(self) -> int:
        """Input height and width must be multiples of this (one halving per extra level)."""
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Side length at each level, from `image_size` down."""
        return tuple(self.image_size >> level for level in range(len(self.channel_mult)))


PRESETS: Mapping[str, UNetConfig] = MappingProxyType(
    {
        # Ho et al. 2020, Appendix B: 35.7M parameters.
        "cifar10": UNetConfig(),
        # scikit-learn's 8x8 digits: two levels (8x8 and 4x4), attention at 4x4. Sized for a CPU:
        # 32 channels give recognisable digits after ~1,500 steps at batch 64 (a few minutes on
        # two cores), where 64 channels cost three times as much per step. No dropout: such
        # short runs do not overfit.
        "digits": UNetConfig(
            in_channels=1,
            base_channels=32,
            channel_mult=(1, 2),
            attn_resolutions=(4,),
            dropout=0.0,
            image_size=8,
        ),
        # Every kind of block in a few thousand parameters, for tests.
        "tiny": UNetConfig(
            in_channels=1,
            base_channels=4,
            channel_mult=(1, 1),
            num_res_blocks=1,
            attn_resolutions=(4,),
            dropout=0.0,
            image_size=8,
        ),
    }
)


def unet_preset(name: str, **overrides) -> UNetConfig:
    """The preset `name` ("cifar10", "digits", "tiny") with some fields replaced, e.g.
    `unet_preset("digits", learn_sigma=True)`.

    Another `image_size` without `attn_resolutions` moves the attention with it: a resolution
    the new U-Net still has keeps its attention (the paper's 16x16 stays 16x16 at any size), one it
    lacks is replaced by the resolution at the same depth ("digits" at 16x16: 8x8 instead of 4x4).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; valid presets: {', '.join(PRESETS)}")
    valid = [f.name for f in fields(UNetConfig)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise ValueError(f"unknown UNetConfig fields {unknown}; valid fields: {', '.join(valid)}")
    preset = PRESETS[name]
    if "image_size" in overrides and "attn_resolutions" not in overrides:
        new = replace(preset, **overrides, attn_resolutions=()).resolutions  # validates the size
        moved = (
            r if r in new else new[min(preset.resolutions.index(r), len(new) - 1)]
            for r in preset.attn_resolutions
        )
        overrides["attn_resolutions"] = tuple(dict.fromkeys(moved))
    return replace(preset, **overrides)


class UNet(nn.Module):
    """The DDPM U-Net: forward(x [N, C, H, W], t [N] LongTensor) -> [N, out_channels, H, W];
    a class-conditional one takes forward(x, t, y [N] LongTensor in 0..num_classes)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        ch = config.base_channels
        temb_ch = 4 * ch
        dropout = config.dropout

        self.time_mlp = nn.Sequential(
            nn.Linear(ch, temb_ch), nn.SiLU(), nn.Linear(temb_ch, temb_ch)
        )
        # One more row than classes: the last is the "no label" of classifier-free guidance.
        self.label_emb = (
            None if config.num_classes is None else nn.Embedding(config.num_classes + 1, temb_ch)
        )
        self.conv_in = _conv3x3(config.in_channels, ch)

        self.down = nn.ModuleList()
        skip_chs = [ch]  # channels of each saved skip connection, in order
        cur = ch
        last = len(config.channel_mult) - 1
        for level, (mult, res) in enumerate(
            zip(config.channel_mult, config.resolutions, strict=True)
        ):
            attn = res in config.attn_resolutions
            for _ in range(config.num_res_blocks):
                self.down.append(_ResAttn(cur, ch * mult, temb_ch, dropout, attn))
                cur = ch * mult
                skip_chs.append(cur)
            if level != last:
                self.down.append(_Downsample(cur, config.downsample_pad_after))
                skip_chs.append(cur)

        self.mid = nn.ModuleList(
            [
                _ResAttn(cur, cur, temb_ch, dropout, attn=True),
                _ResAttn(cur, cur, temb_ch, dropout, attn=False),
            ]
        )

        self.up = nn.ModuleList()
        for level in reversed(range(len(config.channel_mult))):
            mult, res = config.channel_mult[level], config.resolutions[level]
            attn = res in config.attn_resolutions
            for _ in range(config.num_res_blocks + 1):
                self.up.append(_ResAttn(cur + skip_chs.pop(), ch * mult, temb_ch, dropout, attn))
                cur = ch * mult
            if level != 0:
                self.up.append(_Upsample(cur))

        self.out = nn.Sequential(_group_norm(cur), nn.SiLU(), _conv3x3(cur, config.out_channels))
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        last_layers = [self.out[-1]]
        for module in self.modules():
            if isinstance(module, ResBlock):
                last_layers.append(module.conv2)
            elif isinstance(module, AttnBlock):
                last_layers.append(module.proj)
                for weight in module.qkv.weight.data.chunk(3):  # q, k, v: three C x C layers
                    nn.init.xavier_uniform_(weight)
        for layer in last_layers:
            nn.init.zeros_(layer.weight)

    def _check_input(self, x: Tensor, t: Tensor, y: Tensor | None) -> None:
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ValueError(
                f"UNet expects x of shape [N, {c.in_channels}, H, W], got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % c.min_divisor or w % c.min_divisor:
            raise ValueError(
                f"UNet input height and width must be multiples of {c.min_divisor} "
                f"({len(c.channel_mult)} resolutions), got {h}x{w}"
            )
        if t.shape != (x.shape[0],):
            raise ValueError(f"UNet expects t of shape [N] = [{x.shape[0]}], got {tuple(t.shape)}")
        if c.num_classes is None:
            if y is not None:
                raise ValueError(
                    "this UNet is unconditional (num_classes=None) and takes no labels y"
                )
            return
        if y is None:
            raise ValueError(
                f"this UNet is class-conditional: give labels y [N] in 0..{c.num_classes} "
                f"({c.num_classes} = no label)"
            )
        if y.shape != (x.shape[0],) or y.is_floating_point() or y.is_complex():
            raise ValueError(
                f"UNet expects integer labels y of shape [N] = [{x.shape[0]}], got "
                f"{y.dtype} of shape {tuple(y.shape)}"
            )

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        # The labels' range is not checked here (that would wait on the device at every call);
        # the entry points that take labels from a user check it once.
        self._check_input(x, t, y)
        c = self.config
        temb = self.time_mlp(timestep_embedding(t, c.base_channels, freq_shift=c.freq_shift))
        if self.label_emb is not None:
            temb = temb + self.label_emb(y)
        temb = F.silu(temb)  # every block applies SiLU before its own projection
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, temb)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, temb)
        for layer in self.up:
            if isinstance(layer, _ResAttn):
                h = torch.cat([h, skips.pop()], dim=1)
            h = layer(h, temb)
        return self.out(h)
