"""Conditioning: keyword inputs reach the model through every API, the U-Net's class embedding,
and classifier-free guidance against the formula computed from two separate model calls."""

import json
import math
import re

import numpy as np
import pytest
import torch

from ddpm.diffusion import GaussianDiffusion
from ddpm.guidance import ClassifierFreeGuidance
from ddpm.likelihood import calc_bpd_loop
from ddpm.losses import training_losses
from ddpm.samplers import (
    DDIM,
    Ancestral,
    DPMSolverPP,
    ancestral_sample,
    ddim_sample,
    sample,
    sample_progressive,
)
from ddpm.schedule import NoiseSchedule
from ddpm.unet import UNet, unet_preset

T = 12
BETAS = np.linspace(1e-3, 0.3, T)
SAMPLERS = [Ancestral(), DDIM(steps=5, eta=0.5), DPMSolverPP(steps=5)]


def diffusion(mean_type="eps", var_type="fixed_large"):
    return GaussianDiffusion(NoiseSchedule.from_betas(BETAS), mean_type, var_type)


class LabelModel:
    """eps = tanh(x) / 2 + offset[y] + scale * t: needs its label, and records every call's y."""

    def __init__(self, channels=1):
        self.offset = torch.linspace(-0.5, 0.5, 4)
        self.channels = channels
        self.seen = []

    def __call__(self, x_t, t, *, y):
        self.seen.append(y)
        shape = (-1,) + (1,) * (x_t.ndim - 1)
        eps = torch.tanh(x_t) / 2 + self.offset[y].view(shape) + 0.01 * t.view(shape)
        return torch.cat([eps] * self.channels, dim=1)


def bound(model, y):
    """The model with its labels fixed: the same computation without keyword inputs."""
    return lambda x_t, t: model(x_t, t, y=y)


def gen(seed):
    return torch.Generator().manual_seed(seed)


Y = torch.tensor([0, 3, 1, 2])
X0 = torch.linspace(-0.9, 0.9, 4 * 2 * 4 * 4).reshape(4, 2, 4, 4)


# ----- keyword inputs through every API


@pytest.mark.parametrize("loss_type", ["simple", "kl"])
def test_training_losses_pass_the_keywords_to_the_model(loss_type):
    d, m = diffusion(), LabelModel()
    t, noise = torch.tensor([0, 4, 7, 11]), torch.randn(X0.shape, generator=gen(0))
    got = training_losses(d, m, X0, t, noise, loss_type, 17, model_kwargs={"y": Y})
    assert all(seen is Y for seen in m.seen)
    want = training_losses(d, bound(m, Y), X0, t, noise, loss_type, 17)
    other = training_losses(d, bound(m, Y.flip(0)), X0, t, noise, loss_type, 17)
    torch.testing.assert_close(got.loss, want.loss, rtol=0, atol=0)
    assert not torch.allclose(got.loss, other.loss)  # the labels matter


def test_the_hybrid_loss_passes_the_keywords_to_a_model_with_a_variance():
    d, m = diffusion(var_type="learned_range"), LabelModel(channels=2)
    t, noise = torch.tensor([0, 4, 7, 11]), torch.randn(X0.shape, generator=gen(0))
    got = training_losses(d, m, X0, t, noise, "hybrid", 17, model_kwargs={"y": Y})
    want = training_losses(d, bound(m, Y), X0, t, noise, "hybrid", 17)
    torch.testing.assert_close(got.loss, want.loss, rtol=0, atol=0)


@pytest.mark.parametrize("t", [5, torch.tensor([0, 4, 7, 11])])
def test_p_mean_variance_passes_the_keywords(t):
    d, m = diffusion(), LabelModel()
    got = d.p_mean_variance(m, X0, t, model_kwargs={"y": Y})
    want = d.p_mean_variance(bound(m, Y), X0, t)
    assert m.seen[0] is Y
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_bound_passes_the_keywords_at_every_timestep():
    d, m = diffusion(), LabelModel()
    got = calc_bpd_loop(d, m, X0, 17, generator=gen(3), model_kwargs={"y": Y})
    assert len(m.seen) == T and all(seen is Y for seen in m.seen)
    want = calc_bpd_loop(d, bound(m, Y), X0, 17, generator=gen(3))
    torch.testing.assert_close(got.total_bpd, want.total_bpd, rtol=0, atol=0)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=type)
