"""Training a DDPM: the paper's recipe (Ho et al. 2020, Sec. 4 and Appendix B) as a function.

`train(TrainConfig(...))` (the settings live in `ddpm.config`) runs Algorithm 1 with Adam, a
linear learning-rate warm-up, gradient clipping and an exponential moving average (EMA) of the
weights, checkpointing into `config.out_dir` (see `ddpm.checkpoint`) and logging the loss as JSON
lines to `out_dir/log.jsonl`, one record per `log_every` steps::

    {"step": 500, "loss": 0.071, "lr": 0.0002, "images_per_s": 410.2, "seconds": 61.3}

`loss` is the mean training loss over the steps since the previous record.

Reproducibility: every random draw comes from an explicitly seeded generator: the model's
initialisation and dropout from torch's global generator, the data order from `order`, the
horizontal flips from `flip`, the timesteps and noise of Algorithm 1 from `noise`, and which
labels a class-conditional run drops (`TrainConfig.label_dropout`) from `labels`. All their
states are saved with each checkpoint, so a run that is killed and resumed on the CPU logs exactly
the losses of a run that was never interrupted. A run resumed on another kind of device (saved on
a GPU, resumed on the CPU, say) cannot take the device-side generator states; those streams are
reseeded from the seed and the step, with a `DeviceChangeWarning`.

Divergence is an error, not a result: a step whose loss is NaN or infinite, or more than
DIVERGENCE_FACTOR times the first step's, raises a `DivergenceError` naming the step, before any
checkpoint of it is written. The last checkpoint then stays the one to resume from, and a resumed
run may lower the learning rate or tighten the clipping (`OVERRIDABLE_FIELDS`); each such change
is printed and recorded in the checkpoint's state.

The output directory is the run's alone (`ddpm.checkpoint.claim_run_dir`): a lock keeps a second
run out while this one writes, a fresh run refuses a directory holding files it did not write
unless `share_dir=True`, and it never writes over an existing log.

Steps are counted from 1: "step k" is the k-th optimizer update, and a record or checkpoint at
step k comes after k updates.

Ctrl-C (SIGINT), SIGTERM (what `timeout`, `docker stop`, Kubernetes and SLURM send) and SIGHUP
(the terminal closed) finish the step under way, write a checkpoint of it and raise
TrainingInterrupted, so `resume=True` loses nothing; a second signal stops at once. Under torchrun
the ranks agree after every step whether any of them was signalled (`max_over_ranks`, one integer
on the CPU), so all of them stop after the same step, even when only one got the signal.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shlex
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ddpm import checkpoint as ckpt
from ddpm.config import (
    OVERRIDABLE_FIELDS,
    RESUMABLE_FIELDS,
    DataInfo,
    TrainConfig,
    build_diffusion,
    build_model,
    check_same_data,
    config_from_checkpoint,
)
from ddpm.data import load_dataset, random_hflip
from ddpm.device import allow_tf32, pick_device
from ddpm.diffusion import GaussianDiffusion
from ddpm.distributed import (
    DistContext,
    init_distributed,
    max_over_ranks,
    mean_over_ranks,
    shard,
)
from ddpm.distributed import shutdown as shutdown_distributed
from ddpm.losses import LossType, training_losses
from ddpm.signals import STOP_SIGNALS

LOG_FILE = "log.jsonl"
# A loss this many times the first step's is divergence: healthy training lowers the loss, and
# noise between batches moves it by a small factor, never by three orders of magnitude.
DIVERGENCE_FACTOR = 1000.0
_LOG_EXISTS = (
    "{path} exists (the log of an earlier run?); a fresh run writes its own: move it away or "
    "choose another output directory"
)


class DivergenceError(FloatingPointError):
    """Training diverged; the message names the step and what to do next."""


class NonFiniteLossError(DivergenceError):
    """The training loss became NaN or infinite."""


class LossGrowthError(DivergenceError):
    """The training loss grew past DIVERGENCE_FACTOR times the first step's."""


class DeviceChangeWarning(UserWarning):
    """A run resumed on another kind of device than it was saved on: its device-side random
    streams were reseeded, so it no longer replays an uninterrupted run exactly."""


