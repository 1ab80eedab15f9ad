"""The paper's released models in and out: folders in the format of diffusers' `UNet2DModel`.

Google's DDPM releases (``google/ddpm-cifar10-32``, ``-celebahq-256``, ``-church-256``,
``-bedroom-256``, ``-cat-256``) are such folders::

    config.json                            # UNet2DModel's settings
    diffusion_pytorch_model.safetensors    # the weights (or the older .bin, read as tensors only)
    scheduler_config.json                  # optional: DDPMScheduler's betas and variance

or a whole pipeline folder, with the first two files in ``unet/`` and the third in
``scheduler/``; either layout is read.

`load_diffusers` turns one into a `ddpm.UNet` and a `GaussianDiffusion`; `save_diffusers` writes
a `ddpm.UNet` (and, if given, its diffusion process) back in that format. Nothing is unpickled: a
``.bin`` file is read with ``torch.load(weights_only=True)``, which refuses any code.

The two networks have the same blocks; only the names differ (`_our_to_their_prefixes`), and
diffusers keeps an attention block's query, key and value as three layers where `ddpm.UNet`
stacks them in one. Settings that `ddpm.UNet` cannot express are refused with a ValueError that
names the file and the setting.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ddpm.diffusion import GaussianDiffusion, MeanType, VarType
from ddpm.schedule import NoiseSchedule, linear_schedule
from ddpm.unet import UNet, UNetConfig

CONFIG = "config.json"
SCHEDULER_CONFIG = "scheduler_config.json"
SAFETENSORS = "diffusion_pytorch_model.safetensors"
BIN = "diffusion_pytorch_model.bin"
CLASS_NAME = "UNet2DModel"
NORM_EPS = 1e-6  # the only GroupNorm epsilon of ddpm.UNet

DOWN, ATTN_DOWN = "DownBlock2D", "AttnDownBlock2D"
UP, ATTN_UP = "UpBlock2D", "AttnUpBlock2D"

# UNet2DModel's own defaults (diffusers 0.42), used for a setting a config.json leaves out.
_DEFAULTS: dict[str, Any] = {
    "sample_size": None,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": [DOWN, ATTN_DOWN, ATTN_DOWN, ATTN_DOWN],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": [ATTN_UP, ATTN_UP, ATTN_UP, UP],
    "block_out_channels": [224, 448, 672, 896],
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attn_norm_num_groups": None,
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
    "num_train_timesteps": None,
}
# Settings ddpm.UNet has no choice for: the one value it computes with.
_FIXED: dict[str, Any] = {
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "flip_sin_to_cos": False,  # sin before cos
    "mid_block_type": "UNetMidBlock2D",
    "mid_block_scale_factor": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "act_fn": "silu",
    "norm_eps": NORM_EPS,
    "attn_norm_num_groups": None,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
}

# Inside a residual block and an attention block: our name -> diffusers' name.
_RES_NAMES = {
    "norm1": "norm1",
    "conv1": "conv1",
    "temb_proj": "time_emb_proj",
    "norm2": "norm2",
    "conv2": "conv2",
    "skip": "conv_shortcut",
}
_ATTN_NAMES = {"norm": "group_norm", "proj": "to_out.0"}
_QKV = ("to_q", "to_k", "to_v")  # the three thirds of our `qkv`, in order
# diffusers before 0.12 named the attention layers differently (the releases' .bin files)
_OLD_ATTN_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

# DDPMScheduler's names for the process's choices
_VARIANCES = {
    "fixed_small": VarType.FIXED_SMALL,
    "fixed_large": VarType.FIXED_LARGE,
    "learned_range": VarType.LEARNED_RANGE,
}
_PREDICTIONS = {"epsilon": MeanType.EPS, "sample": MeanType.X0, "v_prediction": MeanType.V}


class DiffusersModel(NamedTuple):
    """A diffusers-format folder, read."""

    model: UNet  # in eval mode, on the requested device
    diffusion: GaussianDiffusion
    config: UNetConfig
    schedule_from: str  # where the process came from: scheduler_config.json, or the paper


def is_diffusers_folder(path: str | Path) -> bool:
    """True for a folder holding a diffusers config.json, directly or in unet/ (and no ddpm
    run's manifest.json)."""
    path = Path(path)
    has_config = (path / CONFIG).is_file() or (path / "unet" / CONFIG).is_file()
    return has_config and not (path / "manifest.json").exists()


def _unet_and_scheduler(path: Path) -> tuple[Path, Path]:
    """The folder of the network's files and the scheduler's config file, in either layout."""
    if not (path / CONFIG).is_file() and (path / "unet" / CONFIG).is_file():
        return path / "unet", path / "scheduler" / SCHEDULER_CONFIG
    return path, path / SCHEDULER_CONFIG


def load_diffusers(
    path: str | Path,
    device: str | torch.device = "cpu",
    var_type: VarType | str | None = None,
) -> DiffusersModel:
    """The `UNet2DModel` in the folder `path` as a `ddpm.UNet`, with its diffusion process.

    The process follows scheduler_config.json when the folder has one (its betas, its variance
    and what the network predicts), else the paper's: linear betas from 1e-4 to 0.02 over 1000
    steps, eps prediction, sigma_t^2 = beta_t (the learned range for a network that outputs a
    variance too). `var_type` replaces the variance either way.
    Raises ValueError naming the file and what is wrong with it.
    """
    path = Path(path)
    unet_dir, scheduler = _unet_and_scheduler(path)
    config = unet_config_from_diffusers(_read_json(unet_dir / CONFIG), unet_dir / CONFIG)
    weights_path, saved = _read_weights(unet_dir)
    with torch.device("meta"):  # built without memory; the loaded tensors become its weights
        model = UNet(config)
    model.load_state_dict(state_from_diffusers(saved, config, weights_path), assign=True)
    if scheduler.is_file():
        diffusion = diffusion_from_scheduler(_read_json(scheduler), scheduler)
        source = str(scheduler)
    else:
        # with a second half of outputs, the learned variance of Nichol & Dhariwal (2021)
        paper = VarType.LEARNED_RANGE if config.learn_sigma else VarType.FIXED_LARGE
        diffusion = GaussianDiffusion(linear_schedule(1000), MeanType.EPS, paper)
        source = "the paper (no scheduler_config.json)"
    if var_type is not None:
        diffusion = GaussianDiffusion(diffusion.schedule, diffusion.mean_type, var_type)
    if (diffusion.var_type is VarType.LEARNED_RANGE) != config.learn_sigma:
        raise ValueError(
            f"{path}: the variance {diffusion.var_type.value} does not fit a network with "
            f"{config.out_channels} output channels for {config.in_channels} input channels "
            "(learned_range needs twice as many, a fixed variance as many)"
        )
    return DiffusersModel(model.to(device).eval(), diffusion, config, source)


def save_diffusers(
    model: UNet, path: str | Path, diffusion: GaussianDiffusion | None = None
) -> Path:
    """Write `model` as a diffusers folder: config.json and diffusion_pytorch_model.safetensors,
    and scheduler_config.json when `diffusion` is given. Returns the folder."""
    path = Path(path)
    settings = diffusers_config(model)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG).write_text(json.dumps(settings, indent=2) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state_to_diffusers(state, model.config), str(path / SAFETENSORS))
    if diffusion is not None:
        text = json.dumps(scheduler_config(diffusion), indent=2) + "\n"
        (path / SCHEDULER_CONFIG).write_text(text)
    return path