def test_every_sampler_passes_the_keywords_at_every_step(sampler):
    d, m = diffusion(), LabelModel()
    shape = (4, 2, 4, 4)
    got = sample(d, m, shape, sampler, generator=gen(1), progress=False, model_kwargs={"y": Y})
    assert len(m.seen) == len(sampler.sequence(T)) and all(seen is Y for seen in m.seen)
    want = sample(d, bound(m, Y), shape, sampler, generator=gen(1), progress=False)
    other = sample(d, bound(m, Y.flip(0)), shape, sampler, generator=gen(1), progress=False)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(got, other)
    steps = list(
        sample_progressive(
            d, m, shape, sampler, generator=gen(1), progress=False, model_kwargs={"y": Y}
        )
    )
    torch.testing.assert_close(steps[-1].x_t, want, rtol=0, atol=0)


def test_the_named_samplers_pass_the_keywords():
    d, m = diffusion(), LabelModel()
    kw = {"generator": gen(2), "progress": False}
    got = ancestral_sample(d, m, (4, 1, 2, 2), model_kwargs={"y": Y}, **kw)
    want = ancestral_sample(d, bound(m, Y), (4, 1, 2, 2), **{**kw, "generator": gen(2)})
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    got = ddim_sample(
        d, m, (4, 1, 2, 2), steps=4, model_kwargs={"y": Y}, **{**kw, "generator": gen(2)}
    )
    want = ddim_sample(d, bound(m, Y), (4, 1, 2, 2), steps=4, **{**kw, "generator": gen(2)})
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# ----- the U-Net's class embedding


def conditional_unet(num_classes=3, seed=0):
    # 64 channels: GroupNorm then has two channels per group, so an embedding added per channel
    # is not normalised away entirely (with one channel per group, as in "tiny", it would be).
    torch.manual_seed(seed)
    net = UNet(unet_preset("tiny", base_channels=64, num_classes=num_classes)).eval()
    with torch.no_grad():  # the initial zeros would hide every path: give all weights values
        for p in net.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    return net


def test_an_unconditional_unet_keeps_its_parameters():
    plain = UNet(unet_preset("tiny"))
    assert not any("label" in name for name in plain.state_dict())
    conditional = UNet(unet_preset("tiny", num_classes=3))
    extra = set(conditional.state_dict()) - set(plain.state_dict())
    assert extra == {"label_emb.weight"}
    assert conditional.label_emb.weight.shape == (4, 4 * 4)  # num_classes + 1 rows, 4 * ch


def test_the_label_embedding_is_added_to_the_time_embedding():
    # Independent route: an unconditional U-Net with the same weights, whose last time-MLP bias
    # is moved by the label's embedding row, computes the same function for that label.
    net = conditional_unet()
    x, t = torch.randn(2, 1, 8, 8, generator=gen(0)), torch.tensor([3, 700])
    plain = UNet(unet_preset("tiny", base_channels=64)).eval()
    for label in range(4):  # the three classes and the null label
        state = {k: v for k, v in net.state_dict().items() if k != "label_emb.weight"}
        state["time_mlp.2.bias"] = state["time_mlp.2.bias"] + net.label_emb.weight[label]
        plain.load_state_dict(state)
        with torch.no_grad():
            got = net(x, t, y=torch.full((2,), label))
            want = plain(x, t)
        torch.testing.assert_close(got, want)
    with torch.no_grad():
        assert not torch.allclose(
            net(x, t, y=torch.tensor([0, 0])), net(x, t, y=torch.tensor([1, 1]))
        )