class TrainingInterrupted(KeyboardInterrupt):
    """A signal stopped training after a whole step, and that step's checkpoint was written.

    ``signum`` is the signal (SIGINT, SIGTERM or SIGHUP); a shell reports such a stop as exit
    status 128 + signum."""

    def __init__(self, step: int, out_dir: Path, signum: int = signal.SIGINT):
        name = signal.Signals(signum).name
        super().__init__(f"{name} at step {step}; its checkpoint is in {out_dir}")
        self.step, self.out_dir, self.signum = step, out_dir, signum


class _StopRequest:
    signum: int | None = None  # the first stop signal received, if any


@contextlib.contextmanager
def _stop_on_interrupt() -> Iterator[_StopRequest]:
    """While active, the first stop signal only records itself; the loop stops at the end of the
    step. A second one gets the handler that was there before (Ctrl-C then stops at once).

    Only in the main thread (signal handlers cannot be set elsewhere)."""
    stop = _StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def request(signum, frame):
        stop.signum = signum
        restore()

    for signum in STOP_SIGNALS:
        signal.signal(signum, request)
    try:
        yield stop
    finally:
        restore()


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


def ema_decay_at(step: int, decay: float) -> float:
    """EMA decay for the update after `step` updates: (1 + step) / (10 + step), capped at `decay`.

    A fixed 0.9999 averages over the last ~10^4 steps, longer than a short run; the warm-up makes
    the average forget the random initialisation within the first few percent of any run.
    """
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """Move each parameter of `ema` towards `model`'s: ema <- decay * ema + (1 - decay) * model.

    The two modules must have the same parameters, in the same order (`ema` is a copy of `model`).
    One foreach call updates them all: a few kernels per step instead of one per tensor (304
    for the cifar10 U-Net).
    """
    averaged, current = list(ema.parameters()), list(model.parameters())
    if len(averaged) != len(current):
        raise ValueError(
            f"the EMA has {len(averaged)} parameter tensors, the model {len(current)}: "
            "not a copy of the model"
        )
    torch._foreach_lerp_(averaged, current, 1.0 - decay)


