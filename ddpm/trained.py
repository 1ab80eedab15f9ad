"""A trained model back from its checkpoint: `load_trained(run_dir)` for sampling or evaluation.

The checkpoint's configuration rebuilds the network (`ddpm.config.build_model`) and the diffusion
process (`ddpm.config.build_diffusion`), and its EMA weights (or, on request, the trained ones)
are loaded into the network, which is returned in eval mode on the requested device.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ddpm import checkpoint as ckpt
from ddpm.config import DataInfo, TrainConfig, build_diffusion, build_model, config_from_checkpoint
from ddpm.device import pick_device
from ddpm.diffusion import GaussianDiffusion


@dataclass
class TrainedModel:
    """A checkpoint rebuilt for sampling or evaluation."""

    config: TrainConfig
    model: nn.Module  # in eval mode, on the requested device
    diffusion: GaussianDiffusion
    data: DataInfo
    step: int


def load_trained(
    run_dir: str | Path, weights: str = "ema", device: str | torch.device = "cpu"
) -> TrainedModel:
    """Rebuild the model of a checkpoint with its EMA (default) or trained ("model") weights.

    `device` is a torch.device or a `ddpm.device.pick_device` name such as "auto". Raises
    CheckpointError for a missing, damaged or incomplete checkpoint.
    """
    saved = ckpt.read_checkpoint(run_dir)
    config = config_from_checkpoint(saved)
    try:
        info = DataInfo(**saved.state["data"])
        info = replace(info, shape=tuple(info.shape))
    except (KeyError, TypeError) as err:
        raise ckpt.CheckpointError(
            f"{Path(run_dir) / ckpt.MANIFEST}: no description of the data ({err})"
        ) from err
    model = build_model(config, info)
    ckpt.load_weights(saved, model, weights)
    device = pick_device(device) if isinstance(device, str) else device
    return TrainedModel(config, model.to(device).eval(), build_diffusion(config), info, saved.step)
