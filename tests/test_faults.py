"""Faults a user meets: a shared or busy run directory, a diverging run, a checkpoint whose data
or manifest changed. Each runs the real command and checks its exit status, its message and the
files before and after."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm import checkpoint as ckpt
from ddpm.cli import main
from ddpm.trained import load_trained

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--preset", "tiny", "--timesteps", "40", "--batch-size", "8", "--log-every", "2"]
TINY += ["--device", "cpu", "--no-progress"]


def _train(out: Path, *extra: str) -> int:
    return main(["train", *TINY, "--out-dir", str(out), *extra])


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its contents."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _error(capsys) -> str:
    return capsys.readouterr().err


# ----- a run directory is the run's alone -----


def test_a_fresh_run_refuses_foreign_files_and_leaves_them_as_they_were(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "step-000002").mkdir()
    (tmp_path / "step-000002" / "figure.png").write_bytes(b"png")
    before = _snapshot(tmp_path)
    assert _train(tmp_path, "--steps", "2") == 1
    assert "holds files this run did not write (notes.txt, step-000002)" in _error(capsys)
    assert _snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "step-000002"]

    # Told to share the directory, it trains beside them: at step 2 it saves into the taken
    # step folder, whose own file it keeps.
    assert _train(tmp_path, "--steps", "2", "--share-dir") == 0
    assert ckpt.read_checkpoint(tmp_path).step == 2
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (tmp_path / "step-000002" / "figure.png").read_bytes() == b"png"


def test_a_new_checkpoint_removes_only_what_the_old_one_wrote(tmp_path, capsys):
    assert _train(tmp_path, "--steps", "2", "--ckpt-every", "2") == 0
    (tmp_path / "step-000002" / "notes.txt").write_text("mine")
    (tmp_path / "step-000001").mkdir()  # not a folder any save of this run wrote
    assert _train(tmp_path, "--resume", "--steps", "4") == 0
    assert ckpt.read_checkpoint(tmp_path).step == 4
    assert sorted(p.name for p in (tmp_path / "step-000002").iterdir()) == ["notes.txt"]
    assert (tmp_path / "step-000001").is_dir()


def test_a_log_without_a_checkpoint_is_never_overwritten(tmp_path, capsys):
    assert _train(tmp_path, "--steps", "4") == 0
    (tmp_path / ckpt.MANIFEST).unlink()  # as after a hand clean-up, or a kill before step 1
    before = _snapshot(tmp_path)
    assert _train(tmp_path, "--steps", "4") == 1
    assert "holds files this run did not write (log.jsonl, step-000004)" in _error(capsys)
    assert _train(tmp_path, "--steps", "4", "--share-dir") == 1
    assert "log.jsonl exists" in _error(capsys)
    assert _snapshot(tmp_path) == before


def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process that holds `run_dir`'s lock until killed."""
    code = (
        "import sys, time; from ddpm.checkpoint import claim_run_dir\n"
        "with claim_run_dir(sys.argv[1], 'holder'):\n"
        "    print('ready', flush=True); time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline() == "ready\n"
    return holder


def test_a_second_run_fails_at_once_naming_the_first_and_a_dead_ones_lock_blocks_nobody(
    tmp_path, capsys
):
    holder = _hold_lock(tmp_path)
    try:
        started = time.perf_counter()
        assert _train(tmp_path, "--steps", "2") == 1
        assert time.perf_counter() - started < 5  # no data loaded, no model built
        message = _error(capsys)
        assert f"in use by another run (pid {holder.pid} on " in message
        assert ": holder)" in message
        assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.LOCK]
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # dies holding it: the lock file stays behind
        holder.wait()
    assert (tmp_path / ckpt.LOCK).is_file()
    assert _train(tmp_path, "--steps", "2") == 0
    assert ckpt.read_checkpoint(tmp_path).step == 2


# ----- divergence is not success -----


