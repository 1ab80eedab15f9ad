"""The GPU benchmark's plan: by its own estimates, the default budget holds the rows that matter
most, and the comparison with diffusers stays like for like within each part of the plan."""

import pytest
import torch

pytest.importorskip("diffusers", reason="the benchmarks compare with diffusers")

from bench import gpu  # noqa: E402

CUDA = torch.device("cuda")


def _seconds(plan) -> float:
    return sum(s.estimate_s for s in gpu.sections(gpu.FULL, plan, CUDA, "inductor"))


def test_the_default_budget_holds_the_core_of_the_plan_and_no_more():
    # The matmul peak and the FLOP counts come first in every run; then the core rows.
    assert _seconds(gpu.PLAN_CORE) <= gpu.DEFAULT_BUDGET_S
    assert _seconds(gpu.PLAN_CORE + gpu.PLAN_EXTRA[:1]) > gpu.DEFAULT_BUDGET_S
    assert gpu.PLAN == gpu.PLAN_CORE + gpu.PLAN_EXTRA


def test_the_goals_settings_come_first():
    # The goals are for our network, bf16 and compiled (training), with CUDA graphs
    # (sampling, ancestral); they and diffusers' twin of the first are measured before the rest.
    first = gpu.PLAN_CORE[:3]
    assert gpu.TrainRun("ours", bf16=True, compiled=True) in first
    assert gpu.SampleRun("ours", "cudagraphs") in first
    assert gpu.TrainRun("diffusers", bf16=True, compiled=True) in first


@pytest.mark.parametrize("part", ["PLAN_CORE", "PLAN_EXTRA"])
def test_each_part_has_diffusers_beside_every_training_setting_of_ours(part):
    def settings(model):
        return {
            (e.bf16, e.compiled, e.large_batch)
            for e in getattr(gpu, part)
            if isinstance(e, gpu.TrainRun) and e.model == model
        }

    assert settings("ours") == settings("diffusers")


def test_the_quick_run_compiles_with_inductor_for_training_and_sampling():
    # Not only dynamo's "eager" backend: inductor generates and compiles kernels, which is
    # where compiled runs fail that eager ones pass.
    assert gpu.parse_args(["--quick"]).compile_backend == "inductor"
    sections = gpu.sections(gpu.QUICK, gpu.QUICK_PLAN, torch.device("cpu"), "inductor")
    compiled = [s.name for s in sections if s.name.endswith("_compile")]
    assert any(n.startswith("train_") for n in compiled), compiled
    assert any(n.startswith("sample_") for n in compiled), compiled
