"""Rate-distortion, partial reverse chains and interpolation against independent computations."""

import math

import numpy as np
import pytest
import torch

from ddpm.diffusion import GaussianDiffusion
from ddpm.likelihood import calc_bpd_loop
from ddpm.progressive import PIXEL_SCALE, interpolate, rate_distortion, reverse_from
from ddpm.samplers import ancestral_sample
from ddpm.schedule import NoiseSchedule

T = 8
BETAS = np.linspace(0.05, 0.4, T)
ALPHA_BAR = np.cumprod(1 - BETAS)
K = 9  # data levels


def eps_model(x, t):
    """A fixed network: eps_hat = (0.5 + t / T) x, different at every step."""
    return (0.5 + t.double()[:, None, None] / T) * x


def levels(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, K, (n, 1, 4), generator=g).double() * 2 / (K - 1) - 1


@pytest.mark.parametrize("clip", [True, False])
def test_rate_distortion_against_the_bound_terms_and_eq15_by_hand(clip):
    d = GaussianDiffusion(NoiseSchedule.from_betas(BETAS), "eps", "fixed_large")
    x0 = levels(5, 0)
    g = torch.Generator().manual_seed(3)
    rd = rate_distortion(d, eps_model, x0, K, generator=g, clip_denoised=clip)
    g = torch.Generator().manual_seed(3)
    bound = calc_bpd_loop(d, eps_model, x0, K, clip_denoised=clip, generator=g)
    terms, prior = bound.terms_bpd.mean(0).numpy(), bound.prior_bpd.mean().item()

    # Replay the draws of x_t (one per index, from index T-1 down) and estimate x_0 by Eq. 15.
    g = torch.Generator().manual_seed(3)
    sq_err = {}
    for index in range(T - 1, -1, -1):
        eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        ab = ALPHA_BAR[index]
        x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
        eps_hat = eps_model(x_t, torch.full((5,), index))
        x0_hat = (x_t - math.sqrt(1 - ab) * eps_hat) / math.sqrt(ab)
        if clip:
            x0_hat = x0_hat.clamp(-1, 1)
        sq_err[index + 1] = ((x0_hat - x0) ** 2).mean().item()  # keyed by the paper's t

    assert rd.paper_t.tolist() == list(range(T, 0, -1))
    for i, t in enumerate(rd.paper_t):
        # Sent once x_t is known: L_T and the terms L_s for s = t .. T-1 (index s is L_s).
        assert rd.rate_bpd[i] == pytest.approx(prior + terms[t:].sum(), rel=1e-12)
        assert rd.distortion_rmse[i] == pytest.approx(PIXEL_SCALE * math.sqrt(sq_err[t]), rel=1e-9)
    assert rd.rate_bpd[0] == pytest.approx(prior)  # x_T costs only the prior term
    assert rd.total_bpd == pytest.approx(rd.rate_bpd[-1] + terms[0], rel=1e-12)


def test_reverse_from_the_start_is_algorithm_2():
    d = GaussianDiffusion(NoiseSchedule.from_betas(BETAS), "eps", "fixed_large")
    x_T = torch.randn(3, 1, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours = reverse_from(d, eps_model, x_T, T, generator=torch.Generator().manual_seed(1))
    alg2 = ancestral_sample(
        d, eps_model, x_T.shape, x_T=x_T, generator=torch.Generator().manual_seed(1), progress=False
    )
    torch.testing.assert_close(ours, alg2)
    assert reverse_from(d, eps_model, x_T, 0) is x_T


def test_groups_share_the_noise_and_only_the_noise():
    d = GaussianDiffusion(NoiseSchedule.from_betas(BETAS), "eps", "fixed_large")
    x = torch.randn(2, 1, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    twice = torch.cat([x, x])
    shared = reverse_from(d, eps_model, twice, 5, generator=torch.Generator(), groups=2)
    torch.testing.assert_close(shared[:2], shared[2:])
    apart = reverse_from(d, eps_model, twice, 5, generator=torch.Generator(), groups=1)
    assert not torch.allclose(apart[:2], apart[2:])
    with pytest.raises(ValueError, match="groups = 3 does not divide the batch of 4"):
        reverse_from(d, eps_model, twice, 5, groups=3)
    with pytest.raises(ValueError, match=r"t = 9: need 0 <= t <= T = 8"):
        reverse_from(d, eps_model, x, 9)


def test_interpolation_ends_are_the_encoded_images_decoded():
    d = GaussianDiffusion(NoiseSchedule.from_betas(BETAS), "eps", "fixed_large")
    a, b, t = levels(2, 1), levels(2, 2), 6
    out = interpolate(d, eps_model, a, b, t, [0.0, 0.5, 1.0], generator=torch.Generator())
    assert out.shape == (3, 2, 1, 4)
    # By hand: x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps (Eq. 4) for both images,
    # then the same reverse chain (the generator continues where the encoding left it).
    g = torch.Generator()
    eps_a, eps_b = (torch.randn(a.shape, generator=g, dtype=a.dtype) for _ in range(2))
    ab = ALPHA_BAR[t - 1]
    x_t_a = math.sqrt(ab) * a + math.sqrt(1 - ab) * eps_a
    x_t_b = math.sqrt(ab) * b + math.sqrt(1 - ab) * eps_b
    state = g.get_state()
    torch.testing.assert_close(out[0], reverse_from(d, eps_model, x_t_a, t, generator=g))
    g.set_state(state)
    torch.testing.assert_close(out[2], reverse_from(d, eps_model, x_t_b, t, generator=g))


def test_a_linear_chain_decodes_the_mixture_to_the_mixture():
    # Predicting the mean mu = 0.9 x_t makes every reverse step affine in x_t (no clamp acts on
    # the mean), so with shared noise the decoded mixture is the mixture of the decoded ends.
    d = GaussianDiffusion(NoiseSchedule.from_betas(BETAS), "mu", "fixed_small")
    a, b = levels(3, 4), levels(3, 5)
    lambdas = [0.0, 0.25, 0.7, 1.0]
    out = interpolate(d, lambda x, t: 0.9 * x, a, b, T, lambdas, generator=torch.Generator())
    for lam, row in zip(lambdas, out, strict=True):
        torch.testing.assert_close(row, (1 - lam) * out[0] + lam * out[-1])
    with pytest.raises(ValueError, match="x0_a has shape"):
        interpolate(d, eps_model, a, b[:2], 3, [0.5])
