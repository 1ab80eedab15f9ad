"""Checkpoints that survive a kill at any moment and load without unpickling anything.

A run directory holds one checkpoint at a time::

    run_dir/
        manifest.json            # written last: which step directory is current, with checksums
        step-000500/
            config.json          # the full training configuration
            model.safetensors    # the trained weights
            ema.safetensors      # the exponential moving average of the weights (used to sample)
            optimizer.pt         # Adam's moments, a tensors-only state dict read with weights_only
            rng.safetensors      # random number generator states, as uint8 / int64 tensors
        log.jsonl                # the loss log (written by ddpm.train, not here)
        .lock                    # held while a run writes here: its pid, host and command

Every file is written to a temporary name in its own directory, flushed to disk and renamed over
the target (`os.replace` is atomic on POSIX and Windows). A save writes a fresh step directory and
only then replaces the manifest, so until the new manifest lands the old manifest still names the
old, complete step directory, and the step directory it named is removed after it lands. The
manifest records each file's size and SHA-256, so a truncated or corrupted file is caught on
loading and reported as a `CheckpointError` that names the file, never as a traceback from inside
torch; the manifest carries the SHA-256 of its own contents, so one edited by hand is refused too
(manifests of format 1, written before that, load with the file checks alone).

A run directory is the run's alone. Removing a step directory removes only the files a save
writes, so a file someone put there survives (and keeps its folder). `claim_run_dir` takes a lock
(`LOCK`, holding the owner's pid, host and command) for as long as a run writes into the directory,
so a second run into it fails at once and names the first; the kernel drops the lock when its
process dies, so a lock file left by a killed run blocks nobody. `foreign_files` lists what a
fresh run finds there (`ddpm.train` refuses such a directory unless told to share it).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

try:
    import fcntl
except ImportError:  # Windows: runs there take no lock
    fcntl = None

FORMAT = "ddpm-checkpoint/2"  # 2: the manifest carries its own SHA-256 (MANIFEST_SHA256)
OLD_FORMATS = ("ddpm-checkpoint/1",)  # still read, with the checks they allow
MANIFEST = "manifest.json"
MANIFEST_SHA256 = "manifest_sha256"  # key of the manifest's checksum of its other contents
LOCK = ".lock"  # held (flock) by the run writing into the directory: pid, host, command
CONFIG = "config.json"
MODEL = "model.safetensors"
EMA = "ema.safetensors"
OPTIMIZER = "optimizer.pt"
RNG = "rng.safetensors"
FILES = (CONFIG, MODEL, EMA, OPTIMIZER, RNG)


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupted or made for another configuration."""


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: the manifest was readable and every file matched its checksum."""

    run_dir: Path
    step: int  # optimizer updates completed
    config: dict[str, Any]  # the training configuration as saved (JSON values)
    state: dict[str, Any]  # small JSON training state (loss accumulator, data shape, ...)
    path: Path  # the step directory holding the files

    def file(self, name: str) -> Path:
        return self.path / name


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees either the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        # A failed write or fsync (a full disk, say) names no file: name the one being written,
        # so that a one-line report of the error says where.
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            err.filename = str(path)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; directories cannot be opened this way on Windows.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def _tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors that share no storage with each other.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    *,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: dict[str, torch.Tensor],
    config: dict[str, Any],
    state: dict[str, Any],
) -> Path:
    """Save a complete checkpoint for `step` into `run_dir` and make it the current one.

    Returns the step directory. The previous checkpoint stays valid until the manifest naming the
    new one has been written, and is removed afterwards.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    step_dir = run_dir / name
    current = _current_dir_name(run_dir)
    if current == name:
        raise CheckpointError(f"{run_dir / MANIFEST}: step {step} is already saved")
    if step_dir.exists():  # left over by a save that was killed before its manifest landed
        _remove_step_dir(step_dir)
    step_dir.mkdir(exist_ok=True)  # still there if it holds a file of someone else's

    optimizer_buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), optimizer_buffer)
    payloads = {
        CONFIG: _json_bytes(config),
        MODEL: save_safetensors_bytes(_tensors(model.state_dict())),
        EMA: save_safetensors_bytes(_tensors(ema.state_dict())),
        OPTIMIZER: optimizer_buffer.getvalue(),
        RNG: save_safetensors_bytes(_tensors(rng)),
    }
    for filename, data in payloads.items():
        atomic_write(step_dir / filename, data)
    _fsync_dir(step_dir)

    manifest = {
        "format": FORMAT,
        "step": step,
        "dir": name,
        "files": {
            filename: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for filename, data in payloads.items()
        },
        "state": state,
    }
    manifest[MANIFEST_SHA256] = _manifest_sha256(manifest)
    atomic_write(run_dir / MANIFEST, _json_bytes(manifest))

    if current is not None and current != name:
        _remove_step_dir(run_dir / current)
    return step_dir


