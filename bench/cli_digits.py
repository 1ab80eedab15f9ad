"""The README's two digits commands, run as a user runs them: CPU time, and are the samples digits?

The commands are read from the README (the block under "The command line" whose lines start with
`ddpm train` and `ddpm sample`), not written here, and each runs as its own process with the
installed `ddpm` script in an empty working directory, as on a fresh install. For each: wall-clock
seconds and CPU seconds (user + system of the process and its threads). The samples the second
command wrote (the .npy beside its grid) are then judged by the digits classifier of
`ddpm.metrics`: how many it reads with confidence, against the same share among real test digits,
and the Frechet distance to the test split against the real-vs-real floor at the same number of
images. The grid is copied to book/images/readme-digits.png, the README's picture, and its SHA-256
recorded, so that a test can tell the picture and the README's commands still belong to this run.

    python -m bench.cli_digits [--quick] [--threads N] [--no-copy]
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    REPO,
    base_parser,
    finish,
    print_table,
    run_metadata,
    write_json,
)

README = REPO / "README.md"
GRID = REPO / "book" / "images" / "readme-digits.png"
CONFIDENT = 0.9  # a sample counts as a readable digit when the classifier gives a class this much
# --quick: the same commands at toy size, to check that this script works.
QUICK_ARGS = {"train": ["--preset", "tiny", "--steps", "4"], "sample": ["--num", "16"]}


def readme_commands(readme: str) -> list[list[str]]:
    """The `ddpm train` and `ddpm sample` lines of the README's first ```bash block that starts
    with `ddpm train`, comments dropped, split as a shell would."""
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
        lines = [line for line in lines if line]
        if lines and lines[0].startswith("ddpm train"):
            commands = [shlex.split(line) for line in lines]
            if [c[:2] for c in commands] != [["ddpm", "train"], ["ddpm", "sample"]]:
                raise ValueError(
                    f"README.md: the block starting with `ddpm train` should hold exactly "
                    f"`ddpm train ...` and `ddpm sample ...`, found {lines}"
                )
            return commands
    raise ValueError("README.md has no ```bash block starting with `ddpm train`")


def sample_output(command: list[str]) -> str:
    """The --out of a `ddpm sample` command (the CLI's default is <run_dir>/samples.png)."""
    for i, arg in enumerate(command):
        if arg == "--out":
            return command[i + 1]
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    raise ValueError(f"{shlex.join(command)}: no --out, so the grid's place is not known")


def ddpm_script() -> str:
    """The `ddpm` console script of this environment (next to its python), else the PATH's."""
    local = Path(sys.executable).with_name("ddpm")
    found = str(local) if local.exists() else shutil.which("ddpm")
    if found is None:
        raise FileNotFoundError("no `ddpm` script: install the package (make test does)")
    return found


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Run `command`; its wall-clock and CPU seconds (the child's user + system time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(
            f"`{shlex.join(command)}` exited with {done.returncode}:\n{done.stderr[-3000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}


def judge(samples, seed: int = 0) -> dict:
    """What the digits classifier makes of the samples, next to real test digits."""
    import torch

    from ddpm.data import load_digits
    from ddpm.metrics.classifier import digits_classifier
    from ddpm.metrics.frechet import digits_frechet_distance, digits_frechet_floor

    classifier = digits_classifier()
    test = load_digits().test
    n = len(samples)

    def confident(images) -> float:
        with torch.no_grad():
            logits = classifier.net(images.to(torch.float32))
        return float((logits.softmax(dim=1).max(dim=1).values >= CONFIDENT).float().mean())

    counts = torch.bincount(classifier.predict(samples), minlength=10)
    return {
        "samples": n,
        "confident_share": confident(samples),
        "confident_share_real_test": confident(test),
        "confidence_threshold": CONFIDENT,
        "predicted_class_counts": counts.tolist(),
        "frechet_distance_to_test": digits_frechet_distance(samples, test, classifier),
        "frechet_floor_train_vs_test": digits_frechet_floor(n, seed=seed, classifier=classifier),
        "classifier_test_accuracy": classifier.test_accuracy,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "cli_digits.json")
    parser.add_argument(
        "--no-copy", action="store_true", help="leave book/images/readme-digits.png as it is"
    )
    args = parser.parse_args(argv)
    import numpy as np
    import torch

    from ddpm import checkpoint as ckpt
    from ddpm.config import TrainConfig

    commands = readme_commands(README.read_text())
    if args.quick:
        commands = [c + QUICK_ARGS[c[1]] for c in commands]
    result = run_metadata(
        "cli_digits",
        argv,
        {
            "quick": args.quick,
            "threads": args.threads,
            "readme_commands": [shlex.join(c) for c in commands],
        },
    )
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    script = ddpm_script()
    steps = []
    with tempfile.TemporaryDirectory(prefix="ddpm-cli-digits-") as tmp:
        work = Path(tmp)
        for command in commands:
            print(f"$ {shlex.join(command)}", flush=True)
            steps.append(
                {"command": shlex.join(command), **timed([script, *command[1:]], work, env)}
            )
        grid = work / sample_output(commands[1])
        samples = torch.from_numpy(np.load(grid.with_suffix(".npy")))
        saved = ckpt.read_checkpoint(work / TrainConfig().out_dir)  # where `ddpm train` wrote
        result["steps"] = steps
        result["train_step_reached"] = saved.step
        result["train_config"] = json.loads((saved.path / ckpt.CONFIG).read_text())
        result["samples"] = judge(samples)
        result["grid_sha256"] = hashlib.sha256(grid.read_bytes()).hexdigest()
        if not args.no_copy and not args.quick:
            GRID.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(grid, GRID)
            result["grid"] = str(GRID.relative_to(REPO))
    train_step = steps[0]
    result["train_cpu_minutes"] = round(train_step["cpu_seconds"] / 60, 2)
    result["train_wall_minutes"] = round(train_step["wall_seconds"] / 60, 2)
    finish(result)
    judged = result["samples"]
    print_table(
        ["command", "wall s", "CPU s"],
        [[s["command"], s["wall_seconds"], s["cpu_seconds"]] for s in steps],
    )
    print_table(
        ["", "samples", "real test digits"],
        [
            [
                f"share read with p >= {CONFIDENT}",
                judged["confident_share"],
                judged["confident_share_real_test"],
            ],
            [
                "Frechet distance to test",
                judged["frechet_distance_to_test"],
                judged["frechet_floor_train_vs_test"],
            ],
        ],
    )
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