def test_unet_label_errors():
    net, plain = conditional_unet(), UNet(unet_preset("tiny"))
    x, t = torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="class-conditional: give labels y"):
        net(x, t)
    with pytest.raises(ValueError, match="unconditional"):
        plain(x, t, y=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer labels y of shape"):
        net(x, t, y=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer labels y of shape"):
        net(x, t, y=torch.zeros(2))
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_classes"):
            unet_preset("tiny", num_classes=bad)


# ----- classifier-free guidance


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_guidance_mixes_the_conditional_and_unconditional_outputs(w):
    net = conditional_unet()
    x, t, y = torch.randn(3, 1, 8, 8, generator=gen(1)), torch.tensor([0, 500, 999]), Y[:3] % 3
    with torch.no_grad():
        cond = net(x, t, y=y)
        uncond = net(x, t, y=torch.full_like(y, 3))
        got = ClassifierFreeGuidance(net, w, null_label=3)(x, t, y=y)
    torch.testing.assert_close(got, (1 + w) * cond - w * uncond, rtol=1e-4, atol=1e-4)


def test_guidance_mixes_only_the_noise_channels_of_a_model_with_a_variance():
    m = LabelModel(channels=2)
    m2 = lambda x_t, t, *, y: m(x_t, t, y=y) * torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)  # noqa: E731
    x, t = torch.randn(4, 1, 2, 2, generator=gen(1)), torch.tensor([1, 2, 3, 4])
    got = ClassifierFreeGuidance(m2, 2.0, null_label=0)(x, t, y=Y)
    cond, uncond = m2(x, t, y=Y), m2(x, t, y=torch.zeros_like(Y))
    torch.testing.assert_close(got[:, :1], 3 * cond[:, :1] - 2 * uncond[:, :1])
    torch.testing.assert_close(got[:, 1:], cond[:, 1:])


def test_guidance_refuses_a_negative_or_missing_weight():
    for bad in (-0.5, math.nan):
        with pytest.raises(ValueError, match="guidance"):
            ClassifierFreeGuidance(LabelModel(), bad, null_label=0)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=type)
def test_every_sampler_runs_a_guided_model(sampler):
    net, d, w = conditional_unet(), diffusion(), 1.5
    y = torch.tensor([0, 1, 2, 1])

    def by_hand(x_t, t):
        return (1 + w) * net(x_t, t, y=y) - w * net(x_t, t, y=torch.full_like(y, 3))

    guided = ClassifierFreeGuidance(net, w, null_label=3)
    kw = {"progress": False, "clip_denoised": False}
    got = sample(d, guided, (4, 1, 8, 8), sampler, generator=gen(5), model_kwargs={"y": y}, **kw)
    want = sample(d, by_hand, (4, 1, 8, 8), sampler, generator=gen(5), **kw)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_guidance_at_weight_zero_is_the_conditional_model():
    net = conditional_unet()
    x, t, y = torch.randn(2, 1, 8, 8, generator=gen(1)), torch.tensor([5, 9]), torch.tensor([2, 0])
    with torch.no_grad():
        torch.testing.assert_close(
            ClassifierFreeGuidance(net, 0.0, null_label=3)(x, t, y=y), net(x, t, y=y)
        )


# ----- training and the command line

