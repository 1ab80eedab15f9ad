"""The shipped model: its files agree with its manifest, a damaged file is refused, and
`ddpm sample` / `ddpm bpd` fall back to it only where the user has no run of their own."""

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ddpm import checkpoint as ckpt
from ddpm import pretrained
from ddpm.cli import main
from ddpm.config import TrainConfig
from ddpm.data import load_digits
from ddpm.train import train
from ddpm.trained import load_trained

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
MAX_BYTES = 10 * 2**20  # the repository ships at most 10 MB of weights


# each shipped model, the bench command that trains it and that command's results file
SHIPPED = {"digits": "likelihood", "digits-simple": "digits_simple"}


def test_every_shipped_model_is_made_by_a_bench_command():
    assert pretrained.shipped_names() == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_shipped_weights_match_their_manifest_and_fit_the_size_limit(name):
    folder = pretrained.pretrained_dir(name)
    data = (folder / pretrained.WEIGHTS).read_bytes()
    manifest = json.loads((folder / pretrained.MANIFEST).read_text())
    assert hashlib.sha256(data).hexdigest() == manifest["sha256"]
    assert len(data) == manifest["bytes"] <= MAX_BYTES
    assert manifest["command"].startswith(f"python -m bench.{SHIPPED[name]}")


def test_the_paper_settings_model_is_the_default_training_run():
    """What the digits chapter says of it: `ddpm train`'s default run (the paper's settings and
    the digits recipe), seed 0, every step of the recipe."""
    manifest = pretrained.read_manifest("digits-simple")
    default = TrainConfig(seed=0, device="cpu").resolve(load_digits())
    shipped = TrainConfig.from_dict(manifest.config)
    assert shipped == replace(default, out_dir=shipped.out_dir)
    assert (shipped.mean_type.value, shipped.var_type.value, shipped.loss_type.value) == (
        "eps",
        "fixed_large",
        "simple",
    )
    assert shipped.T == 1000 and manifest.step == shipped.steps


def test_load_pretrained_holds_the_file_weights_in_eval_mode():
    trained = pretrained.load_pretrained()
    saved = load_file(pretrained.pretrained_dir() / pretrained.WEIGHTS)
    state = trained.model.state_dict()
    assert state.keys() == saved.keys()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert not trained.model.training
    manifest = pretrained.read_manifest()
    assert trained.config == TrainConfig.from_dict(manifest.config)
    assert trained.step == manifest.step and trained.data.shape == (1, 8, 8)
    assert trained.diffusion.T == manifest.config["T"]


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """A copy of the shipped models that a test may damage."""
    root = tmp_path / "weights"
    shutil.copytree(pretrained.WEIGHTS_DIR, root)
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", root)
    return root / "digits"


def test_weights_whose_hash_does_not_match_are_refused(shipped_copy):
    path = shipped_copy / pretrained.WEIGHTS
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # one bit of one weight: still a readable safetensors file
    path.write_bytes(bytes(data))
    expected = json.loads((shipped_copy / pretrained.MANIFEST).read_text())["sha256"]
    with pytest.raises(ckpt.CheckpointError) as err:
        pretrained.load_pretrained()
    message = str(err.value)
    assert str(path) in message and expected in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message


def test_a_missing_model_names_the_shipped_ones(shipped_copy):
    with pytest.raises(ckpt.CheckpointError, match="no shipped model named 'faces'.*digits"):
        pretrained.load_pretrained("faces")
    (shipped_copy / pretrained.WEIGHTS).unlink()
    with pytest.raises(ckpt.CheckpointError, match="missing or unreadable"):
        pretrained.load_pretrained()


def test_write_pretrained_ships_a_runs_ema_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "weights")
    run = tmp_path / "run"
    config = TrainConfig(preset="tiny", T=40, steps=3, batch_size=4, device="cpu", out_dir=str(run))
    train(config, progress=False)
    manifest = pretrained.write_pretrained(run, "tiny-digits", "python -m x", 2.5, 0.1, 7)
    shipped = pretrained.load_pretrained("tiny-digits")
    trained = load_trained(run, "ema", "cpu")
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0, 5, 39])
    with torch.no_grad():
        assert torch.equal(shipped.model(x, t), trained.model(x, t))
    assert shipped.config == replace(trained.config, out_dir=TrainConfig().out_dir)
    assert shipped.step == trained.step == 3
    assert manifest == pretrained.read_manifest("tiny-digits")
    assert (manifest.test_bpd, manifest.test_bpd_stderr, manifest.test_examples) == (2.5, 0.1, 7)