# ----- configurations -----


def unet_config_from_diffusers(settings: dict[str, Any], where: Path | str) -> UNetConfig:
    """The `UNetConfig` of a `UNet2DModel` config.json; ValueError for one ddpm.UNet cannot run."""
    name = settings.get("_class_name")
    if name != CLASS_NAME:
        raise ValueError(f"{where}: not a {CLASS_NAME} (its _class_name is {name!r})")
    # Settings UNet2DModel does not take are ignored, as diffusers ignores them.
    s = {**_DEFAULTS, **{k: v for k, v in settings.items() if k in _DEFAULTS}}
    for key, value in _FIXED.items():
        if s[key] != value:
            raise ValueError(
                f"{where}: {key} = {s[key]!r} is not supported (ddpm.UNet computes with {value!r})"
            )
    widths = list(s["block_out_channels"])
    down, up = list(s["down_block_types"]), list(s["up_block_types"])
    for kind in down:
        if kind not in (DOWN, ATTN_DOWN):
            raise ValueError(f"{where}: unsupported down block type {kind!r} ({DOWN}, {ATTN_DOWN})")
    for kind in up:
        if kind not in (UP, ATTN_UP):
            raise ValueError(f"{where}: unsupported up block type {kind!r} ({UP}, {ATTN_UP})")
    attn_levels = [level for level, kind in enumerate(down) if kind == ATTN_DOWN]
    if len(up) != len(down) or [k == ATTN_UP for k in up[::-1]] != [k == ATTN_DOWN for k in down]:
        raise ValueError(
            f"{where}: up_block_types {up} do not mirror down_block_types {down}; ddpm.UNet "
            "has attention at the same resolutions on both paths"
        )
    base = widths[0] if widths and all(type(w) is int and w > 0 for w in widths) else None
    if base is None or len(widths) != len(down) or any(w % base for w in widths):
        raise ValueError(
            f"{where}: block_out_channels {widths} must give one width per block, each a "
            f"multiple of the first"
        )
    size = s["sample_size"]
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise ValueError(f"{where}: sample_size {size} is not square")
        size = size[0]
    if not isinstance(size, int):
        raise ValueError(f"{where}: sample_size must be the image side, got {size!r}")
    if s["time_embedding_dim"] not in (None, 4 * base):
        raise ValueError(
            f"{where}: time_embedding_dim = {s['time_embedding_dim']} is not supported "
            f"(ddpm.UNet uses 4 x {base} = {4 * base})"
        )
    if s["freq_shift"] not in (0, 1) or s["downsample_padding"] not in (0, 1):
        raise ValueError(
            f"{where}: freq_shift = {s['freq_shift']} and downsample_padding = "
            f"{s['downsample_padding']} must each be 0 or 1"
        )
    heads = s["attention_head_dim"]
    single = [widths[level] for level in attn_levels] + [widths[-1]]  # and the middle
    if heads is not None and any(w != heads for w in single):
        raise ValueError(
            f"{where}: attention_head_dim = {heads} makes several heads; ddpm.UNet has one "
            f"head as wide as its block ({single}); use null"
        )
    in_ch, out_ch = s["in_channels"], s["out_channels"]
    if out_ch not in (in_ch, 2 * in_ch):
        raise ValueError(
            f"{where}: out_channels = {out_ch} must be in_channels = {in_ch} (the noise) or "
            f"twice that (the noise and a learned variance)"
        )
    try:
        config = UNetConfig(
            in_channels=in_ch,
            base_channels=base,
            channel_mult=tuple(w // base for w in widths),
            num_res_blocks=s["layers_per_block"],
            attn_resolutions=tuple(size >> level for level in attn_levels),
            dropout=s["dropout"],
            image_size=size,
            learn_sigma=out_ch == 2 * in_ch,
            freq_shift=s["freq_shift"],
            downsample_pad_after=s["downsample_padding"] == 0,
        )
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None
    _check_groups(config, s["norm_num_groups"], where)
    return config


def _check_groups(config: UNetConfig, groups: Any, where: Path | str) -> None:
    """ValueError unless every GroupNorm of a ddpm.UNet with `config` has `groups` groups."""
    with torch.device("meta"):  # the structure only: no memory, no initialisation cost
        norms = [m for m in UNet(config).modules() if isinstance(m, torch.nn.GroupNorm)]
    other = sorted({(m.num_channels, m.num_groups) for m in norms if m.num_groups != groups})
    if other:
        channels, found = other[0]
        raise ValueError(
            f"{where}: norm_num_groups = {groups}, but ddpm.UNet normalises {channels} "
            f"channels in {found} groups (the largest divisor of the width up to 32)"
        )


def diffusers_config(model: UNet) -> dict[str, Any]:
    """The config.json of `model` as a `UNet2DModel`; ValueError for what diffusers cannot hold
    (GroupNorms with different group counts)."""
    c = model.config
    groups = {m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)}
    if len(groups) != 1:
        raise ValueError(
            f"UNet2DModel has one GroupNorm group count, this model uses {sorted(groups)}: "
            "choose widths that are multiples of 32"
        )
    attn = [r in c.attn_resolutions for r in c.resolutions]
    return {
        "_class_name": CLASS_NAME,
        **_FIXED,
        "sample_size": c.image_size,
        "in_channels": c.in_channels,
        "out_channels": c.out_channels,
        "block_out_channels": [c.base_channels * m for m in c.channel_mult],
        "down_block_types": [ATTN_DOWN if a else DOWN for a in attn],
        "up_block_types": [ATTN_UP if a else UP for a in reversed(attn)],
        "layers_per_block": c.num_res_blocks,
        "attention_head_dim": None,  # one head, as wide as its block
        "norm_num_groups": groups.pop(),
        "dropout": c.dropout,
        "freq_shift": c.freq_shift,
        "downsample_padding": 0 if c.downsample_pad_after else 1,
        "time_embedding_dim": None,
        "num_train_timesteps": None,
    }


