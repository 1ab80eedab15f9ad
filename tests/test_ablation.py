"""The Table 2 bench at toy size: six variants, the paper's rows, and a complete results file."""

import json
from pathlib import Path

import pytest
import torch

from bench import ablation

PAPER = Path(ablation.__file__).parent / "data" / "paper_table2.json"


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()  # the bench sets its own
    yield
    torch.set_num_threads(threads)


def test_the_variants_are_the_papers_rows():
    paper = json.loads(PAPER.read_text())
    assert [v.key for v in ablation.VARIANTS] == [r["key"] for r in paper["rows"]]
    assert paper["source"].startswith("Ho, Jain & Abbeel (2020), arXiv:2006.11239v2, Table 2")
    # Each key spells its variant: prediction, objective, variance.
    spelled = {"mu": "mu", "eps": "eps", "L": "kl", "mse": "simple", "simple": "simple"}
    for v in ablation.VARIANTS:
        prediction, objective, variance = v.key.split("_")
        assert v.mean_type.value == spelled[prediction]
        assert v.loss_type.value == spelled[objective]
        assert v.var_type.value == {"fixed": "fixed_large", "learned": "learned_range"}[variance]


def test_quick_run_writes_every_variant(tmp_path):
    out = tmp_path / "ablation.json"
    ablation.main(["--quick", "--threads", "1", "--output", str(out)])
    data = json.loads(out.read_text())
    settings = data["settings"]
    assert settings["quick"] is True
    assert settings["test_split_size"] == 359 and settings["num_levels"] == 17
    assert settings["frechet_floor_train_vs_test"] > 0
    assert [r["key"] for r in data["variants"]] == [v.key for v in ablation.VARIANTS]
    for row in data["variants"]:
        assert row["train_cpu_s"] > 0 and row["loss_log"]
        if row["stable"]:
            assert len(row["bpd"]["terms_mean"]) == settings["T"]
            assert len(row["shown_samples_levels"]) == settings["samples"]
