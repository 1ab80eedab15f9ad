"""The paper's Table 2 on digits: what the network predicts, what it is trained on, and Sigma.

Six variants, the rows of Ho et al. (2020) Table 2: the network predicts the posterior mean
mu_tilde (`MeanType.MU`) or the noise eps (`MeanType.EPS`); it is trained on the true bound L
(`LossType.KL`) or on the unweighted MSE of its target (`LossType.SIMPLE`: ||mu_tilde - mu_theta||^2
or L_simple); the reverse variance is fixed, sigma_t^2 = beta_t (`VarType.FIXED_LARGE`), or learned
(`VarType.LEARNED_RANGE`, interpolated between beta_tilde_t and beta_t where the paper learned the
diagonal outright). Each is trained by `ddpm.train.train` with the digits preset for the same
number of steps and the same seed, so the rows differ only in those three choices. For each: wall
and CPU seconds of training, the loss record, the full T-step bound on a fixed subset of the test
split (bits/dim, with its standard error, and the mean of each term L_t over the subset), and the
Frechet distance in the digits classifier's features between ancestral samples (T steps, the same
x_T for every variant) and the test split. A variant whose loss stops being finite is recorded as
unstable, with the step and its loss record up to there.

    python -m bench.ablation [--quick] [--steps N] [--bpd-images N] [--samples N] [--threads N]
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from bench.common import base_parser, finish, print_table, run_metadata, set_threads, write_json
from ddpm.config import TrainConfig
from ddpm.data import load_digits
from ddpm.diffusion import MeanType, VarType
from ddpm.likelihood import calc_bpd_loop
from ddpm.losses import LossType
from ddpm.metrics import digits_classifier, digits_frechet_distance, digits_frechet_floor
from ddpm.samplers import ancestral_sample
from ddpm.train import LOG_FILE, DivergenceError, train

SEED = 0
SHOWN_SAMPLES = 16  # samples per variant kept (as grey levels) for the page's figure


class Variant(NamedTuple):
    """One row of the paper's Table 2."""

    key: str
    mean_type: MeanType
    loss_type: LossType
    var_type: VarType


VARIANTS = (
    Variant("mu_L_learned", MeanType.MU, LossType.KL, VarType.LEARNED_RANGE),
    Variant("mu_L_fixed", MeanType.MU, LossType.KL, VarType.FIXED_LARGE),
    Variant("mu_mse_fixed", MeanType.MU, LossType.SIMPLE, VarType.FIXED_LARGE),
    Variant("eps_L_learned", MeanType.EPS, LossType.KL, VarType.LEARNED_RANGE),
    Variant("eps_L_fixed", MeanType.EPS, LossType.KL, VarType.FIXED_LARGE),
    Variant("eps_simple_fixed", MeanType.EPS, LossType.SIMPLE, VarType.FIXED_LARGE),
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def read_log(out_dir: Path) -> list[dict]:
    """The (step, loss) records of a run's log.jsonl: also there when training stopped early."""
    path = out_dir / LOG_FILE
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line]
    return [{"step": r["step"], "loss": r["loss"]} for r in records]


