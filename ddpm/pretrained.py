"""Models shipped with the package: `load_pretrained("digits")` needs no training run.

A shipped model is a folder ``ddpm/weights/<name>/`` holding two files::

    model.safetensors   # the EMA weights, float32
    manifest.json       # the weights' SHA-256 and size, the training configuration, the data,
                        # the step, the command that trained it and its recorded test bound

`load_pretrained` checks the weights against the manifest's SHA-256 before reading them, so a
damaged or replaced file is refused with a `CheckpointError` that names it and both hashes.
`write_pretrained` makes such a folder from a training run's checkpoint (`bench.likelihood`
writes the digits model this way).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ddpm import checkpoint as ckpt
from ddpm.config import (
    DataInfo,
    TrainConfig,
    build_diffusion,
    build_model,
    config_from_checkpoint,
)
from ddpm.device import pick_device
from ddpm.trained import TrainedModel

FORMAT = "ddpm-pretrained/1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """What manifest.json says about a shipped model."""

    name: str
    sha256: str  # of WEIGHTS, hex
    bytes: int  # size of WEIGHTS
    config: dict[str, Any]  # the resolved TrainConfig, as JSON values
    data: dict[str, Any]  # a DataInfo: name, shape (C, H, W), num_levels
    step: int  # optimizer updates of the run the weights come from
    command: str  # the shell command that retrains it from scratch
    test_bpd: float  # the recorded bound on the whole test split, bits/dim
    test_bpd_stderr: float  # its standard error over the test images, bits/dim
    test_examples: int  # how many test images that bound averages over


def shipped_names() -> list[str]:
    """Names of the shipped models, e.g. ["digits"]."""
    return sorted(p.parent.name for p in WEIGHTS_DIR.glob(f"*/{MANIFEST}"))


def pretrained_dir(name: str = "digits") -> Path:
    folder = WEIGHTS_DIR / name
    if not (folder / MANIFEST).is_file():
        shipped = ", ".join(shipped_names()) or "none"
        raise ckpt.CheckpointError(
            f"no shipped model named {name!r} (no {folder / MANIFEST}); shipped: {shipped}"
        )
    return folder


def read_manifest(name: str = "digits") -> Manifest:
    """The manifest of a shipped model; CheckpointError when it is missing or unreadable."""
    path = pretrained_dir(name) / MANIFEST
    try:
        values = json.loads(path.read_text())
        if values.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest")
        return Manifest(**values)
    except (ValueError, TypeError) as err:
        raise ckpt.CheckpointError(f"{path}: unreadable manifest ({err})") from err


def verified_weights(name: str = "digits") -> dict[str, torch.Tensor]:
    """The shipped weights, after their SHA-256 was found equal to the manifest's."""
    manifest = read_manifest(name)
    path = pretrained_dir(name) / WEIGHTS
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ckpt.CheckpointError(f"{path}: missing or unreadable ({err.strerror})") from err
    found = hashlib.sha256(data).hexdigest()
    if found != manifest.sha256:
        raise ckpt.CheckpointError(
            f"{path}: SHA-256 {found} does not match {manifest.sha256} in its manifest; "
            "the file is damaged or was replaced, reinstall the package"
        )
    return ckpt.load_tensors(path, data)


def load_pretrained(name: str = "digits", device: str | torch.device | None = None) -> TrainedModel:
    """A shipped model, rebuilt as `ddpm.trained.load_trained` rebuilds a run (EMA weights).

    `device`: None for the CPU, else a torch.device or a `ddpm.device.pick_device` name. Raises
    CheckpointError when the weights' SHA-256 differs from the manifest's.
    """
    manifest = read_manifest(name)
    config = TrainConfig.from_dict(manifest.config)
    info = DataInfo(**{**manifest.data, "shape": tuple(manifest.data["shape"])})
    model = build_model(config, info)
    ckpt.load_state(model, verified_weights(name), pretrained_dir(name) / WEIGHTS)
    if device is None:
        device = torch.device("cpu")
    elif isinstance(device, str):
        device = pick_device(device)
    return TrainedModel(
        config, model.to(device).eval(), build_diffusion(config), info, manifest.step
    )


def write_pretrained(
    run_dir: str | Path,
    name: str,
    command: str,
    test_bpd: float,
    test_bpd_stderr: float,
    test_examples: int,
) -> Manifest:
    """Ship the EMA weights of the checkpoint in `run_dir` as ``ddpm/weights/<name>/``; the
    weights file is the checkpoint's ema.safetensors, byte for byte."""
    saved = ckpt.read_checkpoint(run_dir)  # every file checked against its SHA-256
    data = saved.file(ckpt.EMA).read_bytes()
    folder = WEIGHTS_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        name=name,
        sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data),
        # where the run wrote its checkpoints is no part of the model
        config={k: v for k, v in config_from_checkpoint(saved).to_dict().items() if k != "out_dir"},
        data=saved.state["data"],
        step=saved.step,
        command=command,
        test_bpd=test_bpd,
        test_bpd_stderr=test_bpd_stderr,
        test_examples=test_examples,
    )
    ckpt.atomic_write(folder / WEIGHTS, data)
    text = json.dumps({"format": FORMAT, **asdict(manifest)}, indent=1) + "\n"
    ckpt.atomic_write(folder / MANIFEST, text.encode())
    return manifest
