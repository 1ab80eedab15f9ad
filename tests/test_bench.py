"""Smoke tests of the benchmark commands under bench/: each runs at toy size (--quick) and writes a
results file with the machine, the versions, the settings and the raw samples. The measurements
themselves are made by running the commands; see bench/results/."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import ddpm
from bench import common
from ddpm.unet import PRESETS, UNet, unet_preset

pytest.importorskip("diffusers", reason="the benchmarks compare with diffusers")


@pytest.fixture(autouse=True)
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def read_result(path: Path, benchmark: str) -> dict:
    data = json.loads(path.read_text())
    assert data["benchmark"] == benchmark
    for key in ("date", "machine", "versions", "settings", "load_average_start", "wall_seconds"):
        assert key in data
    assert data["machine"]["cpu"] and data["machine"]["logical_cpus"] >= 1
    assert {"python", "torch", "diffusers", "ddpm"} <= set(data["versions"])
    assert data["versions"]["ddpm"] == ddpm.__version__  # the code that ran, however installed
    assert data["settings"]["quick"] is True
    return data


def test_alternate_rotates_the_order_and_warms_up():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timings = common.alternate(fns, repeats=3, warmup=1)
    assert calls == list("abc" + "abc" + "bca" + "cab")
    for samples in timings:
        assert {k: len(v) for k, v in samples.items()} == {"a": 3, "b": 3, "c": 3}
        assert all(s >= 0 for v in samples.values() for s in v)


def test_summarize_is_the_median_and_quartiles():
    s = common.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.median, s.q1, s.q3, s.min, s.n) == (3.0, 2.0, 4.0, 1.0, 5)


@pytest.mark.parametrize("name", [n for n in PRESETS if n != "tiny"])
def test_diffusers_twin_has_the_same_parameter_count(name):
    config = unet_preset(name)
    counts = common.check_same_size(UNet(config), common.diffusers_unet(config))
    assert counts["ours"] == counts["diffusers"]


def test_diffusers_twin_rejects_widths_it_cannot_express():
    with pytest.raises(ValueError, match="multiple"):
        common.diffusers_unet(unet_preset("tiny"))


def test_check_same_size_rejects_a_bigger_model():
    small, big = torch.nn.Linear(10, 10), torch.nn.Linear(10, 12)
    with pytest.raises(AssertionError, match="differ"):
        common.check_same_size(small, big)


def test_train_step_quick(tmp_path):
    from bench import train_step

    out = tmp_path / "train_step.json"
    train_step.main(["--quick", "--threads", "1", "--output", str(out)])
    data = read_result(out, "train_step")
    assert len(data["cases"]) == len(train_step.QUICK_CASES)
    for case in data["cases"]:
        assert case["params"]["ours"] == case["params"]["diffusers"]
        for side in ("ours", "diffusers"):
            assert len(case["seconds"][side]) == data["settings"]["repeats"]
            assert all(s > 0 for s in case["seconds"][side])
        ratio = case["summary"]["diffusers"]["median"] / case["summary"]["ours"]["median"]
        assert math.isclose(case["speedup"], ratio)


def test_sampling_quick(tmp_path):
    from bench import sampling

    out = tmp_path / "sampling.json"
    sampling.main(["--quick", "--threads", "1", "--profile", "--output", str(out)])
    data = read_result(out, "sampling")
    (case,) = data["cases"]
    assert set(case["seconds"]) == {
        "network",
        "ours",
        "diffusers",
        "ours_null_net",
        "diffusers_null_net",
    }
    for side in ("ours", "diffusers"):
        overhead = case["overhead"][side]
        assert overhead["null_net_per_step_ms"] > 0
        assert overhead["network_in_loop_per_step_ms"] > 0
        assert len(case["network_seconds_in_loop"][side]) == data["settings"]["repeats"]
        assert math.isfinite(overhead["share_of_network"])
        profile = case["profile_null_net"][side]
        assert profile["top_ops"] and profile["self_ms_per_call"] > 0


def test_gpu_script_quick_on_the_cpu(tmp_path):
    from bench import gpu

    out = tmp_path / "gpu.json"
    gpu.main(["--quick", "--device", "cpu", "--threads", "1", "--output", str(out)])
    data = read_result(out, "gpu")
    sections = data["sections"]
    failed = {k: v for k, v in sections.items() if v["status"] != "ok"}
    assert not failed
    # the matmul peak, the two FLOP counts, then every entry of the quick plan
    assert len(sections) == 3 + len(gpu.QUICK_PLAN)
    flops = sections["flops_ours"]["result"]
    assert flops["forward_gflop_per_image"] > 0
    # Backward costs about twice the forward (the input gradient and the weight gradient).
    ratio = flops["forward_backward_gflop_per_image"] / flops["forward_gflop_per_image"]
    assert 2.5 < ratio < 3.5
    assert (
        sections["flops_ours"]["result"]["params"]
        == sections["flops_diffusers"]["result"]["params"]
    )
    assert any(k.startswith("train_") and "compile" in k for k in sections)
    assert data["summary"]["best_train_images_per_s"]["ours"] > 0
    assert data["summary"]["goal_train_met"] is None  # toy sizes: the goals do not apply


def test_gpu_plan_names_every_section_once():
    from bench import gpu

    # On CUDA every entry of the plan is its own measurement; elsewhere CUDA graphs fall back to
    # compile, and an entry that then repeats one already planned is run once.
    for device, planned in (("cuda", 3 + len(gpu.PLAN)), ("cpu", None)):
        names = [s.name for s in gpu.sections(gpu.FULL, gpu.PLAN, torch.device(device), "eager")]
        assert len(set(names)) == len(names), names
        if planned is not None:
            assert len(names) == planned
    graphs = gpu.SampleRun("ours", "cudagraphs").section(gpu.FULL, torch.device("cuda"), "eager")
    assert graphs.name == "sample_ours_ancestral_cudagraphs"


def test_gpu_plan_measures_diffusers_in_every_training_setting_of_ours():
    from bench import gpu

    def settings(model):
        return {
            (e.bf16, e.compiled, e.large_batch)
            for e in gpu.PLAN
            if isinstance(e, gpu.TrainRun) and e.model == model
        }

    assert settings("ours") == settings("diffusers")


def test_gpu_script_records_a_failing_section_and_goes_on(tmp_path):
    from bench import gpu

    result = {}
    runner = gpu.Runner(result, gpu.Budget(60.0), tmp_path / "gpu.json")
    runner.run("boom", 0.0, lambda: 1 / 0)
    runner.run("late", 1e9, lambda: {"never": True})
    runner.run("fine", 0.0, lambda: {"ok": 1})
    sections = json.loads((tmp_path / "gpu.json").read_text())["sections"]
    assert (
        sections["boom"]["status"] == "error" and "ZeroDivisionError" in sections["boom"]["error"]
    )
    assert sections["late"]["status"] == "skipped"
    assert sections["fine"] == {**sections["fine"], "status": "ok", "result": {"ok": 1}}


def test_quality_quick(tmp_path):
    from bench import quality

    out = tmp_path / "quality.json"
    quality.main(["--quick", "--threads", "1", "--output", str(out)])
    data = read_result(out, "quality")
    digits = data["digits"]
    bpd = digits["bpd"]
    assert bpd["test_images"] == quality.QUICK["bpd_images"]
    # A K-level model can do no worse than log2(K) bits/dim only if it is calibrated; the bound of
    # a barely trained network is finite and positive, the baselines below the uniform model.
    assert 0 < bpd["total"]["mean"] < 100
    for baseline in bpd["baselines"].values():
        assert 0 < baseline["bpd"] < math.log2(bpd["num_levels"]) + 1
    rows = {r["model"]: r for r in digits["frechet"]["rows"]}
    assert set(rows) == {"ours", "diffusers"}
    assert all(sum(r["predicted_class_counts"]) == quality.QUICK["samples"] for r in rows.values())
    assert digits["frechet"]["floor_train_vs_test"] >= 0
    (toy,) = data["toys"]
    assert toy["sliced_wasserstein"] >= 0 and toy["sliced_wasserstein_floor"] >= 0


def test_the_diffusers_twin_averages_its_weights_with_the_trainers_ema_update(monkeypatch):
    from bench import quality
    from ddpm import train as train_module
    from ddpm.config import TrainConfig
    from ddpm.data import load_digits

    assert quality.ema_update is train_module.ema_update  # one EMA for both trainings
    decays = []

    def spy(ema, model, decay):
        decays.append(decay)
        train_module.ema_update(ema, model, decay)

    monkeypatch.setattr(quality, "ema_update", spy)
    data = load_digits()
    config = TrainConfig(preset="tiny", T=40, steps=3, batch_size=4).resolve(data)
    quality.train_diffusers_twin(config, unet_preset("tiny", base_channels=32), data)
    # the warmed-up decay (1 + s) / (10 + s) after s = 0, 1, 2 updates
    assert decays == [1 / 10, 2 / 11, 3 / 12]


def test_cli_digits_quick(tmp_path):
    from bench import cli_digits

    before = cli_digits.GRID.read_bytes()
    out = tmp_path / "cli_digits.json"
    cli_digits.main(["--quick", "--output", str(out)])
    data = read_result(out, "cli_digits")
    assert [s["command"].split()[:2] for s in data["steps"]] == [
        ["ddpm", "train"],
        ["ddpm", "sample"],
    ]
    assert all(s["wall_seconds"] > 0 and s["cpu_seconds"] > 0 for s in data["steps"])
    assert data["train_step_reached"] == 4 and data["train_config"]["preset"] == "tiny"
    judged = data["samples"]
    assert sum(judged["predicted_class_counts"]) == judged["samples"] == 16
    assert 0 <= judged["confident_share"] <= 1 and judged["confident_share_real_test"] > 0.5
    assert cli_digits.GRID.read_bytes() == before  # --quick leaves the README's picture alone