def diffusion_from_scheduler(settings: dict[str, Any], where: Path) -> GaussianDiffusion:
    """The process a DDPMScheduler's scheduler_config.json describes (diffusers' defaults for
    what it leaves out)."""
    T = settings.get("num_train_timesteps", 1000)
    betas = settings.get("trained_betas")
    kind = settings.get("beta_schedule", "linear")
    if betas is None and kind != "linear":
        raise ValueError(f"{where}: beta_schedule {kind!r} is not supported (linear, or betas)")
    try:
        if betas is not None:
            schedule = NoiseSchedule.from_betas(np.asarray(betas, dtype=np.float64))
        else:
            start, end = settings.get("beta_start", 1e-4), settings.get("beta_end", 0.02)
            schedule = linear_schedule(T, start, end)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: not a noise schedule ({err})") from None
    variance = settings.get("variance_type", "fixed_small")
    prediction = settings.get("prediction_type", "epsilon")
    if variance not in _VARIANCES or prediction not in _PREDICTIONS:
        raise ValueError(
            f"{where}: variance_type {variance!r} or prediction_type {prediction!r} is not "
            f"supported (variance: {', '.join(_VARIANCES)}; prediction: {', '.join(_PREDICTIONS)})"
        )
    return GaussianDiffusion(schedule, _PREDICTIONS[prediction], _VARIANCES[variance])


