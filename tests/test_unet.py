"""Tests for the DDPM U-Net (ddpm/unet.py)."""

import math
import time

import numpy as np
import pytest
import torch
from support import compile_unavailable
from torch import nn

from ddpm.unet import (
    AttnBlock,
    UNet,
    UNetConfig,
    num_groups,
    timestep_embedding,
    unet_preset,
)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter random values: the zero-initialised output layers otherwise make the
    untrained network output zeros, which would pass any comparison trivially."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / fan_in**0.5)
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
            elif isinstance(module, nn.GroupNorm):
                module.weight.copy_(1 + 0.1 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return model.eval()


def inputs(config: UNetConfig, n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    size = config.image_size
    x = torch.randn(n, config.in_channels, size, size, generator=gen)
    t = torch.randint(0, 1000, (n,), generator=gen)
    return x, t


def test_cifar10_has_the_papers_parameter_count():
    # Ho et al. 2020, Appendix B: "Our CIFAR10 model has 35.7 million parameters". Built on the
    # meta device: counting needs no memory or initialisation.
    with torch.device("meta"):
        model = UNet(unet_preset("cifar10"))
    assert 35.6e6 <= n_params(model) <= 35.8e6


def test_tiny_preset_has_a_few_thousand_parameters():
    assert 1_000 <= n_params(UNet(unet_preset("tiny"))) <= 10_000


# cifar10 (35.7M parameters) with batch 1, marked slow: its forward pass takes seconds on a busy
# two-core CPU. learn_sigma changes only the last layer, so one preset checks it.
CASES = [
    pytest.param("cifar10", False, marks=pytest.mark.slow),
    ("digits", False),
    ("tiny", False),
    ("tiny", True),
]


@pytest.mark.parametrize("name, learn_sigma", CASES)
def test_preset_output_shapes(name, learn_sigma):
    config = unet_preset(name, learn_sigma=learn_sigma)
    model = UNet(config).eval()
    n = 1 if name == "cifar10" else 3
    x, t = inputs(config, n)
    with torch.no_grad():
        out = model(x, t)
    channels = config.in_channels * (2 if learn_sigma else 1)
    assert config.out_channels == channels
    assert out.shape == (n, channels, config.image_size, config.image_size)


def test_other_sizes_and_depths():
    # Three levels with changing widths, attention at two of them, a non-square input.
    config = UNetConfig(
        in_channels=2,
        base_channels=8,
        channel_mult=(1, 2, 3),
        num_res_blocks=1,
        attn_resolutions=(8, 4),
        image_size=16,
    )
    model = randomized(UNet(config))
    x = torch.randn(2, 2, 12, 20)
    assert model(x, torch.tensor([0, 999])).shape == (2, 2, 12, 20)
    assert (
        sum(isinstance(m, AttnBlock) for m in model.modules()) == 1 + 1 + 1 + 2 + 2
    )  # down 8, 4; mid; up 4, 8


def test_untrained_network_outputs_zeros():
    config = unet_preset("tiny")
    x, t = inputs(config, 2)
    assert torch.equal(UNet(config)(x, t), torch.zeros_like(x))


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(ValueError, match="cifar10.*digits.*tiny"):
        unet_preset("imagenet")


def test_unknown_override_lists_the_fields():
    with pytest.raises(ValueError, match="base_chanels.*base_channels"):
        unet_preset("tiny", base_chanels=8)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"image_size": 10, "channel_mult": (1, 2, 2)}, "divisible by 4"),
        ({"attn_resolutions": (2,)}, r"\[2\] are not among .* \(8, 4\)"),
        ({"dropout": 1.0}, "dropout"),
        ({"base_channels": 0}, "base_channels"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        unet_preset("tiny", **overrides)


def test_config_accepts_lists():
    config = unet_preset("tiny", channel_mult=[1, 1], attn_resolutions=[4])
    assert config == unet_preset("tiny")


@pytest.mark.parametrize(
    "x_shape, t_shape, message",
    [
        ((2, 3, 8, 8), (2,), r"\[N, 1, H, W\], got \(2, 3, 8, 8\)"),
        ((2, 8, 8), (2,), r"\[N, 1, H, W\]"),
        ((2, 1, 7, 8), (2,), "multiples of 2.*7x8"),
        ((2, 1, 8, 8), (3,), r"t of shape \[N\] = \[2\]"),
        ((2, 1, 8, 8), (), r"t of shape \[N\] = \[2\]"),
    ],
)
def test_forward_rejects_bad_inputs(x_shape, t_shape, message):
    model = UNet(unet_preset("tiny"))
    t = torch.zeros(t_shape, dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(x_shape), t)


@pytest.mark.parametrize(
    "channels, groups",
    [(1, 1), (4, 4), (32, 32), (64, 32), (96, 32), (256, 32), (48, 24), (100, 25), (37, 1)],
)
def test_group_count_rule(channels, groups):
    # 32 groups when the width allows; otherwise the largest divisor of the width below 32.
    assert num_groups(channels) == groups


def test_timestep_embedding_matches_the_transformer_formula():
    # Vaswani et al. 2017: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...); here
    # the sines fill the first half of the columns and the cosines the second.
    dim, t = 16, np.array([0, 1, 7, 100, 999])
    emb = timestep_embedding(torch.from_numpy(t), dim).numpy()
    assert emb.dtype == np.float32 and emb.shape == (len(t), dim)
    for row, pos in enumerate(t):
        for i in range(dim // 2):
            angle = pos / 10000 ** (2 * i / dim)
            assert emb[row, i] == pytest.approx(math.sin(angle), abs=2e-4)
            assert emb[row, dim // 2 + i] == pytest.approx(math.cos(angle), abs=2e-4)


def test_timestep_embedding_rejects_odd_width():
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(torch.arange(3), 7)


def test_attention_matches_naive_softmax_attention():
    channels, h, w = 8, 3, 5
    block = randomized(AttnBlock(channels))
    x = torch.randn(2, channels, h, w)
    with torch.no_grad():
        normed = block.norm(x).reshape(2, channels, h * w).double()  # (N, C, HW)
        wq, wk, wv = block.qkv.weight.double().split(channels)
        bq, bk, bv = block.qkv.bias.double().split(channels)
        q = torch.einsum("oc,ncp->npo", wq, normed) + bq  # (N, HW, C)
        k = torch.einsum("oc,ncp->npo", wk, normed) + bk
        v = torch.einsum("oc,ncp->npo", wv, normed) + bv
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(channels), dim=-1)  # (N, HW, HW)
        attended = weights @ v  # (N, HW, C)
        projected = attended @ block.proj.weight.double().T + block.proj.bias.double()
        expected = x.double() + projected.transpose(1, 2).reshape(2, channels, h, w)
        torch.testing.assert_close(block(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_gradient_reaches_every_parameter():
    config = unet_preset("tiny", learn_sigma=True)
    model = randomized(UNet(config)).train()
    x, t = inputs(config, 4)
    model(x, t).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_timestep_embedding_stays_fp32_under_autocast():
    # bf16 holds integers above 256 only to a few units: t = 999 would become 1000.
    t = torch.arange(990, 1000)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        emb = timestep_embedding(t, 64)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb, timestep_embedding(t, 64))


def test_bf16_autocast_is_close_to_fp32():
    config = unet_preset("tiny", base_channels=8)
    model = randomized(UNet(config))
    x, t = inputs(config, 4)
    t[0] = 999  # large indices: the embedding must not be computed in bf16
    with torch.no_grad():
        reference = model(x, t)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            out = model(x, t)
    assert out.dtype == torch.bfloat16
    error = (out.float() - reference).norm() / reference.norm()
    assert error < 0.03


def test_channels_last_matches_contiguous():
    config = unet_preset("tiny", base_channels=8)
    model = randomized(UNet(config))
    x, t = inputs(config, 3)
    with torch.no_grad():
        reference = model(x, t)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last), t)
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_dropout_is_active_in_training_mode_only():
    config = unet_preset("tiny", dropout=0.5)
    model = randomized(UNet(config))
    x, t = inputs(config, 2)
    with torch.no_grad():
        assert torch.equal(model.eval()(x, t), model(x, t))
        assert not torch.equal(model.train()(x, t), model(x, t))


def test_traces_as_one_graph():
    # fullgraph=True fails on any graph break; the "eager" backend only traces, so this is fast.
    if reason := compile_unavailable():
        pytest.skip(reason)
    config = unet_preset("tiny")
    model = randomized(UNet(config))
    x, t = inputs(config, 2)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, t), model(x, t))


