"""What a run is: its settings, and how they become a diffusion process and a network.

`TrainConfig` holds everything a run depends on; fields left as None take the preset's `Recipe`
(`RECIPES`) or the data's own setting. `DataInfo` is what a checkpoint keeps about its data.
`build_diffusion` and `build_model` turn a resolved configuration into the objects that
`ddpm.train` trains and `ddpm.trained.load_trained` rebuilds from a checkpoint;
`config_from_checkpoint` reads the configuration a checkpoint was written with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ddpm import checkpoint as ckpt
from ddpm.data import ImageData
from ddpm.diffusion import GaussianDiffusion, MeanType, VarType
from ddpm.losses import LossType
from ddpm.mlp import MLPDenoiser
from ddpm.schedule import ScheduleKind, make_schedule, parse_choice
from ddpm.unet import PRESETS, UNet, unet_preset

MLP_PRESET = "mlp"  # the denoiser for 2-D toy data; every other preset names a U-Net
MODEL_PRESETS = (*PRESETS, MLP_PRESET)
MLP_HIDDEN, MLP_DEPTH = 128, 3  # about 180k parameters: enough for the 2-D toys
DEFAULT_LABEL_DROPOUT = 0.1  # Ho & Salimans 2022: 0.1 and 0.2 were best


@dataclass(frozen=True)
class Recipe:
    """Per-preset defaults for the settings whose right value depends on the model's scale."""

    steps: int
    batch_size: int
    warmup_steps: int
    lr: float = 2e-4  # the paper's Adam learning rate for CIFAR-10


RECIPES: dict[str, Recipe] = {
    # The paper: 800k steps at batch 128, learning rate warmed up over the first 5000 steps.
    "cifar10": Recipe(steps=800_000, batch_size=128, warmup_steps=5000),
    # Recognisable digits in a few CPU minutes (`python -m bench.cli_digits` times it): a short
    # run gets further with a larger learning rate than the paper's; a short warm-up keeps the
    # first Adam steps stable.
    "digits": Recipe(steps=1500, batch_size=64, warmup_steps=200, lr=1e-3),
    # Tests: a handful of steps, just enough to see the loss move.
    "tiny": Recipe(steps=200, batch_size=16, warmup_steps=10),
    # 2-D toys: a small MLP needs many cheap steps on large batches.
    "mlp": Recipe(steps=5000, batch_size=256, warmup_steps=100),
}

