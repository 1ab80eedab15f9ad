"""Data-parallel training: two gloo processes on the CPU match one process at the same batch."""

import json
import os
import subprocess
import sys
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