def _manifest_sha256(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's contents other than the checksum itself (as saved: sorted keys)."""
    rest = {key: value for key, value in manifest.items() if key != MANIFEST_SHA256}
    return hashlib.sha256(_json_bytes(rest)).hexdigest()


def _remove_step_dir(step_dir: Path) -> None:
    """Remove the files a save writes (and their temporary files) from `step_dir`, then the folder
    if that left it empty: anything else in it stays."""
    for filename in FILES:
        (step_dir / filename).unlink(missing_ok=True)
        for tmp in step_dir.glob(f".{filename}.*.tmp"):
            tmp.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty, or already gone
        step_dir.rmdir()


def _current_dir_name(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / MANIFEST).read_text()).get("dir")
    except (OSError, ValueError, AttributeError):
        return None


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / MANIFEST).is_file()


def read_checkpoint(run_dir: str | Path) -> Checkpoint:
    """Read `run_dir`'s manifest and verify every file it names (size and SHA-256)."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such checkpoint directory")
    if not manifest_path.is_file():
        raise CheckpointError(
            f"{run_dir}: not a checkpoint directory ({MANIFEST} is missing; "
            "a run writes it with its first checkpoint)"
        )
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") not in (FORMAT, *OLD_FORMATS):
            raise CheckpointError(
                f"{manifest_path}: unknown format {manifest.get('format')!r}, expected {FORMAT!r}"
            )
        if manifest["format"] == FORMAT:
            _verify_manifest(manifest_path, manifest)
        step, name, files = int(manifest["step"]), str(manifest["dir"]), dict(manifest["files"])
        state = dict(manifest["state"])
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({err!r})") from err

    step_dir = run_dir / name
    for filename in FILES:
        _verify(step_dir / filename, files.get(filename))
    config_path = step_dir / CONFIG
    try:
        config = json.loads(config_path.read_text())
    except ValueError as err:
        raise CheckpointError(f"{config_path}: unreadable configuration ({err})") from err
    return Checkpoint(run_dir=run_dir, step=step, config=config, state=state, path=step_dir)


def _verify_manifest(path: Path, manifest: dict[str, Any]) -> None:
    recorded, found = manifest.get(MANIFEST_SHA256), _manifest_sha256(manifest)
    if recorded == found:
        return
    if recorded is None:
        raise CheckpointError(f"{path}: its checksum ({MANIFEST_SHA256}) is missing")
    # The step is also in the name of the folder it names: a mismatch says which value was edited.
    step, name = manifest.get("step"), manifest.get("dir")
    hint = (
        f"; it says step {step} but names the folder {name}"
        if isinstance(step, int) and name != f"step-{step:06d}"
        else ""
    )
    raise CheckpointError(
        f"{path}: edited or damaged: its contents no longer match its {MANIFEST_SHA256} "
        f"(recorded {str(recorded)[:12]}..., found {found[:12]}...){hint}. A checkpoint's "
        "manifest is written by training only; restore it or train again"
    )


def _verify(path: Path, expected: dict[str, Any] | None) -> None:
    if expected is None:
        raise CheckpointError(f"{path}: not listed in the manifest")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: missing or unreadable ({err.strerror})") from err
    if len(data) != expected["bytes"]:
        raise CheckpointError(
            f"{path}: truncated or overwritten ({len(data)} bytes, the manifest says "
            f"{expected['bytes']})"
        )
    if hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise CheckpointError(f"{path}: corrupted (its SHA-256 does not match the manifest)")


def load_tensors(path: Path, data: bytes | None = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file (or its bytes `data`, already read), reporting damage as a
    CheckpointError."""
    try:
        return load_safetensors_bytes(Path(path).read_bytes() if data is None else data)
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def load_weights(checkpoint: Checkpoint, module: torch.nn.Module, which: str = "ema") -> None:
    """Load the EMA (`which="ema"`) or trained (`"model"`) weights into `module`.

    Names and shapes are compared first, so a model built with another architecture gets a message
    naming the first disagreement instead of torch's wall of missing and unexpected keys.
    """
    if which not in ("ema", "model"):
        raise ValueError(f"which must be 'ema' or 'model', got {which!r}")
    path = checkpoint.file(EMA if which == "ema" else MODEL)
    load_state(module, load_tensors(path), path)


