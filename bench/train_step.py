"""CPU training step: ddpm's U-Net + L_simple + Adam against diffusers' UNet2DModel.

Both sides run one step of Algorithm 1 on the same batch (the same x_0, timesteps and noise):
ours through `ddpm.losses.training_losses`, diffusers' the way its training examples do it
(`DDPMScheduler.add_noise`, MSE against the noise). The two networks have the same architecture
and parameter count (asserted), are in training mode with the same dropout, run in float32 on the
same number of threads, and each has its own Adam (lr 2e-4). Steps alternate between the two,
medians after warm-up; the speed-up is diffusers' median over ours. Also recorded: the median of
the per-round ratios, and the ratio of median CPU times (steadier while the machine is busy).

    python -m bench.train_step [--quick] [--repeats 7] [--threads N] [--profile]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from bench.common import (
    Case,
    alternate,
    check_same_size,
    diffusers_unet,
    finish,
    print_table,
    profile_ops,
    run_metadata,
    set_threads,
    summarize,
    timing_parser,
    write_json,
)
from ddpm.diffusion import GaussianDiffusion
from ddpm.losses import training_losses
from ddpm.schedule import linear_schedule
from ddpm.unet import UNet, unet_preset

GOAL_SPEEDUP = 1.3  # the goal: ours at least 1.3x faster
LR = 2e-4  # the paper's Adam learning rate


CASES = (
    # The book's digits model at the digits recipe's batch size.
    Case("digits 8x8", unet_preset("digits"), 64),
    # The paper's CIFAR-10 architecture at a quarter of the width (1/16 of the compute), so that
    # a step takes about a second on two cores.
    Case("cifar10/4 32x32", unet_preset("cifar10", base_channels=32), 8),
)
QUICK_CASES = (
    Case("quick 8x8", unet_preset("tiny", base_channels=32), 4),
    Case(
        "quick 16x16",
        unet_preset("tiny", base_channels=32, image_size=16, attn_resolutions=(8,)),
        2,
    ),
)


def make_steps(case: Case, seed: int = 0) -> tuple[dict[str, Callable[[], object]], dict[str, int]]:
    """One training step for each side, as closures over shared inputs; and the parameter counts."""
    c = case.config
    torch.manual_seed(seed)
    ours = UNet(c).train()
    theirs = diffusers_unet(c).train()
    counts = check_same_size(ours, theirs)

    from diffusers import DDPMScheduler

    schedule = linear_schedule()
    diffusion = GaussianDiffusion(schedule)
    scheduler = DDPMScheduler(num_train_timesteps=schedule.T, trained_betas=schedule.betas)

    g = torch.Generator().manual_seed(seed)
    shape = (case.batch, c.in_channels, c.image_size, c.image_size)
    x0 = torch.rand(shape, generator=g) * 2 - 1
    t = torch.randint(schedule.T, (case.batch,), generator=g)
    noise = torch.randn(shape, generator=g)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=LR)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=LR)

    def step_ours():
        loss = training_losses(diffusion, ours, x0, t, noise).loss.mean()
        opt_ours.zero_grad(set_to_none=True)
        loss.backward()
        opt_ours.step()

    def step_theirs():
        x_t = scheduler.add_noise(x0, noise, t)
        loss = F.mse_loss(theirs(x_t, t).sample, noise)
        opt_theirs.zero_grad(set_to_none=True)
        loss.backward()
        opt_theirs.step()

    return {"ours": step_ours, "diffusers": step_theirs}, counts


def run_case(case: Case, repeats: int, warmup: int, profile: bool) -> dict:
    steps, counts = make_steps(case)
    timings = alternate(steps, repeats=repeats, warmup=warmup)
    samples = timings.wall
    stats = {name: summarize(s) for name, s in samples.items()}
    cpu_stats = {name: summarize(s) for name, s in timings.cpu.items()}
    # Per-round ratios as well as the ratio of medians: a load spike hits one round, both sides.
    ratios = [b / a for a, b in zip(samples["ours"], samples["diffusers"], strict=True)]
    result = {
        "case": case.name,
        "config": case.config.__dict__,
        "batch": case.batch,
        "params": counts,
        "seconds": samples,
        "cpu_seconds": timings.cpu,
        "summary": stats,
        "cpu_summary": cpu_stats,
        "speedup": stats["diffusers"].median / stats["ours"].median,
        "speedup_per_round_median": summarize(ratios).median,
        "speedup_cpu_time": cpu_stats["diffusers"].median / cpu_stats["ours"].median,
    }
    if profile:
        result["profile"] = {name: profile_ops(fn, calls=2) for name, fn in steps.items()}
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    parser = timing_parser(
        __doc__.splitlines()[0], "cpu_train_step.json", repeats=7, warmup=2, profiled="both steps"
    )
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    cases = QUICK_CASES if args.quick else CASES
    repeats, warmup = (2, 1) if args.quick else (args.repeats, args.warmup)
    settings = {
        "quick": args.quick,
        "threads": threads,
        "repeats": repeats,
        "warmup": warmup,
        "dtype": "float32",
        "optimizer": f"Adam(lr={LR})",
        "loss": "L_simple (MSE on eps), linear betas 1e-4..0.02, T=1000",
        "goal_speedup": GOAL_SPEEDUP,
    }
    result = run_metadata("train_step", argv, settings)
    result["cases"] = [run_case(case, repeats, warmup, args.profile) for case in cases]
    finish(result)

    rows = []
    for r in result["cases"]:
        s = r["summary"]
        speedup = r["speedup"]
        rows.append(
            [
                r["case"],
                r["batch"],
                r["params"]["ours"],
                s["ours"].median * 1e3,
                s["diffusers"].median * 1e3,
                speedup,
                r["speedup_per_round_median"],
                r["speedup_cpu_time"],
                "yes" if speedup >= GOAL_SPEEDUP else "no",
            ]
        )
    print_table(
        [
            "case",
            "batch",
            "params",
            "ours ms",
            "diffusers ms",
            "speedup",
            "per-round",
            "CPU-time",
            f">={GOAL_SPEEDUP}x",
        ],
        rows,
    )
    print(f"load average {result['load_average_start']} -> {result['load_average_end']}")
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