def run_variant(variant: Variant, args, data, classifier, work: Path) -> dict:
    config = TrainConfig(
        data="digits",
        preset=args.preset,
        T=args.T,
        mean_type=variant.mean_type,
        var_type=variant.var_type,
        loss_type=variant.loss_type,
        steps=args.steps,
        seed=SEED,
        device="cpu",
        log_every=args.log_every,
        ckpt_every=args.steps,
        out_dir=str(work / variant.key),
    )
    row = {"key": variant.key, **{k: v.value for k, v in variant._asdict().items() if k != "key"}}
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        result = train(config, progress=False)
    except DivergenceError as err:  # a non-finite loss, or one grown far beyond its start
        row.update(stable=False, failure=str(err).split(";")[0])
    else:
        row.update(stable=True, failure=None)
    row["train_wall_s"] = time.perf_counter() - wall
    row["train_cpu_s"] = time.process_time() - cpu
    row["loss_log"] = read_log(Path(config.out_dir))
    if not row["stable"]:
        return row

    row["train_config"] = result.config.to_dict()
    wall = time.perf_counter()
    bound = calc_bpd_loop(
        result.diffusion,
        result.ema,
        data.test[: args.bpd_images],
        data.num_levels,
        generator=torch.Generator().manual_seed(SEED + 3),
    )
    total = bound.total_bpd
    row["bpd"] = {
        "mean": total.mean().item(),
        "sem": total.std().item() / math.sqrt(len(total)),
        "finite": bool(torch.isfinite(total).all()),
        "prior": bound.prior_bpd.mean().item(),
        "terms_mean": [float(f"{v:.5g}") for v in bound.terms_bpd.mean(0).tolist()],
    }
    row["bpd_wall_s"] = time.perf_counter() - wall

    wall = time.perf_counter()
    shape = (args.samples, *data.test.shape[1:])
    g = torch.Generator().manual_seed(SEED + 1)  # the same x_T and noise for every variant
    samples = ancestral_sample(result.diffusion, result.ema, shape, generator=g, progress=False)
    finite = torch.isfinite(samples).flatten(1).all(1)
    row["samples_finite"] = int(finite.sum())
    # Clamped to the data range as a sampler's output is saved; non-finite samples are left out.
    kept = samples[finite].clamp(-1, 1)
    row["frechet"] = digits_frechet_distance(kept, data.test, classifier) if len(kept) > 1 else None
    levels = ((kept[:SHOWN_SAMPLES] + 1) * (data.num_levels - 1) / 2).round()  # as saved images
    row["shown_samples_levels"] = levels.to(torch.int64).tolist()
    row["sample_wall_s"] = time.perf_counter() - wall
    return row


def main(argv: Sequence[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "ablation.json")
    # Sized so that the six variants fit in ~25 minutes on one thread of the 2-core machine:
    # a training step costs ~0.15 s; the bound and an ancestral sample cost T network calls.
    parser.add_argument("--steps", type=int, default=1000, help="training steps per variant")
    parser.add_argument("--bpd-images", type=int, default=64, help="test images in the bound")
    parser.add_argument("--samples", type=int, default=128, help="generated digits per variant")
    args = parser.parse_args(argv)
    args.preset, args.T, args.log_every = "digits", 1000, 50
    if args.quick:
        args.preset, args.T, args.log_every = "tiny", 40, 2
        args.steps, args.bpd_images, args.samples = 4, 4, 8
    threads = set_threads(args.threads)
    data = load_digits()
    classifier = digits_classifier()
    settings = {
        "quick": args.quick,
        "threads": threads,
        "preset": args.preset,
        "T": args.T,
        "steps": args.steps,
        "seed": SEED,
        "bpd_test_images": args.bpd_images,
        "bpd_subset": f"the first {args.bpd_images} images of the digits test split",
        "samples": args.samples,
        "sampler": "ancestral, all T steps, x_0 estimates clipped to [-1, 1]",
        "frechet_reference": "the digits test split",
        "test_split_size": len(data.test),
        "num_levels": data.num_levels,
        "frechet_floor_train_vs_test": digits_frechet_floor(
            args.samples, seed=SEED, classifier=classifier
        ),
    }
    result = run_metadata("ablation", argv, settings)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            log(f"variant {variant.key}")
            rows.append(run_variant(variant, args, data, classifier, Path(tmp)))
    result["variants"] = rows
    finish(result)
    print_table(
        ["variant", "stable", "train s", "bits/dim", "+-", "Frechet"],
        [
            [
                r["key"],
                r["stable"],
                r["train_wall_s"],
                r.get("bpd", {}).get("mean"),
                r.get("bpd", {}).get("sem"),
                r.get("frechet"),
            ]
            for r in rows
        ],
    )
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
