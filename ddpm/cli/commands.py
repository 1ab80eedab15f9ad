"""What each command of `ddpm` does, given its parsed arguments, and the files it writes; `run`
turns a failure the user can fix into a one-line message and an exit status."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import signal
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch

from ddpm import checkpoint as ckpt
from ddpm.cli import failures
from ddpm.cli.defaults import DEFAULT_RUN
from ddpm.cli.failures import describe_os_error
from ddpm.config import DataInfo, TrainConfig, check_same_data, config_from_checkpoint
from ddpm.data import load_dataset
from ddpm.device import pick_device
from ddpm.likelihood import calc_bpd_loop
from ddpm.pretrained import load_pretrained, pretrained_dir
from ddpm.samplers import sample
from ddpm.train import LOG_FILE, DivergenceError, TrainingInterrupted, train
from ddpm.trained import TrainedModel, load_trained

IMAGE_PIXELS = 64  # sample grids upscale each image (nearest neighbour) to about this size
GRID_PAD = 6  # grey pixels between the images of a grid: digits fill their whole frame


def run(args: argparse.Namespace) -> int:
    """Carry out `args.command`; the exit status (`ddpm.cli.failures`), with a one-line message
    on stderr for every foreseeable failure."""
    status, message = 0, None
    try:
        RUN[args.command](args)
    except (ckpt.CheckpointError, DivergenceError, ValueError, FileNotFoundError) as err:
        status, message = failures.INPUT, f"error: {err}"
    except OSError as err:
        # A path that cannot be one (under a file, a folder in the way) is the input's fault.
        status = failures.INPUT if err.errno in failures.PATH_ERRORS else failures.SYSTEM
        message = f"error: {describe_os_error(err, output_of(args))}"
    except TrainingInterrupted as stopped:
        status, message = 128 + stopped.signum, f"{stopped}; continue with --resume"
    except failures.Stopped as stopped:
        name = signal.Signals(stopped.signum).name
        status, message = 128 + stopped.signum, f"stopped by {name}; {stopped.kept}"
    except KeyboardInterrupt:
        status, message = 128 + signal.SIGINT, "stopped; files already written are kept"
    except (MemoryError, RuntimeError) as err:
        if not failures.is_out_of_memory(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        status = failures.MEMORY
        message = f"error: out of memory ({first}); {MEMORY_ADVICE[args.command]}"
    if message:
        # 128 + N is the shell's code for a process stopped by signal N.
        print(f"ddpm {args.command}: {message}", file=sys.stderr)
    return status


# What to lower when a command runs out of memory.
MEMORY_ADVICE = {
    "train": "try a smaller --batch-size or --preset",
    "sample": "try a smaller --batch-size",
    "bpd": "try a smaller --batch-size",
    "info": "the checkpoint does not fit in memory",
}


def output_of(args: argparse.Namespace) -> str:
    """Where the command writes: named in a message about a write whose error names no file."""
    if args.command == "train":
        return getattr(args, "out_dir", None) or "the output directory"
    return str(getattr(args, "out", None) or args.run_dir)


def run_train(args: argparse.Namespace) -> None:
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    config = TrainConfig(**given)
    if args.resume:
        saved = ckpt.read_checkpoint(config.out_dir)
        check_log(Path(config.out_dir) / LOG_FILE)
        config = replace(config_from_checkpoint(saved), **given)
    result = train(
        config, progress=not args.no_progress, resume=args.resume, share_dir=args.share_dir
    )
    last = result.log[-1] if result.log else None
    loss = f", last loss {last.loss:.4f}" if last else ""
    print(f"trained to step {result.step}{loss}; checkpoint and log.jsonl in {result.out_dir}")


def check_log(path: Path) -> None:
    """Refuse, before a resume rewrites it, a log whose records are damaged: every line must be
    a JSON record with a whole-number step, except a last line without its newline (a write cut
    off by a kill, which the resume drops)."""
    if not path.exists():
        return
    lines = path.read_bytes().decode("utf-8", "replace").split("\n")
    for number, line in enumerate(lines[:-1], 1):  # lines[-1]: after the last newline
        try:
            record = json.loads(line)
        except ValueError as err:
            problem = f"not JSON ({err})"
        else:
            fine = isinstance(record, dict) and type(record.get("step")) is int
            problem = None if fine else "not a record with a step"
        if problem:
            raise ckpt.CheckpointError(
                f"{path}: line {number} is damaged: {problem}; repair or delete that line, "
                "then resume"
            )


def load_model(args: argparse.Namespace, device: torch.device) -> TrainedModel:
    """The run in `args.run_dir`, or the diffusers-format folder there; the shipped digits model
    when the default directory holds none (the user has not trained one), said in one line."""
    from ddpm.diffusers_io import is_diffusers_folder

    if is_diffusers_folder(args.run_dir):
        return load_released(args, device)
    if args.var_type or getattr(args, "data", None):
        raise ValueError(
            "--var-type and --data are for a diffusers folder; a run keeps the process and the "
            "data it was trained with"
        )
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


def load_released(args: argparse.Namespace, device: torch.device) -> TrainedModel:
    """The diffusers-format folder `args.run_dir` (one of the paper's released models, say),
    said in one line. It records no data and no step: `ddpm bpd` needs --data."""
    from ddpm.data import BYTE_LEVELS
    from ddpm.diffusers_io import load_diffusers

    folder = Path(args.run_dir)
    data = getattr(args, "data", None)
    if args.command == "bpd" and not data:
        raise ValueError(f"{folder}: a diffusers folder names no data; give it with --data")
    if args.weights != "ema":
        raise ValueError(f"{folder}: a diffusers folder holds one set of weights; drop --weights")
    released = load_diffusers(folder, device, args.var_type)
    c, diffusion = released.config, released.diffusion
    # The released models are all of 8-bit images.
    info = DataInfo(folder.name, (c.in_channels, c.image_size, c.image_size), BYTE_LEVELS)
    config = TrainConfig(
        data=data or str(folder),
        T=diffusion.T,
        mean_type=diffusion.mean_type,
        var_type=diffusion.var_type,
    )
    params = sum(p.numel() for p in released.model.parameters())
    print(
        f"{folder}: a diffusers UNet2DModel, {params:,} parameters, {c.in_channels} x "
        f"{c.image_size} x {c.image_size} images; T = {diffusion.T}, "
        f"{diffusion.var_type.value} variance, from {released.schedule_from}"
    )
    return TrainedModel(config, released.model, diffusion, info, step=0)


def take_checkpoint(args: argparse.Namespace) -> None:
    """`--checkpoint DIR` names the model in place of run_dir."""
    if args.checkpoint is None:
        return
    if args.run_dir != DEFAULT_RUN:
        raise ValueError(
            f"the model is named twice ({args.run_dir} and --checkpoint {args.checkpoint})"
        )
    args.run_dir = args.checkpoint


def run_sample(args: argparse.Namespace) -> None:
    take_checkpoint(args)
    out = args.out or Path(args.run_dir) / "samples.png"
    check_output(out, (".png",))
    device = pick_device(args.device)
    trained = load_model(args, device)
    network = in_bf16(trained.model, device) if args.bf16 else trained.model
    network, label = guided(args, trained, network)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    done: list[torch.Tensor] = []  # finished batches [n, C, H, W] (or [n, 2]), on the CPU
    try:
        with failures.stop_signals_raise():
            for first in range(0, args.num, args.batch_size):
                n = min(args.batch_size, args.num - first)
                x = sample(
                    trained.diffusion,
                    network,
                    (n, *trained.data.shape),
                    args.sampler,
                    args.steps,
                    args.eta,
                    generator=generator,
                    device=device,
                    # Images live in [-1, 1]; the continuous toys are not clipped.
                    clip_denoised=trained.data.num_levels is not None,
                    progress=not args.no_progress,
                    model_kwargs=None
                    if label is None
                    else {"y": torch.full((n,), label, device=device)},
                )
                done.append(x.float().cpu())
    except failures.Stopped as stopped:
        if done:
            kept = write_samples(torch.cat(done), trained, out)
            stopped.kept = f"the {len(kept)} of {args.num} samples finished are in {out} and "
            stopped.kept += str(out.with_suffix(".npy"))
        else:
            stopped.kept = "no batch of samples had finished: nothing written"
        raise
    write_samples(torch.cat(done), trained, out)
    print(
        f"{args.num} samples (step {trained.step}, {args.weights} weights): {out} and "
        f"{out.with_suffix('.npy')}"
    )


def guided(args: argparse.Namespace, trained: TrainedModel, network):
    """The network to sample with for --class and --guidance, and the label to give it (None
    for an unconditional model). A class-conditional model without --class samples with the
    null label, i.e. as its unconditional model."""
    from ddpm.guidance import ClassifierFreeGuidance

    classes = trained.data.num_classes if trained.config.class_conditional else None
    if classes is None:
        if args.class_label is not None or args.guidance is not None:
            raise ValueError(
                f"--class and --guidance need a class-conditional model; {args.run_dir} is "
                "unconditional (train one with 'ddpm train --class-conditional')"
            )
        return network, None
    if args.class_label is None:
        if args.guidance is not None:
            raise ValueError("--guidance needs the class to guide towards: give --class K")
        return network, classes
    if args.class_label >= classes:
        raise ValueError(
            f"--class {args.class_label}: the model at {args.run_dir} knows classes "
            f"0..{classes - 1}"
        )
    return ClassifierFreeGuidance(network, args.guidance or 0.0, classes), args.class_label


def in_bf16(model: torch.nn.Module, device: torch.device):
    """`model` as a network whose matrix products run in bf16 (autocast); its output, and all
    the process's arithmetic around it, stay float32."""

    def network(x: torch.Tensor, t: torch.Tensor, **kwargs) -> torch.Tensor:
        with torch.autocast(device.type, torch.bfloat16):
            return model(x, t, **kwargs).float()

    return network


def check_output(path: Path, suffixes: tuple[str, ...]) -> None:
    """Refuse, before any work, an output path of the wrong kind or in a place that cannot be
    written: ValueError for the path itself, OSError (with the path) for a refusing system."""
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"--out {path}: expected a {' or '.join(suffixes)} file")
    if path.is_dir():
        raise ValueError(f"--out {path}: is a folder; give a file name")
    folder = path.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ValueError(f"--out {path}: {folder} is a file, not a folder")
    try:  # the one sure test of a writable place: write there (nothing is left behind)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(path)) from err