def test_sample_and_bpd_use_the_shipped_model_only_without_a_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no runs/digits here
    argv = ["sample", "--sampler", "ddim", "--steps", "3", "--num", "2", "--no-progress"]
    assert main([*argv, "--out", "s.png"]) == 0
    out = capsys.readouterr().out
    assert (
        "using the shipped digits model" in out and f"step {pretrained.read_manifest().step}" in out
    )
    assert main(["bpd", "--num", "2", "--no-progress", "--out", "b.json"]) == 0
    assert "using the shipped digits model" in capsys.readouterr().out
    assert json.loads((tmp_path / "b.json").read_text())["step"] == pretrained.read_manifest().step
    assert main([*argv, "--weights", "model", "--out", "m.png"]) == 1
    assert "only its EMA weights" in capsys.readouterr().err

    # A run of the user's own in the default directory is used, and nothing is said about it.
    config = TrainConfig(preset="tiny", T=40, steps=2, batch_size=4, device="cpu")
    train(config, progress=False)
    assert main([*argv, "--out", "own.png"]) == 0
    out = capsys.readouterr().out
    assert "shipped" not in out and "step 2" in out


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_the_manifest_records_the_bound_of_the_run_that_made_the_weights(name):
    """The manifest and the bench's results file are written by the same run: same weights,
    same bound; and that bound is the mean of the per-image bounds the results file lists."""
    recorded = json.loads((REPO / "bench" / "results" / f"{SHIPPED[name]}.json").read_text())
    manifest = pretrained.read_manifest(name)
    assert recorded["shipped"]["sha256"] == manifest.sha256
    images = recorded["bound"]["per_image_bpd"]
    assert manifest.test_examples == len(images) == len(load_digits().test)
    assert manifest.test_bpd == pytest.approx(sum(images) / len(images), rel=1e-12)
    assert manifest.command == recorded["command"]


def test_bench_likelihood_quick_measures_every_term_and_ships_nothing(tmp_path):
    from bench import likelihood

    before = (pretrained.pretrained_dir() / pretrained.WEIGHTS).read_bytes()
    out = tmp_path / "likelihood.json"
    likelihood.main(["--quick", "--output", str(out)])
    result = json.loads(out.read_text())
    assert result["settings"]["quick"] is True and "shipped" not in result
    assert result["train"]["step"] == likelihood.QUICK["steps"]
    assert result["train"]["cpu_seconds"] > 0 and result["train"]["wall_seconds"] > 0
    for bound in [result["bound"], *result["fixed_variance"].values()]:
        images = bound["per_image_bpd"]
        assert len(images) == bound["num_examples"] == len(load_digits().test)
        assert len(bound["terms_bpd"]) == likelihood.QUICK["T"]
        # the mean bound is the prior term plus the mean of every other term
        total = bound["prior_bpd"] + sum(bound["terms_bpd"])
        assert bound["total_bpd"] == pytest.approx(total, rel=1e-9)
        assert bound["total_bpd"] == pytest.approx(sum(images) / len(images), rel=1e-9)
    assert set(result["fixed_variance"]) == {"fixed_large", "fixed_small"}
    assert set(result["baselines"]) == {"categorical", "gmm"}
    assert (pretrained.pretrained_dir() / pretrained.WEIGHTS).read_bytes() == before


def test_bench_digits_simple_quick_keeps_the_whole_log_and_ships_nothing(tmp_path):
    from bench import digits_simple

    before = (pretrained.pretrained_dir("digits-simple") / pretrained.WEIGHTS).read_bytes()
    out = tmp_path / "digits_simple.json"
    digits_simple.main(["--quick", "--output", str(out)])
    result = json.loads(out.read_text())
    assert result["settings"]["quick"] is True and "shipped" not in result
    quick = digits_simple.QUICK
    assert result["train"]["step"] == quick["steps"]
    # one record every log_every steps, the last one the last step
    steps = [r["step"] for r in result["train"]["log"]]
    assert steps == list(range(quick["log_every"], quick["steps"] + 1, quick["log_every"]))
    assert result["train"]["last_loss"] == result["train"]["log"][-1]["loss"]
    bound = result["bound"]
    assert bound["num_examples"] == len(load_digits().test) == len(bound["per_image_bpd"])
    assert bound["total_bpd"] == pytest.approx(bound["prior_bpd"] + sum(bound["terms_bpd"]))
    after = (pretrained.pretrained_dir("digits-simple") / pretrained.WEIGHTS).read_bytes()
    assert after == before


def test_the_recorded_bound_is_below_the_per_pixel_categorical_baseline():
    """The point of the shipped model (issue: a digits likelihood below the baselines), with the
    baseline counted here from the data: add-one smoothed level frequencies of each pixel."""
    digits = load_digits()
    k = digits.num_levels
    train = (
        np.rint((digits.train.numpy() + 1) * (k - 1) / 2).astype(int).reshape(len(digits.train), -1)
    )
    test = (
        np.rint((digits.test.numpy() + 1) * (k - 1) / 2).astype(int).reshape(len(digits.test), -1)
    )
    counts = np.stack([(train == level).sum(axis=0) for level in range(k)], axis=1)  # [D, K]
    probs = (counts + 1) / (len(train) + k)
    baseline = -np.log2(probs[np.arange(test.shape[1]), test]).mean()
    manifest = pretrained.read_manifest()
    assert manifest.test_bpd + 3 * manifest.test_bpd_stderr < baseline