TINY = "--preset tiny --timesteps 40 --batch-size 8 --log-every 2 --device cpu --no-progress"


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A tiny class-conditional model on the digits, trained through the command line."""
    from ddpm.cli import main

    out = tmp_path_factory.mktemp("conditional") / "run"
    argv = ["train", *TINY.split(), "--steps", "4", "--class-conditional", "--out-dir", str(out)]
    assert main(argv) == 0
    return out


def test_a_class_conditional_run_records_its_labels(conditional_run):
    from ddpm.trained import load_trained

    trained = load_trained(conditional_run)
    assert trained.config.class_conditional and trained.config.label_dropout == 0.1
    assert trained.data.num_classes == 10  # the digits 0-9
    assert trained.model.label_emb.weight.shape[0] == 11  # and the null label 10


def test_sampling_a_class_with_guidance_from_the_command_line(monkeypatch, tmp_path):
    # A network whose labels matter (the 4-channel "tiny" U-Net normalises a per-channel label
    # embedding away), in place of a checkpoint: the command must sample it with the guidance
    # formula around it, for the class asked.
    from ddpm.cli import commands, main
    from ddpm.config import DataInfo, TrainConfig, build_diffusion
    from ddpm.trained import TrainedModel

    config = TrainConfig(preset="tiny", T=40, class_conditional=True)
    info = DataInfo("digits", (1, 8, 8), 17, None, num_classes=10)
    net, diffusion = conditional_unet(num_classes=10), build_diffusion(config)
    trained = TrainedModel(config, net, diffusion, info, step=4)
    monkeypatch.setattr(commands, "load_model", lambda args, device: trained)
    out = tmp_path / "s.png"
    argv = ["sample", "--class", "3", "--guidance", "2", "--num", "3", "--out", str(out)]
    argv += ["--sampler", "ddim", "--steps", "4", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    got = torch.from_numpy(np.load(out.with_suffix(".npy")))
    y = torch.full((3,), 3)

    def by_hand(x_t, t):
        return 3 * net(x_t, t, y=y) - 2 * net(x_t, t, y=torch.full_like(y, 10))

    want = sample(diffusion, by_hand, (3, 1, 8, 8), DDIM(steps=4), generator=gen(0), progress=False)
    # One batch of 2N against two calls of N: float32 sums in another order.
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    unguided = sample(
        diffusion, bound(net, y), (3, 1, 8, 8), DDIM(steps=4), generator=gen(0), progress=False
    )
    assert (got - unguided).abs().max() > 0.1  # the guidance made a difference


@pytest.mark.parametrize(
    "options, message",
    [
        (["--class", "10"], "--class 10: the model at .* knows classes 0..9"),
        (["--guidance", "1"], "--guidance needs the class to guide towards"),
    ],
)
def test_bad_classes_are_refused_in_one_line(conditional_run, tmp_path, capsys, options, message):
    from ddpm.cli import main

    argv = ["sample", str(conditional_run), *options, "--device", "cpu", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "s.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err


def test_a_negative_guidance_weight_is_refused(conditional_run, capsys):
    from ddpm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sample", str(conditional_run), "--class", "1", "--guidance", "-1"])
    assert exit_info.value.code == 2
    assert "--guidance: must be a finite number >= 0" in capsys.readouterr().err


def test_class_options_need_a_class_conditional_model(tmp_path, capsys):
    from ddpm.cli import main

    out = tmp_path / "plain"
    assert main(["train", *TINY.split(), "--steps", "1", "--out-dir", str(out)]) == 0
    capsys.readouterr()
    argv = ["sample", str(out), "--class", "3", "--device", "cpu", "--no-progress"]
    assert main(argv) == 1
    assert "need a class-conditional model" in capsys.readouterr().err
    assert (
        main(["train", *TINY.split(), "--label-dropout", "0.2", "--out-dir", str(out / "b")]) == 1
    )
    assert "label_dropout applies to a class-conditional run" in capsys.readouterr().err
    toy = ["train", "--data", "toy:two_moons", "--class-conditional", "--steps", "1"]
    assert main([*toy, "--device", "cpu", "--no-progress", "--out-dir", str(out / "c")]) == 1
    assert "class_conditional needs class labels" in capsys.readouterr().err


def test_the_bound_of_a_class_conditional_model_uses_the_labels(conditional_run, tmp_path):
    from ddpm.cli import main
    from ddpm.data import load_dataset
    from ddpm.trained import load_trained

    out = tmp_path / "b.json"
    argv = ["bpd", str(conditional_run), "--num", "2", "--device", "cpu", "--no-progress"]
    assert main([*argv, "--out", str(out)]) == 0
    got = json.loads(out.read_text())["total_bpd_per_example"]
    trained, data = load_trained(conditional_run), load_dataset("digits")
    want = calc_bpd_loop(
        trained.diffusion,
        trained.model,
        data.test[:2],
        17,
        generator=gen(0),
        model_kwargs={"y": data.test_labels[:2]},
    ).total_bpd
    torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), want)