def scheduler_config(diffusion: GaussianDiffusion) -> dict[str, Any]:
    """DDPMScheduler's scheduler_config.json for `diffusion`."""
    betas = diffusion.schedule.betas
    variance = {v: k for k, v in _VARIANCES.items()}[diffusion.var_type]
    predictions = {v: k for k, v in _PREDICTIONS.items()}
    if diffusion.mean_type not in predictions:
        raise ValueError(
            f"diffusers has no prediction_type for mean type {diffusion.mean_type.value!r}"
        )
    settings: dict[str, Any] = {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": len(betas),
        "variance_type": variance,
        "prediction_type": predictions[diffusion.mean_type],
        "clip_sample": True,  # images live in [-1, 1]
    }
    line = np.linspace(betas[0], betas[-1], len(betas))
    if np.allclose(betas, line, rtol=1e-12, atol=0):
        settings |= {"beta_schedule": "linear", "beta_start": betas[0], "beta_end": betas[-1]}
    else:
        settings["trained_betas"] = betas.tolist()
    return {k: float(v) if isinstance(v, np.floating) else v for k, v in settings.items()}


# ----- weights -----


def _our_to_their_prefixes(config: UNetConfig) -> dict[str, str]:
    """The module names of a ddpm.UNet with `config` -> the names of the same modules in a
    UNet2DModel: blocks (residual, attention) and single layers."""
    names = {
        "time_mlp.0": "time_embedding.linear_1",
        "time_mlp.2": "time_embedding.linear_2",
        "conv_in": "conv_in",
        "mid.0.res": "mid_block.resnets.0",
        "mid.0.attn": "mid_block.attentions.0",
        "mid.1.res": "mid_block.resnets.1",
        "out.0": "conv_norm_out",
        "out.2": "conv_out",
    }
    levels = len(config.channel_mult)
    k = 0  # position in our flat `down` list: per level the blocks, then a downsampling
    for level in range(levels):
        for j in range(config.num_res_blocks):
            names[f"down.{k}.res"] = f"down_blocks.{level}.resnets.{j}"
            names[f"down.{k}.attn"] = f"down_blocks.{level}.attentions.{j}"
            k += 1
        if level != levels - 1:
            names[f"down.{k}.conv"] = f"down_blocks.{level}.downsamplers.0.conv"
            k += 1
    k = 0  # diffusers numbers its up blocks from the lowest resolution, as we walk them
    for block in range(levels):
        for j in range(config.num_res_blocks + 1):
            names[f"up.{k}.res"] = f"up_blocks.{block}.resnets.{j}"
            names[f"up.{k}.attn"] = f"up_blocks.{block}.attentions.{j}"
            k += 1
        if block != levels - 1:
            names[f"up.{k}.conv"] = f"up_blocks.{block}.upsamplers.0.conv"
            k += 1
    return names


