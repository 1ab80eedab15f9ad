"""Data-parallel training: two gloo processes on the CPU match one process at the same batch,
stop together after the same step when one of them is signalled, and stop together when rank 0
refuses the run directory."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddpm import checkpoint as ckpt
from ddpm.config import TrainConfig
from ddpm.distributed import DistContext, mean_over_ranks, shard
from ddpm.train import train

REPO = Path(__file__).resolve().parents[1]


def test_shards_tile_the_global_batch():
    x = torch.arange(12).reshape(6, 2)
    parts = [shard(x, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert torch.equal(torch.cat(parts), x)
    assert torch.equal(shard(x, DistContext()), x)
    assert torch.equal(mean_over_ranks(x.float(), DistContext()), x.float())


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_two_processes_match_one(tmp_path):
    settings = dict(preset="tiny", T=40, batch_size=8, steps=4, log_every=1, device="cpu")
    flags = "--preset tiny --timesteps 40 --batch-size 8 --steps 4 --log-every 1 --device cpu"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "ddpm", "train", "--no-progress"]
    command += flags.split() + ["--out-dir", str(tmp_path / "ddp")]
    ddp = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the single process trains meanwhile
        single = train(TrainConfig(**settings, out_dir=str(tmp_path / "one")), progress=False)
    finally:
        torch.set_num_threads(threads)
    _, err = ddp.communicate(timeout=300)
    assert ddp.returncode == 0, err.decode()[-3000:]

    ddp_log, one_log = _log(tmp_path / "ddp"), _log(tmp_path / "one")
    assert [r["step"] for r in ddp_log] == [1, 2, 3, 4]  # rank 0 alone wrote the log
    for a, b in zip(ddp_log, one_log, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["lr"] == b["lr"]

    saved = ckpt.read_checkpoint(tmp_path / "ddp")
    assert saved.step == 4
    for which, reference in (("model", single.model), ("ema", single.ema)):
        weights = ckpt.load_tensors(saved.file(f"{which}.safetensors"))
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(weights[name], value, rtol=1e-4, atol=1e-6)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(out_dir: Path, flags: str, world_size: int = 2) -> list[subprocess.Popen]:
    """`python -m ddpm train` as torchrun starts it: one process per rank, placed by the
    environment, so that a test can signal one rank alone and read each rank's exit status."""
    port = str(_free_port())
    command = [sys.executable, "-m", "ddpm", "train", "--no-progress", "--device", "cpu"]
    command += flags.split() + ["--out-dir", str(out_dir)]
    ranks = []
    for rank in range(world_size):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "WORLD_SIZE": str(world_size),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
        }
        ranks.append(
            subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        )
    return ranks


def _finish(ranks: list[subprocess.Popen]) -> list[str]:
    errors = []
    for process in ranks:
        try:
            errors.append(process.communicate(timeout=300)[1].decode())
        finally:
            process.kill()
    return errors


@pytest.mark.parametrize(
    ("signalled", "signum"),
    [(1, signal.SIGTERM), (0, signal.SIGHUP)],
    ids=["SIGTERM-to-rank-1", "SIGHUP-to-rank-0"],
)
def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path, signalled, signum):
    """The other rank was not signalled, yet it stops after the same step; rank 0 writes the one
    checkpoint of that step; both exit as a single process would (128 + the signal's number)."""
    out = tmp_path / "run"
    flags = "--preset tiny --timesteps 40 --batch-size 8 --steps 100000 --log-every 2"
    ranks = _ranks(out, flags)
    log = out / "log.jsonl"
    deadline = time.monotonic() + 300
    while not (log.exists() and '"step": 4,' in log.read_text()):
        assert all(p.poll() is None for p in ranks), _finish(ranks)
        assert time.monotonic() < deadline, "no log record within 300 s"
        time.sleep(0.01)
    ranks[signalled].send_signal(signum)
    errors = _finish(ranks)

    name = signal.Signals(signum).name
    assert [p.returncode for p in ranks] == [128 + signum] * 2, errors
    stopped = [re.search(rf"{name} at step (\d+)", err) for err in errors]
    assert all(stopped), errors
    steps = {int(match[1]) for match in stopped}
    assert len(steps) == 1, errors  # the same step on both ranks
    saved = ckpt.read_checkpoint(out)
    assert {saved.step} == steps and 4 <= saved.step < 100000
    assert sorted(p.name for p in out.glob("step-*")) == [saved.path.name]


def test_a_directory_that_rank_0_refuses_stops_every_rank(tmp_path):
    # Only rank 0 looks at the directory; the other rank learns of the refusal instead of
    # waiting for a partner that has gone.
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("someone else's")
    ranks = _ranks(out, "--preset tiny --timesteps 40 --batch-size 8 --steps 4")
    errors = _finish(ranks)
    assert [p.returncode for p in ranks] == [1, 1], errors
    assert "holds files this run did not write (notes.txt)" in errors[0]
    assert "refused by rank 0" in errors[1]
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