@pytest.mark.slow
def test_torch_compile_matches_eager():
    if reason := compile_unavailable():
        pytest.skip(reason)
    config = unet_preset("tiny")
    model = randomized(UNet(config))
    x, t = inputs(config, 2)
    start = time.perf_counter()
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, t), model(x, t), rtol=1e-4, atol=1e-5)
    print(f"torch.compile of the tiny U-Net took {time.perf_counter() - start:.1f} s")


@pytest.mark.parametrize(
    "name, size, expected",
    [
        ("cifar10", 32, (16,)),  # the paper's model as it is
        ("cifar10", 64, (16,)),  # 64, 32, 16, 8: 16x16 is still there
        ("cifar10", 8, (4,)),  # 8, 4, 2, 1: no 16x16; the second level, as 16 is at 32x32
        ("digits", 16, (8,)),  # 16, 8: no 4x4; the second level
        ("tiny", 32, (16,)),
    ],
)
def test_attention_follows_another_image_size(name, size, expected):
    config = unet_preset(name, image_size=size)
    assert config.attn_resolutions == expected
    assert unet_preset(name, image_size=size, attn_resolutions=()).attn_resolutions == ()
    model = UNet(config)
    out = model(torch.randn(2, config.in_channels, size, size), torch.tensor([0, 999]))
    assert out.shape == (2, config.in_channels, size, size)
    n_attn = sum(type(m).__name__ == "AttnBlock" for m in model.modules())
    assert n_attn > 0
