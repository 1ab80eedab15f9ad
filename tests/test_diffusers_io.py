"""Released DDPM weights in and out: `ddpm.diffusers_io` against diffusers' own `UNet2DModel`.

The reference is diffusers itself, built from the settings of Google's released config.json
files, with random weights: a converted model must compute the same function (within 1e-5 in
float32) in both directions, through the files diffusers itself writes and reads.
"""

import json

import numpy as np
import pytest
import torch

from ddpm.cli import main
from ddpm.diffusers_io import (
    BIN,
    CONFIG,
    SAFETENSORS,
    SCHEDULER_CONFIG,
    is_diffusers_folder,
    load_diffusers,
    save_diffusers,
)
from ddpm.diffusion import GaussianDiffusion, MeanType, VarType
from ddpm.schedule import linear_schedule
from ddpm.unet import UNet, UNetConfig

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = 1e-5  # float32, max abs

# The settings of google/ddpm-cifar10-32's config.json, as published.
CIFAR10_RELEASE = {
    "_class_name": "UNet2DModel",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
# google/ddpm-celebahq-256 (and -church-256, -bedroom-256, -cat-256): six resolutions,
# attention at 16x16.
RELEASE_256 = {
    **CIFAR10_RELEASE,
    "block_out_channels": [128, 128, 256, 256, 512, 512],
    "down_block_types": ["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
    "sample_size": 256,
}
# scheduler_config.json of the releases
DDPM_SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
    "variance_type": "fixed_small",
}
# Small enough for the command line tests: 32 channels so that every GroupNorm has 32 groups.
SMALL = UNetConfig(
    in_channels=1,
    base_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(4,),
    dropout=0.0,
    image_size=8,
    freq_shift=1,
    downsample_pad_after=True,
)
# The same as a UNet2DModel config.json
SMALL_SETTINGS = {
    **CIFAR10_RELEASE,
    "in_channels": 1,
    "out_channels": 1,
    "block_out_channels": [32, 64],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "sample_size": 8,
}


def their_unet(settings: dict):
    """diffusers' UNet2DModel with `settings` and random weights, every one of them non-trivial
    (GroupNorm scales and shifts too, so that a mixed-up norm shows)."""
    model = diffusers.UNet2DModel(**{k: v for k, v in settings.items() if k[0] != "_"})
    _randomise(model)
    return model.eval()


def _randomise(model: torch.nn.Module) -> None:
    """Random weights that keep the activations of order one along the whole network, as in a
    trained one (a gain of 1 lets the residual streams grow, and float32 rounding with them)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, 0.7 * fan_in**-0.5, generator=generator)
                module.bias.normal_(0, 0.1, generator=generator)
            elif isinstance(module, torch.nn.GroupNorm):
                module.weight.normal_(1, 0.2, generator=generator)
                module.bias.normal_(0, 0.2, generator=generator)


def same_outputs(ours: torch.nn.Module, theirs, size: int, channels: int = 3, n: int = 2):
    """Max abs difference of the two networks' outputs on one random batch; also the outputs'
    own scale, so that a match of two near-zero outputs cannot pass unnoticed."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, channels, size, size, generator=generator)
    t = torch.tensor([999, 0, 412, 37][:n])  # t = 0 alone would not see the frequencies
    with torch.no_grad():
        a, b = ours(x, t), theirs(x, t).sample
    return float((a - b).abs().max()), float(b.abs().mean())


def assert_same(ours, theirs, size, channels=3, n=2):
    diff, scale = same_outputs(ours, theirs, size, channels, n)
    assert scale > 0.1  # the outputs are not trivially small
    assert diff < TOLERANCE, diff


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory):
    """A folder as diffusers writes it (safetensors) with the CIFAR-10 release's settings."""
    theirs = their_unet(CIFAR10_RELEASE)
    folder = tmp_path_factory.mktemp("ddpm-cifar10-32")
    theirs.save_pretrained(folder)
    return folder, theirs


def test_cifar10_release_folder_to_ddpm(cifar_folder):
    folder, theirs = cifar_folder
    assert is_diffusers_folder(folder) and (folder / SAFETENSORS).is_file()
    loaded = load_diffusers(folder)
    # The paper's CIFAR-10 network (Appendix B): 35.7M parameters, attention at 16x16.
    assert loaded.config.attn_resolutions == (16,) and loaded.config.channel_mult == (1, 2, 2, 2)
    assert sum(p.numel() for p in loaded.model.parameters()) == 35_746_307
    assert_same(loaded.model, theirs, 32)


def test_ddpm_to_folder_to_diffusers(tmp_path):
    ours = load_diffusers_config_model(CIFAR10_RELEASE)
    folder = save_diffusers(ours, tmp_path / "out")
    theirs = diffusers.UNet2DModel.from_pretrained(folder).eval()
    assert_same(ours, theirs, 32)
    # the config diffusers reads back is the release's, setting for setting
    for key, value in CIFAR10_RELEASE.items():
        if key[0] != "_":
            found = theirs.config[key]
            assert (list(found) if isinstance(found, tuple) else found) == value, key


