"""Checkpoints: round trip, atomic replacement, and clear errors for damaged or foreign files."""

import errno
import hashlib
import json
import os

import pytest
import torch
from support import damage_file
from torch import nn

from ddpm import checkpoint as ckpt
from ddpm.checkpoint import CheckpointError


def _model(seed: int, width: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, width), nn.SiLU(), nn.Linear(width, 2))


def _save(run_dir, step: int, seed: int):
    model, ema = _model(seed), _model(seed + 100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.ones(5, 3)).sum().backward()
    optimizer.step()  # Adam now holds moments worth restoring
    generator = torch.Generator().manual_seed(seed)
    ckpt.save_checkpoint(
        run_dir,
        step,
        model=model,
        ema=ema,
        optimizer=optimizer,
        rng={"noise": generator.get_state(), "pos": torch.tensor([seed])},
        config={"seed": seed, "preset": "tiny"},
        state={"loss_sum": 1.5},
    )
    return model, ema, optimizer


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, ema, optimizer = _save(tmp_path, 7, seed=1)
    saved = ckpt.read_checkpoint(tmp_path)
    assert (saved.step, saved.config, saved.state) == (
        7,
        {"seed": 1, "preset": "tiny"},
        {"loss_sum": 1.5},
    )

    fresh, fresh_ema = _model(50), _model(51)
    ckpt.load_weights(saved, fresh, "model")
    ckpt.load_weights(saved, fresh_ema)  # EMA by default
    assert _same_weights(fresh, model) and _same_weights(fresh_ema, ema)

    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    ckpt.load_optimizer(saved, fresh_opt)
    for p, q in zip(model.parameters(), fresh.parameters(), strict=True):
        a, b = optimizer.state[p], fresh_opt.state[q]
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(
            a["exp_avg_sq"], b["exp_avg_sq"]
        )

    rng = ckpt.load_rng(saved)
    expected = torch.randn(4, generator=torch.Generator().manual_seed(1))
    restored = torch.Generator()
    restored.set_state(rng["noise"])
    assert torch.equal(torch.randn(4, generator=restored), expected)


def test_a_new_save_replaces_the_old_one(tmp_path):
    _save(tmp_path, 5, seed=1)
    model, _, _ = _save(tmp_path, 10, seed=2)
    saved = ckpt.read_checkpoint(tmp_path)
    assert saved.step == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.MANIFEST, "step-000010"]
    loaded = _model(0)
    ckpt.load_weights(saved, loaded, "model")
    assert _same_weights(loaded, model)


