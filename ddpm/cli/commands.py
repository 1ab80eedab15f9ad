"""What each command of `ddpm` does, given its parsed arguments, and the files it writes; `run`
turns a failure the user can fix into a one-line message and an exit status."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from ddpm import checkpoint as ckpt
from ddpm.cli.options import DEFAULT_RUN
from ddpm.config import DataInfo, TrainConfig, check_same_data, config_from_checkpoint
from ddpm.data import load_dataset
from ddpm.device import pick_device
from ddpm.likelihood import calc_bpd_loop
from ddpm.pretrained import load_pretrained, pretrained_dir
from ddpm.samplers import sample
from ddpm.train import DivergenceError, TrainingInterrupted, train
from ddpm.trained import TrainedModel, load_trained

IMAGE_PIXELS = 64  # sample grids upscale each image (nearest neighbour) to about this size
GRID_PAD = 6  # grey pixels between the images of a grid: digits fill their whole frame


def run(args: argparse.Namespace) -> int:
    """Carry out `args.command`; the exit status, with a one-line message for a known failure."""
    try:
        RUN[args.command](args)
    except (ckpt.CheckpointError, DivergenceError, ValueError, FileNotFoundError) as err:
        print(f"ddpm {args.command}: error: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as stopped:
        print(f"ddpm train: {stopped}; continue with --resume", file=sys.stderr)
        return 128 + stopped.signum  # the shell's code for a process stopped by that signal
    except KeyboardInterrupt:
        print(f"ddpm {args.command}: stopped; files already written are kept", file=sys.stderr)
        return 130
    return 0


def run_train(args: argparse.Namespace) -> None:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    config = TrainConfig(**given)
    if args.resume:
        saved = ckpt.read_checkpoint(config.out_dir)
        config = replace(config_from_checkpoint(saved), **given)
    result = train(
        config, progress=not args.no_progress, resume=args.resume, share_dir=args.share_dir
    )
    last = result.log[-1] if result.log else None
    loss = f", last loss {last.loss:.4f}" if last else ""
    print(f"trained to step {result.step}{loss}; checkpoint and log.jsonl in {result.out_dir}")


def load_model(args: argparse.Namespace, device: torch.device) -> TrainedModel:
    """The run in `args.run_dir`; the shipped digits model when the default directory holds
    none (the user has not trained one), said in one line."""
    if args.run_dir != DEFAULT_RUN or ckpt.has_checkpoint(args.run_dir):
        return load_trained(args.run_dir, args.weights, device)
    if args.weights != "ema":
        raise ValueError("the shipped digits model has only its EMA weights; leave out --weights")
    trained = load_pretrained("digits", device)
    print(
        f"no run of your own in {DEFAULT_RUN} (train one with 'ddpm train'): using the shipped "
        f"digits model (step {trained.step}), {pretrained_dir('digits')}"
    )
    return trained


def run_sample(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    trained = load_model(args, device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    x = sample(
        trained.diffusion,
        trained.model,
        (args.num, *trained.data.shape),
        args.sampler,
        args.steps,
        args.eta,
        generator=generator,
        device=device,
        # Images live in [-1, 1]; the continuous toys are not clipped.
        clip_denoised=trained.data.num_levels is not None,
        progress=not args.no_progress,
    )
    refuse_non_finite(x, trained, "samples")
    out = args.out or Path(args.run_dir) / "samples.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    array = x.float().cpu().numpy()
    np.save(out.with_suffix(".npy"), array)
    if array.ndim == 4:
        write_grid(array, out)
    else:
        write_scatter(array, out)
    print(
        f"{args.num} samples (step {trained.step}, {args.weights} weights): {out} and "
        f"{out.with_suffix('.npy')}"
    )


def refuse_non_finite(values: torch.Tensor, trained: TrainedModel, what: str) -> None:
    """ValueError, before anything is written, when any of `values` [N x ...] is NaN or
    infinite; it names the checkpoint's step and whether its weights are to blame."""
    bad = int((~torch.isfinite(values.flatten(1))).any(dim=1).sum())
    if not bad:
        return
    damaged = sum(not bool(torch.isfinite(p).all()) for p in trained.model.parameters())
    cause = (
        f"{damaged} weight tensors of the model are not finite: the run diverged before step "
        f"{trained.step}; train again with a lower --lr"
        if damaged
        else "the weights are finite: try another --sampler or fewer --steps"
    )
    raise ValueError(
        f"{bad} of {len(values)} {what} are not finite (NaN or infinite) with the weights of "
        f"step {trained.step}; nothing written. {cause}"
    )