def load_diffusers_config_model(settings: dict) -> UNet:
    """Our own UNet for a release's settings (read by the converter), with random weights."""
    from ddpm.diffusers_io import unet_config_from_diffusers

    model = UNet(unet_config_from_diffusers(settings, "config.json"))
    _randomise(model)
    return model.eval()


def test_older_bin_folder_with_the_old_attention_names(tmp_path):
    """The releases' diffusion_pytorch_model.bin was written by diffusers before its attention
    layers were renamed (query, key, value, proj_attn): it is read as plain tensors."""
    theirs = their_unet(SMALL_SETTINGS)
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for key, value in theirs.state_dict().items():
        for new, old in old_names.items():
            key = key.replace(f".{new}.", f".{old}.")
        state[key] = value
    assert any(".proj_attn." in k for k in state)
    (tmp_path / CONFIG).write_text(json.dumps(SMALL_SETTINGS))
    torch.save(state, tmp_path / BIN)
    assert_same(load_diffusers(tmp_path).model, theirs, 8, channels=1)
    # and the .bin diffusers writes today
    theirs.save_pretrained(tmp_path / "new", safe_serialization=False)
    assert (tmp_path / "new" / BIN).is_file()
    assert_same(load_diffusers(tmp_path / "new").model, theirs, 8, channels=1)


def test_256_release_architecture_both_ways():
    """The 256x256 releases' network, run at 32x32 (its weights do not depend on the size).
    The files are tested on the CIFAR-10 network; here the tensors pass in memory."""
    from ddpm.diffusers_io import (
        state_from_diffusers,
        state_to_diffusers,
        unet_config_from_diffusers,
    )

    theirs = their_unet(RELEASE_256)
    config = unet_config_from_diffusers(RELEASE_256, "config.json")
    assert config.attn_resolutions == (16,) and config.channel_mult == (1, 1, 2, 2, 4, 4)
    with torch.device("meta"):  # no initialisation: every weight is replaced
        ours = UNet(config).eval()
    state = state_from_diffusers(theirs.state_dict(), config, "weights")
    ours.load_state_dict({k: v.clone() for k, v in state.items()}, assign=True)
    assert_same(ours, theirs, 32, n=1)
    _randomise(ours)  # new weights, the other way
    theirs.load_state_dict(state_to_diffusers(ours.state_dict(), config), strict=True)
    assert_same(ours, theirs, 32, n=1)


def test_a_pipeline_folder_is_read_from_its_unet_and_scheduler(tmp_path):
    """A DDPMPipeline as diffusers saves it: unet/, scheduler/ and model_index.json."""
    theirs = their_unet(SMALL_SETTINGS)
    scheduler = diffusers.DDPMScheduler.from_config(DDPM_SCHEDULER)
    diffusers.DDPMPipeline(unet=theirs, scheduler=scheduler).save_pretrained(tmp_path)
    assert (tmp_path / "unet" / CONFIG).is_file() and is_diffusers_folder(tmp_path)
    loaded = load_diffusers(tmp_path)
    assert loaded.diffusion.var_type is VarType.FIXED_SMALL  # read from scheduler/
    assert_same(loaded.model, theirs, 8, channels=1)


def test_scheduler_config_gives_the_schedulers_process(tmp_path):
    save_diffusers(UNet(SMALL), tmp_path)
    assert "no scheduler_config" in load_diffusers(tmp_path).schedule_from
    (tmp_path / SCHEDULER_CONFIG).write_text(json.dumps(DDPM_SCHEDULER))
    loaded = load_diffusers(tmp_path)
    scheduler = diffusers.DDPMScheduler.from_config(DDPM_SCHEDULER)
    d = loaded.diffusion
    assert d.mean_type is MeanType.EPS and d.var_type is VarType.FIXED_SMALL
    np.testing.assert_allclose(d.schedule.betas, scheduler.betas.double(), rtol=1e-6)
    np.testing.assert_allclose(d.schedule.alpha_bar, scheduler.alphas_cumprod.double(), rtol=1e-5)
    # "fixed_small" is the posterior variance beta_tilde, which diffusers computes in float32
    theirs = torch.stack([scheduler._get_variance(t) for t in range(1, 1000)]).double()
    np.testing.assert_allclose(d.schedule.beta_tilde[1:], theirs, rtol=2e-3)
    paper = load_diffusers(tmp_path, var_type="fixed_large")
    assert paper.diffusion.var_type is VarType.FIXED_LARGE


def test_saved_scheduler_config_reads_back_in_diffusers(tmp_path):
    diffusion = GaussianDiffusion(linear_schedule(1000), "eps", "fixed_large")
    save_diffusers(UNet(SMALL), tmp_path, diffusion)
    scheduler = diffusers.DDPMScheduler.from_pretrained(tmp_path)
    assert scheduler.config.variance_type == "fixed_large"
    assert scheduler.config.prediction_type == "epsilon"
    np.testing.assert_allclose(scheduler.betas.double(), diffusion.schedule.betas, rtol=1e-6)
    assert load_diffusers(tmp_path).diffusion.var_type is VarType.FIXED_LARGE


