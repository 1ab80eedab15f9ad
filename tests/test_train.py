"""Training: reproducibility, resuming after a real kill, the recipe's schedules, and failures."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from support import compile_unavailable

from ddpm import checkpoint as ckpt
from ddpm import train as train_module
from ddpm.config import TrainConfig, build_model
from ddpm.mlp import MLPDenoiser
from ddpm.train import DivergenceError, EpochSampler, NonFiniteLossError, ema_update, train
from ddpm.trained import load_trained
from ddpm.unet import UNet

REPO = Path(__file__).resolve().parents[1]
# T = 40 is the shortest linear schedule well inside (0, 1) once scaled by 1000 / T.
TINY = dict(preset="tiny", T=40, batch_size=8, log_every=2, ckpt_every=1000, device="cpu")
# Random flips and dropout: two more random streams that a resumed run must restore.
STREAMS = dict(hflip=True, dropout=0.1)
STREAM_FLAGS = " --hflip --dropout 0.1"


pytestmark = pytest.mark.usefixtures("one_thread")


def _losses(log_path: Path) -> list[tuple[int, float, float]]:
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    return [(r["step"], r["loss"], r["lr"]) for r in records]


def test_same_seed_same_losses_other_seed_other_losses(tmp_path):
    config = TrainConfig(**TINY, steps=6, out_dir=str(tmp_path / "a"))
    a = train(config, progress=False)
    b = train(replace(config, out_dir=str(tmp_path / "b")), progress=False)
    c = train(replace(config, out_dir=str(tmp_path / "c"), seed=1), progress=False)
    assert [r.loss for r in a.log] == [r.loss for r in b.log]
    assert _losses(tmp_path / "a" / "log.jsonl") == _losses(tmp_path / "b" / "log.jsonl")
    assert [r.loss for r in a.log] != [r.loss for r in c.log]
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


def _start(args: list[str], out_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ddpm", "train", "--no-progress", "--out-dir", str(out_dir)]
    return subprocess.Popen(
        command + args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def test_a_killed_run_resumes_to_the_same_losses(tmp_path):
    """SIGKILL a real `python -m ddpm train` after its first checkpoint, resume it, and compare
    its log with a run that was never interrupted (test_cli resumes through the command line)."""
    # Records every 4 steps and checkpoints every 10, so a record spans each checkpoint.
    # Flips and dropout on, so that every random stream has to be restored.
    config = TrainConfig(**{**TINY, **STREAMS, "log_every": 4, "ckpt_every": 10}, steps=30)
    args = "--preset tiny --timesteps 40 --batch-size 8 --steps 30 --log-every 4 --ckpt-every 10"
    args += STREAM_FLAGS
    killed = _start(args.split() + ["--device", "cpu"], tmp_path / "killed")

    def past_first_checkpoint() -> bool:
        # Kill once the log has a record beyond the checkpoint, which resuming must drop.
        log = tmp_path / "killed" / "log.jsonl"
        manifest = tmp_path / "killed" / ckpt.MANIFEST
        return manifest.exists() and log.exists() and '"step": 12,' in log.read_text()

    def kill_after_first_checkpoint():
        deadline = time.monotonic() + 300
        while not past_first_checkpoint() and killed.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        killed.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_checkpoint)
    killer.start()
    train(replace(config, out_dir=str(tmp_path / "whole")), progress=False)  # meanwhile
    killer.join()
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 10 <= ckpt.read_checkpoint(tmp_path / "killed").step < 30
    assert '"step": 12,' in (tmp_path / "killed" / "log.jsonl").read_text()

    train(replace(config, out_dir=str(tmp_path / "killed")), progress=False, resume=True)
    expected = _losses(tmp_path / "whole" / "log.jsonl")
    assert [step for step, _, _ in expected] == [*range(4, 30, 4), 30]
    assert _losses(tmp_path / "killed" / "log.jsonl") == expected
    assert ckpt.read_checkpoint(tmp_path / "killed").step == 30


@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_a_stop_signal_checkpoints_the_step_it_stopped_at(tmp_path, signum, status):
    """Signal a real `python -m ddpm train` that has no periodic checkpoint yet: it finishes the
    step, writes a checkpoint of it, exits with the shell's 128 + signal number, says how to go
    on, and resuming logs what an uninterrupted run logs."""
    config = TrainConfig(**{**TINY, **STREAMS, "log_every": 4, "ckpt_every": 1000}, steps=400)
    args = "--preset tiny --timesteps 40 --batch-size 8 --steps 400 --log-every 4" + STREAM_FLAGS
    run = _start(args.split() + ["--device", "cpu"], tmp_path / "stopped")
    log = tmp_path / "stopped" / "log.jsonl"
    deadline = time.monotonic() + 300
    while run.poll() is None and not (log.exists() and '"step": 8,' in log.read_text()):
        assert time.monotonic() < deadline, "no log record within 300 s"
        time.sleep(0.01)
    run.send_signal(signum)
    _, err = run.communicate(timeout=300)
    assert run.returncode == status == 128 + signum, err.decode()
    step = ckpt.read_checkpoint(tmp_path / "stopped").step
    assert 8 <= step < 400
    assert f"{signal.Signals(signum).name} at step {step}" in err.decode()
    assert "--resume" in err.decode()

    # Go on for 8 more steps, not to 400: the schedule does not depend on the length of a run.
    config = replace(config, steps=step + 8)
    train(replace(config, out_dir=str(tmp_path / "stopped")), progress=False, resume=True)
    train(replace(config, out_dir=str(tmp_path / "whole")), progress=False)
    assert _losses(log) == _losses(tmp_path / "whole" / "log.jsonl")
    assert _losses(log)[-1][0] == step + 8


def test_resuming_in_process_matches_and_can_extend(tmp_path):
    whole = train(TrainConfig(**TINY, steps=8, out_dir=str(tmp_path / "w")), progress=False)
    first = TrainConfig(**{**TINY, "ckpt_every": 3}, steps=6, out_dir=str(tmp_path / "r"))
    train(first, progress=False)
    resumed = train(replace(first, steps=8), progress=False, resume=True)
    assert _losses(tmp_path / "r" / "log.jsonl") == _losses(tmp_path / "w" / "log.jsonl")
    for p, q in zip(whole.ema.parameters(), resumed.ema.parameters(), strict=True):
        assert torch.equal(p, q)


def test_resume_refuses_another_configuration_and_fresh_runs_refuse_to_overwrite(tmp_path):
    config = TrainConfig(**TINY, steps=2, out_dir=str(tmp_path))
    train(config, progress=False)
    with pytest.raises(ckpt.CheckpointError, match=r"another configuration.*seed \(0 -> 1\)"):
        train(replace(config, seed=1, steps=4), progress=False, resume=True)
    with pytest.raises(ckpt.CheckpointError, match="already holds a checkpoint; resume it"):
        train(config, progress=False)
    with pytest.raises(ckpt.CheckpointError, match="no such checkpoint directory"):
        train(replace(config, out_dir=str(tmp_path / "empty")), progress=False, resume=True)


def test_warmup_and_ema_follow_the_recipe(tmp_path):
    config = TrainConfig(**{**TINY, "log_every": 1}, steps=5, warmup_steps=4, out_dir=str(tmp_path))
    result = train(config, progress=False)
    assert [r.lr for r in result.log] == [2e-4 * k / 4 for k in (1, 2, 3, 4)] + [2e-4]

    # One step from the seeded initialisation w0 to w1: the EMA is 0.1 w0 + 0.9 w1, since the
    # warmed-up decay of the first update is min(0.9999, (1 + 0) / (10 + 0)).
    one = train(replace(config, steps=1, out_dir=str(tmp_path / "one")), progress=False)
    torch.manual_seed(config.seed)
    initial = UNet(one.model.config)
    for w0, w1, ema in zip(
        initial.parameters(), one.model.parameters(), one.ema.parameters(), strict=True
    ):
        torch.testing.assert_close(ema, 0.1 * w0 + 0.9 * w1, rtol=0, atol=1e-7)


def test_ema_update_moves_each_weight_a_share_of_the_way():
    # decay 0.75: each averaged weight keeps three quarters of itself and takes a quarter of the
    # current weight, 0.75 * 1 + 0.25 * 3 = 1.5; the current weights stay as they are.
    model, ema = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
        for p in ema.parameters():
            p.fill_(1.0)
    ema_update(ema, model, 0.75)
    assert all(torch.equal(p, torch.full_like(p, 1.5)) for p in ema.parameters())
    assert all(torch.equal(p, torch.full_like(p, 3.0)) for p in model.parameters())
    with pytest.raises(ValueError):  # another network: the parameters do not pair up
        ema_update(torch.nn.Linear(2, 3, bias=False), model, 0.5)


def test_every_example_is_seen_once_per_epoch_and_the_order_resumes():
    sampler = EpochSampler(10, 3, seed=0)
    seen = torch.cat([sampler.next() for _ in range(10)])  # 30 indices: three epochs
    for epoch in seen.split(10):
        assert sorted(epoch.tolist()) == list(range(10))
    state = sampler.state()
    ahead = [sampler.next() for _ in range(4)]
    other = EpochSampler(10, 3, seed=0)
    other.load_state(state)
    assert all(
        torch.equal(a, b) for a, b in zip(ahead, [other.next() for _ in range(4)], strict=True)
    )


def _turns_nan(bad: int):
    """build_model, but the network returns NaN from its `bad`-th call on."""

    def build(config, info):
        model = build_model(config, info)
        forward, calls = model.forward, []

        def nan_from_call_bad(x, t):
            calls.append(None)
            out = forward(x, t)
            return out * float("nan") if len(calls) >= bad else out

        model.forward = nan_from_call_bad
        return model

    return build


def test_a_non_finite_loss_stops_at_its_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "build_model", _turns_nan(8))
    config = TrainConfig(
        **{**TINY, "log_every": 5, "ckpt_every": 5}, steps=20, out_dir=str(tmp_path)
    )
    with pytest.raises(NonFiniteLossError, match=r"nan at step 8\b.*checkpoint \(step 5\)"):
        train(config, progress=False)
    saved = ckpt.read_checkpoint(tmp_path)
    assert saved.step == 5
    monkeypatch.undo()
    model = load_trained(tmp_path, "model").model
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_huge_learning_rate_is_caught(tmp_path):
    config = TrainConfig(**TINY, steps=40, lr=1e6, warmup_steps=0, out_dir=str(tmp_path))
    with pytest.raises(DivergenceError, match=r"at step \d+"):
        train(config, progress=False)


def test_flips_follow_the_data(tmp_path, monkeypatch):
    calls = []

    def spy(x, generator):
        calls.append(x.shape)
        return x.flip(-1)

    monkeypatch.setattr(train_module, "random_hflip", spy)
    digits = train(TrainConfig(**TINY, steps=1, out_dir=str(tmp_path / "a")), progress=False)
    assert digits.config.hflip is False and not calls  # a mirrored digit is not a digit
    train(TrainConfig(**TINY, steps=2, hflip=True, out_dir=str(tmp_path / "b")), progress=False)
    assert calls == [(8, 1, 8, 8)] * 2


def test_toy_data_train_the_mlp(tmp_path):
    config = TrainConfig(data="toy:two_moons", T=40, steps=3, batch_size=32, out_dir=str(tmp_path))
    result = train(config, progress=False)
    assert result.config.preset == "mlp" and isinstance(result.model, MLPDenoiser)
    trained = load_trained(tmp_path)
    assert trained.data.shape == (2,) and trained.data.num_levels is None
    with pytest.raises(ValueError, match="preset 'mlp' is for 2-D toy data"):
        train(TrainConfig(preset="mlp", steps=1, out_dir=str(tmp_path / "x")), progress=False)


def test_the_learning_rate_comes_from_the_preset_unless_given():
    from ddpm.config import RECIPES
    from ddpm.data import load_digits

    digits = load_digits()
    assert RECIPES["digits"].lr != RECIPES["cifar10"].lr  # otherwise this test shows nothing
    for preset in ("digits", "tiny", "cifar10"):
        resolved = TrainConfig(preset=preset).resolve(digits)
        assert resolved.lr == RECIPES[preset].lr
        assert TrainConfig(preset=preset, lr=3e-3).resolve(digits).lr == 3e-3
    with pytest.raises(ValueError, match="lr and grad_clip must be positive"):
        TrainConfig(lr=0.0)


def _conv_dtypes(monkeypatch) -> list[torch.dtype]:
    """Record the output dtype of every convolution the U-Net runs."""
    seen: list[torch.dtype] = []
    forward = torch.nn.Conv2d.forward

    def recording(self, x):
        y = forward(self, x)
        seen.append(y.dtype)
        return y

    monkeypatch.setattr(torch.nn.Conv2d, "forward", recording)
    return seen


def test_bf16_autocast_in_training(tmp_path, monkeypatch):
    # The path CUDA takes by default, forced on the CPU: the network's convolutions run in bf16,
    # the loss stays float32 and close to the float32 run's (bf16 keeps 8 significant bits).
    seen = _conv_dtypes(monkeypatch)
    config = TrainConfig(**{**TINY, "log_every": 1}, steps=3, out_dir=str(tmp_path / "fp32"))
    fp32 = train(replace(config, bf16=False), progress=False)
    assert set(seen) == {torch.float32}
    seen.clear()
    bf16 = train(replace(config, bf16=True, out_dir=str(tmp_path / "bf16")), progress=False)
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    for a, b in zip(fp32.log, bf16.log, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=3e-2)
    assert [r.loss for r in fp32.log] != [r.loss for r in bf16.log]
    # The default: bf16 only where the device is CUDA; this run is on the CPU.
    seen.clear()
    train(replace(config, out_dir=str(tmp_path / "default")), progress=False)
    assert set(seen) == {torch.float32}


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    # torch.compile of the network inside the training loop (inductor, C++ on the CPU): the same
    # losses as the eager run up to float32 reordering, and a checkpoint without compile's
    # "_orig_mod." prefixes that loads into a plain model.
    config = TrainConfig(**{**TINY, "log_every": 1}, steps=3, out_dir=str(tmp_path / "eager"))
    if reason := compile_unavailable():
        pytest.skip(reason)
    eager = train(config, progress=False)
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = train(replace(config, compile=True, out_dir=str(tmp_path / "c")), progress=False)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did capture the network
    for a, b in zip(eager.log, compiled.log, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-4)
    for p, q in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    loaded = load_trained(tmp_path / "c")
    assert loaded.step == 3
    for p, q in zip(compiled.ema.parameters(), loaded.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_the_small_presets_train_on_16x16_images(tmp_path):
    # A user's own 16x16 grey images with the CPU-sized presets: the attention moves to 8x8.
    import numpy as np

    rng = np.random.default_rng(0)
    np.save(tmp_path / "faces.npy", rng.integers(0, 256, size=(40, 16, 16), dtype=np.uint8))
    config = TrainConfig(
        **TINY, data=str(tmp_path / "faces.npy"), steps=2, out_dir=str(tmp_path / "r")
    )
    result = train(config, progress=False)
    assert result.model.config.image_size == 16
    assert result.model.config.attn_resolutions == (8,)
    x = torch.randn(3, 1, 16, 16)
    assert result.ema(x, torch.tensor([0, 1, 2])).shape == x.shape