def write_grid(images: np.ndarray, path: Path) -> None:
    """Images [N, C, H, W] in [-1, 1] as a PNG grid, upscaled to about IMAGE_PIXELS each."""
    from PIL import Image

    n, c, h, w = images.shape
    zoom = max(1, IMAGE_PIXELS // max(h, w))
    pixels = np.clip(np.rint((images + 1) * 127.5), 0, 255).astype(np.uint8)
    pixels = pixels.repeat(zoom, axis=2).repeat(zoom, axis=3)  # [N, C, zH, zW]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cell_h, cell_w = h * zoom + GRID_PAD, w * zoom + GRID_PAD
    grid = np.full((c, rows * cell_h + GRID_PAD, cols * cell_w + GRID_PAD), 128, np.uint8)
    for i in range(n):
        top, left = GRID_PAD + (i // cols) * cell_h, GRID_PAD + (i % cols) * cell_w
        grid[:, top : top + h * zoom, left : left + w * zoom] = pixels[i]
    mode = "L" if c == 1 else "RGB"
    Image.fromarray(grid[0] if c == 1 else grid.transpose(1, 2, 0), mode).save(path)


def write_scatter(points: np.ndarray, path: Path) -> None:
    """2-D points [N, 2] as a scatter plot PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.5)
    ax.set_aspect("equal")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def run_bpd(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    trained = load_model(args, device)
    if trained.data.num_levels is None:
        raise ValueError(
            f"{trained.data.name!r} is continuous 2-D data; the bound in bits/dim needs data on "
            "discrete levels (images)"
        )
    dataset = load_dataset(trained.config.data)
    # The data may have changed since training (a file replaced, a folder edited).
    check_same_data(trained.data, DataInfo.of(dataset), str(args.run_dir))
    data = getattr(dataset, args.split)[: args.num]
    generator = torch.Generator(device=device).manual_seed(args.seed)
    results = []
    with torch.no_grad():
        for batch in data.split(args.batch_size):
            results.append(
                calc_bpd_loop(
                    trained.diffusion,
                    trained.model,
                    batch.to(device),
                    trained.data.num_levels,
                    progress=not args.no_progress,
                    generator=generator,
                )
            )
    total = torch.cat([r.total_bpd for r in results]).cpu()
    refuse_non_finite(total[:, None], trained, "per-example bounds")
    prior = torch.cat([r.prior_bpd for r in results]).cpu()
    terms = torch.cat([r.terms_bpd for r in results]).cpu()
    mse = torch.cat([r.mse for r in results]).cpu()
    n = len(total)
    stderr = float(total.std() / math.sqrt(n)) if n > 1 else float("nan")
    summary = {
        "step": trained.step,
        "split": args.split,
        "num_examples": n,
        "weights": args.weights,
        "total_bpd": float(total.mean()),
        "total_bpd_stderr": stderr,
        "prior_bpd": float(prior.mean()),  # L_T
        "decoder_bpd": float(terms[:, 0].mean()),  # L_0
        "kl_terms_bpd": float(terms[:, 1:].sum(dim=1).mean()),  # L_1 + ... + L_{T-1}
    }
    out = args.out or Path(args.run_dir) / f"bpd-{args.split}.json"
    write_bpd(out, summary, terms.mean(dim=0).tolist(), mse.mean(dim=0).tolist())
    print(
        f"{summary['total_bpd']:.4f} +- {stderr:.4f} bits/dim on {n} {args.split} examples "
        f"(step {trained.step}): L_T {summary['prior_bpd']:.4f}, "
        f"L_1..L_(T-1) {summary['kl_terms_bpd']:.4f}, L_0 {summary['decoder_bpd']:.4f}; "
        f"every term in {out}"
    )


def write_bpd(path: Path, summary: dict, terms: list[float], mse: list[float]) -> None:
    """The summary and the per-index means: terms[t] is L_t (t = 0: the decoder L_0)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["term", "t", "bpd", "eps_mse"])
            for t, (term, err) in enumerate(zip(terms, mse, strict=True)):
                writer.writerow(["L_0" if t == 0 else f"L_{t}", t, term, err])
            writer.writerow(["L_T", len(terms), summary["prior_bpd"], ""])
            writer.writerow(["total", "", summary["total_bpd"], ""])
    elif path.suffix == ".json":
        path.write_text(json.dumps({**summary, "terms_bpd": terms, "eps_mse": mse}, indent=1))
    else:
        raise ValueError(f"--out {path}: expected a .json or .csv file")


def run_info(args: argparse.Namespace) -> None:
    saved = ckpt.read_checkpoint(args.run_dir)
    trained = load_trained(args.run_dir, "ema", "cpu")
    params = sum(p.numel() for p in trained.model.parameters())
    print(f"checkpoint: {saved.path}")
    print(f"step: {saved.step} of {trained.config.steps}")
    fingerprint = trained.data.fingerprint or "not recorded"
    print(
        f"data: {trained.data.name}, shape {list(trained.data.shape)}, "
        f"levels {trained.data.num_levels}, fingerprint {fingerprint}"
    )
    print(f"parameters: {params:,}")
    print("config:")
    for key, value in saved.config.items():
        print(f"  {key}: {value}")


RUN = {"train": run_train, "sample": run_sample, "bpd": run_bpd, "info": run_info}