# ----- what is refused, and how it is said -----


def small_folder(tmp_path, **changes):
    settings = {**json.loads(json.dumps(CIFAR10_RELEASE)), **changes}
    (tmp_path / CONFIG).write_text(json.dumps(settings))
    return tmp_path


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"_class_name": "UNet2DConditionModel"}, "not a UNet2DModel"),
        (
            {"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"] + ["DownBlock2D"] * 2},
            "unsupported down block type 'CrossAttnDownBlock2D'",
        ),
        ({"up_block_types": ["UpBlock2D"] * 4}, "do not mirror"),
        ({"attention_head_dim": 8}, "several heads"),
        ({"flip_sin_to_cos": True}, "flip_sin_to_cos = True is not supported"),
        ({"norm_num_groups": 16}, "norm_num_groups = 16"),
        ({"resnet_time_scale_shift": "scale_shift"}, "resnet_time_scale_shift"),
    ],
)
def test_unsupported_configs_are_named(tmp_path, changes, words):
    folder = small_folder(tmp_path, **changes)
    with pytest.raises(ValueError, match="config.json") as err:
        load_diffusers(folder)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_missing_extra_and_misshapen_weights_are_named(tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in their_unet(SMALL_SETTINGS).state_dict().items()}
    (tmp_path / CONFIG).write_text(json.dumps(SMALL_SETTINGS))
    key = "down_blocks.1.attentions.0.to_k.weight"
    cases = {
        key: lambda s: s.pop(key),
        "extra.weight": lambda s: s.__setitem__("extra.weight", torch.zeros(1)),
        "conv_in.weight (32, 1, 3, 4)": lambda s: s.__setitem__(
            "conv_in.weight", torch.zeros(32, 1, 3, 4)
        ),
    }
    for words, change in cases.items():
        broken = dict(state)
        change(broken)
        save_file(broken, tmp_path / SAFETENSORS)
        with pytest.raises(ValueError, match=SAFETENSORS) as err:
            load_diffusers(tmp_path)
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_bin_file_with_code_is_refused_not_run(tmp_path):
    small_folder(tmp_path)
    torch.save({"conv_in.weight": torch.zeros(1), "hook": _NotATensor()}, tmp_path / BIN)
    with pytest.raises(ValueError, match=BIN):
        load_diffusers(tmp_path)
    (tmp_path / BIN).unlink()
    with pytest.raises(ValueError, match="no weights"):
        load_diffusers(tmp_path)


class _NotATensor:
    """An object a pickle can only rebuild by importing and running this module's code."""


def test_a_model_diffusers_cannot_hold_is_refused(tmp_path):
    tiny = UNetConfig(
        in_channels=1, base_channels=4, channel_mult=(1, 1), attn_resolutions=(4,), image_size=8
    )
    with pytest.raises(ValueError, match="one GroupNorm group count"):
        save_diffusers(UNet(tiny), tmp_path)


# ----- the command line -----


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A tiny diffusers folder for digits-sized images (1 x 8 x 8), with its scheduler."""
    folder = tmp_path_factory.mktemp("small-diffusers")
    model = UNet(SMALL)
    _randomise(model)
    diffusion = GaussianDiffusion(linear_schedule(40, 2.5e-3, 0.5), "eps", "fixed_small")
    return save_diffusers(model, folder, diffusion)


def test_sample_reads_a_diffusers_folder(small_model, tmp_path, capsys):
    out = tmp_path / "grid.png"
    args = ["--checkpoint", str(small_model), "--sampler", "ddim", "--steps", "3"]
    args += ["--num", "2", "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(["sample", *args]) == 0
    said = capsys.readouterr().out
    assert str(small_model) in said and "diffusers" in said
    samples = np.load(out.with_suffix(".npy"))
    assert samples.shape == (2, 1, 8, 8) and np.abs(samples).max() <= 1


def test_bpd_reads_a_diffusers_folder_with_data(small_model, tmp_path, capsys):
    """As a user evaluates the CIFAR-10 release on cifar10.npz: here 8-bit 8 x 8 grey images."""
    levels = np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", train=levels[:4], test=levels[4:])
    out = tmp_path / "bpd.json"
    args = ["--checkpoint", str(small_model), "--data", str(tmp_path / "images.npz")]
    args += ["--num", "2", "--out", str(out), "--device", "cpu", "--no-progress"]
    assert main(["bpd", *args]) == 0
    summary = json.loads(out.read_text())
    assert summary["num_examples"] == 2 and np.isfinite(summary["total_bpd"])
    # without data there is nothing to evaluate; data of another shape do not fit: one line each
    for data in ([], ["--data", "digits"]):
        assert main(["bpd", "--checkpoint", str(small_model), "--device", "cpu", *data]) == 1
        said = capsys.readouterr().err.strip()
        assert str(small_model) in said and "\n" not in said