def test_an_exploding_loss_stops_at_its_step_and_a_resume_may_lower_the_rate(tmp_path, capsys):
    # The loss of step 1 is the untrained network's; the first update that can change a loss
    # is update 1, so with this rate the explosion is seen at step 2.
    assert _train(tmp_path / "fresh", "--steps", "20", "--lr", "1e9", "--warmup-steps", "0") == 1
    message = _error(capsys)
    assert " at step 2 is more than 1000 times the first step's" in message
    assert "before any checkpoint was written; start again with a learning rate below 1e+09" in (
        message
    )
    assert not (tmp_path / "fresh" / ckpt.MANIFEST).exists()
    assert (tmp_path / "fresh" / "log.jsonl").read_text() == ""

    run = tmp_path / "run"
    assert _train(run, "--steps", "4", "--warmup-steps", "0") == 0
    assert _train(run, "--resume", "--steps", "8", "--lr", "1e9") == 1
    message = _error(capsys)
    # Update 5 is the first at 1e9 (NaN or a growth, whichever the arithmetic reaches).
    assert re.search(r"training loss (is nan|\S+) at step 6\b", message)
    assert "last good checkpoint (step 4)" in message
    assert f"ddpm train --out-dir {run} --resume --lr" in message
    assert ckpt.read_checkpoint(run).step == 4

    assert _train(run, "--resume", "--steps", "8", "--lr", "1e-4") == 0
    assert "with lr 0.0001 instead of the checkpoint's 0.0002" in _error(capsys)
    saved = ckpt.read_checkpoint(run)
    assert saved.config["lr"] == 1e-4
    assert saved.state["overrides"] == [{"step": 4, "field": "lr", "from": 2e-4, "to": 1e-4}]
    lrs = [json.loads(line)["lr"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert lrs == [2e-4, 2e-4, 1e-4, 1e-4]


def _with_nan_weights(run: Path, out: Path) -> None:
    """A copy of the checkpoint in `run` whose weights are all NaN, saved as training saves."""
    saved = ckpt.read_checkpoint(run)
    model = load_trained(run, "model").model
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    optimizer = torch.optim.Adam(model.parameters())
    ckpt.save_checkpoint(
        out,
        saved.step,
        model=model,
        ema=model,
        optimizer=optimizer,
        rng=ckpt.load_rng(saved),
        config=saved.config,
        state=saved.state,
    )


def test_samples_and_bounds_from_nan_weights_are_an_error_and_nothing_is_written(tmp_path, capsys):
    assert _train(tmp_path / "run", "--steps", "2") == 0
    _with_nan_weights(tmp_path / "run", tmp_path / "nan")
    before = _snapshot(tmp_path / "nan")
    out = tmp_path / "s.png"
    assert main(["sample", str(tmp_path / "nan"), "--num", "4", "--out", str(out)]) == 1
    message = _error(capsys)
    assert "4 of 4 samples are not finite (NaN or infinite) with the weights of step 2" in message
    assert "weight tensors of the model are not finite" in message
    assert not out.exists() and not out.with_suffix(".npy").exists()
    bpd = ["bpd", str(tmp_path / "nan"), "--num", "2", "--out", str(tmp_path / "b.json")]
    assert main([*bpd, "--no-progress"]) == 1
    assert "2 of 2 per-example bounds are not finite" in _error(capsys)
    assert not (tmp_path / "b.json").exists()
    assert _snapshot(tmp_path / "nan") == before


# ----- a checkpoint knows its data and protects itself -----


def _images(path: Path, seed: int, size: int = 8) -> None:
    rng = np.random.default_rng(seed)
    np.save(path, rng.integers(0, 256, size=(20, size, size), dtype=np.uint8))


def test_resume_and_bpd_refuse_data_that_changed(tmp_path, capsys):
    data, run = tmp_path / "faces.npy", tmp_path / "run"
    _images(data, seed=0)
    assert _train(run, "--data", str(data), "--steps", "2") == 0
    recorded = ckpt.read_checkpoint(run).state["data"]
    assert (recorded["shape"], recorded["num_levels"]) == ([1, 8, 8], 256)
    bpd = ["bpd", str(run), "--num", "2", "--no-progress", "--out", str(tmp_path / "b.json")]

    _images(data, seed=1)  # same shape and levels, other pixels
    assert _train(run, "--data", str(data), "--resume", "--steps", "4") == 1
    message = _error(capsys)
    assert "differ from the data the checkpoint was trained on" in message
    assert f"fingerprint {recorded['fingerprint'][:12]}... -> " in message
    assert main(bpd) == 1
    assert "fingerprint" in _error(capsys)

    _images(data, seed=0, size=6)
    assert main(bpd) == 1
    assert "shape (1, 8, 8) -> (1, 6, 6)" in _error(capsys)
    assert ckpt.read_checkpoint(run).step == 2
    assert not (tmp_path / "b.json").exists()

    _images(data, seed=0)  # the very data again
    assert main(bpd) == 0


def _manifest(run: Path) -> dict:
    return json.loads((run / ckpt.MANIFEST).read_text())


def test_a_hand_edited_manifest_is_refused_and_the_log_kept(tmp_path, capsys):
    assert _train(tmp_path, "--steps", "4", "--ckpt-every", "2") == 0
    manifest = _manifest(tmp_path)
    manifest["step"] = 2  # resuming would cut the log back to step 2
    (tmp_path / ckpt.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log = (tmp_path / "log.jsonl").read_text()
    assert _train(tmp_path, "--resume", "--steps", "6") == 1
    message = _error(capsys)
    assert "manifest.json: edited or damaged: its contents no longer match" in message
    assert "it says step 2 but names the folder step-000004" in message
    assert (tmp_path / "log.jsonl").read_text() == log
    assert main(["info", str(tmp_path)]) == 1


def test_a_checkpoint_of_the_first_format_still_loads_and_resumes(tmp_path, capsys):
    assert _train(tmp_path, "--steps", "2") == 0
    manifest = _manifest(tmp_path)
    # What the first format wrote: no checksum of its own, no data fingerprint, no start loss.
    manifest["format"] = "ddpm-checkpoint/1"
    del manifest[ckpt.MANIFEST_SHA256], manifest["state"]["data"]["fingerprint"]
    del manifest["state"]["start_loss"], manifest["state"]["overrides"]
    (tmp_path / ckpt.MANIFEST).write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["info", str(tmp_path)]) == 0
    assert "levels 17, fingerprint not recorded" in capsys.readouterr().out
    assert _train(tmp_path, "--resume", "--steps", "4") == 0
    saved = _manifest(tmp_path)
    assert saved["format"] == ckpt.FORMAT and saved["step"] == 4
    rest = {k: v for k, v in saved.items() if k != ckpt.MANIFEST_SHA256}
    text = json.dumps(rest, indent=2, sort_keys=True) + "\n"
    assert saved[ckpt.MANIFEST_SHA256] == hashlib.sha256(text.encode()).hexdigest()
