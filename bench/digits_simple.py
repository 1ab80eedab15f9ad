"""Train the digits model of the paper's settings, bound it on the test split, and ship it.

The run is `ddpm train`'s default: the `digits` preset's recipe with the paper's choices
(linear schedule, T = 1000, noise prediction, sigma_t^2 = beta_t, L_simple), seed 0, on the CPU.
It is timed (wall-clock and CPU seconds of this process and its threads) and its loss log is kept
whole in the results. The variational bound (paper Eq. 5) is then evaluated on every test image
with `ddpm.likelihood.calc_bpd_loop`. Without --quick or --no-ship the EMA weights become the
shipped model `ddpm/weights/digits-simple/` (`ddpm.pretrained.write_pretrained`), whose manifest
names this command and the bound it measured. The book's chapter "Digits" samples and bounds this
model while it is built, and trains the first steps of the same run again to show that the
recorded log is this recipe's.

    python -m bench.digits_simple [--quick] [--threads N] [--no-ship]
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from bench.common import base_parser, finish, print_table, run_metadata, set_threads, write_json
from bench.likelihood import measure_bound, ship, timed

NAME = "digits-simple"  # the shipped model's folder under ddpm/weights/
# The run's settings; those not named are TrainConfig's defaults and the digits preset's recipe.
RECIPE = {"data": "digits", "preset": "digits", "seed": 0, "device": "cpu"}
QUICK = {"preset": "tiny", "T": 40, "steps": 4, "log_every": 2}  # --quick: the script works


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "digits_simple.json")
    parser.set_defaults(threads=1)  # the book's page trains on one thread too
    parser.add_argument(
        "--no-ship", action="store_true", help=f"leave ddpm/weights/{NAME}/ as it is"
    )
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)

    from ddpm.config import TrainConfig
    from ddpm.data import load_digits
    from ddpm.train import LOG_FILE, train
    from ddpm.trained import load_trained

    recipe = {**RECIPE, **(QUICK if args.quick else {})}
    result = run_metadata(
        "digits_simple", argv, {"quick": args.quick, "threads": threads, "recipe": recipe}
    )
    digits = load_digits()
    with tempfile.TemporaryDirectory(prefix="ddpm-digits-simple-") as tmp:
        run_dir = Path(tmp) / "run"
        run, seconds = timed(
            lambda: train(TrainConfig(**recipe, out_dir=str(run_dir)), progress=False)
        )
        log = [json.loads(line) for line in (run_dir / LOG_FILE).read_text().splitlines()]
        result["train"] = {
            **seconds,
            "step": run.step,
            "last_loss": run.log[-1].loss,
            "config": {k: v for k, v in run.config.to_dict().items() if k != "out_dir"},
            "log": log,  # every record of the run's log.jsonl, in order
        }
        trained = load_trained(run_dir, "ema", "cpu")
        result["bound"] = measure_bound(
            trained.diffusion, trained.model, digits.test, digits.num_levels
        )
        bound = result["bound"]
        if not args.quick and not args.no_ship:
            result["shipped"] = ship(run_dir, NAME, "digits_simple", argv, bound)
    finish(result)
    print_table(
        ["test bits/dim", "mean", "stderr"],
        [["L_simple, sigma^2 = beta", bound["total_bpd"], bound["total_bpd_stderr"]]],
    )
    train_seconds = result["train"]
    print(
        f"training: {train_seconds['wall_seconds']} s wall, {train_seconds['cpu_seconds']} s CPU, "
        f"{threads} thread(s)"
    )
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