def adam_kind(device: torch.device) -> dict[str, bool]:
    """Adam's implementation for `device`: on CUDA one fused kernel over all parameters,
    elsewhere one kernel per operation over the whole list (foreach), never a Python loop of
    small kernels per tensor."""
    cuda = device.type == "cuda"
    return {"fused": cuda, "foreach": not cuda}


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of update number `step` (from 1): linear warm-up, then constant (the paper)."""
    if config.warmup_steps == 0:
        return config.lr
    return config.lr * min(1.0, step / config.warmup_steps)


def _seed(seed: int, purpose: int, *more: int) -> int:
    # Independent streams for the data order, flips and noise from one user-facing seed.
    return int(np.random.SeedSequence([seed, purpose, *more]).generate_state(1, np.uint64)[0])


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
        # Labels for a class-conditional run; the null label num_classes stands for a dropped one.
        self.train_y = data.train_labels if config.class_conditional else None
        self.null_label = self.info.num_classes
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
        allow_tf32(device)
        self._build_model()
        self.sampler = EpochSampler(len(self.train_x), config.batch_size, config.seed)
        self.flip_generator = torch.Generator().manual_seed(_seed(config.seed, 1))
        self.noise_generator = torch.Generator(device=device).manual_seed(_seed(config.seed, 2))
        self.label_generator = torch.Generator().manual_seed(_seed(config.seed, 3))

        self.step = 0
        self.loss_sum, self.loss_count = 0.0, 0  # losses since the last record
        self.pending: list[Tensor] = []  # per-step losses not yet checked and summed
        self.saved_step: int | None = None
        self.start_loss: float | None = None  # the first step's: the scale divergence is judged by
        self.overrides: list[dict] = []  # settings changed on resuming, kept in the checkpoint
        self.records: list[LogRecord] = []
        if resume:
            self._restore()
        elif dist.is_main:
            self._start_log()
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
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.lr, **adam_kind(self.device)
        )
        self.net: nn.Module = self.model  # what the forward pass calls: maybe wrapped
        if dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if config.compile:
            self.net = torch.compile(self.net)
        self.bf16 = self.device.type == "cuda" if config.bf16 is None else config.bf16

    # ----- checkpoints and the log -----

    def _start_log(self) -> None:
        try:
            with open(self.out_dir / LOG_FILE, "x"):  # "x": never over an existing log
                pass
        except FileExistsError:  # written since _check_fresh_dir looked
            raise ckpt.CheckpointError(_LOG_EXISTS.format(path=self.out_dir / LOG_FILE)) from None

    def _restore(self) -> None:
        saved = ckpt.read_checkpoint(self.out_dir)
        saved_config = config_from_checkpoint(saved)
        differing = [
            f.name
            for f in fields(TrainConfig)
            if f.name not in RESUMABLE_FIELDS
            and getattr(saved_config, f.name) != getattr(self.config, f.name)
        ]
        changed = [
            f"{name} ({getattr(saved_config, name)!r} -> {getattr(self.config, name)!r})"
            for name in differing
        ]
        if any(name not in OVERRIDABLE_FIELDS for name in differing):
            raise ckpt.CheckpointError(
                f"{saved.path / ckpt.CONFIG}: the checkpoint was made with another configuration; "
                f"changed: {', '.join(changed)} (only {', '.join(sorted(OVERRIDABLE_FIELDS))} "
                "may change on resuming)"
            )
        try:
            saved_data = DataInfo(**saved.state["data"])
        except (KeyError, TypeError) as err:
            raise ckpt.CheckpointError(
                f"{self.out_dir / ckpt.MANIFEST}: no description of the data ({err!r})"
            ) from err
        check_same_data(saved_data, self.info, str(self.out_dir / ckpt.MANIFEST))
        if saved.step > self.config.steps:
            raise ValueError(
                f"the checkpoint in {self.out_dir} is at step {saved.step}, past steps = "
                f"{self.config.steps}"
            )
        ckpt.load_weights(saved, self.model, "model")
        ckpt.load_weights(saved, self.ema, "ema")
        ckpt.load_optimizer(saved, self.optimizer)
        for group in self.optimizer.param_groups:  # the saved kind may be another device's
            group.update(adam_kind(self.device))
        rng = ckpt.load_rng(saved)
        try:
            self.sampler.load_state(rng)
            self.flip_generator.set_state(rng["flip"])
            if "labels" in rng:  # absent in checkpoints written before it was kept
                self.label_generator.set_state(rng["labels"])
            if self.dist.rank == 0:  # other ranks keep their own dropout streams
                torch.set_rng_state(rng["torch_cpu"])
            self._restore_device_streams(rng, saved.step)
        except (KeyError, RuntimeError) as err:
            raise ckpt.CheckpointError(
                f"{saved.path / ckpt.RNG}: cannot restore the random state ({err})"
            ) from err
        self.step = self.saved_step = saved.step
        self.loss_sum = float(saved.state["loss_sum"])
        self.loss_count = int(saved.state["loss_count"])
        self.start_loss = saved.state.get("start_loss")  # absent before it was recorded
        self.overrides = list(saved.state.get("overrides", []))
        for name in differing:  # only overridable ones are left
            before, after = getattr(saved_config, name), getattr(self.config, name)
            self.overrides.append({"step": saved.step, "field": name, "from": before, "to": after})
            if self.dist.is_main:
                print(
                    f"ddpm train: resuming {self.out_dir} at step {saved.step} with {name} "
                    f"{after!r} instead of the checkpoint's {before!r}",
                    file=sys.stderr,
                )
        if self.dist.is_main:
            _truncate_log(self.out_dir / LOG_FILE, saved.step)

    def _restore_device_streams(self, rng: dict[str, Tensor], step: int) -> None:
        """Restore the generators that live on the device: the noise of Algorithm 1 and, on CUDA,
        dropout's. A state saved on another kind of device does not fit (a CUDA generator's is
        16 bytes, the CPU's 5,056), so those streams are reseeded from the seed and the step: the
        run goes on reproducibly, but not as a run that never changed device would."""
        cuda = self.device.type == "cuda"
        saved, expected = rng["noise"], self.noise_generator.get_state()
        if saved.numel() == expected.numel():
            self.noise_generator.set_state(saved)
            if cuda and self.dist.rank == 0:
                torch.cuda.set_rng_state(rng["torch_cuda"], self.device)
            return
        warnings.warn(
            f"{self.out_dir}: the checkpoint's noise generator state ({saved.numel()} bytes) was "
            f"saved on another kind of device than {self.device.type} (which keeps "
            f"{expected.numel()}); reseeding it from the seed and step {step}. Training goes on "
            "reproducibly, but exact replay of an uninterrupted run holds on one device type only",
            DeviceChangeWarning,
            stacklevel=2,
        )
        self.noise_generator.manual_seed(_seed(self.config.seed, 2, step))
        if cuda:  # dropout draws from the device's own generator
            torch.cuda.manual_seed(_seed(self.config.seed, 100 + self.dist.rank, step))

    def _save(self) -> None:
        if self.saved_step == self.step:
            return
        self._flush()  # a checkpoint is only written after its losses were checked
        if self.dist.is_main:
            rng = {
                **self.sampler.state(),
                "flip": self.flip_generator.get_state(),
                "labels": self.label_generator.get_state(),
                "noise": self.noise_generator.get_state(),
                "torch_cpu": torch.get_rng_state(),
            }
            if self.device.type == "cuda":
                rng["torch_cuda"] = torch.cuda.get_rng_state(self.device)
            state = {
                "loss_sum": self.loss_sum,
                "loss_count": self.loss_count,
                "start_loss": self.start_loss,
                "overrides": self.overrides,
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
            if self.start_loss is None:
                self.start_loss = value
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"training loss is {value} at step {first + offset}; {self._advice()}"
                )
            if value > DIVERGENCE_FACTOR * self.start_loss:
                raise LossGrowthError(
                    f"training loss {value:.4g} at step {first + offset} is more than "
                    f"{DIVERGENCE_FACTOR:g} times the first step's ({self.start_loss:.4g}): "
                    f"training diverged; {self._advice()}"
                )
        self.loss_sum += sum(values)
        self.loss_count += len(values)

    def _advice(self) -> str:
        lower = f"a learning rate below {self.config.lr:g}"
        if self.saved_step is None:
            return f"stopped before any checkpoint was written; start again with {lower} (--lr)"
        return (
            f"stopped; the last good checkpoint (step {self.saved_step}) is kept in "
            f"{self.out_dir}. Continue from it with {lower} or a smaller clipping norm: "
            f"ddpm train --out-dir {shlex.quote(str(self.out_dir))} --resume --lr ... "
            "(or --grad-clip ...)"
        )

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

    def _batch(self) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """This rank's shard of the global batch: x0, t, eps and the model's keyword inputs
        (the labels y of a class-conditional run), each drawn for all ranks."""
        index = self.sampler.next()
        x0 = self.train_x[index]
        if self.config.hflip:
            x0 = random_hflip(x0, self.flip_generator)
        n, device = x0.shape[0], self.device
        t = torch.randint(self.config.T, (n,), generator=self.noise_generator, device=device)
        noise = torch.randn(x0.shape, generator=self.noise_generator, device=device)
        kwargs = {}
        if self.train_y is not None:
            # Classifier-free guidance's training: a share of the labels become "no label".
            drop = torch.rand(n, generator=self.label_generator) < self.config.label_dropout
            y = self.train_y[index].masked_fill(drop, self.null_label)
            kwargs["y"] = self._to_device(shard(y, self.dist))
        x0 = self._to_device(shard(x0, self.dist))
        return x0, shard(t, self.dist), shard(noise, self.dist), kwargs

    def _to_device(self, x: Tensor) -> Tensor:
        if self.device.type == "cuda":  # from pinned memory the copy does not hold the host up
            return x.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device)

    def _network(self, x_t: Tensor, t: Tensor, **kwargs: Tensor) -> Tensor:
        # Only the network runs in bf16; the diffusion arithmetic and the loss stay float32.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.net(x_t, t, **kwargs).float()

    def _update(self) -> float:
        lr = lr_at(self.step + 1, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x0, t, noise, kwargs = self._batch()
        terms = training_losses(
            self.diffusion,
            self._network,
            x0,
            t,
            noise,
            self.config.loss_type,
            self.num_levels,
            model_kwargs=kwargs,
        )
        loss = terms.loss.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        ema_update(self.ema, self.model, ema_decay_at(self.step, self.config.ema_decay))
        self.step += 1
        self.pending.append(loss.detach())
        return lr

    def run(self) -> TrainResult:
        config = self.config
        started = interval_start = time.perf_counter()
        interval_steps = 0
        self.model.train()
        with _stop_on_interrupt() as stop:
            while self.step < config.steps:
                lr = self._update()
                # Every rank stops after the step at which any of them was signalled.
                signum = max_over_ranks(stop.signum or 0, self.dist)
                interval_steps += 1
                self.progress.update()
                last = self.step == config.steps
                if self.step % config.log_every == 0 or last:
                    self._log(lr, started, interval_start, interval_steps)
                    interval_start, interval_steps = time.perf_counter(), 0
                if self.step % config.ckpt_every == 0 or last or signum:
                    self._save()  # no log record here: a resumed run logs as if never stopped
                if signum and not last:
                    self.progress.close()
                    raise TrainingInterrupted(self.step, self.out_dir, signum)
        self.progress.close()
        self.model.eval()
        self.ema.eval()
        return TrainResult(config, self.model, self.ema, self.diffusion, self.step, self.records)


def train(
    config: TrainConfig, progress: bool = True, resume: bool = False, share_dir: bool = False
) -> TrainResult:
    """Train from scratch, or (`resume=True`) continue the checkpoint in `config.out_dir`.

    When resuming, `config` must match the saved one except for RESUMABLE_FIELDS (e.g. `steps`,
    to train for longer) and OVERRIDABLE_FIELDS (reported and recorded), and the data must be
    the ones the checkpoint recorded. A fresh run needs a new or empty `out_dir`, or
    `share_dir=True` to train beside the files there. Under torchrun every process calls this;
    rank 0 writes the files. Raises DivergenceError when the loss stops being finite or explodes,
    CheckpointError for a damaged or mismatched checkpoint or a directory in use or not the
    run's own.
    """
    device = pick_device(config.device)
    dist = init_distributed(device)
    try:
        with _claim(Path(config.out_dir), dist, resume, share_dir):
            trainer = Trainer(config, device, dist, resume, progress)
            try:
                return trainer.run()
            finally:
                trainer.progress.close()
    finally:
        shutdown_distributed(dist)


@contextlib.contextmanager
def _claim(out_dir: Path, dist: DistContext, resume: bool, share_dir: bool) -> Iterator[None]:
    """Hold the run directory's lock while the block runs, after checking that the run may use
    the directory. Rank 0 alone (the rank that writes) locks and checks; the other ranks learn
    whether it could, so a refusal stops every rank at once instead of leaving them waiting."""
    with contextlib.ExitStack() as held:
        refused: Exception | None = None
        if dist.is_main:
            try:
                if resume and not out_dir.is_dir():
                    raise ckpt.CheckpointError(f"{out_dir}: no such checkpoint directory")
                held.enter_context(ckpt.claim_run_dir(out_dir, shlex.join(sys.argv)))
                if not resume:
                    _check_fresh_dir(out_dir, share_dir)
            except Exception as err:
                refused = err
        if max_over_ranks(int(refused is not None), dist):
            if refused is not None:
                raise refused
            raise ckpt.CheckpointError(f"{out_dir}: refused by rank 0 (see its message)")
        yield


def _check_fresh_dir(out_dir: Path, share_dir: bool) -> None:
    """A fresh run neither continues a checkpoint nor mixes with files it did not write."""
    if ckpt.has_checkpoint(out_dir):
        raise ckpt.CheckpointError(
            f"{out_dir} already holds a checkpoint; resume it (--resume) or choose "
            "another output directory"
        )
    foreign = ckpt.foreign_files(out_dir)
    if foreign and not share_dir:
        raise ckpt.CheckpointError(
            f"{out_dir} holds files this run did not write ({', '.join(foreign)}); "
            "choose a new or empty output directory, or train beside them with --share-dir"
        )
    if (out_dir / LOG_FILE).exists():
        raise ckpt.CheckpointError(_LOG_EXISTS.format(path=out_dir / LOG_FILE))


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
