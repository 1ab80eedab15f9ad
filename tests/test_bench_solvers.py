"""`python -m bench.solvers --quick`: the results file's shape, and its claims recomputed from its
own numbers (the measurement itself is bench/results/solvers.json, made by a full run)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ddpm
from bench import solvers


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    threads = torch.get_num_threads()
    path = tmp_path_factory.mktemp("solvers") / "solvers.json"
    try:
        solvers.main(["--quick", "--threads", "1", "--output", str(path)])
    finally:
        torch.set_num_threads(threads)
    return json.loads(path.read_text())


def test_header_and_settings(result):
    assert result["benchmark"] == "solvers"
    assert result["versions"]["ddpm"] == ddpm.__version__
    settings = result["settings"]
    assert settings["quick"] is True and settings["T"] == 100  # the shipped digits model
    assert len(settings["seeds"]) >= 2  # a spread needs two seeds
    assert result["wall_seconds"] > 0


def test_every_sampler_is_measured_once_per_seed(result):
    settings, rows = result["settings"], result["rows"]
    counts = settings["step_counts"]
    expected = [("ddim", solvers.QUICK["reference_steps"])]
    expected += [(name, n) for n in counts for name in ("dpmsolver++", "ddim")]
    expected += [("ancestral", settings["T"])]
    assert [(r["sampler"], r["steps"]) for r in rows] == expected
    seeds = len(settings["seeds"])
    for r in rows:
        assert r["network_calls"] == r["steps"]  # one network call per step
        assert len(r["frechet"]) == len(r["wall_s"]) == seeds
        assert all(v > 0 for v in r["wall_s"]) and all(v >= 0 for v in r["frechet"])
        assert r["frechet_mean"] == pytest.approx(np.mean(r["frechet"]))
        assert r["frechet_spread"] == pytest.approx(np.std(r["frechet"], ddof=1))
    floor = result["frechet_floor_train_vs_test"]
    assert len(floor["values"]) == seeds
    assert floor["mean"] == pytest.approx(np.mean(floor["values"]))


def test_two_step_dpm_solver_is_two_step_ddim(result):
    """With two steps DPM-Solver++(2M) takes its first-order step (DDIM with eta 0) and then
    lands on its x_0 estimate, as DDIM's last step does: the same samples from the same x_T."""
    by_case = {r["case"]: r for r in result["rows"]}
    # equal up to float32 rounding: the two rules compute x_1 by different arithmetic
    assert by_case["dpmsolver++-2"]["frechet"] == pytest.approx(by_case["ddim-2"]["frechet"])
    assert by_case["dpmsolver++-3"]["frechet"] != pytest.approx(by_case["ddim-3"]["frechet"])


def test_claims_follow_from_the_recorded_numbers(result):
    rows, claim = result["rows"], result["claim"]
    reference = rows[0]
    assert claim["reference"] == reference["case"]
    band = np.mean(reference["frechet"]) + np.std(reference["frechet"], ddof=1)
    assert claim["reference_band"] == pytest.approx(band)
    for name, key in (
        ("dpmsolver++", "dpmsolver_fewest_steps_within_reference"),
        ("ddim", "ddim_fewest_steps_within_reference"),
    ):
        inside = sorted(
            r["steps"] for r in rows[1:] if r["sampler"] == name and r["frechet_mean"] <= band
        )
        assert claim[key] == (inside[0] if inside else None)
    fewest = claim["dpmsolver_fewest_steps_within_reference"]
    assert claim["dpmsolver_within_target"] == (fewest is not None and fewest <= 20)


def test_refuses_too_few_samples(capsys):
    with pytest.raises(SystemExit):
        solvers.main(["--samples", "1"])
    assert "--samples >= 2" in capsys.readouterr().err