# Settings that may change when a run is resumed: they do not alter what the run computes.
RESUMABLE_FIELDS = frozenset(
    {"steps", "log_every", "ckpt_every", "device", "compile", "bf16", "out_dir"}
)
# Settings a resumed run may change on purpose, to carry on after a divergence: they alter the
# updates from then on, so `ddpm.train` reports each change and records it in the checkpoint.
OVERRIDABLE_FIELDS = frozenset({"lr", "grad_clip"})


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Strings are accepted for the enum fields.

    Fields left as None take the preset's `Recipe` value or the data's own setting;
    `resolve` fills them in, and a checkpoint stores the resolved configuration.
    """

    data: str = "digits"  # a `ddpm.data.load_dataset` spec: the embedded digits need no download
    preset: str = "digits"  # model size: "cifar10" (the paper's 35.7M), "digits", "tiny", "mlp";
    # 2-D toy data always use the MLP denoiser, images a U-Net
    schedule: ScheduleKind = ScheduleKind.LINEAR  # the paper's beta_t from 1e-4 to 0.02
    T: int = 1000  # the paper's number of diffusion steps
    mean_type: MeanType = MeanType.EPS  # predict the noise: the paper's best FID (Table 2)
    var_type: VarType = VarType.FIXED_LARGE  # sigma_t^2 = beta_t, the paper's CIFAR-10 choice
    loss_type: LossType = LossType.SIMPLE  # L_simple (Eq. 14), better samples than the bound
    steps: int | None = None  # optimizer updates; None: the preset's recipe
    batch_size: int | None = None  # global batch over all ranks; None: the preset's recipe
    lr: float | None = None  # Adam learning rate; None: the preset's recipe (the paper's 2e-4)
    warmup_steps: int | None = None  # linear warm-up of lr from 0; None: the preset's recipe
    grad_clip: float = 1.0  # the paper clips the gradient norm at 1
    ema_decay: float = 0.9999  # the paper's EMA; short runs warm it up (`ddpm.train.ema_decay_at`)
    dropout: float | None = None  # None: the preset's (0.1 for cifar10, as in the paper)
    hflip: bool | None = None  # random horizontal flips; None: as the data say (not for digits)
    # Condition the network on the data's class labels (digits: 0-9), for classifier-free
    # guidance (`ddpm.guidance`).
    class_conditional: bool = False
    # Share of training examples whose label is replaced by "no label", which trains the
    # unconditional model that guidance needs; Ho & Salimans found 0.1 to 0.2 best. None: 0.1
    # for a class-conditional run; an unconditional run has none.
    label_dropout: float | None = None
    seed: int = 0
    device: str = "auto"  # `ddpm.device.pick_device`: "auto" is CUDA, then MPS, then the CPU
    # bf16 autocast of the network; None: on with CUDA, off elsewhere (CPUs without bf16 units
    # only get slower); True also turns it on for a CPU or MPS device.
    bf16: bool | None = None
    compile: bool = False  # torch.compile the network: faster on GPUs after a slow first step
    log_every: int = 50  # steps per loss record (and progress-bar update)
    ckpt_every: int = 1000  # steps per checkpoint; one is always written at the end
    out_dir: str | None = None  # None: runs/<data name>, see `default_out_dir`

    def __post_init__(self):
        if self.out_dir is None:
            object.__setattr__(self, "out_dir", default_out_dir(self.data))
        object.__setattr__(self, "schedule", parse_choice(ScheduleKind, self.schedule))
        object.__setattr__(self, "mean_type", parse_choice(MeanType, self.mean_type))
        object.__setattr__(self, "var_type", parse_choice(VarType, self.var_type))
        object.__setattr__(self, "loss_type", parse_choice(LossType, self.loss_type))
        if self.preset not in MODEL_PRESETS:
            raise ValueError(
                f"unknown preset {self.preset!r}; valid presets: {', '.join(MODEL_PRESETS)}"
            )
        for name in ("T", "steps", "batch_size", "log_every", "ckpt_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be at least 0, got {self.warmup_steps}")
        if (self.lr is not None and not self.lr > 0) or not self.grad_clip > 0:
            raise ValueError(f"lr and grad_clip must be positive, got {self.lr}, {self.grad_clip}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.label_dropout is not None:
            if not self.class_conditional:
                raise ValueError(
                    "label_dropout applies to a class-conditional run (class_conditional=True)"
                )
            if not 0 <= self.label_dropout < 1:
                raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: enums become their string values."""
        return {
            f.name: getattr(self, f.name).value
            if hasattr(getattr(self, f.name), "value")
            else getattr(self, f.name)
            for f in fields(self)
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid: {sorted(valid)}")
        return cls(**values)

    def resolve(self, data: ImageData) -> TrainConfig:
        """Fill the None fields from the preset's recipe and the data."""
        toy = data.train.ndim == 2
        if toy:
            preset = MLP_PRESET
        elif self.preset == MLP_PRESET:
            raise ValueError(
                f"preset 'mlp' is for 2-D toy data, but {data.name!r} holds images; "
                f"choose one of {', '.join(PRESETS)}"
            )
        else:
            preset = self.preset
        if toy and self.hflip:
            raise ValueError(f"hflip applies to images, {data.name!r} holds 2-D points")
        if self.class_conditional and data.train_labels is None:
            raise ValueError(
                f"class_conditional needs class labels, and {data.name!r} has none "
                "(the digits data have them)"
            )
        recipe = RECIPES[preset]
        dropout = self.dropout
        if dropout is None:
            dropout = 0.0 if toy else PRESETS[preset].dropout
        return replace(
            self,
            preset=preset,
            steps=self.steps or recipe.steps,
            batch_size=self.batch_size or recipe.batch_size,
            lr=self.lr or recipe.lr,
            warmup_steps=recipe.warmup_steps if self.warmup_steps is None else self.warmup_steps,
            dropout=dropout,
            hflip=data.flip if self.hflip is None else self.hflip,
            label_dropout=(
                DEFAULT_LABEL_DROPOUT
                if self.class_conditional and self.label_dropout is None
                else self.label_dropout
            ),
        )


def default_out_dir(data: str) -> str:
    """runs/<name>: "digits" -> runs/digits, "toy:two_moons" -> runs/toy-two_moons,
    "~/cifar10.npz" -> runs/cifar10, "~/faces/" -> runs/faces."""
    path = Path(data)
    name = path.stem if path.suffix in (".npy", ".npz") else path.name
    return str(Path("runs") / name.replace(":", "-"))


@dataclass(frozen=True)
class DataInfo:
    """What a checkpoint needs to know about its data to rebuild the model and sample."""

    name: str
    shape: tuple[int, ...]  # one example: (C, H, W), or (2,) for toy points
    num_levels: int | None  # K grey levels; None for continuous toy data
    # `fingerprint` of the data; None where it was not recorded (shipped models, checkpoints
    # written before it was)
    fingerprint: str | None = None
    # Classes of the labels (0..num_classes-1); None for data without labels, and in
    # checkpoints written before it was recorded
    num_classes: int | None = None

    @classmethod
    def of(cls, data: ImageData) -> DataInfo:
        labels = data.train_labels
        classes = None if labels is None else int(labels.max()) + 1
        shape = tuple(data.train.shape[1:])
        return cls(data.name, shape, data.num_levels, fingerprint(data), classes)


def fingerprint(data: ImageData) -> str:
    """SHA-256 (hex) of both splits' dtypes, shapes and values: any change of an example, of the
    order or of the count changes it."""
    digest = hashlib.sha256()
    for split in (data.train, data.test):
        values = np.ascontiguousarray(split.detach().cpu().numpy())
        digest.update(f"{values.dtype} {values.shape}\n".encode())
        digest.update(memoryview(values).cast("B"))
    return digest.hexdigest()


def check_same_data(saved: DataInfo, found: DataInfo, where: str) -> None:
    """CheckpointError naming each difference between the data a checkpoint (`where`) recorded
    and the data found now; the fingerprint is compared where the checkpoint has one."""
    differences = [
        f"{label} {before} -> {after}"
        for label, before, after in (
            ("shape", tuple(saved.shape), tuple(found.shape)),
            ("levels", saved.num_levels, found.num_levels),
        )
        if before != after
    ]
    if saved.fingerprint is not None and saved.fingerprint != found.fingerprint:
        differences.append(
            f"fingerprint {saved.fingerprint[:12]}... -> {str(found.fingerprint)[:12]}... "
            "(other values)"
        )
    if differences:
        raise ckpt.CheckpointError(
            f"{where}: the data {found.name!r} differ from the data the checkpoint was trained "
            f"on ({saved.name!r}): {'; '.join(differences)}"
        )


def build_diffusion(config: TrainConfig) -> GaussianDiffusion:
    return GaussianDiffusion(
        make_schedule(config.schedule, config.T), config.mean_type, config.var_type
    )


def build_model(config: TrainConfig, info: DataInfo) -> nn.Module:
    """The denoiser for a resolved config: an MLP for 2-D points, else the preset's U-Net."""
    learn_sigma = config.var_type is VarType.LEARNED_RANGE
    if config.preset == MLP_PRESET:
        return MLPDenoiser(info.shape[0], MLP_HIDDEN, MLP_DEPTH, learn_sigma=learn_sigma)
    channels, height, width = info.shape
    if height != width:
        raise ValueError(f"the U-Net needs square images, {info.name!r} has {height}x{width}")
    if config.class_conditional and info.num_classes is None:
        raise ValueError(f"a class-conditional model needs the number of classes of {info.name!r}")
    unet = unet_preset(
        config.preset,
        in_channels=channels,
        image_size=height,
        dropout=config.dropout,
        learn_sigma=learn_sigma,
        num_classes=info.num_classes if config.class_conditional else None,
    )
    return UNet(unet)


def config_from_checkpoint(saved: ckpt.Checkpoint) -> TrainConfig:
    """The TrainConfig a checkpoint was written with; CheckpointError when it is not valid."""
    try:
        return TrainConfig.from_dict(saved.config)
    except (TypeError, ValueError) as err:
        raise ckpt.CheckpointError(
            f"{saved.path / ckpt.CONFIG}: invalid configuration ({err})"
        ) from err