@pytest.mark.parametrize("fail_on", [ckpt.MODEL, ckpt.RNG, ckpt.MANIFEST])
def test_a_crash_during_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, fail_on):
    old_model, _, _ = _save(tmp_path, 5, seed=1)
    real_replace = ckpt.os.replace

    def crash(src, dst):
        # The temporary file has been written and synced; die before it takes the real name.
        if str(dst).endswith(fail_on):
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 10, seed=2)
    monkeypatch.setattr(ckpt.os, "replace", real_replace)

    saved = ckpt.read_checkpoint(tmp_path)
    assert saved.step == 5
    loaded = _model(0)
    ckpt.load_weights(saved, loaded, "model")
    assert _same_weights(loaded, old_model)
    assert not list(tmp_path.rglob("*.tmp"))  # the temporary file was cleaned up

    _save(tmp_path, 10, seed=2)  # the next save works over the leftovers
    assert ckpt.read_checkpoint(tmp_path).step == 10


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    ckpt.atomic_write(target, b"old contents")

    def crash(src, dst):
        assert open(src, "rb").read() == b"new"  # the whole new file was on disk first
        raise OSError("disk gone")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(OSError):
        ckpt.atomic_write(target, b"new")
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_write_names_the_file_when_a_write_fails(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a full disk reports it

    monkeypatch.setattr(ckpt.os, "fsync", full)
    with pytest.raises(OSError, match="No space left") as caught:
        ckpt.atomic_write(tmp_path / "f.bin", b"data")
    assert caught.value.filename == str(tmp_path / "f.bin")
    assert str(tmp_path / "f.bin") in str(caught.value)


@pytest.mark.parametrize("filename", [ckpt.MODEL, ckpt.EMA, ckpt.OPTIMIZER, ckpt.RNG, ckpt.CONFIG])
@pytest.mark.parametrize(
    ("how", "words"), [("truncate", "truncated"), ("flip", "corrupted"), ("delete", "missing")]
)
def test_damaged_files_are_named_in_the_error(tmp_path, filename, how, words):
    _save(tmp_path, 5, seed=1)
    damage_file(tmp_path / "step-000005" / filename, how)
    with pytest.raises(CheckpointError, match=words) as info:
        ckpt.read_checkpoint(tmp_path)
    assert filename in str(info.value)


@pytest.mark.parametrize("contents", ["", "{not json", '{"format": "ddpm-checkpoint/1"}', "[]"])
def test_an_unreadable_manifest_is_reported(tmp_path, contents):
    _save(tmp_path, 5, seed=1)
    (tmp_path / ckpt.MANIFEST).write_text(contents)
    with pytest.raises(CheckpointError, match="manifest") as info:
        ckpt.read_checkpoint(tmp_path)
    assert ckpt.MANIFEST in str(info.value)


def test_a_missing_or_empty_directory_is_reported(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        ckpt.read_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        ckpt.read_checkpoint(tmp_path)


def test_another_architecture_is_reported_with_the_tensor(tmp_path):
    _save(tmp_path, 5, seed=1)
    saved = ckpt.read_checkpoint(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"0\.weight has shape \(4, 3\) in the file, \(8, 3\)"
    ):
        ckpt.load_weights(saved, _model(0, width=8))
    with pytest.raises(CheckpointError, match="another architecture.*missing") as info:
        ckpt.load_weights(saved, nn.Sequential(nn.Linear(3, 2)))
    assert ckpt.EMA in str(info.value)
    other_opt = torch.optim.Adam(nn.Linear(3, 2).parameters())
    with pytest.raises(CheckpointError, match=ckpt.OPTIMIZER):
        ckpt.load_optimizer(saved, other_opt)


class _Payload:
    ran = False

    def __reduce__(self):
        return (_Payload.mark, ())

    @staticmethod
    def mark():
        _Payload.ran = True
        return {}


def _reseal(manifest: dict) -> None:
    """Recompute the manifest's own checksum as its format defines it: the SHA-256 of the other
    keys, written as sorted JSON with a two-space indent and a final newline."""
    rest = {k: v for k, v in manifest.items() if k != ckpt.MANIFEST_SHA256}
    text = json.dumps(rest, indent=2, sort_keys=True) + "\n"
    manifest[ckpt.MANIFEST_SHA256] = hashlib.sha256(text.encode()).hexdigest()


def test_loading_never_unpickles_code(tmp_path):
    """A pickle that would run code when loaded, even with a matching checksum, is refused."""
    _save(tmp_path, 5, seed=1)
    path = tmp_path / "step-000005" / ckpt.OPTIMIZER
    torch.save({"state": {}, "param_groups": _Payload()}, path)
    manifest = json.loads((tmp_path / ckpt.MANIFEST).read_text())
    data = path.read_bytes()
    manifest["files"][ckpt.OPTIMIZER] = {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    _reseal(manifest)  # a forger who knows the format
    (tmp_path / ckpt.MANIFEST).write_text(json.dumps(manifest))

    saved = ckpt.read_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=ckpt.OPTIMIZER):
        ckpt.load_optimizer(saved, torch.optim.Adam(_model(0).parameters()))
    assert not _Payload.ran
    torch.load(path, weights_only=False)  # the payload is real: an unrestricted load runs it
    assert _Payload.ran
