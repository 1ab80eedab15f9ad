"""Denoising diffusion probabilistic models (Ho, Jain & Abbeel 2020) in PyTorch.

The public names below are loaded on first use, so ``import ddpm`` stays cheap (no torch, no
SymPy) and a command such as ``python -m ddpm --help`` answers at once.

Model -> loss -> sample::

    import torch, ddpm
    diffusion = ddpm.GaussianDiffusion(ddpm.linear_schedule(T=1000))
    model = ddpm.UNet(ddpm.unet_preset("digits"))
    x0 = ddpm.load_digits().train[:64]
    t = torch.randint(0, diffusion.T, (64,))
    loss = ddpm.training_losses(diffusion, model, x0, t).loss.mean()
    samples = ddpm.ancestral_sample(diffusion, model, (16, 1, 8, 8))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it (`ddpm.train` is the training module itself:
# call `ddpm.train.train(config)`)
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        [
            "NoiseSchedule",
            "ScheduleKind",
            "linear_schedule",
            "cosine_schedule",
            "make_schedule",
            "extract",
            "check_timesteps",
            "parse_choice",
        ],
        "schedule",
    ),
    **dict.fromkeys(
        ["GaussianDiffusion", "MeanType", "VarType", "MeanVar", "PMeanVar"], "diffusion"
    ),
    **dict.fromkeys(
        [
            "LossType",
            "LossTerms",
            "normal_kl",
            "discretized_gaussian_log_likelihood",
            "training_losses",
        ],
        "losses",
    ),
    **dict.fromkeys(["BPDResult", "calc_bpd_loop", "prior_bpd"], "likelihood"),
    **dict.fromkeys(
        [
            "SampleStep",
            "Sampler",
            "SamplerKind",
            "Ancestral",
            "DDIM",
            "DPMSolverPP",
            "make_sampler",
            "ancestral_sample",
            "ancestral_sample_progressive",
            "ddim_sample",
            "ddim_sample_progressive",
            "ddim_timesteps",
            "sample",
            "sample_progressive",
        ],
        "samplers",
    ),
    **dict.fromkeys(["UNet", "UNetConfig", "unet_preset", "timestep_embedding"], "unet"),
    "MLPDenoiser": "mlp",
    **dict.fromkeys(["ImageData", "ToyKind", "load_digits", "toy_samples", "load_dataset"], "data"),
    "TrainConfig": "config",
    **dict.fromkeys(["TrainedModel", "load_trained"], "trained"),
    "pick_device": "device",
    "TrainResult": "train",
    **dict.fromkeys(["load_diffusers", "save_diffusers", "is_diffusers_folder"], "diffusers_io"),
    "load_pretrained": "pretrained",
    "ClassifierFreeGuidance": "guidance",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ddpm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ddpm.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
