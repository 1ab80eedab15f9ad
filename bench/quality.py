"""Quality: likelihood and sample quality of trained DDPMs against yardsticks from the same run.

- Digits bits/dim (K = 17 levels, the test split): the full-chain variational bound
  (`ddpm.likelihood.calc_bpd_loop`) of the digits preset trained by `ddpm.train` with the digits
  preset's recipe, against the classical density models of `ddpm.metrics` (independent per-pixel
  categoricals, and the best Gaussian mixture of a small sweep), scored on the same images.
- Digits sample quality: the Frechet distance in the feature space of `ddpm.metrics`' digits
  classifier between generated samples and the test split, with the train-vs-test floor at the same
  sample size; the same for diffusers' UNet2DModel of the same architecture, trained with the same
  budget (steps, batch, data order, learning-rate warm-up, clipping, EMA) and the same loss and
  noise schedule, and sampled by diffusers' own scheduler (the same sampler as ours).
- 2-D toys: energy distance and sliced Wasserstein distance between samples of the MLP denoiser
  and fresh data, with the data-vs-data floor at the same sample sizes.

    python -m bench.quality [--quick] [--steps N] [--bpd-images N] [--samples N] [--sampler ddim]
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import (
    base_parser,
    check_same_size,
    diffusers_unet,
    finish,
    param_count,
    print_table,
    run_metadata,
    set_threads,
    write_json,
)
from ddpm.config import RECIPES, TrainConfig, build_diffusion
from ddpm.data import load_dataset, load_digits, toy_samples
from ddpm.likelihood import calc_bpd_loop
from ddpm.metrics import (
    ClassifierConfig,
    categorical_bpd,
    digits_classifier,
    digits_frechet_distance,
    digits_frechet_floor,
    energy_distance,
    gmm_bpd,
    sliced_wasserstein,
    to_levels,
)
from ddpm.metrics.baselines import GMM_CANDIDATES
from ddpm.samplers import SamplerKind, ancestral_sample, make_sampler, sample
from ddpm.train import EpochSampler, ema_decay_at, ema_update, lr_at, train
from ddpm.unet import UNetConfig, unet_preset

# Two arcs and eight separated modes: the shapes that show a sampler's coverage best. The other toys
# of `ddpm.data` can be added with --toys.
TOYS = ("two_moons", "eight_gaussians")
SEED = 0
# --quick: toy sizes everywhere, so that a test can run every line in seconds.
QUICK = dict(
    steps=20,
    T=50,
    bpd_images=4,
    samples=16,
    sampler="ddim",
    ddim_steps=5,
    toy_steps=20,
    toy_points=200,
    toys=TOYS[:1],
    gmm_candidates=((2, "diag"),),
    gmm_samples=2,
    classifier_epochs=2,
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def mean_and_sem(values: torch.Tensor) -> dict[str, float]:
    """Mean of per-image values and its standard error."""
    v = values.double()
    sem = v.std().item() / math.sqrt(len(v)) if len(v) > 1 else math.nan
    return {"mean": v.mean().item(), "sem": sem}


def train_diffusers_twin(
    config: TrainConfig, net: UNetConfig, data
) -> tuple[torch.nn.Module, float]:
    """diffusers' UNet2DModel of the architecture `net`, trained with the budget of `config` (a
    resolved TrainConfig): the same steps, batch, data order, warm-up, clipping and EMA as
    `ddpm.train`, the loss written the way diffusers' training examples write it (`add_noise`, MSE
    against the noise), our betas. Returns the EMA model (eval mode) and the training seconds."""
    from diffusers import DDPMScheduler

    schedule = build_diffusion(config).schedule
    scheduler = DDPMScheduler(num_train_timesteps=schedule.T, trained_betas=schedule.betas)
    torch.manual_seed(config.seed)
    model = diffusers_unet(net).train()
    ema = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    order = EpochSampler(len(data.train), config.batch_size, config.seed)
    g = torch.Generator().manual_seed(config.seed + 2)
    start = time.perf_counter()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step + 1, config)
        x0 = data.train[order.next()]
        t = torch.randint(schedule.T, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        loss = F.mse_loss(model(scheduler.add_noise(x0, noise, t), t).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        ema_update(ema, model, ema_decay_at(step, config.ema_decay))
    return ema.eval(), time.perf_counter() - start


@torch.no_grad()
def sample_diffusers(model, schedule, n: int, sampler: str, steps: int) -> torch.Tensor:
    """n digits from a diffusers UNet2DModel with diffusers' scheduler: DDPMScheduler (ancestral,
    sigma_t^2 = beta_t) or DDIMScheduler (eta = 0, timesteps spaced as
    `ddpm.samplers.ddim_timesteps` spaces them), x_0 estimates clipped to [-1, 1] as ours are."""
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(num_train_timesteps=schedule.T, trained_betas=schedule.betas, clip_sample=True)
    if sampler == "ancestral":
        scheduler = DDPMScheduler(**common, variance_type="fixed_large")
        scheduler.set_timesteps(schedule.T)
    else:
        scheduler = DDIMScheduler(**common, set_alpha_to_one=True, timestep_spacing="linspace")
        scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn((n, 1, 8, 8), generator=g)
    for t in scheduler.timesteps:
        eps = model(x, t.expand(n)).sample
        x = scheduler.step(eps, t, x, generator=g).prev_sample
    return x


def sample_ours(diffusion, model, shape, sampler: str, steps: int) -> torch.Tensor:
    """Samples with the sampler named `sampler` (`steps` of them; ancestral takes all T)."""
    g = torch.Generator().manual_seed(SEED + 1)
    count = None if sampler == SamplerKind.ANCESTRAL.value else steps
    chosen = make_sampler(sampler, diffusion.T, count)
    return sample(diffusion, model, shape, chosen, generator=g, progress=False)


def frechet_row(name: str, samples: torch.Tensor, test: torch.Tensor, classifier) -> dict:
    classes = classifier.predict(samples)
    return {
        "model": name,
        "frechet": digits_frechet_distance(samples, test, classifier),
        "predicted_class_counts": torch.bincount(classes, minlength=10).tolist(),
    }


def digits_section(args, out_dir: Path, timings: dict) -> dict:
    data = load_digits()
    recipe = RECIPES["digits"]
    # --quick: the tiny preset, whose diffusers twin is widened to diffusers' 32 GroupNorm groups.
    preset = "tiny" if args.quick else "digits"
    config = TrainConfig(
        data="digits",
        preset=preset,
        steps=args.steps,
        T=args.T,
        seed=SEED,
        device="cpu",
        out_dir=str(out_dir / "ours"),
    )
    log(f"training ours ({preset} preset)")
    start = time.perf_counter()
    ours = train(config, progress=False)
    timings["train_ours_s"] = time.perf_counter() - start
    resolved = ours.config
    _, channels, side = data.train.shape[:3]
    twin = unet_preset(preset, in_channels=channels, image_size=side, dropout=resolved.dropout)
    if args.quick:
        twin = replace(twin, base_channels=32)
    log(f"training the diffusers twin ({resolved.steps} steps)")
    theirs, timings["train_diffusers_s"] = train_diffusers_twin(resolved, twin, data)
    params = {"ours": param_count(ours.ema), "diffusers": param_count(theirs)}
    if not args.quick:
        check_same_size(ours.ema, theirs)

    classifier = digits_classifier(ClassifierConfig(epochs=args.classifier_epochs))
    n_bpd = min(args.bpd_images, len(data.test))
    log(f"bound on {n_bpd} test images")
    start = time.perf_counter()
    bound = calc_bpd_loop(
        ours.diffusion,
        ours.ema,
        data.test[:n_bpd],
        data.num_levels,
        generator=torch.Generator().manual_seed(SEED + 3),
    )
    timings["bpd_s"] = time.perf_counter() - start

    log("baselines")
    start = time.perf_counter()
    train_levels = to_levels(data.train, data.num_levels)
    test_levels = to_levels(data.test, data.num_levels)
    subset = test_levels[:n_bpd]
    baselines = {
        "categorical_same_images": categorical_bpd(train_levels, subset, data.num_levels),
        "gmm_same_images": gmm_bpd(
            train_levels,
            subset,
            data.num_levels,
            candidates=args.gmm_candidates,
            samples=args.gmm_samples,
            seed=SEED,
        ),
        "categorical_full_test": categorical_bpd(train_levels, test_levels, data.num_levels),
    }
    timings["baselines_s"] = time.perf_counter() - start

    n = args.samples
    shape = (n, *data.test.shape[1:])
    log(f"sampling {n} digits per model")
    start = time.perf_counter()
    samples = {"ours": sample_ours(ours.diffusion, ours.ema, shape, args.sampler, args.ddim_steps)}
    timings["sample_ours_s"] = time.perf_counter() - start
    start = time.perf_counter()
    samples["diffusers"] = sample_diffusers(
        theirs, ours.diffusion.schedule, n, args.sampler, args.ddim_steps
    )
    timings["sample_diffusers_s"] = time.perf_counter() - start
    frechet = [frechet_row(k, v, data.test, classifier) for k, v in samples.items()]
    floor = digits_frechet_floor(n, seed=SEED, classifier=classifier)

    return {
        "train_config": resolved.to_dict(),
        "digits_recipe": asdict(recipe),
        "budget_is_the_recipe": resolved.steps == recipe.steps and not args.quick,
        "params": params,
        "bpd": {
            "test_images": n_bpd,
            "test_split_size": len(data.test),
            "num_levels": data.num_levels,
            "total": mean_and_sem(bound.total_bpd),
            "prior": mean_and_sem(bound.prior_bpd),
            "decoder_L0": mean_and_sem(bound.terms_bpd[:, 0]),
            "sum_L1_to_LT-1": mean_and_sem(bound.terms_bpd[:, 1:].sum(dim=1)),
            "baselines": {k: v._asdict() for k, v in baselines.items()},
            "ddpm_below_both_baselines_same_images": bool(
                bound.total_bpd.mean().item()
                < min(baselines["categorical_same_images"].bpd, baselines["gmm_same_images"].bpd)
            ),
        },
        "frechet": {
            "samples": n,
            "sampler": args.sampler,
            "sampler_steps": ours.diffusion.T if args.sampler == "ancestral" else args.ddim_steps,
            "reference": f"digits test split ({len(data.test)} images)",
            "rows": frechet,
            "floor_train_vs_test": floor,
            "classifier_test_accuracy": classifier.test_accuracy,
        },
    }


def toys_section(args, out_dir: Path, timings: dict) -> list[dict]:
    rows = []
    n = args.toy_points
    for kind in args.toys:
        config = TrainConfig(
            data=f"toy:{kind}",
            steps=args.toy_steps,
            T=args.T,
            seed=SEED,
            device="cpu",
            out_dir=str(out_dir / kind),
        )
        log(f"toy {kind}")
        start = time.perf_counter()
        result = train(config, progress=False)
        g = torch.Generator().manual_seed(SEED + 1)
        samples = ancestral_sample(
            result.diffusion, result.ema, (n, 2), generator=g, progress=False
        )
        timings[f"toy_{kind}_s"] = time.perf_counter() - start
        fresh = [toy_samples(kind, n, torch.Generator().manual_seed(100 + i)) for i in range(2)]
        proj = [torch.Generator().manual_seed(7) for _ in range(2)]
        rows.append(
            {
                "toy": kind,
                "steps": result.config.steps,
                "batch_size": result.config.batch_size,
                "points": n,
                "energy_distance": energy_distance(samples, fresh[0]),
                "energy_distance_floor": energy_distance(fresh[1], fresh[0]),
                "sliced_wasserstein": sliced_wasserstein(samples, fresh[0], generator=proj[0]),
                "sliced_wasserstein_floor": sliced_wasserstein(
                    fresh[1], fresh[0], generator=proj[1]
                ),
                "train_split_points": len(load_dataset(f"toy:{kind}").train),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "quality.json")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="digits training steps (default: the digits preset's recipe)",
    )
    # Sized so that the whole run stays within ~15 minutes on the 2-core machine: the bound costs
    # T = 1000 network calls per image, an ancestral sample as much.
    parser.add_argument(
        "--bpd-images", type=int, default=128, help="test images in the bound (of 359)"
    )
    parser.add_argument("--samples", type=int, default=359, help="generated digits per model")
    parser.add_argument(
        "--sampler",
        # the samplers `sample_diffusers` has a diffusers twin of
        choices=(SamplerKind.ANCESTRAL.value, SamplerKind.DDIM.value),
        default="ddim",
        help="for the digits",
    )
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument("--toys", nargs="+", default=list(TOYS), help="2-D toys to train")
    parser.add_argument("--toy-steps", type=int, default=2000, help="MLP training steps per toy")
    parser.add_argument("--toy-points", type=int, default=1000, help="samples and fresh points")
    args = parser.parse_args(argv)
    args.T, args.classifier_epochs = 1000, ClassifierConfig().epochs
    args.gmm_candidates, args.gmm_samples = GMM_CANDIDATES, 100
    if args.quick:
        vars(args).update(QUICK)
    threads = set_threads(args.threads)
    settings = {k: v for k, v in vars(args).items() if k != "output"}
    settings["threads"] = threads
    result = run_metadata("quality", argv, settings)
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as folder:
        result["digits"] = digits_section(args, Path(folder), timings)
        result["toys"] = toys_section(args, Path(folder), timings)
    result["timings_s"] = timings
    finish(result)
    report(result)
    write_json(args.output, result)
    return result


def report(result: dict) -> None:
    d = result["digits"]
    bpd = d["bpd"]
    rows = [["DDPM bound (ours)", bpd["total"]["mean"], bpd["total"]["sem"], bpd["test_images"]]]
    for name, b in bpd["baselines"].items():
        n = bpd["test_images"] if "same" in name else bpd["test_split_size"]
        rows.append([f"{name} ({b['details']})"[:60], b["bpd"], None, n])
    print_table(["digits bits/dim", "mean", "sem", "images"], rows)
    f = d["frechet"]
    rows = [[r["model"], r["frechet"]] for r in f["rows"]]
    rows.append(["floor: train vs test", f["floor_train_vs_test"]])
    print(f"\n{f['samples']} samples, {f['sampler']} ({f['sampler_steps']} steps)")
    print_table(["digits Frechet", "distance"], rows)
    rows = [
        [
            r["toy"],
            r["energy_distance"],
            r["energy_distance_floor"],
            r["sliced_wasserstein"],
            r["sliced_wasserstein_floor"],
        ]
        for r in result["toys"]
    ]
    print()
    print_table(["toy", "energy", "energy floor", "sliced W2", "SW2 floor"], rows)
    print(f"\nseconds: { {k: round(v, 1) for k, v in result['timings_s'].items()} }")
    print(f"load average {result['load_average_start']} -> {result['load_average_end']}")


if __name__ == "__main__":
    main()