def _their_keys(key: str, prefixes: dict[str, str]) -> list[str]:
    """diffusers' names for our tensor `key`: three for a stacked qkv, else one."""
    parts = key.split(".")
    for n in (3, 2, 1):
        ours = ".".join(parts[:n])
        if ours in prefixes:
            theirs, rest = prefixes[ours], parts[n:]
            break
    else:
        raise KeyError(key)  # every tensor of a ddpm.UNet is under one of the prefixes
    layer, param = ".".join(rest[:-1]), rest[-1]
    if ours.endswith(".res"):
        layer = _RES_NAMES[layer]
    elif ours.endswith(".attn"):
        if layer == "qkv":
            return [f"{theirs}.{name}.{param}" for name in _QKV]
        layer = _ATTN_NAMES[layer]
    return [".".join(filter(None, (theirs, layer, param)))]


def _our_shapes(config: UNetConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in UNet(config).state_dict().items()}


def state_to_diffusers(state: dict[str, torch.Tensor], config: UNetConfig) -> dict:
    """A ddpm.UNet state dict under UNet2DModel's names (qkv split in three)."""
    prefixes = _our_to_their_prefixes(config)
    out = {}
    for key, value in state.items():
        names = _their_keys(key, prefixes)
        for name, part in zip(names, value.chunk(len(names)), strict=True):
            out[name] = part.clone()
    return out


def state_from_diffusers(
    saved: dict[str, torch.Tensor], config: UNetConfig, where: Path | str
) -> dict[str, torch.Tensor]:
    """UNet2DModel weights as a ddpm.UNet state dict; ValueError naming the missing or extra
    tensors, or the first one whose shape differs."""
    saved = {_new_attention_name(k): v for k, v in saved.items()}
    prefixes = _our_to_their_prefixes(config)
    shapes = _our_shapes(config)
    wanted = {key: _their_keys(key, prefixes) for key in shapes}
    expected = {name for names in wanted.values() for name in names}
    missing, extra = sorted(expected - saved.keys()), sorted(saved.keys() - expected)
    if missing or extra:
        raise ValueError(
            f"{where}: does not fit config.json's model: {len(missing)} tensors missing "
            f"{missing[:4]}, {len(extra)} unexpected {extra[:4]}"
        )
    state = {}
    for key, names in wanted.items():
        parts = [saved[name] for name in names]
        value = torch.cat(parts) if len(parts) > 1 else parts[0]
        if value.shape != shapes[key]:
            shown = ", ".join(f"{n} {tuple(p.shape)}" for n, p in zip(names, parts, strict=True))
            raise ValueError(
                f"{where}: {shown} does not fit config.json's model, which needs "
                f"{tuple(shapes[key])}" + (" (q, k, v stacked)" if len(parts) > 1 else "")
            )
        state[key] = value.float()
    return state


def _new_attention_name(key: str) -> str:
    parts = key.split(".")
    if len(parts) >= 3 and "attentions" in parts and parts[-2] in _OLD_ATTN_NAMES:
        parts[-2] = _OLD_ATTN_NAMES[parts[-2]]
    return ".".join(parts)


def _read_weights(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The folder's weights: the safetensors file if there is one, else the .bin, read with
    weights_only=True (tensors and plain containers only, never code)."""
    if (folder / SAFETENSORS).is_file():
        path = folder / SAFETENSORS
        try:
            return path, load_file(str(path))
        except (OSError, SafetensorError) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    path = folder / BIN
    if not path.is_file():
        raise ValueError(f"{folder}: no weights ({SAFETENSORS} or {BIN})")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: refused or unreadable as plain tensors ({first})") from None
    if not isinstance(saved, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in saved.items()
    ):
        raise ValueError(f"{path}: not a dictionary of named tensors")
    return path, saved


def _read_json(path: Path) -> dict[str, Any]:
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: missing; a diffusers model folder has one") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable JSON ({err})") from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a JSON object of settings")
    return settings
