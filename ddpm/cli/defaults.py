"""What the options of `ddpm train`, `sample` and `bpd` show in their help, without torch.

The valid names of each choice and the defaults of `ddpm.config.TrainConfig` live in modules that
import torch; so that `ddpm COMMAND --help` answers at once, the help reads them from here.
tests/test_cli_startup.py checks every entry against the module that defines it, so a change
there that is not made here fails a test.
"""

from __future__ import annotations

# The values of the enums the options name (ddpm.schedule.ScheduleKind, ddpm.diffusion.MeanType
# and VarType, ddpm.losses.LossType, ddpm.samplers.SamplerKind).
SCHEDULES = ("linear", "cosine")
MEAN_TYPES = ("eps", "x0", "v", "mu")
VAR_TYPES = ("fixed_small", "fixed_large", "learned_range")
LOSS_TYPES = ("simple", "kl", "hybrid")
SAMPLERS = ("ancestral", "ddim", "dpmsolver++")

# ddpm.config.MODEL_PRESETS: the U-Net presets, then the MLP for 2-D toy data.
MODEL_PRESETS = ("cifar10", "digits", "tiny", "mlp")

# ddpm.config.RECIPES, per preset: steps, batch size, warm-up steps, learning rate.
RECIPES = {
    "cifar10": {"steps": 800_000, "batch_size": 128, "warmup_steps": 5000, "lr": 2e-4},
    "digits": {"steps": 1500, "batch_size": 64, "warmup_steps": 200, "lr": 1e-3},
    "tiny": {"steps": 200, "batch_size": 16, "warmup_steps": 10, "lr": 2e-4},
    "mlp": {"steps": 5000, "batch_size": 256, "warmup_steps": 100, "lr": 2e-4},
}

# The defaults of the TrainConfig fields that have one of their own (enums by their value).
TRAIN_DEFAULTS = {
    "data": "digits",
    "preset": "digits",
    "schedule": "linear",
    "T": 1000,
    "mean_type": "eps",
    "var_type": "fixed_large",
    "loss_type": "simple",
    "grad_clip": 1.0,
    "ema_decay": 0.9999,
    "class_conditional": False,
    "seed": 0,
    "device": "auto",
    "compile": False,
    "log_every": 50,
    "ckpt_every": 1000,
}

# TrainConfig().out_dir: where `ddpm train` with no options writes (ddpm.config.default_out_dir).
DEFAULT_RUN = "runs/digits"