def load_state(module: torch.nn.Module, saved: dict[str, torch.Tensor], path: Path) -> None:
    """Load tensors read from `path` into `module`, after comparing their names and shapes."""
    expected = module.state_dict()
    missing = sorted(expected.keys() - saved.keys())
    unexpected = sorted(saved.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: made for another architecture ({len(missing)} tensors missing, e.g. "
            f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    for key, value in expected.items():
        if saved[key].shape != value.shape:
            raise CheckpointError(
                f"{path}: made for another architecture ({key} has shape "
                f"{tuple(saved[key].shape)} in the file, {tuple(value.shape)} in the model)"
            )
    module.load_state_dict(saved)


def load_optimizer(checkpoint: Checkpoint, optimizer: torch.optim.Optimizer) -> None:
    """Restore the optimizer's state, read with `weights_only=True` (tensors and plain data)."""
    path = checkpoint.file(OPTIMIZER)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state)
    except Exception as err:  # torch raises many kinds here; all mean the same to the user
        raise CheckpointError(f"{path}: cannot restore the optimizer ({err})") from err


def load_rng(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    return load_tensors(checkpoint.file(RNG))


class RunDirLocked(CheckpointError):
    """Another process holds the lock of the run directory."""


def foreign_files(run_dir: Path) -> list[str]:
    """What a fresh run finds in `run_dir` that it did not write: everything but the lock."""
    return sorted(p.name for p in Path(run_dir).iterdir() if p.name != LOCK)


@contextlib.contextmanager
def claim_run_dir(run_dir: str | Path, command: str) -> Iterator[Path]:
    """Create `run_dir` and hold its lock while the block runs; RunDirLocked when another live
    process holds it, naming that process (its pid, host and command, as it wrote them).

    A run that wrote nothing (refused, say) takes its lock file, and the directory if it made
    it, away again: the directory is left as it was found."""
    run_dir = Path(run_dir)
    made_dir = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield run_dir
        return
    lock_path = run_dir / LOCK
    made_lock = not lock_path.exists()
    found = {p.name for p in run_dir.iterdir()}
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "a process that has not yet written its name"
            raise RunDirLocked(
                f"{run_dir} is in use by another run ({owner}); wait for it to finish, stop "
                "it, or choose another output directory"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}: {command}\n")
        lock.flush()
        try:
            yield run_dir
        finally:
            if made_lock and {p.name for p in run_dir.iterdir()} - {LOCK} == found:
                lock_path.unlink()
                if made_dir:
                    run_dir.rmdir()
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
