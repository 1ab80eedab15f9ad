"""Tests for the 2-D toy denoiser (ddpm/mlp.py)."""

import pytest
import torch
from torch import nn

from ddpm.mlp import MLPDenoiser


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, including the zero-initialised output layer."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model


def test_output_shapes():
    x, t = torch.randn(5, 2), torch.randint(0, 1000, (5,))
    assert MLPDenoiser()(x, t).shape == (5, 2)
    assert MLPDenoiser(learn_sigma=True)(x, t).shape == (5, 4)
    assert MLPDenoiser(dim=3, hidden=16, depth=1)(torch.randn(5, 3), t).shape == (5, 3)


def test_untrained_model_outputs_zeros():
    x, t = torch.randn(5, 2), torch.randint(0, 1000, (5,))
    assert torch.equal(MLPDenoiser()(x, t), torch.zeros(5, 2))


def test_output_depends_on_x_and_t():
    model = randomized(MLPDenoiser(hidden=32, depth=2))
    x = torch.randn(1, 2).expand(2, 2)
    out = model(x, torch.tensor([3, 700]))
    assert not torch.allclose(out[0], out[1])
    out = model(torch.randn(2, 2), torch.tensor([3, 3]))
    assert not torch.allclose(out[0], out[1])


def test_gradient_reaches_every_parameter():
    model = randomized(MLPDenoiser(hidden=32, depth=2, learn_sigma=True))
    model(torch.randn(8, 2), torch.randint(0, 1000, (8,))).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "x_shape, t_shape, message",
    [
        ((4, 3), (4,), r"\[N, 2\], got \(4, 3\)"),
        ((4,), (4,), r"\[N, 2\], got \(4,\)"),
        ((4, 2), (5,), r"t of shape \[N\] = \[4\]"),
    ],
)
def test_rejects_bad_inputs(x_shape, t_shape, message):
    with pytest.raises(ValueError, match=message):
        MLPDenoiser()(torch.zeros(x_shape), torch.zeros(t_shape, dtype=torch.long))


def test_rejects_odd_hidden_width():
    with pytest.raises(ValueError, match="even hidden"):
        MLPDenoiser(hidden=15)
