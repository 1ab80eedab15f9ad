"""Few-step samplers on digits: DPM-Solver++(2M) and DDIM against DDIM with 50 steps.

The shipped digits model (`ddpm.load_pretrained("digits")`, T = 100) samples the same x_T with
each sampler: DDIM with 50 steps and eta = 0 (the reference), DPM-Solver++(2M) and DDIM with 5 to
20 steps, and ancestral sampling with all T steps. For each: the Frechet distance in the digits
classifier's features between the samples and the test split, over several seeds (a seed draws
x_T, and the ancestral chain's noise), its mean and its spread (sample standard deviation) over
the seeds, the network calls and the wall time. The claim recorded: the smallest DPM-Solver++ step
count whose mean distance is at most the reference's mean plus its spread, and whether that count
is at most 20 (issue 15's target).

    python -m bench.solvers [--quick] [--samples N] [--seeds N] [--threads N] [--output F]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch

from bench.common import base_parser, finish, print_table, run_metadata, set_threads, write_json
from ddpm.data import load_digits
from ddpm.metrics import (
    ClassifierConfig,
    digits_classifier,
    digits_frechet_distance,
    digits_frechet_floor,
)
from ddpm.pretrained import load_pretrained
from ddpm.samplers import DDIM, Ancestral, DPMSolverPP, Sampler, sample

STEP_COUNTS = (5, 8, 10, 15, 20)
REFERENCE_STEPS = 50
TARGET_STEPS = 20  # issue 15: DPM-Solver++ reaches DDIM-50's distance in at most this many steps
# --quick: a few samples and steps, so that a test runs every line in seconds.
QUICK = dict(samples=16, seeds=2, step_counts=(2, 3), reference_steps=5, classifier_epochs=2)


class CountingModel:
    """The network, counting its calls (one per sampler step)."""

    def __init__(self, model) -> None:
        self.model, self.calls = model, 0

    def __call__(self, x_t, t, **kwargs):
        self.calls += 1
        return self.model(x_t, t, **kwargs)


def samplers(step_counts: Sequence[int], reference_steps: int) -> list[tuple[str, str, Sampler]]:
    """(case, sampler name, sampler): the reference first, then each step count, then ancestral."""
    cases = [(f"ddim-{reference_steps}", "ddim", DDIM(steps=reference_steps))]
    for steps in step_counts:
        cases.append((f"dpmsolver++-{steps}", "dpmsolver++", DPMSolverPP(steps=steps)))
        cases.append((f"ddim-{steps}", "ddim", DDIM(steps=steps)))
    cases.append(("ancestral", "ancestral", Ancestral()))
    return cases


def spread(values: Sequence[float]) -> float:
    """Sample standard deviation over the seeds (0 for one seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def smallest_within(rows: list[dict], sampler: str, band: float) -> int | None:
    """The fewest steps of `sampler` whose mean distance is at most `band`; None if none is."""
    steps = [r["steps"] for r in rows if r["sampler"] == sampler and r["frechet_mean"] <= band]
    return min(steps, default=None)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "solvers.json")
    # Sized for ~10 CPU-minutes on one thread of the 2-core machine: a network call on 400
    # digits costs ~0.6 s, and a seed takes 266 calls (50 + 2 x 58 + 100).
    parser.add_argument("--samples", type=int, default=400, help="digits per sampler and seed")
    parser.add_argument("--seeds", type=int, default=3, help="x_T draws (>= 2 for a spread)")
    args = parser.parse_args(argv)
    args.step_counts, args.reference_steps = STEP_COUNTS, REFERENCE_STEPS
    args.classifier_epochs = ClassifierConfig().epochs
    if args.quick:
        vars(args).update(QUICK)
    if args.samples < 2 or args.seeds < 1:
        parser.error(f"need --samples >= 2 and --seeds >= 1, got {args.samples}, {args.seeds}")
    threads = set_threads(args.threads)
    trained = load_pretrained("digits")
    data = load_digits()
    classifier = digits_classifier(ClassifierConfig(epochs=args.classifier_epochs))
    seeds = list(range(args.seeds))
    settings = {
        "quick": args.quick,
        "threads": threads,
        "model": f"the shipped digits model, step {trained.step}",
        "T": trained.diffusion.T,
        "samples": args.samples,
        "seeds": seeds,
        "step_counts": list(args.step_counts),
        "reference": f"ddim-{args.reference_steps} (eta 0)",
        "clip_denoised": True,
        "frechet_reference": f"the digits test split ({len(data.test)} images)",
        "classifier_test_accuracy": classifier.test_accuracy,
    }
    result = run_metadata("solvers", argv, settings)
    model = CountingModel(trained.model)
    shape = (args.samples, *data.test.shape[1:])
    cases = samplers(args.step_counts, args.reference_steps)
    found = {case: {"frechet": [], "wall_s": [], "calls": []} for case, _, _ in cases}
    for seed in seeds:
        x_T = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        for case, _, chosen in cases:
            model.calls = 0
            g = torch.Generator().manual_seed(1000 + seed)  # the ancestral chain's noise
            start = time.perf_counter()
            x0 = sample(
                trained.diffusion, model, shape, chosen, generator=g, x_T=x_T, progress=False
            )
            found[case]["wall_s"].append(time.perf_counter() - start)
            found[case]["calls"].append(model.calls)
            found[case]["frechet"].append(digits_frechet_distance(x0, data.test, classifier))
        print(f"seed {seed} done", flush=True)

    rows = []
    for case, name, chosen in cases:
        f = found[case]
        (calls,) = set(f["calls"])  # the same every seed
        rows.append(
            {
                "case": case,
                "sampler": name,
                "steps": len(chosen.sequence(trained.diffusion.T)),
                "network_calls": calls,
                "frechet": f["frechet"],
                "frechet_mean": statistics.fmean(f["frechet"]),
                "frechet_spread": spread(f["frechet"]),
                "wall_s": f["wall_s"],
                "wall_s_mean": statistics.fmean(f["wall_s"]),
            }
        )
    floors = [digits_frechet_floor(args.samples, seed, classifier) for seed in seeds]
    reference = rows[0]
    band = reference["frechet_mean"] + reference["frechet_spread"]
    fewest = smallest_within(rows[1:], "dpmsolver++", band)
    result["rows"] = rows
    result["frechet_floor_train_vs_test"] = {
        "values": floors,
        "mean": statistics.fmean(floors),
        "spread": spread(floors),
    }
    result["claim"] = {
        "reference": reference["case"],
        "reference_band": band,
        "dpmsolver_fewest_steps_within_reference": fewest,
        "ddim_fewest_steps_within_reference": smallest_within(rows[1:], "ddim", band),
        "target_steps": TARGET_STEPS,
        "dpmsolver_within_target": fewest is not None and fewest <= TARGET_STEPS,
    }
    finish(result)
    report(result)
    write_json(args.output, result)
    return result


def report(result: dict) -> None:
    rows = [
        [r["case"], r["network_calls"], r["frechet_mean"], r["frechet_spread"], r["wall_s_mean"]]
        for r in result["rows"]
    ]
    floor = result["frechet_floor_train_vs_test"]
    rows.append(["floor: train vs test", None, floor["mean"], floor["spread"], None])
    print_table(["sampler", "calls", "Frechet", "spread", "seconds"], rows)
    claim = result["claim"]
    print(
        f"DPM-Solver++ within {claim['reference']}'s band ({claim['reference_band']:.4g}) from "
        f"{claim['dpmsolver_fewest_steps_within_reference']} steps; "
        f"DDIM from {claim['ddim_fewest_steps_within_reference']}"
    )


if __name__ == "__main__":
    main()
