"""Training a DDPM: the paper's recipe (Ho et al. 2020, Sec. 4 and Appendix B) as a function.

`train(TrainConfig(...))` runs Algorithm 1 with Adam, a linear learning-rate warm-up, gradient
clipping and an exponential moving average (EMA) of the weights, checkpointing into
`config.out_dir` (see `ddpm.checkpoint`) and logging the loss as JSON lines to
`out_dir/log.jsonl`, one record per `log_every` steps::

    {"step": 500, "loss": 0.071, "lr": 0.0002, "images_per_s": 410.2, "seconds": 61.3}

`loss` is the mean training loss over the steps since the previous record.

Reproducibility: every random draw comes from an explicitly seeded generator: the model's
initialisation and dropout from torch's global generator, the data order from `order`, the
horizontal flips from `flip`, and the timesteps and noise of Algorithm 1 from `noise`. All their
states are saved with each checkpoint, so a run that is killed and resumed on the CPU logs exactly
the losses of a run that was never interrupted.

Steps are counted from 1: "step k" is the k-th optimizer update, and a record or checkpoint at
step k comes after k updates.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ddpm import checkpoint as ckpt
from ddpm.data import ImageData, load_dataset, random_hflip
from ddpm.diffusion import GaussianDiffusion, MeanType, VarType
from ddpm.distributed import DistContext, init_distributed, local_rank, mean_over_ranks, shard
from ddpm.distributed import shutdown as shutdown_distributed
from ddpm.losses import LossType, training_losses
from ddpm.mlp import MLPDenoiser
from ddpm.schedule import ScheduleKind, make_schedule, parse_choice
from ddpm.unet import PRESETS, UNet, unet_preset

LOG_FILE = "log.jsonl"
MLP_PRESET = "mlp"  # the denoiser for 2-D toy data; every other preset names a U-Net
MODEL_PRESETS = (*PRESETS, MLP_PRESET)
MLP_HIDDEN, MLP_DEPTH = 128, 3  # about 180k parameters: enough for the 2-D toys


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


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


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
    ema_decay: float = 0.9999  # the paper's EMA; short runs warm it up (see `ema_decay_at`)
    dropout: float | None = None  # None: the preset's (0.1 for cifar10, as in the paper)
    hflip: bool | None = None  # random horizontal flips; None: as the data say (not for digits)
    seed: int = 0
    device: str = "auto"  # "auto" picks CUDA, then MPS, then the CPU
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

    @classmethod
    def of(cls, data: ImageData) -> DataInfo:
        return cls(data.name, tuple(data.train.shape[1:]), data.num_levels)


@dataclass(frozen=True)
class LogRecord:
    """One line of log.jsonl."""

    step: int
    loss: float  # mean training loss over the steps since the previous record
    lr: float  # learning rate at `step`
    images_per_s: float  # examples per second (all ranks), over the same steps
    seconds: float  # wall-clock seconds since this process started training


@dataclass
class TrainResult:
    config: TrainConfig  # resolved: no None fields
    model: nn.Module  # the trained weights
    ema: nn.Module  # their moving average, the weights to sample with
    diffusion: GaussianDiffusion
    step: int
    log: list[LogRecord] = field(default_factory=list)  # the records this call wrote

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)


def pick_device(name: str = "auto") -> torch.device:
    """ "auto": CUDA if available (this process's GPU under torchrun), then MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available here")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank())
    return device


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
    unet = unet_preset(
        config.preset,
        in_channels=channels,
        image_size=height,
        dropout=config.dropout,
        learn_sigma=learn_sigma,
    )
    return UNet(unet)


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay for the update after `step` updates: (1 + step) / (10 + step), capped at `decay`.

    A fixed 0.9999 averages over the last ~10^4 steps, longer than a short run; the warm-up makes
    the average forget the random initialisation within the first few percent of any run.
    """
    return min(decay, (1 + step) / (10 + step))


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of update number `step` (from 1): linear warm-up, then constant (the paper)."""
    if config.warmup_steps == 0:
        return config.lr
    return config.lr * min(1.0, step / config.warmup_steps)


def _seed(seed: int, purpose: int) -> int:
    # Independent streams for the data order, flips and noise from one user-facing seed.
    return int(np.random.SeedSequence([seed, purpose]).generate_state(1, np.uint64)[0])


class EpochSampler:
    """Batch indices: each epoch a fresh permutation of the training set, from its own generator.

    Batches run on across epoch boundaries, so every example is seen once per epoch. The state
    (the generator's state before the current permutation, and the position in it) restores the
    exact same sequence.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(_seed(seed, 0))
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.epoch_start = self.generator.get_state()
        self.perm = torch.randperm(self.n, generator=self.generator)
        self.pos = 0

    def next(self) -> Tensor:
        parts, need = [], self.batch_size
        while need:
            if self.pos == self.n:
                self._new_epoch()
            take = min(need, self.n - self.pos)
            parts.append(self.perm[self.pos : self.pos + take])
            self.pos, need = self.pos + take, need - take
        return torch.cat(parts)

    def state(self) -> dict[str, Tensor]:
        return {"order_epoch_start": self.epoch_start, "order_pos": torch.tensor([self.pos])}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["order_epoch_start"])
        self._new_epoch()
        self.pos = int(state["order_pos"][0])


class Trainer:
    """One training run; `train()` is the way to use it."""

    def __init__(
        self,
        config: TrainConfig,
        device: torch.device,
        dist: DistContext,
        resume: bool,
        progress: bool,
    ):
        data = load_dataset(config.data)
        self.config = config = config.resolve(data)
        self.out_dir = Path(config.out_dir)
        self.info = DataInfo.of(data)
        self.train_x = data.train
        # Continuous toy points have no levels; L_simple only reports the decoder term, so any K do.
        self.num_levels = data.num_levels or 256
        if data.num_levels is None and config.loss_type is not LossType.SIMPLE:
            raise ValueError(
                f"loss {config.loss_type.value!r} needs data on discrete levels for its decoder "
                f"term; {data.name!r} is continuous, use 'simple'"
            )

        self.device, self.dist = device, dist
        if config.batch_size % dist.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} is not divisible by the {dist.world_size} "
                "processes"
            )
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self._build_model()
        self.sampler = EpochSampler(len(self.train_x), config.batch_size, config.seed)
        self.flip_generator = torch.Generator().manual_seed(_seed(config.seed, 1))
        self.noise_generator = torch.Generator(device=device).manual_seed(_seed(config.seed, 2))

        self.step = 0
        self.loss_sum, self.loss_count = 0.0, 0  # losses since the last record
        self.pending: list[Tensor] = []  # per-step losses not yet checked and summed
        self.saved_step: int | None = None
        self.records: list[LogRecord] = []
        if resume:
            self._restore()
        else:
            self._start_fresh()
        self.progress = tqdm(
            total=config.steps,
            initial=self.step,
            desc="training",
            unit="step",
            disable=not progress or not self.dist.is_main,
        )

    def _build_model(self) -> None:
        config, dist = self.config, self.dist
        torch.manual_seed(config.seed)  # initialisation: identical on every rank
        self.model = build_model(config, self.info).to(self.device)
        if dist.rank:  # different dropout masks on each rank's shard
            torch.manual_seed(_seed(config.seed, 100 + dist.rank))
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.diffusion = build_diffusion(config)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.net: nn.Module = self.model  # what the forward pass calls: maybe wrapped
        if dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            self.net = torch.compile(self.net)
        self.bf16 = self.device.type == "cuda" if config.bf16 is None else config.bf16

    # ----- checkpoints and the log -----

    def _start_fresh(self) -> None:
        if ckpt.has_checkpoint(self.out_dir):
            raise ckpt.CheckpointError(
                f"{self.out_dir} already holds a checkpoint; resume it (--resume) or choose "
                "another output directory"
            )
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / LOG_FILE).write_text("")

    def _restore(self) -> None:
        saved = ckpt.read_checkpoint(self.out_dir)
        saved_config = _config_from_checkpoint(saved)
        changed = [
            f"{f.name} ({getattr(saved_config, f.name)!r} -> {getattr(self.config, f.name)!r})"
            for f in fields(TrainConfig)
            if f.name not in RESUMABLE_FIELDS
            and getattr(saved_config, f.name) != getattr(self.config, f.name)
        ]
        if changed:
            raise ckpt.CheckpointError(
                f"{saved.path / ckpt.CONFIG}: the checkpoint was made with another configuration; "
                f"changed: {', '.join(changed)}"
            )
        if saved.step > self.config.steps:
            raise ValueError(
                f"the checkpoint in {self.out_dir} is at step {saved.step}, past steps = "
                f"{self.config.steps}"
            )
        ckpt.load_weights(saved, self.model, "model")
        ckpt.load_weights(saved, self.ema, "ema")
        ckpt.load_optimizer(saved, self.optimizer)
        rng = ckpt.load_rng(saved)
        try:
            self.sampler.load_state(rng)
            self.flip_generator.set_state(rng["flip"])
            self.noise_generator.set_state(rng["noise"])
            if self.dist.rank == 0:  # other ranks keep their own dropout streams
                torch.set_rng_state(rng["torch_cpu"])
                if self.device.type == "cuda" and "torch_cuda" in rng:
                    torch.cuda.set_rng_state(rng["torch_cuda"], self.device)
        except (KeyError, RuntimeError) as err:
            raise ckpt.CheckpointError(
                f"{saved.path / ckpt.RNG}: cannot restore the random state ({err})"
            ) from err
        self.step = self.saved_step = saved.step
        self.loss_sum = float(saved.state["loss_sum"])
        self.loss_count = int(saved.state["loss_count"])
        if self.dist.is_main:
            _truncate_log(self.out_dir / LOG_FILE, saved.step)

    def _save(self) -> None:
        if self.saved_step == self.step:
            return
        self._flush()  # a checkpoint is only written after its losses were checked
        if self.dist.is_main:
            rng = {
                **self.sampler.state(),
                "flip": self.flip_generator.get_state(),
                "noise": self.noise_generator.get_state(),
                "torch_cpu": torch.get_rng_state(),
            }
            if self.device.type == "cuda":
                rng["torch_cuda"] = torch.cuda.get_rng_state(self.device)
            state = {
                "loss_sum": self.loss_sum,
                "loss_count": self.loss_count,
                "data": asdict(self.info),
            }
            ckpt.save_checkpoint(
                self.out_dir,
                self.step,
                model=self.model,
                ema=self.ema,
                optimizer=self.optimizer,
                rng=rng,
                config=self.config.to_dict(),
                state=state,
            )
        self.saved_step = self.step

    def _flush(self) -> None:
        """Check the pending per-step losses (averaged over ranks) and add them to the record."""
        if not self.pending:
            return
        first = self.step - len(self.pending) + 1
        values = mean_over_ranks(torch.stack(self.pending).float(), self.dist).tolist()
        self.pending.clear()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                kept = (
                    f"the last good checkpoint (step {self.saved_step}) is kept in {self.out_dir}"
                    if self.saved_step is not None
                    else "no checkpoint had been written"
                )
                raise NonFiniteLossError(
                    f"training loss is {value} at step {first + offset}; stopped, {kept}. "
                    "A lower learning rate (--lr) or stronger clipping (--grad-clip) may help."
                )
        self.loss_sum += sum(values)
        self.loss_count += len(values)

    def _log(self, lr: float, started: float, interval_start: float, interval_steps: int) -> None:
        self._flush()
        now = time.perf_counter()
        record = LogRecord(
            step=self.step,
            loss=self.loss_sum / self.loss_count,
            lr=lr,
            images_per_s=interval_steps * self.config.batch_size / max(now - interval_start, 1e-9),
            seconds=now - started,
        )
        self.loss_sum, self.loss_count = 0.0, 0
        self.records.append(record)
        if self.dist.is_main:
            with open(self.out_dir / LOG_FILE, "a") as f:
                f.write(json.dumps(asdict(record)) + "\n")
        self.progress.set_postfix(loss=f"{record.loss:.4f}", img_s=f"{record.images_per_s:.0f}")

    # ----- Algorithm 1 -----

    def _batch(self) -> tuple[Tensor, Tensor, Tensor]:
        """This rank's shard of the global batch: x0, t and eps, each drawn for all ranks."""
        x0 = self.train_x[self.sampler.next()]
        if self.config.hflip:
            x0 = random_hflip(x0, self.flip_generator)
        x0 = x0.to(self.device)
        n = x0.shape[0]
        t = torch.randint(self.config.T, (n,), generator=self.noise_generator, device=self.device)
        noise = torch.randn(x0.shape, generator=self.noise_generator, device=self.device)
        return shard(x0, self.dist), shard(t, self.dist), shard(noise, self.dist)

    def _network(self, x_t: Tensor, t: Tensor) -> Tensor:
        # Only the network runs in bf16; the diffusion arithmetic and the loss stay float32.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.net(x_t, t).float()

    def _update(self) -> float:
        lr = lr_at(self.step + 1, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x0, t, noise = self._batch()
        terms = training_losses(
            self.diffusion, self._network, x0, t, noise, self.config.loss_type, self.num_levels
        )
        loss = terms.loss.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        decay = ema_decay_at(self.step, self.config.ema_decay)
        with torch.no_grad():
            for averaged, current in zip(
                self.ema.parameters(), self.model.parameters(), strict=True
            ):
                averaged.lerp_(current, 1.0 - decay)
        self.step += 1
        self.pending.append(loss.detach())
        return lr

    def run(self) -> TrainResult:
        config = self.config
        started = interval_start = time.perf_counter()
        interval_steps = 0
        self.model.train()
        while self.step < config.steps:
            lr = self._update()
            interval_steps += 1
            self.progress.update()
            last = self.step == config.steps
            if self.step % config.log_every == 0 or last:
                self._log(lr, started, interval_start, interval_steps)
                interval_start, interval_steps = time.perf_counter(), 0
            if self.step % config.ckpt_every == 0 or last:
                self._save()
        self.progress.close()
        self.model.eval()
        self.ema.eval()
        return TrainResult(config, self.model, self.ema, self.diffusion, self.step, self.records)


def train(config: TrainConfig, progress: bool = True, resume: bool = False) -> TrainResult:
    """Train from scratch, or (`resume=True`) continue the checkpoint in `config.out_dir`.

    When resuming, `config` must match the saved one except for RESUMABLE_FIELDS (e.g. `steps`,
    to train for longer). Under torchrun every process calls this; rank 0 writes the files.
    Raises NonFiniteLossError when the loss stops being finite, CheckpointError for a damaged or
    mismatched checkpoint.
    """
    device = pick_device(config.device)
    dist = init_distributed(device)
    try:
        trainer = Trainer(config, device, dist, resume=resume, progress=progress)
        try:
            return trainer.run()
        finally:
            trainer.progress.close()
    finally:
        shutdown_distributed(dist)


def _config_from_checkpoint(saved: ckpt.Checkpoint) -> TrainConfig:
    try:
        return TrainConfig.from_dict(saved.config)
    except (TypeError, ValueError) as err:
        raise ckpt.CheckpointError(
            f"{saved.path / ckpt.CONFIG}: invalid configuration ({err})"
        ) from err


def _truncate_log(path: Path, step: int) -> None:
    """Keep the records up to `step` (those a killed run wrote after its checkpoint go)."""
    kept = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut off by the kill
                continue
            if record["step"] <= step:
                kept.append(line + "\n")
    ckpt.atomic_write(path, "".join(kept).encode())


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
    """Rebuild the model of a checkpoint with its EMA (default) or trained weights."""
    saved = ckpt.read_checkpoint(run_dir)
    config = _config_from_checkpoint(saved)
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
