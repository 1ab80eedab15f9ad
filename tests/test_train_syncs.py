"""The trainer's step asks the device nothing, and its EMA is one foreach update.

A training step on a GPU runs ahead of the device as long as the host never waits for a value.
`SyncCounter` (tests/support.py) records every call that would make it wait: `.item()`,
`.tolist()`, `.cpu()`, `bool(t)`, `.any()`, a blocking copy to the host. Losses are checked in
batches when a record is written, so an ordinary step must count none.
"""

from __future__ import annotations

import collections
import traceback
from pathlib import Path

import pytest
import torch
from support import SyncCounter

from ddpm import train as train_module
from ddpm.config import TrainConfig
from ddpm.distributed import DistContext
from ddpm.train import Trainer, ema_update
from ddpm.unet import UNet, unet_preset

pytestmark = pytest.mark.usefixtures("one_thread")

PACKAGE = Path(__file__).resolve().parents[1] / "ddpm"


# Frames between the caller and the counter: the counters themselves and torch's dispatch.
PASSING = (__file__, str(Path(__file__).with_name("test_syncs.py")), "overrides.py", "_tensor.py")


class WhereSyncs(SyncCounter):
    """SyncCounter that also notes who made each call: a file of the package, or "torch"."""

    def __init__(self) -> None:
        super().__init__()
        self.places: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        before = sum(self.calls.values())
        out = super().__torch_function__(func, types, args, kwargs)
        if sum(self.calls.values()) > before:
            caller = next(
                f.filename
                for f in reversed(traceback.extract_stack())
                if not f.filename.endswith(PASSING)
            )
            ours = caller.startswith(str(PACKAGE))
            self.places[Path(caller).name if ours else "torch"] += 1
        return out


def _trainer(tmp_path: Path, **settings) -> Trainer:
    config = TrainConfig(
        preset="tiny", T=40, batch_size=8, steps=10, log_every=10, ckpt_every=10, device="cpu",
        hflip=True, dropout=0.1, out_dir=str(tmp_path), **settings,
    )  # fmt: skip
    return Trainer(config, torch.device("cpu"), DistContext(), resume=False, progress=False)


def _second_step(trainer: Trainer) -> WhereSyncs:
    # The first step creates Adam's state; the second is an ordinary one (no record, no
    # checkpoint: log_every and ckpt_every are 10).
    trainer._update()
    with WhereSyncs() as counter:
        trainer._update()
    assert trainer.step == 2 and len(trainer.pending) == 2  # losses wait, unread
    return counter


@pytest.mark.parametrize("loss_type", ["simple", "hybrid", "kl"])
def test_a_training_step_asks_the_device_nothing(tmp_path, monkeypatch, loss_type):
    # Adam as it runs on CUDA (fused), here on the CPU: the whole step, network, loss, clipping,
    # Adam and EMA, reads nothing back.
    monkeypatch.setattr(train_module, "adam_kind", lambda device: {"fused": True, "foreach": False})
    trainer = _trainer(tmp_path, loss_type=loss_type)
    assert trainer.optimizer.param_groups[0]["fused"]
    counter = _second_step(trainer)
    assert sum(counter.calls.values()) == 0, (dict(counter.places), dict(counter.calls))


def test_a_class_conditional_training_step_asks_the_device_nothing(tmp_path, monkeypatch):
    # Drawing which labels to drop and moving the labels to the device read nothing back either.
    monkeypatch.setattr(train_module, "adam_kind", lambda device: {"fused": True, "foreach": False})
    trainer = _trainer(tmp_path, class_conditional=True, label_dropout=0.5)
    counter = _second_step(trainer)
    assert sum(counter.calls.values()) == 0, (dict(counter.places), dict(counter.calls))


def test_on_the_cpu_only_adams_step_counters_are_read(tmp_path):
    # The CPU's foreach Adam reads its step counters with .item(); they are host tensors (as
    # they are for foreach Adam on CUDA too), so nothing waits. The package itself reads nothing.
    trainer = _trainer(tmp_path)
    assert trainer.optimizer.param_groups[0]["foreach"]
    counter = _second_step(trainer)
    assert set(counter.places) <= {"torch"}, dict(counter.places)


def test_a_record_reads_the_losses_once(tmp_path):
    # The deferred check: the losses of all the steps since the last record, read together.
    trainer = _trainer(tmp_path)
    for _ in range(3):
        trainer._update()
    with WhereSyncs() as counter:
        trainer._flush()
    assert counter.calls == {"tolist": 1}
    assert trainer.loss_count == 3 and not trainer.pending


def test_the_foreach_ema_equals_the_formula_for_each_tensor():
    # ema <- decay * ema + (1 - decay) * model, computed tensor by tensor in float64 here.
    torch.manual_seed(0)
    config = unet_preset("tiny")
    model, ema = UNet(config), UNet(config)
    before = [p.detach().double().clone() for p in ema.parameters()]
    decay = 0.9
    ema_update(ema, model, decay)
    for old, new, current in zip(before, ema.parameters(), model.parameters(), strict=True):
        expected = decay * old + (1 - decay) * current.detach().double()
        torch.testing.assert_close(new.double(), expected, rtol=0, atol=1e-6)
    assert len(before) > 100  # many tensors: the case a per-tensor loop is slow for


def test_the_ema_is_one_foreach_call(monkeypatch):
    # Not a Python loop of per-tensor kernels: the per-tensor lerp_ is never called.
    torch.manual_seed(0)
    model, ema = UNet(unet_preset("tiny")), UNet(unet_preset("tiny"))
    calls = collections.Counter()

    class Names(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            calls[getattr(func, "__name__", str(func))] += 1
            return func(*args, **(kwargs or {}))

    with Names():
        ema_update(ema, model, 0.5)
    assert calls["lerp_"] == 0 and calls["_foreach_lerp_"] == 1, dict(calls)
