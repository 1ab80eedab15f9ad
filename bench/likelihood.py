"""Train the shipped digits model, bound its likelihood on the whole test split, and ship it.

The run's settings are `RECIPE` (chosen on images held out of the train split; the book's page
"A likelihood below the baselines" says how). The run is timed (wall-clock and CPU seconds of
this process and its threads). Then the variational bound (paper Eq. 5) is evaluated term by
term on every test image with `ddpm.likelihood.calc_bpd_loop`: for the model as trained, and for
the same network with each fixed variance of Ho et al. in place of the learned one, which shows
what learning the variance buys; next to them the two classical baselines of
`ddpm.metrics.digits_baselines`. Without --quick or --no-ship the EMA weights become the shipped
model, `ddpm/weights/digits/` (`ddpm.pretrained.write_pretrained`), whose manifest names this
command and the bound it measured.

    python -m bench.likelihood [--quick] [--threads N] [--no-ship]
"""

from __future__ import annotations

import math
import shlex
import sys
import tempfile
import time
from pathlib import Path

from bench.common import base_parser, finish, print_table, run_metadata, set_threads, write_json

# The shipped model's run; the settings not named keep TrainConfig's defaults and the digits
# preset's recipe (the page "A likelihood below the baselines" explains each choice).
RECIPE = {
    "data": "digits",
    "preset": "digits",
    "schedule": "linear",
    "T": 100,
    "var_type": "learned_range",
    "loss_type": "hybrid",
    "steps": 3500,
    "device": "cpu",
}
QUICK = {"preset": "tiny", "T": 40, "steps": 4}  # --quick: checks that this script works
EVAL_BATCH = 120  # test images per call of the bound's loop
EVAL_SEED = 0  # seeds the x_t drawn for the bound


def timed(fn):
    """fn() with the wall-clock and CPU seconds (this process, all threads) it took."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, {
        "wall_seconds": round(time.perf_counter() - wall, 1),
        "cpu_seconds": round(time.process_time() - cpu, 1),
    }


def measure_bound(diffusion, model, images, num_levels: int) -> dict:
    """The bound on every image of `images` [N, C, H, W], term by term, in bits/dim."""
    import torch

    from ddpm.likelihood import calc_bpd_loop

    generator = torch.Generator().manual_seed(EVAL_SEED)

    def run():
        return [
            calc_bpd_loop(diffusion, model, batch, num_levels, generator=generator)
            for batch in images.split(EVAL_BATCH)
        ]

    parts, seconds = timed(run)
    total = torch.cat([p.total_bpd for p in parts])
    n = len(total)
    return {
        **seconds,
        "seed": EVAL_SEED,
        "num_examples": n,
        "total_bpd": float(total.mean()),
        "total_bpd_stderr": float(total.std() / math.sqrt(n)),
        "prior_bpd": float(torch.cat([p.prior_bpd for p in parts]).mean()),  # L_T
        # [T]: index 0 the decoder L_0, index t the KL term L_t
        "terms_bpd": torch.cat([p.terms_bpd for p in parts]).mean(dim=0).tolist(),
        "per_image_bpd": total.tolist(),  # [N]: each test image's bound, in order
    }


def ship(run_dir: Path, name: str, benchmark: str, argv: list[str] | None, bound: dict) -> dict:
    """Ship the run's EMA weights as ``ddpm/weights/<name>/``, its manifest naming the command
    ``python -m bench.<benchmark> ARGV`` and the test bound `measure_bound` measured."""
    from ddpm import pretrained

    given = sys.argv[1:] if argv is None else argv
    manifest = pretrained.write_pretrained(
        run_dir,
        name,
        shlex.join(["python", "-m", f"bench.{benchmark}", *given]),
        bound["total_bpd"],
        bound["total_bpd_stderr"],
        bound["num_examples"],
    )
    return {"name": name, "sha256": manifest.sha256, "bytes": manifest.bytes}


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "likelihood.json")
    parser.set_defaults(threads=1)  # CPU minutes are the budget; one thread uses them best
    parser.add_argument(
        "--no-ship", action="store_true", help="leave ddpm/weights/digits/ as it is"
    )
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)

    from ddpm.config import TrainConfig
    from ddpm.data import load_digits
    from ddpm.diffusion import GaussianDiffusion, VarType
    from ddpm.metrics import digits_baselines
    from ddpm.train import train
    from ddpm.trained import load_trained

    recipe = {**RECIPE, **(QUICK if args.quick else {})}
    result = run_metadata(
        "likelihood", argv, {"quick": args.quick, "threads": threads, "recipe": recipe}
    )
    digits = load_digits()
    with tempfile.TemporaryDirectory(prefix="ddpm-likelihood-") as tmp:
        run_dir = Path(tmp) / "run"
        run, seconds = timed(
            lambda: train(TrainConfig(**recipe, out_dir=str(run_dir)), progress=False)
        )
        result["train"] = {
            **seconds,
            "step": run.step,
            "last_loss": run.log[-1].loss,
            "config": run.config.to_dict(),
        }
        trained = load_trained(run_dir, "ema", "cpu")
        result["bound"] = measure_bound(
            trained.diffusion, trained.model, digits.test, digits.num_levels
        )
        # The same network's noise estimate, with a fixed variance instead of its learned one.
        channels = trained.data.shape[0]
        result["fixed_variance"] = {
            var_type.value: measure_bound(
                GaussianDiffusion(trained.diffusion.schedule, trained.config.mean_type, var_type),
                lambda x, t: trained.model(x, t)[:, :channels],
                digits.test,
                digits.num_levels,
            )
            for var_type in (VarType.FIXED_LARGE, VarType.FIXED_SMALL)
        }
        result["baselines"] = {
            b.name: {"bpd": b.bpd, "details": b.details} for b in digits_baselines()
        }
        bound = result["bound"]
        if not args.quick and not args.no_ship:
            result["shipped"] = ship(run_dir, "digits", "likelihood", argv, bound)
    finish(result)
    rows = [["learned variance (shipped)", bound["total_bpd"], bound["total_bpd_stderr"]]]
    rows += [
        [f"{name} variance", b["total_bpd"], b["total_bpd_stderr"]]
        for name, b in result["fixed_variance"].items()
    ]
    rows += [[name, b["bpd"], None] for name, b in result["baselines"].items()]
    print_table(["test bits/dim", "mean", "stderr"], rows)
    train_seconds = result["train"]
    print(
        f"training: {train_seconds['wall_seconds']} s wall, {train_seconds['cpu_seconds']} s CPU, "
        f"{threads} thread(s)"
    )
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
