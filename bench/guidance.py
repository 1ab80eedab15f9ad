"""Classifier-free guidance on the digits: does the guided sample show the class asked for, and
what does guidance cost in diversity?

Two digits-preset models with the same recipe, seed and budget: one class-conditional (labels
dropped with probability 0.1, `ddpm train --class-conditional`) and one unconditional. For each
guidance weight w (eps = (1 + w) eps(y) - w eps(no label); w = 0 is the conditional model) the
conditional model draws the same number of samples of every class, from the same x_T for every w.
Reported per row:

- ``class_match``: the share of samples that `ddpm.metrics`' digits classifier reads as the class
  asked for (the unconditional model has no class to match: null);
- ``frechet``: the Frechet distance to the test split in the classifier's feature space;
- ``within_class_spread``: the trace of the feature covariance of the samples of one predicted
  class, averaged over the classes, next to the test split's (diversity: falls as w rises).

    python -m bench.guidance [--quick] [--steps N] [--samples-per-class N] [--runs DIR]

``--runs DIR`` keeps the two training runs there and reuses a finished one.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.common import base_parser, finish, print_table, run_metadata, set_threads, write_json
from ddpm import checkpoint as ckpt
from ddpm.config import TrainConfig
from ddpm.data import load_digits
from ddpm.guidance import ClassifierFreeGuidance
from ddpm.metrics import digits_classifier, digits_frechet_distance, digits_frechet_floor
from ddpm.samplers import DDIM, sample
from ddpm.train import train
from ddpm.trained import load_trained

WEIGHTS = (0.0, 1.0, 2.0, 4.0)
LABEL_DROPOUT = 0.1  # Ho & Salimans 2022: 0.1 and 0.2 were best
SEED = 0
CLASSES = 10


def trained_run(run_dir: Path, config: TrainConfig):
    """The run in run_dir, trained first unless a checkpoint of all its steps is there."""
    if not (ckpt.has_checkpoint(run_dir) and ckpt.read_checkpoint(run_dir).step >= config.steps):
        train(config, progress=False, resume=ckpt.has_checkpoint(run_dir))
    return load_trained(run_dir)


def within_class_spread(features: np.ndarray, classes: np.ndarray) -> float:
    """Mean over classes (with at least two members) of the trace of their feature covariance."""
    traces = [
        np.trace(np.cov(features[classes == k], rowvar=False))
        for k in range(CLASSES)
        if (classes == k).sum() >= 2
    ]
    return float(np.mean(traces))


def row(name, w, samples, wanted, test, classifier) -> dict:
    predicted = classifier.predict(samples)
    features = classifier.features(samples)
    return {
        "model": name,
        "guidance": w,
        "class_match": None if wanted is None else float((predicted == wanted).float().mean()),
        "frechet": digits_frechet_distance(samples, test, classifier),
        "within_class_spread": within_class_spread(features, predicted.numpy()),
        "predicted_class_counts": torch.bincount(predicted, minlength=CLASSES).tolist(),
    }


def main(argv=None) -> dict:
    parser = base_parser(__doc__.splitlines()[0], "guidance.json")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 1500)")
    parser.add_argument("--samples-per-class", type=int, default=20)
    parser.add_argument("--ddim-steps", type=int, default=25)
    parser.add_argument("--runs", type=Path, default=None, help="where the two runs live")
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    steps = args.steps or (20 if args.quick else 1500)
    per_class = 2 if args.quick else args.samples_per_class
    ddim_steps = 5 if args.quick else args.ddim_steps
    T = 100 if args.quick else 1000
    result = run_metadata(
        "guidance",
        argv,
        {
            "quick": args.quick,
            "threads": threads,
            "steps": steps,
            "T": T,
            "label_dropout": LABEL_DROPOUT,
            "samples_per_class": per_class,
            "sampler": f"ddim, {ddim_steps} steps, eta 0",
            "weights": list(WEIGHTS),
        },
    )
    with tempfile.TemporaryDirectory() as scratch:
        runs = args.runs or Path(scratch)
        base = TrainConfig(preset="digits", T=T, steps=steps, device="cpu", seed=SEED)
        conditional = trained_run(
            runs / "conditional",
            replace(
                base,
                out_dir=str(runs / "conditional"),
                class_conditional=True,
                label_dropout=LABEL_DROPOUT,
            ),
        )
        unconditional = trained_run(
            runs / "unconditional", replace(base, out_dir=str(runs / "unconditional"))
        )

    test = load_digits().test
    classifier = digits_classifier()
    n = per_class * CLASSES
    wanted = torch.arange(CLASSES).repeat_interleave(per_class)
    shape = (n, 1, 8, 8)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(SEED))
    draw = {"x_T": x_T, "progress": False}
    sampler = DDIM(steps=ddim_steps)
    rows = []
    for w in WEIGHTS:
        guided = ClassifierFreeGuidance(conditional.model, w, null_label=CLASSES)
        kwargs = {"y": wanted}
        x = sample(conditional.diffusion, guided, shape, sampler, model_kwargs=kwargs, **draw)
        rows.append(row("conditional", w, x, wanted, test, classifier))
    null = torch.full((n,), CLASSES)
    x = sample(
        conditional.diffusion, conditional.model, shape, sampler, model_kwargs={"y": null}, **draw
    )
    rows.append(row("conditional, no label", None, x, None, test, classifier))
    x = sample(unconditional.diffusion, unconditional.model, shape, sampler, **draw)
    rows.append(row("unconditional", None, x, None, test, classifier))

    test_features = classifier.features(test)
    result["rows"] = rows
    result["test_split"] = {
        "within_class_spread": within_class_spread(test_features, classifier.predict(test).numpy()),
        "frechet_floor_train_vs_test": digits_frechet_floor(n, seed=SEED, classifier=classifier),
        "classifier_test_accuracy": classifier.test_accuracy,
    }
    finish(result)
    print_table(
        ["model", "w", "class match", "Frechet", "spread"],
        [
            [r["model"], r["guidance"], r["class_match"], r["frechet"], r["within_class_spread"]]
            for r in rows
        ],
    )
    print(f"test split: {result['test_split']}")
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