def write_samples(x: torch.Tensor, trained: TrainedModel, out: Path) -> torch.Tensor:
    """Samples x [N, C, H, W] (or [N, 2]) as the PNG `out` and the array next to it; each file
    is replaced whole or not at all. Returns x."""
    refuse_non_finite(x, trained, "samples")
    array = x.numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, array)
    replace_file(out.with_suffix(".npy"), buffer.getvalue())
    replace_file(out, grid_png(array) if array.ndim == 4 else scatter_png(array))
    return x


def replace_file(path: Path, data: bytes) -> None:
    """`ckpt.atomic_write`, whose every OSError names `path` (a failed write names no file)."""
    try:
        ckpt.atomic_write(path, data)
    except OSError as err:
        if err.filename is not None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err


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


def grid_png(images: np.ndarray) -> bytes:
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
    buffer = io.BytesIO()
    Image.fromarray(grid[0] if c == 1 else grid.transpose(1, 2, 0), mode).save(buffer, "PNG")
    return buffer.getvalue()


def scatter_png(points: np.ndarray) -> bytes:
    """2-D points [N, 2] as a scatter plot PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.5)
    ax.set_aspect("equal")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def run_bpd(args: argparse.Namespace) -> None:
    take_checkpoint(args)
    out = args.out or Path(args.run_dir) / f"bpd-{args.split}.json"
    check_output(out, (".json", ".csv"))
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
    # A class-conditional model is evaluated on each example's own label: -log p(x_0 | y).
    labels = getattr(dataset, f"{args.split}_labels") if trained.config.class_conditional else None
    if len(data) < 2:
        raise ValueError(
            f"the {args.split} split of {trained.data.name!r} has {len(data)} example(s); "
            "a mean with a standard error needs at least 2"
        )
    network = in_bf16(trained.model, device) if args.bf16 else trained.model
    generator = torch.Generator(device=device).manual_seed(args.seed)
    results = []
    try:
        with torch.no_grad(), failures.stop_signals_raise():
            for first in range(0, len(data), args.batch_size):
                batch = data[first : first + args.batch_size]
                kwargs = None
                if labels is not None:
                    kwargs = {"y": labels[first : first + len(batch)].to(device)}
                results.append(
                    calc_bpd_loop(
                        trained.diffusion,
                        network,
                        batch.to(device),
                        trained.data.num_levels,
                        progress=not args.no_progress,
                        generator=generator,
                        model_kwargs=kwargs,
                    )
                )
    except failures.Stopped as stopped:
        if results:
            summary = summarise_bpd(results, trained, args, out, requested=len(data))
            stopped.kept = f"the bound of the {summary['num_examples']} of {len(data)} "
            stopped.kept += f"examples finished is in {out}"
        else:
            stopped.kept = "no batch of examples had finished: nothing written"
        raise
    summary = summarise_bpd(results, trained, args, out, requested=len(data))
    print(
        f"{summary['total_bpd']:.4f} +- {summary['total_bpd_stderr']:.4f} bits/dim on "
        f"{summary['num_examples']} {args.split} examples (step {trained.step}): "
        f"L_T {summary['prior_bpd']:.4f}, L_1..L_(T-1) {summary['kl_terms_bpd']:.4f}, "
        f"L_0 {summary['decoder_bpd']:.4f}; every term in {out}"
    )


def summarise_bpd(
    results: list, trained: TrainedModel, args: argparse.Namespace, out: Path, requested: int
) -> dict:
    """The mean of each term over the examples of `results` (BPDResults), written to `out`
    with every example's total; `requested` is how many were asked for (more when stopped)."""
    total = torch.cat([r.total_bpd for r in results]).cpu()
    refuse_non_finite(total[:, None], trained, "per-example bounds")
    prior = torch.cat([r.prior_bpd for r in results]).cpu()
    terms = torch.cat([r.terms_bpd for r in results]).cpu()
    mse = torch.cat([r.mse for r in results]).cpu()
    n = len(total)
    summary = {
        "step": trained.step,
        "split": args.split,
        "num_examples": n,
        "num_requested": requested,  # more than num_examples when a signal stopped the run
        "weights": args.weights,
        "total_bpd": float(total.mean()),
        # None for a single example, which has no spread to measure
        "total_bpd_stderr": float(total.std() / math.sqrt(n)) if n > 1 else None,
        "prior_bpd": float(prior.mean()),  # L_T
        "decoder_bpd": float(terms[:, 0].mean()),  # L_0
        "kl_terms_bpd": float(terms[:, 1:].sum(dim=1).mean()),  # L_1 + ... + L_{T-1}
    }
    write_bpd(out, summary, terms.mean(dim=0).tolist(), mse.mean(dim=0).tolist(), total.tolist())
    return summary


def write_bpd(
    path: Path, summary: dict, terms: list[float], mse: list[float], totals: list[float]
) -> None:
    """The summary and the per-index means (terms[t] is L_t; t = 0: the decoder L_0); a JSON
    file also holds each example's total. The file is replaced whole or not at all."""
    if path.suffix.lower() == ".csv":
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(["term", "t", "bpd", "eps_mse"])
        for t, (term, err) in enumerate(zip(terms, mse, strict=True)):
            writer.writerow(["L_0" if t == 0 else f"L_{t}", t, term, err])
        writer.writerow(["L_T", len(terms), summary["prior_bpd"], ""])
        writer.writerow(["total", "", summary["total_bpd"], ""])
        data = text.getvalue()
    else:
        record = {**summary, "terms_bpd": terms, "eps_mse": mse, "total_bpd_per_example": totals}
        data = json.dumps(record, indent=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, data.encode())


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
