"""Sampling loop: the per-step cost outside the network, ours against diffusers' DDPMScheduler.

Both loops run all T = 1000 ancestral steps (paper Algorithm 2, sigma_t^2 = beta_t, x_0 estimate
clipped to [-1, 1]) with one and the same network, a small U-Net so that the loop's own cost shows:
ours is `ddpm.samplers.ancestral_sample`, diffusers' is the loop its pipelines run,
`x = scheduler.step(model(x, t), t, x).prev_sample`, with our betas.

A loop's overhead is the time of a chain minus the time spent inside its network calls (each call
timed where it happens, so that a burst of load on this shared machine falls on both), per step
and as a share of the network's time; median over chains. Two cross-checks from the same rounds:
the chain minus the network timed alone over the same T calls, and the chain with a "null network"
that returns a fixed tensor, where everything left is loop.

    python -m bench.sampling [--quick] [--repeats 5] [--threads N] [--profile]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from bench.common import (
    Case,
    alternate,
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
from ddpm.samplers import ancestral_sample
from ddpm.schedule import make_schedule
from ddpm.unet import UNet, unet_preset

GOAL_OVERHEAD = 0.05  # the goal: the loop's own cost below 5% of the network's time


CASES = (
    # A few thousand parameters: the worst case, where the network costs least.
    Case("tiny U-Net", unet_preset("tiny"), 16),
    # The book's digits model, one image at a time.
    Case("digits U-Net", unet_preset("digits"), 1),
)
QUICK_CASES = (Case("tiny U-Net", unet_preset("tiny"), 4),)


class TimedNetwork:
    """Wraps a network and adds up the seconds spent inside its calls."""

    def __init__(self, net: Callable):
        self.net, self.seconds = net, 0.0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = self.net(x, t)
        self.seconds += time.perf_counter() - start
        return out


def make_loops(
    case: Case, T: int, seed: int = 0
) -> tuple[dict[str, Callable[[], object]], dict[str, TimedNetwork]]:
    """The five timed callables of one case, each a full chain of T steps (or T network calls),
    and the timed networks inside the two real sampling loops."""
    from diffusers import DDPMScheduler

    c = case.config
    torch.manual_seed(seed)
    net = UNet(c).eval()
    # Random weights everywhere (the zero-initialised last layers would make the output zero).
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.05)
    diffusion = GaussianDiffusion(make_schedule("linear", T))  # fixed_large, eps prediction
    scheduler = DDPMScheduler(
        num_train_timesteps=T,
        trained_betas=diffusion.schedule.betas,
        variance_type="fixed_large",
        clip_sample=True,
        clip_sample_range=1.0,
        prediction_type="epsilon",
    )
    scheduler.set_timesteps(T)
    shape = (case.batch, c.in_channels, c.image_size, c.image_size)
    x_fixed = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    eps_fixed = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    timesteps = [torch.full((case.batch,), s, dtype=torch.long) for s in range(T - 1, -1, -1)]
    inside = {"ours": TimedNetwork(net), "diffusers": TimedNetwork(net)}

    def null_net(x, t):  # costs nothing: what remains of a loop's time is the loop
        return eps_fixed

    def ours(model):
        g = torch.Generator().manual_seed(seed)
        return ancestral_sample(diffusion, model, shape, generator=g, progress=False)

    @torch.no_grad()
    def theirs(model):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=g)
        for t in scheduler.timesteps:
            eps = model(x, t.expand(case.batch))
            x = scheduler.step(eps, t, x, generator=g).prev_sample
        return x

    @torch.no_grad()
    def network():
        for t in timesteps:
            net(x_fixed, t)

    loops = {
        "network": network,
        "ours": lambda: ours(inside["ours"]),
        "diffusers": lambda: theirs(inside["diffusers"]),
        "ours_null_net": lambda: ours(null_net),
        "diffusers_null_net": lambda: theirs(null_net),
    }
    return loops, inside


def run_case(case: Case, T: int, repeats: int, warmup: int, profile: bool) -> dict:
    loops, inside = make_loops(case, T)
    # Record, per timed chain, the seconds its network calls took.
    in_loop: dict[str, list[float]] = {side: [] for side in inside}

    def chain(side):
        def run():
            before = inside[side].seconds
            loops[side]()
            in_loop[side].append(inside[side].seconds - before)

        return run

    timed_loops = {**loops, "ours": chain("ours"), "diffusers": chain("diffusers")}
    timings = alternate(timed_loops, repeats=repeats, warmup=warmup)
    samples = timings.wall
    for side in in_loop:  # drop the warm-up chains
        in_loop[side] = in_loop[side][warmup:]
    stats = {name: summarize(s) for name, s in samples.items()}
    net_alone_step = stats["network"].median / T
    overhead = {}
    for side in ("ours", "diffusers"):
        # Primary reading: each chain's time minus its own network calls, as a share of them.
        outside = [a - b for a, b in zip(samples[side], in_loop[side], strict=True)]
        share = [o / n for o, n in zip(outside, in_loop[side], strict=True)]
        # Cross-check: minus the network alone, timed in the same round.
        paired = [a - b for a, b in zip(samples[side], samples["network"], strict=True)]
        overhead[side] = {
            "per_step_ms": summarize(outside).median / T * 1e3,
            "share_of_network": summarize(share).median,
            "network_in_loop_per_step_ms": summarize(in_loop[side]).median / T * 1e3,
            "vs_network_alone_per_step_ms": summarize(paired).median / T * 1e3,
            "vs_network_alone_share": summarize(paired).median / T / net_alone_step,
            "null_net_per_step_ms": stats[f"{side}_null_net"].median / T * 1e3,
            "null_net_share_of_network": stats[f"{side}_null_net"].median / T / net_alone_step,
        }
    result = {
        "case": case.name,
        "config": case.config.__dict__,
        "batch": case.batch,
        "T": T,
        "network_alone_per_step_ms": net_alone_step * 1e3,
        "seconds": samples,
        "cpu_seconds": timings.cpu,
        "network_seconds_in_loop": in_loop,
        "summary": stats,
        "overhead": overhead,
    }
    if profile:
        result["profile_null_net"] = {
            side: profile_ops(loops[f"{side}_null_net"], calls=1, top=20)
            for side in ("ours", "diffusers")
        }
    return result


def main(argv: Sequence[str] | None = None) -> dict:
    parser = timing_parser(
        __doc__.splitlines()[0],
        "cpu_sampling.json",
        repeats=5,
        warmup=1,
        profiled="the null-network loops",
    )
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    cases = QUICK_CASES if args.quick else CASES
    T = 50 if args.quick else 1000
    repeats, warmup = (2, 1) if args.quick else (args.repeats, args.warmup)
    settings = {
        "quick": args.quick,
        "threads": threads,
        "T": T,
        "repeats": repeats,
        "warmup": warmup,
        "sampler": "ancestral, sigma_t^2 = beta_t, clip x0 to [-1, 1], eps prediction",
        "goal_overhead_share": GOAL_OVERHEAD,
    }
    result = run_metadata("sampling", argv, settings)
    result["cases"] = [run_case(case, T, repeats, warmup, args.profile) for case in cases]
    finish(result)

    rows = []
    for r in result["cases"]:
        for side in ("ours", "diffusers"):
            o = r["overhead"][side]
            share = o["share_of_network"]
            rows.append(
                [
                    r["case"],
                    r["batch"],
                    side,
                    r["summary"][side].median,
                    o["network_in_loop_per_step_ms"],
                    o["per_step_ms"],
                    100 * share,
                    100 * o["vs_network_alone_share"],
                    o["null_net_per_step_ms"],
                    "yes" if share < GOAL_OVERHEAD else "no",
                ]
            )
    print_table(
        [
            "case",
            "batch",
            "loop",
            "chain s",
            "net ms/step",
            "outside ms/step",
            "% of net",
            "% (vs net alone)",
            "null-net ms/step",
            f"<{GOAL_OVERHEAD:.0%}",
        ],
        rows,
    )
    print(f"load average {result['load_average_start']} -> {result['load_average_end']}")
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
