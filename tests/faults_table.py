"""The bad inputs and faults that tests/test_faults.py puts to `ddpm train|sample|bpd|info`.

Each row is a command line, what is done to the files (or the system) before it runs, and its
exact outcome: the exit status (`ddpm.cli.failures`), a fragment of the one-line message, and
which files it may write; every other file must be as it was. In a command line, {run} is a
copy of a tiny trained run on the digits, {toy} one on 2-D points, {tmp} the row's own folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from support import damage_file

from ddpm import checkpoint as ckpt
from ddpm.cli.failures import INPUT, MEMORY, SYSTEM, USAGE

TINY = "--preset tiny --timesteps 40 --batch-size 8 --log-every 2 --device cpu --no-progress"
STEP = "step-000002"  # the one checkpoint folder of {run} and {toy}


@dataclass(frozen=True)
class Case:
    name: str
    argv: str  # split on spaces after the placeholders are filled in
    status: int
    message: str  # a fragment of stderr; for status 2 of argparse's "error:" line
    setup: Callable[[Path], None] | None = None  # prepares files under the row's folder
    fault: str | None = None  # a key of test_faults.FAULTS, injected while the command runs
    writes: tuple[str, ...] = ()  # files (under the row's folder) it may create or change

    def __str__(self) -> str:
        return self.name


# ----- what a row does to its files first -----


def damage(relative: str, how: str) -> Callable[[Path], None]:
    """Cut `relative` (under the row's folder) to half, flip its middle byte, empty it, delete
    it, or replace it with text."""

    def setup(tmp: Path) -> None:
        damage_file(tmp / relative, how)

    return setup


def edit_manifest(change: Callable[[dict], None], reseal: bool = False) -> Callable:
    """Edit {run}'s manifest by hand; with `reseal`, recompute its checksum as its format
    defines it (a forger who knows the format)."""

    def setup(tmp: Path) -> None:
        path = tmp / "run" / ckpt.MANIFEST
        manifest = json.loads(path.read_text())
        change(manifest)
        if reseal:
            rest = {k: v for k, v in manifest.items() if k != ckpt.MANIFEST_SHA256}
            text = json.dumps(rest, indent=2, sort_keys=True) + "\n"
            manifest[ckpt.MANIFEST_SHA256] = hashlib.sha256(text.encode()).hexdigest()
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    return setup


def append_to_log(text: str | bytes) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        with open(tmp / "run" / "log.jsonl", "ab") as f:
            f.write(text.encode() if isinstance(text, str) else text)

    return setup


def write_file(relative: str, data: bytes | str = b"x") -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        path = tmp / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    return setup


def make_dir(relative: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / relative).mkdir(parents=True)


def array_file(relative: str, array) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        if relative.endswith(".npz"):
            np.savez(tmp / relative, **array)
        else:
            np.save(tmp / relative, np.asarray(array), allow_pickle=True)

    return setup


def images(size: int = 8, n: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def image_folder(files: dict[str, bytes]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        (tmp / "faces").mkdir()
        for name, data in files.items():
            (tmp / "faces" / name).write_bytes(data)

    return setup


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(tmp: Path) -> None:
        for s in setups:
            s(tmp)

    return setup


def pickled_weights(tmp: Path) -> None:
    """{run}'s EMA weights replaced by a pickle, its checksum updated to match."""
    path = tmp / "run" / STEP / ckpt.EMA
    torch.save({"weight": torch.zeros(3)}, path)
    data = path.read_bytes()

    def change(manifest: dict) -> None:
        manifest["files"][ckpt.EMA] = {
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    edit_manifest(change, reseal=True)(tmp)


# ----- the rows -----

RUN_SAMPLE = "sample {run} --num 4 --no-progress --out {tmp}/s.png"
RUN_BPD = "bpd {run} --num 4 --no-progress --out {tmp}/b.json"
TRAIN = f"train {TINY} --steps 2"
RESUME = "train --resume --steps 4 --no-progress --out-dir {run}"
SAMPLES = ("s.png", "s.npy")

# The command line itself: refused by argparse (status 2) before anything is loaded.
USAGE_ROWS = [
    Case(name, argv, USAGE, message)
    for name, argv, message in [
        ("no command", "", "the following arguments are required: COMMAND"),
        ("unknown command", "trian", "invalid choice: 'trian'"),
        ("unknown top option", "--verbose train", "unrecognized arguments: --verbose"),
        ("train T 0", "train --timesteps 0", "--timesteps: must be at least 1, got 0"),
        ("train T negative", "train --timesteps -5", "--timesteps: must be at least 1, got -5"),
        ("train T text", "train --timesteps ten", "--timesteps: invalid count value: 'ten'"),
        ("train T huge", f"train --timesteps {2**40}", "--timesteps: must be at most 2**31 - 1"),
        ("train steps 0", "train --steps 0", "--steps: must be at least 1, got 0"),
        ("train steps fraction", "train --steps 1.5", "--steps: invalid count value: '1.5'"),
        ("train steps missing", "train --steps", "--steps: expected one argument"),
        ("train batch 0", "train --batch-size 0", "--batch-size: must be at least 1, got 0"),
        ("train batch negative", "train --batch-size -1", "--batch-size: must be at least 1"),
        ("train batch huge", f"train --batch-size {2**31}", "--batch-size: must be at most"),
        ("train lr 0", "train --lr 0", "--lr: must be a finite number > 0, got 0"),
        ("train lr negative", "train --lr=-1e-3", "--lr: must be a finite number > 0, got -1e-3"),
        ("train lr nan", "train --lr nan", "--lr: must be a finite number > 0, got nan"),
        ("train lr inf", "train --lr inf", "--lr: must be a finite number > 0, got inf"),
        ("train lr text", "train --lr fast", "--lr: invalid positive value: 'fast'"),
        ("train warm-up negative", "train --warmup-steps -1", "--warmup-steps: must be 0 or more"),
        ("train clip 0", "train --grad-clip 0", "--grad-clip: must be a finite number > 0"),
        ("train clip inf", "train --grad-clip inf", "--grad-clip: must be a finite number > 0"),
        ("train ema above 1", "train --ema-decay 1.5", "--ema-decay: must be in [0, 1], got 1.5"),
        ("train ema negative", "train --ema-decay=-0.1", "--ema-decay: must be in [0, 1]"),
        ("train ema nan", "train --ema-decay nan", "--ema-decay: must be in [0, 1], got nan"),
        ("train dropout 2", "train --dropout 2", "--dropout: must be in [0, 1], got 2"),
        ("train dropout negative", "train --dropout=-0.5", "--dropout: must be in [0, 1]"),
        ("train seed negative", "train --seed -1", "--seed: must be in [0, 2**63), got -1"),
        ("train seed 2**63", f"train --seed {2**63}", "--seed: must be in [0, 2**63)"),
        (
            "train seed 2**70",
            f"train --seed {2**70}",
            f"--seed: must be in [0, 2**63), got {2**70}",
        ),
        ("train seed text", "train --seed abc", "--seed: invalid seed value: 'abc'"),
        ("train log-every 0", "train --log-every 0", "--log-every: must be at least 1, got 0"),
        ("train ckpt-every 0", "train --ckpt-every 0", "--ckpt-every: must be at least 1, got 0"),
        ("train ckpt-every neg", "train --ckpt-every -3", "--ckpt-every: must be at least 1"),
        ("train schedule", "train --schedule quadratic", "valid names: linear, cosine"),
        ("train mean type", "train --mean-type noise", "valid names: eps, x0, v, mu"),
        ("train var type", "train --var-type learned", "fixed_small, fixed_large, learned_range"),
        ("train loss type", "train --loss-type l1", "valid names: simple, kl, hybrid"),
        ("train preset", "train --preset huge", "invalid choice: 'huge'"),
        ("train unknown option", "train --stepz 5", "--stepz (did you mean --steps?)"),
        ("train flag with value", "train --hflip=yes", "ignored explicit argument 'yes'"),
        ("train positional", "train runs/x", "unrecognized arguments: runs/x"),
        ("sample num 0", "sample --num 0", "--num: must be at least 1, got 0"),
        ("sample num negative", "sample --num -1", "--num: must be at least 1, got -1"),
        ("sample num text", "sample --num many", "--num: invalid count value: 'many'"),
        ("sample num huge", f"sample --num {2**31}", "--num: must be at most 2**31 - 1"),
        ("sample batch 0", "sample --batch-size 0", "--batch-size: must be at least 1, got 0"),
        ("sample steps 0", "sample --steps 0", "--steps: must be at least 1, got 0"),
        ("sample steps negative", "sample --steps -5", "--steps: must be at least 1, got -5"),
        ("sample eta negative", "sample --eta -1", "--eta: must be a finite number >= 0"),
        ("sample eta nan", "sample --eta nan", "--eta: must be a finite number >= 0, got nan"),
        ("sample eta inf", "sample --eta inf", "--eta: must be a finite number >= 0, got inf"),
        ("sample sampler", "sample --sampler euler", "ancestral, ddim, dpmsolver++"),
        ("sample weights", "sample --weights best", "invalid choice: 'best'"),
        ("sample seed negative", "sample --seed -1", "--seed: must be in [0, 2**63), got -1"),
        ("sample seed 2**64", f"sample --seed {2**64}", "--seed: must be in [0, 2**63)"),
        ("sample unknown option", "sample --temperature 2", "unrecognized arguments"),
        ("sample two run dirs", "sample a b", "unrecognized arguments: b"),
        ("bpd num 0", "bpd --num 0", "--num: must be at least 2 (for a standard error), got 0"),
        ("bpd num 1", "bpd --num 1", "--num: must be at least 2"),
        ("bpd num negative", "bpd --num -3", "--num: must be at least 2 (for a standard error)"),
        ("bpd num text", "bpd --num all", "--num: invalid examples value: 'all'"),
        ("bpd batch 0", "bpd --batch-size 0", "--batch-size: must be at least 1, got 0"),
        ("bpd batch negative", "bpd --batch-size -2", "--batch-size: must be at least 1"),
        ("bpd split", "bpd --split dev", "invalid choice: 'dev'"),
        ("bpd seed", f"bpd --seed {2**70}", "--seed: must be in [0, 2**63)"),
        ("bpd weights", "bpd --weights last", "invalid choice: 'last'"),
        ("bpd unknown option", "bpd --steps 5", "unrecognized arguments: --steps"),
        ("info unknown option", "info --num 3", "unrecognized arguments: --num"),
        ("info two dirs", "info a b", "unrecognized arguments: b"),
    ]
]

# A checkpoint that is missing, damaged, edited or does not match: refused (status 1), and
# the run directory left as it was.
CHECKPOINT_ROWS = [
    Case(
        "sample: no such run", "sample {tmp}/none --no-progress", INPUT, "none: no such checkpoint"
    ),
    Case("bpd: no such run", "bpd {tmp}/none --no-progress", INPUT, "none: no such checkpoint"),
    Case("info: no such run", "info {tmp}/none", INPUT, "none: no such checkpoint"),
    Case("resume: no such run", "train --resume --out-dir {tmp}/none", INPUT, "no such checkpoint"),
    Case("info: not a run", "info {tmp}", INPUT, "not a checkpoint directory"),
    Case(
        "info: manifest empty",
        "info {run}",
        INPUT,
        "manifest.json",
        damage("run/manifest.json", "empty"),
    ),
    Case(
        "info: manifest cut",
        "info {run}",
        INPUT,
        "manifest.json",
        damage("run/manifest.json", "truncate"),
    ),
    Case(
        "info: manifest not JSON",
        "info {run}",
        INPUT,
        "manifest.json",
        damage("run/manifest.json", "{not json"),
    ),
    Case(
        "info: manifest a list",
        "info {run}",
        INPUT,
        "manifest.json",
        damage("run/manifest.json", "[]"),
    ),
    Case(
        "info: manifest step edited",
        "info {run}",
        INPUT,
        "manifest.json: edited or damaged",
        edit_manifest(lambda m: m.update(step=1)),
    ),
    Case(
        "sample: data name edited",
        RUN_SAMPLE,
        INPUT,
        "manifest.json: edited or damaged",
        edit_manifest(lambda m: m["state"]["data"].update(name="faces")),
    ),
    Case(
        "bpd: levels edited",
        RUN_BPD,
        INPUT,
        "manifest.json: edited or damaged",
        edit_manifest(lambda m: m["state"]["data"].update(num_levels=256)),
    ),
    Case(
        "resume: manifest step edited",
        RESUME,
        INPUT,
        "manifest.json: edited or damaged",
        edit_manifest(lambda m: m.update(step=1)),
    ),
    Case(
        "info: folder missing", "info {run}", INPUT, STEP, lambda t: shutil.rmtree(t / "run" / STEP)
    ),
    *[
        Case(f"{cmd}: {file} {how}", argv, INPUT, words, damage(f"run/{STEP}/{file}", how))
        for cmd, argv in (("sample", RUN_SAMPLE), ("info", "info {run}"))
        for file in (ckpt.EMA, ckpt.CONFIG)
        for how, words in (("truncate", "truncated"), ("flip", "corrupted"), ("delete", "missing"))
    ],
    *[
        Case(f"resume: {file} {how}", RESUME, INPUT, words, damage(f"run/{STEP}/{file}", how))
        for file in (ckpt.MODEL, ckpt.OPTIMIZER, ckpt.RNG)
        for how, words in (("truncate", "truncated"), ("flip", "corrupted"), ("delete", "missing"))
    ],
    Case(
        "bpd: weights flipped",
        RUN_BPD,
        INPUT,
        "corrupted",
        damage(f"run/{STEP}/{ckpt.EMA}", "flip"),
    ),
    Case("sample: a pickle as weights", RUN_SAMPLE, INPUT, ckpt.EMA, pickled_weights),
    Case("resume: another seed", RESUME + " --seed 1", INPUT, "seed"),
    Case("resume: another preset", RESUME + " --preset digits", INPUT, "preset"),
    Case(
        "resume: log line not JSON",
        RESUME,
        INPUT,
        "log.jsonl: line 2 is damaged: not JSON",
        append_to_log("garbage\n"),
    ),
    Case(
        "resume: log line empty record",
        RESUME,
        INPUT,
        "line 2 is damaged: not a record",
        append_to_log("{}\n"),
    ),
    Case(
        "resume: log line a list",
        RESUME,
        INPUT,
        "line 2 is damaged: not a record",
        append_to_log("[1, 2]\n"),
    ),
    Case(
        "resume: log step text",
        RESUME,
        INPUT,
        "line 2 is damaged",
        append_to_log('{"step": "2"}\n'),
    ),
    Case(
        "resume: log bytes",
        RESUME,
        INPUT,
        "line 2 is damaged",
        append_to_log(b"\xff\xfe\n"),
    ),
    Case(
        "toy: bpd refused", "bpd {toy} --no-progress --out {tmp}/b.json", INPUT, "discrete levels"
    ),
    Case("toy: ancestral with steps", "sample {toy} --steps 5 --out {tmp}/s.png", INPUT, "ddim"),
    Case("sample: no CUDA", RUN_SAMPLE + " --device cuda", INPUT, "CUDA is not available"),
    Case("sample: unknown device", RUN_SAMPLE + " --device tpu", INPUT, "unknown device 'tpu'"),
    Case("bpd: unknown device", RUN_BPD + " --device gpu0", INPUT, "unknown device 'gpu0'"),
    Case(
        "sample: model weights of the shipped run",
        "sample --weights model --out {tmp}/s.png --no-progress",
        INPUT,
        "only its EMA weights",
    ),
]

# Data that cannot be read, found wrong before any training (status 1), nothing written.
DATA_ROWS = [
    Case(name, f"{TRAIN} --data {data} --out-dir {{tmp}}/out", INPUT, message, setup)
    for name, data, message, setup in [
        ("no such array", "{tmp}/none.npy", "array file {tmp}/none.npy does not exist", None),
        ("no such folder", "{tmp}/none/", "unknown dataset", None),
        ("unknown name", "mnist", "unknown dataset 'mnist'", None),
        ("unknown toy", "toy:spiral", "spiral", None),
        ("a text file", "{tmp}/d.txt", "is a file but not .npy/.npz", write_file("d.txt", "1,2")),
        (
            "random bytes",
            "{tmp}/d.npy",
            "cannot be read as a NumPy array",
            write_file("d.npy", b"\x93NUM"),
        ),
        ("empty .npy", "{tmp}/d.npy", "cannot be read as a NumPy array", write_file("d.npy", b"")),
        (
            "one dimension",
            "{tmp}/d.npy",
            "d.npy",
            array_file("d.npy", np.arange(64, dtype=np.uint8)),
        ),
        (
            "no images",
            "{tmp}/d.npy",
            "contains no images",
            array_file("d.npy", np.zeros((0, 8, 8), np.uint8)),
        ),
        (
            "NaN pixels",
            "{tmp}/d.npy",
            "NaN or infinite",
            array_file("d.npy", np.full((4, 8, 8), np.nan)),
        ),
        (
            "above 255",
            "{tmp}/d.npy",
            "expected levels 0..255",
            array_file("d.npy", np.full((4, 8, 8), 300.0)),
        ),
        (
            "negative",
            "{tmp}/d.npy",
            "expected levels 0..255",
            array_file("d.npy", np.full((4, 8, 8), -1.0)),
        ),
        ("fractions", "{tmp}/d.npy", "d.npy", array_file("d.npy", np.full((4, 8, 8), 0.5))),
        ("strings", "{tmp}/d.npy", "d.npy", array_file("d.npy", np.array([["a"] * 8] * 8))),
        ("objects", "{tmp}/d.npy", "d.npy", array_file("d.npy", np.array([None, 1], dtype=object))),
        ("npz without arrays", "{tmp}/d.npz", "d.npz", array_file("d.npz", {})),
        (
            "five dimensions",
            "{tmp}/d.npy",
            "d.npy",
            array_file("d.npy", np.zeros((2, 2, 2, 8, 8), np.uint8)),
        ),
        ("empty folder", "{tmp}/faces", "contains no files", image_folder({})),
        ("a folder with text", "{tmp}/faces", "notes.txt", image_folder({"notes.txt": b"hello"})),
        (
            "a corrupt image",
            "{tmp}/faces",
            "cannot be read as an image",
            image_folder({"a.png": b"\x89PNG\r\n\x1a\nbroken"}),
        ),
        ("a cut image", "{tmp}/faces", "a.png", image_folder({"a.png": png(images(16)[0])[:60]})),
        (
            "mixed sizes",
            "{tmp}/faces",
            "b.png",
            image_folder({"a.png": png(images(8)[0]), "b.png": png(images(16)[0])}),
        ),
        (
            "16-bit image",
            "{tmp}/faces",
            "a.png",
            image_folder({"a.png": png(np.full((8, 8), 40000, np.uint16))}),
        ),
    ]
]

# Output paths of the wrong kind or in the way: refused before any work (status 1).
OUTPUT_ROWS = [
    Case("sample: .jpg", "sample {run} --out {tmp}/s.jpg", INPUT, "expected a .png file"),
    Case("sample: no suffix", "sample {run} --out {tmp}/samples", INPUT, "expected a .png file"),
    Case(
        "sample: a folder",
        "sample {run} --out {tmp}/d.png",
        INPUT,
        "is a folder",
        make_dir("d.png"),
    ),
    Case(
        "sample: under a file",
        "sample {run} --out {tmp}/f/s.png",
        INPUT,
        "f is a file, not a folder",
        write_file("f"),
    ),
    Case("bpd: .txt", "bpd {run} --out {tmp}/b.txt", INPUT, "expected a .json or .csv file"),
    Case("bpd: a folder", "bpd {run} --out {tmp}/d.json", INPUT, "is a folder", make_dir("d.json")),
    Case(
        "bpd: under a file",
        "bpd {run} --out {tmp}/f/x/b.csv",
        INPUT,
        "f is a file, not a folder",
        write_file("f"),
    ),
    Case(
        "train: out-dir a file",
        TRAIN + " --out-dir {tmp}/f",
        INPUT,
        "f: File exists",
        write_file("f"),
    ),
    Case(
        "train: out-dir under a file",
        TRAIN + " --out-dir {tmp}/f/run",
        INPUT,
        "Not a directory",
        write_file("f"),
    ),
    Case(
        "train: foreign files",
        TRAIN + " --out-dir {tmp}/o",
        INPUT,
        "holds files this run did not write (notes.txt)",
        write_file("o/notes.txt"),
    ),
    Case(
        "train: log without manifest",
        TRAIN + " --out-dir {run}",
        INPUT,
        "holds files this run did not write (log.jsonl, " + STEP,
        damage("run/manifest.json", "delete"),
    ),
]

# The system refuses (status 3: disk full, read-only, no permission) or memory runs out
# (status 4); what was saved before stays as it was.
SYSTEM_ROWS = [
    Case(
        "sample: disk full",
        RUN_SAMPLE,
        SYSTEM,
        "s.npy: No space left on device (free some space",
        fault="disk full",
    ),
    Case(
        "sample: disk full over old files",
        RUN_SAMPLE,
        SYSTEM,
        "No space left on device",
        both(write_file("s.png", b"old"), write_file("s.npy", b"old")),
        "disk full",
    ),
    Case("bpd: disk full", RUN_BPD, SYSTEM, "b.json: No space left on device", fault="disk full"),
    Case(
        "bpd: disk full as csv",
        RUN_BPD.replace(".json", ".csv"),
        SYSTEM,
        "b.csv: No space left",
        write_file("b.csv", b"old"),
        "disk full",
    ),
    Case(
        "train: disk full at the log",
        TRAIN + " --out-dir {tmp}/o",
        SYSTEM,
        "No space left on device",
        fault="disk full",
        writes=("o/log.jsonl",),
    ),
    Case(
        "resume: disk full at the checkpoint",
        RESUME + " --log-every 100",
        SYSTEM,
        "No space left on device",
        fault="disk full",
    ),
    Case(
        "sample: read-only",
        RUN_SAMPLE,
        SYSTEM,
        "s.png: Read-only file system (the location is read-only",
        fault="read-only",
    ),
    Case("bpd: read-only", RUN_BPD, SYSTEM, "b.json: Read-only file system", fault="read-only"),
    Case(
        "train: read-only",
        TRAIN + " --out-dir {tmp}/o",
        SYSTEM,
        "o: Read-only file system",
        fault="read-only",
    ),
    Case("resume: read-only", RESUME, SYSTEM, "Read-only file system", fault="read-only"),
    Case(
        "sample: no permission",
        RUN_SAMPLE,
        SYSTEM,
        "s.png: Permission denied (check the permissions",
        fault="no permission",
    ),
    Case(
        "train: no permission",
        TRAIN + " --out-dir {tmp}/o",
        SYSTEM,
        "Permission denied",
        fault="no permission",
    ),
    Case(
        "info: unreadable",
        "info {run}",
        SYSTEM,
        "manifest.json: Permission denied",
        fault="unreadable",
    ),
    Case("sample: unreadable", RUN_SAMPLE, SYSTEM, "Permission denied", fault="unreadable"),
    Case(
        "train: out of memory",
        TRAIN + " --out-dir {tmp}/o",
        MEMORY,
        "out of memory (MemoryError); try a smaller --batch-size",
        fault="memory",
        writes=("o/log.jsonl",),
    ),
    Case(
        "train: accelerator memory",
        TRAIN + " --out-dir {tmp}/o",
        MEMORY,
        "out of memory (CUDA out of memory. Tried",
        fault="accelerator memory",
        writes=("o/log.jsonl",),
    ),
    Case("resume: out of memory", RESUME, MEMORY, "out of memory", fault="memory"),
    Case(
        "sample: out of memory",
        RUN_SAMPLE,
        MEMORY,
        "out of memory (MemoryError); try a smaller --batch-size",
        fault="memory",
    ),
    Case(
        "sample: accelerator memory",
        RUN_SAMPLE,
        MEMORY,
        "CUDA out of memory",
        fault="accelerator memory",
    ),
    Case("bpd: out of memory", RUN_BPD, MEMORY, "out of memory", fault="memory"),
    Case(
        "bpd: accelerator memory", RUN_BPD, MEMORY, "CUDA out of memory", fault="accelerator memory"
    ),
    Case(
        "info: out of memory", "info {run}", MEMORY, "out of memory", fault="memory while loading"
    ),
]

ROWS = USAGE_ROWS + CHECKPOINT_ROWS + DATA_ROWS + OUTPUT_ROWS + SYSTEM_ROWS


@dataclass(frozen=True)
class Stop:
    """A stop signal sent to a real process of `command` once `batches` batches (or log
    records, for train) are done; it exits 128 + signum and keeps what it finished."""

    command: str
    signum: int
    batches: int

    def __str__(self) -> str:
        return f"{self.command} {signal.Signals(self.signum).name} after {self.batches}"


STOP_ROWS = [
    Stop(command, signum, batches)
    for command in ("sample", "bpd", "train")
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for batches in ((1,) if command == "train" else (0, 1))
]
