"""Resuming restores every random stream: with flips and dropout on, a run stopped halfway and
resumed ends with exactly the weights of a run that was never stopped.

With both off, the flip generator and torch's global generator (dropout) are never drawn from
after the initialisation, so a trainer that forgot to restore either would still pass the other
resume tests. Here every stream the trainer owns is in use: the data order, the flips, dropout
and the timesteps and noise of Algorithm 1.
"""

import hashlib
import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save as save_safetensors

from ddpm import checkpoint as ckpt
from ddpm import train as train_module
from ddpm.config import TrainConfig
from ddpm.train import DeviceChangeWarning, train

pytestmark = pytest.mark.usefixtures("one_thread")

# The tiny U-Net on digits with every random stream in use; T = 40 keeps the schedule in (0, 1).
STREAMS_ON = dict(
    preset="tiny", T=40, batch_size=8, log_every=2, device="cpu", hflip=True, dropout=0.3
)
STEPS = 8


def _weights(run_dir) -> dict[str, torch.Tensor]:
    saved = ckpt.read_checkpoint(run_dir)
    return {
        f"{which}.{name}": value
        for which in ("model", "ema")
        for name, value in ckpt.load_tensors(saved.file(f"{which}.safetensors")).items()
    }


def test_stopping_halfway_and_resuming_gives_the_same_weights(tmp_path):
    whole = TrainConfig(**STREAMS_ON, steps=STEPS, ckpt_every=1000, out_dir=str(tmp_path / "w"))
    train(whole, progress=False)
    # The same run in two calls: the first ends at its checkpoint after STEPS // 2 updates.
    halves = replace(whole, steps=STEPS // 2, out_dir=str(tmp_path / "h"))
    train(halves, progress=False)
    assert ckpt.read_checkpoint(tmp_path / "h").step == STEPS // 2
    train(replace(halves, steps=STEPS), progress=False, resume=True)

    expected, resumed = _weights(tmp_path / "w"), _weights(tmp_path / "h")
    assert expected.keys() == resumed.keys()
    differing = [name for name in expected if not torch.equal(expected[name], resumed[name])]
    assert not differing, f"{len(differing)} tensors differ, e.g. {differing[:3]}"
    assert _losses(tmp_path / "h") == _losses(tmp_path / "w")


def test_a_class_conditional_run_resumes_its_label_dropout_exactly(tmp_path, monkeypatch):
    # Label dropout draws from its own stream: a resumed run drops the same labels at the same
    # steps as a run that was never stopped, and so ends with the same weights.
    labels = _labels(monkeypatch)
    conditional = dict(STREAMS_ON, class_conditional=True, label_dropout=0.5)
    whole = TrainConfig(**conditional, steps=STEPS, ckpt_every=1000, out_dir=str(tmp_path / "w"))
    train(whole, progress=False)
    expected_labels = list(labels)
    labels.clear()
    halves = replace(whole, steps=STEPS // 2, out_dir=str(tmp_path / "h"))
    train(halves, progress=False)
    train(replace(halves, steps=STEPS), progress=False, resume=True)
    assert [y.tolist() for y in labels] == [y.tolist() for y in expected_labels]
    dropped = sum(int((y == 10).sum()) for y in labels)
    assert 0 < dropped < STEPS * 8  # some labels, not all, became the null label 10
    expected, resumed = _weights(tmp_path / "w"), _weights(tmp_path / "h")
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)


def _labels(monkeypatch) -> list[torch.Tensor]:
    """Record the labels every training step passes to the network."""
    seen: list[torch.Tensor] = []
    losses = train_module.training_losses

    def recording(*args, model_kwargs=None, **kwargs):
        seen.append(model_kwargs["y"].clone())
        return losses(*args, model_kwargs=model_kwargs, **kwargs)

    monkeypatch.setattr(train_module, "training_losses", recording)
    return seen


def _losses(run_dir) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records]


def test_the_streams_are_in_use(tmp_path):
    # Without this, the test above could pass because flips or dropout did nothing: turning
    # either off changes the weights after the same number of steps.
    base = TrainConfig(**STREAMS_ON, steps=2, ckpt_every=1000, out_dir=str(tmp_path / "on"))
    train(base, progress=False)
    on = _weights(tmp_path / "on")
    for name, change in (("noflip", {"hflip": False}), ("nodrop", {"dropout": 0.0})):
        train(replace(base, out_dir=str(tmp_path / name), **change), progress=False)
        other = _weights(tmp_path / name)
        assert any(not torch.equal(on[key], other[key]) for key in on), name


def _with_noise_state(run_dir, noise: torch.Tensor) -> None:
    """Put `noise` in the checkpoint as the noise generator's saved state, re-signing the
    manifest as a save would, so that only the state's device differs."""
    saved = ckpt.read_checkpoint(run_dir)
    rng = ckpt.load_rng(saved)
    data = save_safetensors({**rng, "noise": noise})
    saved.file(ckpt.RNG).write_bytes(data)
    manifest_path = run_dir / ckpt.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][ckpt.RNG] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest[ckpt.MANIFEST_SHA256] = ckpt._manifest_sha256(manifest)
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _timesteps(monkeypatch) -> list[torch.Tensor]:
    """Record the timesteps of every training step (drawn from the noise generator)."""
    drawn: list[torch.Tensor] = []
    losses = train_module.training_losses

    def recording(diffusion, network, x0, t, *rest, **kwargs):
        drawn.append(t.clone())
        return losses(diffusion, network, x0, t, *rest, **kwargs)

    monkeypatch.setattr(train_module, "training_losses", recording)
    return drawn


def test_a_noise_state_saved_on_cuda_is_reseeded_on_the_cpu(tmp_path, monkeypatch):
    # A CUDA generator's state is 16 bytes (Philox seed and offset), a CPU generator's 5,056
    # (Mersenne Twister): the CPU cannot take the GPU's state, so resuming reseeds the noise,
    # says so, and does it the same way every time. No GPU needed: the state is made up.
    cuda_state = torch.arange(16, dtype=torch.uint8)
    config = TrainConfig(**STREAMS_ON, steps=4, ckpt_every=2, out_dir=str(tmp_path / "fresh"))
    drawn = _timesteps(monkeypatch)
    train(config, progress=False)
    fresh = list(drawn)

    resumed = {}
    for name, stop in (("a", 2), ("b", 2), ("c", 3)):
        run = replace(config, steps=stop, out_dir=str(tmp_path / name))
        train(run, progress=False)
        _with_noise_state(tmp_path / name, cuda_state)
        drawn.clear()
        with pytest.warns(DeviceChangeWarning, match=rf"16 bytes.*step {stop}.*one device type"):
            train(replace(run, steps=4), progress=False, resume=True)
        resumed[name] = list(drawn)
        assert ckpt.read_checkpoint(tmp_path / name).step == 4

    assert all(torch.equal(a, b) for a, b in zip(resumed["a"], resumed["b"], strict=True))
    assert not torch.equal(resumed["a"][0], fresh[2])  # no exact replay: the stream is new,
    assert not torch.equal(resumed["a"][0], fresh[0])  # not the run's first draws again,
    assert not torch.equal(resumed["c"][0], resumed["a"][1])  # and it depends on the step
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[name], b[name]) for name in a)
