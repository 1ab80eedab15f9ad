"""GPU benchmark of the `cifar10` preset (35.7M parameters, 32x32) against diffusers' UNet2DModel.

Measures, in one run meant to finish within 8 minutes on an NVIDIA H200:
- the card's bf16 matmul peak (a large bf16 matmul), the yardstick for utilisation;
- model FLOPs per image, counted with torch.utils.flop_counter (forward, and forward + backward);
- training images/s and peak memory per image of the trainer's step (loss, backward, clipping,
  fused Adam, the foreach EMA): ours and diffusers' twin of the same architecture, fp32 and bf16
  autocast, eager and torch.compile, at batch 128 and a larger batch;
- sampling 256 images x 1000 ancestral steps with the network eager, compiled, and compiled with
  CUDA graphs ("reduce-overhead"), DDIM at 50 steps, and diffusers' DDPMScheduler loop.

The sections run in the order of `PLAN`, most important first; by their estimates the default
budget holds `PLAN_CORE`, and `PLAN_EXTRA` runs when --budget-s allows. Every section is guarded:
a failure, or too little of the time budget left, is recorded in the JSON instead of ending the
run, and the JSON is rewritten after every section so a killed run still leaves its results.
`--quick` runs one section of each kind at toy sizes (on the CPU, torch.compile with inductor
too) so tests can check the script still works.

    python -m bench.gpu [--quick] [--budget-s 420] [--only REGEX] [--output FILE]

The results go to bench/results/gpu_<device name>.json (gpu_<device name>_quick.json with --quick)
unless --output says otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import re
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from bench.common import (
    RESULTS,
    base_parser,
    diffusers_unet,
    finish,
    param_count,
    print_table,
    run_metadata,
    set_threads,
    write_json,
)
from ddpm.config import TrainConfig
from ddpm.device import allow_tf32
from ddpm.diffusion import GaussianDiffusion
from ddpm.losses import training_losses
from ddpm.samplers import DDIM, SamplerKind, make_sampler, sample
from ddpm.schedule import make_schedule
from ddpm.train import adam_kind, ema_update
from ddpm.unet import UNet, UNetConfig, unet_preset

# The paper's TPU v3-8 (Ho et al. 2020, Appendix B) and the goals for one H200.
ANCHORS = {
    "paper_tpu_v3_8_train_steps_per_s_at_batch_128": 21.0,
    "paper_tpu_v3_8_train_images_per_s": 21.0 * 128,
    "paper_tpu_v3_8_seconds_for_256_samples": 17.0,
    "goal_train_images_per_s": 10_000.0,
    "goal_seconds_for_256_samples": 6.0,
    "issue_forward_gflop_per_image": 12.4,
}
LR = 2e-4
GRAD_CLIP, EMA_DECAY = TrainConfig.grad_clip, TrainConfig.ema_decay  # the paper's


@dataclass(frozen=True)
class Sizes:
    """What the run measures; `FULL` on the GPU, `QUICK` on the CPU for tests."""

    config: UNetConfig
    batches: tuple[int, int]  # training batch sizes: the paper's 128, and a larger one
    train_steps: int  # timed steps per measurement
    warmup_steps: int  # untimed steps first (the first compiles)
    samples: int  # images per sampling run
    T: int  # diffusion steps
    ddim_steps: int  # steps of the samplers that take fewer than T (DDIM, DPM-Solver++)
    matmul_size: int  # side of the square matrices of the peak measurement
    # Rough seconds a section takes, used to skip what no longer fits the budget: a training or
    # sampling measurement, plus `compile_s` where the network is compiled (compiles dominate).
    train_s: float
    sample_s: float
    compile_s: float


FULL = Sizes(
    config=unet_preset("cifar10"),
    batches=(128, 256),
    train_steps=25,
    warmup_steps=3,
    samples=256,
    T=1000,
    ddim_steps=50,
    matmul_size=8192,
    train_s=15.0,  # on an H200
    sample_s=25.0,
    compile_s=75.0,
)
QUICK = Sizes(
    config=unet_preset("tiny", base_channels=32),
    batches=(4, 8),
    train_steps=2,
    warmup_steps=1,
    samples=4,
    T=25,
    ddim_steps=5,
    matmul_size=256,
    train_s=1.0,
    sample_s=1.0,
    compile_s=30.0,  # inductor, its kernels cached
)


class Budget:
    """Seconds left of the run's budget; sections that would overrun it are skipped."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


class SectionTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise SectionTimeout in this (main) thread after `seconds`; a no-op where signals are not
    available (another thread, Windows)."""
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def expire(signum, frame):
        raise SectionTimeout(f"section ran past its {seconds:.0f} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Runner:
    """Runs named sections under the budget and records each one's outcome."""

    def __init__(self, result: dict, budget: Budget, output: Path):
        self.result, self.budget, self.output = result, budget, output
        result["sections"] = {}

    def run(self, name: str, estimate_s: float, fn: Callable[[], dict]) -> dict | None:
        left = self.budget.left()
        record: dict = {"estimate_s": estimate_s}
        if left < estimate_s:
            record.update(status="skipped", reason=f"{left:.0f} s of the budget left")
            out = None
        else:
            start = time.perf_counter()
            try:
                with time_limit(left):
                    out = fn()
                record.update(status="ok", result=out)
            except Exception as err:  # a failed section is a result, not the end of the run
                out = None
                record.update(
                    status="error",
                    error=f"{type(err).__name__}: {err}"[:2000],
                    traceback=traceback.format_exc(limit=8)[-4000:],
                )
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            record["seconds"] = round(time.perf_counter() - start, 2)
        self.result["sections"][name] = record
        print(f"[{name}] {record['status']} ({record.get('seconds', 0):.1f} s)", flush=True)
        write_json(self.output, self.result, quiet=True)
        return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 1) -> float:
    """Seconds per call of fn, averaged over `repeats` calls, the device synchronised."""
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def matmul_peak(device: torch.device, n: int) -> dict:
    """Best TFLOP/s of an n x n x n bf16 matmul (2 n^3 flops)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
    reps = 50 if device.type == "cuda" else 3
    timed(lambda: a @ b, device, 3)
    best = min(timed(lambda: a @ b, device, reps) for _ in range(3))
    return {"n": n, "dtype": "bfloat16", "tflops": 2 * n**3 / best / 1e12, "seconds_per_mm": best}


def compile_fresh(model: torch.nn.Module, **options) -> Callable:
    """torch.compile with dynamo's caches cleared first, so that every section compiles from
    scratch (no recompilation limits, no dynamic shapes carried over from an earlier batch)."""
    torch._dynamo.reset()
    return torch.compile(model, dynamic=False, **options)


def build(kind: str, config: UNetConfig, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = UNet(config) if kind == "ours" else diffusers_unet(config)
    return model.to(device)


def as_eps_model(
    kind: str, net: Callable, bf16: bool, device: torch.device, new_step: bool = False
) -> Callable:
    """model(x_t, t) -> float32 eps for either network, the network under bf16 autocast or not.

    new_step: tell CUDA graphs that each call starts a new step (the outputs of the previous
    replay are no longer needed), as sampling loops must.
    """

    def model(x, t):
        if new_step:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = net(x, t)
        out = out if kind == "ours" else out.sample
        return out.float()

    return model


def count_flops(kind: str, config: UNetConfig, device: torch.device) -> dict:
    """FLOPs per image counted by FlopCounterMode (matmuls, convolutions, attention).

    Attention runs in its plain (math) form here, as two batched matmuls that the counter sees;
    it does not count every fused attention kernel (the CPU's flash attention, for one).
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    model = build(kind, config, device).train()
    shape = (2, config.in_channels, config.image_size, config.image_size)
    x = torch.randn(shape, device=device)
    t = torch.tensor([10, 500], device=device)
    eps = as_eps_model(kind, model, False, device)
    with sdpa_kernel([SDPBackend.MATH]):
        with FlopCounterMode(display=False) as fwd:
            out = eps(x, t)
        with FlopCounterMode(display=False) as both:
            eps(x, t).square().mean().backward()
    by_op = {str(k): v / 2 for k, v in fwd.get_flop_counts()["Global"].items()}
    del out
    return {
        "params": param_count(model),
        "forward_gflop_per_image": fwd.get_total_flops() / 2 / 1e9,
        "forward_backward_gflop_per_image": both.get_total_flops() / 2 / 1e9,
        "forward_by_op_gflop_per_image": {k: v / 1e9 for k, v in by_op.items()},
    }


def train_throughput(
    kind: str,
    sizes: Sizes,
    batch: int,
    bf16: bool,
    compiled: bool,
    device: torch.device,
    backend: str,
) -> dict:
    """Images/s of full training steps and the step's peak memory.

    A step is the trainer's (`ddpm.train`): loss, backward, gradient clipping, Adam (fused on
    CUDA) and the EMA update, for both networks."""
    config = sizes.config
    model = build(kind, config, device).train()
    ema = copy.deepcopy(model).requires_grad_(False)
    net = compile_fresh(model, backend=backend) if compiled else model
    eps_model = as_eps_model(kind, net, bf16, device)
    diffusion = GaussianDiffusion(make_schedule("linear", sizes.T))
    if kind == "diffusers":
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(
            num_train_timesteps=sizes.T, trained_betas=diffusion.schedule.betas
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, **adam_kind(device))
    g = torch.Generator(device=device).manual_seed(0)
    shape = (batch, config.in_channels, config.image_size, config.image_size)
    x0 = torch.rand(shape, device=device, generator=g) * 2 - 1
    t = torch.randint(sizes.T, (batch,), device=device, generator=g)
    noise = torch.randn(shape, device=device, generator=g)

    def step():
        if kind == "ours":
            loss = training_losses(diffusion, eps_model, x0, t, noise).loss.mean()
        else:  # as diffusers' training examples do it
            loss = F.mse_loss(eps_model(scheduler.add_noise(x0, noise, t), t), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        ema_update(ema, model, EMA_DECAY)

    first = timed(step, device)  # includes the compilation
    for _ in range(sizes.warmup_steps - 1):
        step()
    memory = {}
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        peak = torch.cuda.max_memory_allocated(device)
        memory = {
            "peak_gib": peak / 2**30,
            "weights_and_optimizer_gib": base / 2**30,
            "peak_mib_per_image": (peak - base) / batch / 2**20,
        }
    seconds = timed(step, device, sizes.train_steps)
    return {
        "model": kind,
        "batch": batch,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "mode": f"compile ({backend})" if compiled else "eager",
        "first_step_s": first,
        "step_s": seconds,
        "images_per_s": batch / seconds,
        **memory,
    }


def sample_time(
    kind: str,
    sizes: Sizes,
    mode: str,
    device: torch.device,
    backend: str,
    sampler: SamplerKind = SamplerKind.ANCESTRAL,
) -> dict:
    """Seconds to draw `sizes.samples` images with `sampler` (ancestral: T steps, the others
    `sizes.ddim_steps`), network in bf16.

    mode: "eager", "compile" or "cudagraphs" (torch.compile's "reduce-overhead" mode). Ours runs
    `ddpm.samplers`, diffusers' its DDPMScheduler loop. A short chain first compiles and warms up.
    """
    config = sizes.config
    model = build(kind, config, device).eval()
    if mode == "eager":
        net = model
    elif mode == "compile":
        net = compile_fresh(model, backend=backend)
    else:
        net = compile_fresh(model, mode="reduce-overhead")
    eps_model = as_eps_model(kind, net, True, device, new_step=mode == "cudagraphs")
    schedule = make_schedule("linear", sizes.T)
    diffusion = GaussianDiffusion(schedule)
    shape = (sizes.samples, config.in_channels, config.image_size, config.image_size)
    steps = sizes.T if sampler is SamplerKind.ANCESTRAL else sizes.ddim_steps
    chosen = make_sampler(sampler, sizes.T, steps)

    def ours(timesteps=None):
        g = torch.Generator(device=device).manual_seed(0)
        # The warm-up's short chain is a DDIM one.
        run = chosen if timesteps is None else DDIM(timesteps=timesteps)
        return sample(diffusion, eps_model, shape, run, generator=g, progress=False)

    @torch.no_grad()
    def theirs(count=steps):
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler(
            num_train_timesteps=sizes.T,
            trained_betas=schedule.betas,
            variance_type="fixed_large",
            clip_sample=True,
        )
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape, device=device, generator=g)
        scheduler.set_timesteps(sizes.T)
        for t in scheduler.timesteps[:count]:
            x = scheduler.step(eps_model(x, t.to(device).expand(shape[0])), t, x, generator=g)
            x = x.prev_sample
        return x

    # Warm-up: a short chain compiles the network and (cudagraphs) records its graphs.
    warm = time.perf_counter()
    if kind == "ours":
        ours(timesteps=list(range(0, sizes.T, max(1, sizes.T // 3))))
    else:
        theirs(count=3)
    sync(device)
    warm = time.perf_counter() - warm
    seconds = timed(ours if kind == "ours" else theirs, device)
    return {
        "model": kind,
        "sampler": sampler.value,
        "steps": steps,
        "images": sizes.samples,
        "mode": mode if mode != "compile" else f"compile ({backend})",
        "warmup_s": warm,
        "seconds": seconds,
        "ms_per_step": seconds / steps * 1e3,
    }


class Section(NamedTuple):
    """One guarded step of the run: its key in the results, its estimated seconds, what it does."""

    name: str
    estimate_s: float
    run: Callable[[], dict]


@dataclass(frozen=True)
class TrainRun:
    """A training measurement (`train_throughput`): one network in one setting."""

    model: str  # "ours" or "diffusers"
    bf16: bool  # bf16 autocast, else fp32
    compiled: bool  # torch.compile, else eager
    large_batch: bool = False  # the larger of `Sizes.batches`, else the paper's 128

    def section(self, sizes: Sizes, device: torch.device, backend: str) -> Section:
        batch = sizes.batches[1 if self.large_batch else 0]
        precision = "bf16" if self.bf16 else "fp32"
        mode = "compile" if self.compiled else "eager"
        return Section(
            f"train_{self.model}_b{batch}_{precision}_{mode}",
            sizes.train_s + (sizes.compile_s if self.compiled else 0.0),
            lambda: train_throughput(
                self.model, sizes, batch, self.bf16, self.compiled, device, backend
            ),
        )


@dataclass(frozen=True)
class SampleRun:
    """A sampling measurement (`sample_time`): one network, one sampler, one mode."""

    model: str  # "ours" or "diffusers"
    mode: str  # "eager", "compile" or "cudagraphs" (which falls back to "compile" off CUDA)
    sampler: SamplerKind = SamplerKind.ANCESTRAL  # ancestral: all T steps; others ddim_steps

    def section(self, sizes: Sizes, device: torch.device, backend: str) -> Section:
        mode = "compile" if self.mode == "cudagraphs" and device.type != "cuda" else self.mode
        return Section(
            f"sample_{self.model}_{self.sampler.value}_{mode}",
            sizes.sample_s + (sizes.compile_s if mode != "eager" else 0.0),
            lambda: sample_time(self.model, sizes, mode, device, backend, self.sampler),
        )


# The measurements as a table, most important first. By FULL's estimates, the default budget
# holds the matmul peak, the FLOP counts and PLAN_CORE (`test_bench_gpu` checks it); PLAN_EXTRA
# runs when --budget-s allows. Every training setting of ours has diffusers' twin, in the same part.
# fmt: off
PLAN_CORE: tuple[TrainRun | SampleRun, ...] = (
    #         model        precision   mode             batch              sampler
    # The goals' settings (10,000 training images/s, 256 samples in 6 s) and diffusers' twin.
    TrainRun( "ours",      bf16=True,  compiled=True),
    SampleRun("ours",                  "cudagraphs"),
    TrainRun( "diffusers", bf16=True,  compiled=True),
    SampleRun("diffusers",             "eager"),
    # Eager, like for like, and the sampler that takes 50 steps instead of 1000.
    TrainRun( "ours",      bf16=True,  compiled=False),
    TrainRun( "diffusers", bf16=True,  compiled=False),
    SampleRun("ours",                  "eager"),
    SampleRun("ours",                  "eager",                            SamplerKind.DDIM),
    # The larger batch: memory per image, and whether throughput still grows.
    TrainRun( "ours",      bf16=True,  compiled=False, large_batch=True),
    TrainRun( "diffusers", bf16=True,  compiled=False, large_batch=True),
)
PLAN_EXTRA: tuple[TrainRun | SampleRun, ...] = (
    TrainRun( "ours",      bf16=False, compiled=False),
    TrainRun( "diffusers", bf16=False, compiled=False),
    SampleRun("ours",                  "cudagraphs",                       SamplerKind.DDIM),
    TrainRun( "ours",      bf16=True,  compiled=True,  large_batch=True),
    TrainRun( "diffusers", bf16=True,  compiled=True,  large_batch=True),
    SampleRun("ours",                  "compile"),
    TrainRun( "ours",      bf16=False, compiled=True),
    TrainRun( "diffusers", bf16=False, compiled=True),
)
PLAN = PLAN_CORE + PLAN_EXTRA
DEFAULT_BUDGET_S = 420.0  # the run is meant to end within 8 minutes, start-up included
# --quick runs every row: a cold inductor cache compiles for minutes on a small, busy CPU
# (about 6 on 2 shared cores; 40 s once the kernels are cached).
QUICK_BUDGET_S = 900.0
# --quick: one row of each code path, torch.compile's inductor included (training and sampling).
QUICK_PLAN: tuple[TrainRun | SampleRun, ...] = (
    TrainRun( "ours",      bf16=False, compiled=False),
    TrainRun( "ours",      bf16=True,  compiled=True),
    TrainRun( "diffusers", bf16=True,  compiled=False),
    SampleRun("ours",                  "eager"),
    SampleRun("ours",                  "cudagraphs"),
    SampleRun("ours",                  "eager",                            SamplerKind.DDIM),
    SampleRun("diffusers",             "eager"),
)
# fmt: on


def sections(
    sizes: Sizes, plan: Sequence[TrainRun | SampleRun], device: torch.device, backend: str
) -> list[Section]:
    """The run in order: the matmul peak, the FLOP counts of both networks, then `plan`.

    Off CUDA a "cudagraphs" entry measures what a "compile" one does; the first of them is kept.
    """
    run = [
        Section("matmul_peak", 1.0, lambda: matmul_peak(device, sizes.matmul_size)),
        *(
            Section(f"flops_{kind}", 1.0, lambda kind=kind: count_flops(kind, sizes.config, device))
            for kind in ("ours", "diffusers")
        ),
        *(entry.section(sizes, device, backend) for entry in plan),
    ]
    by_name: dict[str, Section] = {}
    for section in run:
        by_name.setdefault(section.name, section)
    return list(by_name.values())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = base_parser(__doc__.splitlines()[0], "gpu.json")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        help=f"stop starting sections after this (default: {DEFAULT_BUDGET_S:g}, "
        f"with --quick {QUICK_BUDGET_S:g})",
    )
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend (default: inductor)",
    )
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument(
        "--only", default=None, help="run only the sections whose names match this regex"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = set_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    backend = args.compile_backend
    budget_s = args.budget_s or (QUICK_BUDGET_S if args.quick else DEFAULT_BUDGET_S)
    output = args.output
    if output == RESULTS / "gpu.json":  # name the default file after the device
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        suffix = "_quick" if args.quick else ""
        output = RESULTS / f"gpu_{re.sub(r'[^a-z0-9]+', '_', name.lower()).strip('_')}{suffix}.json"
    allow_tf32(device)  # as training does
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    settings = {
        "quick": args.quick,
        "device": str(device),
        "threads": threads,
        "compile_backend": backend,
        "budget_s": budget_s,
        "sizes": {**asdict(replace(sizes, config=None)), "config": sizes.config.__dict__},
        "optimizer": f"Adam(lr={LR}, {adam_kind(device)}), clip {GRAD_CLIP}, EMA {EMA_DECAY}",
        "tf32": {
            "matmul": torch.backends.cuda.matmul.allow_tf32,
            "cudnn": torch.backends.cudnn.allow_tf32,
        },
        "anchors": ANCHORS,
    }
    result = run_metadata("gpu", argv, settings)
    runner = Runner(result, Budget(budget_s), output)
    for section in sections(sizes, QUICK_PLAN if args.quick else PLAN, device, backend):
        if args.only is None or re.search(args.only, section.name):
            runner.run(*section)

    result["summary"] = summarize_run(result)
    finish(result)
    write_json(output, result)
    print_summary(result)
    return result


def summarize_run(result: dict) -> dict:
    """Utilisation and the goals, from the sections that ran."""
    sections = {k: v["result"] for k, v in result["sections"].items() if v["status"] == "ok"}
    peak = sections.get("matmul_peak", {}).get("tflops")
    train = [v for k, v in sections.items() if k.startswith("train_")]
    samples = [v for k, v in sections.items() if k.startswith("sample_")]
    for row in train:
        flops = sections.get(f"flops_{row['model']}", {}).get("forward_gflop_per_image")
        if flops:
            # The usual rule: a training step costs three forward passes.
            row["model_tflops"] = 3 * flops * row["images_per_s"] / 1e3
            row["utilisation_of_bf16_peak"] = row["model_tflops"] / peak if peak else None

    def best(rows, key, model, sampler="ancestral"):
        values = [
            r[key] for r in rows if r["model"] == model and r.get("sampler", sampler) == sampler
        ]
        if not values:
            return None
        return max(values) if key == "images_per_s" else min(values)

    train_ips = {m: best(train, "images_per_s", m) for m in ("ours", "diffusers")}
    sample_s = {m: best(samples, "seconds", m) for m in ("ours", "diffusers")}
    full_size = not result["settings"]["quick"]  # the goals are for the cifar10 preset only

    def compare(a, b, better):
        return None if a is None or b is None else better(a, b)

    # Like for like: ours over diffusers at the same batch, precision and mode.
    setting = ("batch", "precision", "mode")
    theirs_by_setting = {
        tuple(r[k] for k in setting): r["images_per_s"] for r in train if r["model"] == "diffusers"
    }
    same_setting = {
        " ".join(str(r[k]) for k in setting): r["images_per_s"] / theirs
        for r in train
        if r["model"] == "ours" and (theirs := theirs_by_setting.get(tuple(r[k] for k in setting)))
    }
    return {
        "train_speedup_same_setting": same_setting,
        "best_train_images_per_s": train_ips,
        "best_ancestral_seconds": sample_s,
        "goal_train_met": compare(
            train_ips["ours"] if full_size else None,
            ANCHORS["goal_train_images_per_s"],
            lambda a, b: a >= b,
        ),
        "goal_sample_met": compare(
            sample_s["ours"] if full_size else None,
            ANCHORS["goal_seconds_for_256_samples"],
            lambda a, b: a <= b,
        ),
        "ahead_of_diffusers_train": compare(
            train_ips["ours"], train_ips["diffusers"], lambda a, b: a > b
        ),
        "ahead_of_diffusers_sample": compare(
            sample_s["ours"], sample_s["diffusers"], lambda a, b: a < b
        ),
    }


def print_summary(result: dict) -> None:
    rows = []
    for name, record in result["sections"].items():
        r = record.get("result") or {}
        if name.startswith("train_") and record["status"] == "ok":
            value = f"{r['images_per_s']:.0f} img/s"
            extra = r.get("utilisation_of_bf16_peak")
            extra = f"{100 * extra:.1f}% of peak" if extra else r.get("peak_mib_per_image")
        elif name.startswith("sample_") and record["status"] == "ok":
            value, extra = f"{r['seconds']:.2f} s", f"{r['ms_per_step']:.2f} ms/step"
        elif name == "matmul_peak" and record["status"] == "ok":
            value, extra = f"{r['tflops']:.1f} TFLOP/s", "bf16"
        elif name.startswith("flops_") and record["status"] == "ok":
            value, extra = f"{r['forward_gflop_per_image']:.3f} GFLOP fwd/img", r["params"]
        else:
            value, extra = record["status"], record.get("reason") or record.get("error", "")[:60]
        rows.append([name, value, extra])
    print_table(["section", "value", "detail"], rows)
    print(f"summary: {result['summary']}")


if __name__ == "__main__":
    main()
