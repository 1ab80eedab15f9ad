"""Data: 2-D toy distributions, scikit-learn's 8x8 digits, and a user's own images.

Nothing is downloaded: the toys are generated, the digits ship with scikit-learn, and user data are
read from a folder of PNG/JPEG files or a .npy/.npz array.

Images are float32 [N, C, H, W] in [-1, 1]: K grey levels k = 0, ..., K-1 map to x = -1 + 2k/(K-1).
The digits have K = 17 (pixel values 0..16), 8-bit user data K = 256. The level count travels with
the data in `ImageData.num_levels`, since the discretized decoder of the likelihood needs it.

The toys are float32 [N, 2], scaled so that their mass lies in about [-1, 1]^2:

- swiss roll: s ~ U(1.5 pi, 4.5 pi), the point (s cos s, s sin s) / (4.5 pi), so the spiral ends at
  radius 1, plus Gaussian noise of standard deviation `SWISS_ROLL_NOISE`;
- two moons: scikit-learn's `make_moons` geometry (the upper half of the unit circle, and its copy
  turned by 180 degrees and shifted by (1, 0.5)) with Gaussian noise `MOONS_NOISE`, then shifted by
  (-0.5, -0.25) and divided by 1.5, so that, noise aside, x spans [-1, 1] and y [-0.5, 0.5];
- 8 Gaussians: equal mixture of isotropic Gaussians of standard deviation `EIGHT_GAUSSIANS_STD`
  centred at radius `EIGHT_GAUSSIANS_RADIUS`, angles 2 pi k / 8;
- checkerboard: uniform on the 8 squares (of 16, side 0.5) of [-1, 1]^2 whose row + column is even.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ddpm.schedule import parse_choice

SPLIT_SEED = 0  # seed of the fixed permutation that splits a dataset into train and test
TEST_FRACTION = 0.2  # share of a dataset held out as the test split
DIGITS_LEVELS = 17  # scikit-learn's digits have pixel values 0..16
BYTE_LEVELS = 256  # 8-bit images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

SWISS_ROLL_NOISE = 0.02
MOONS_NOISE = 0.05  # in make_moons' units, before the scaling by 1 / 1.5
EIGHT_GAUSSIANS_RADIUS = 0.8
EIGHT_GAUSSIANS_STD = 0.08
TOY_TRAIN_SIZE = 10_000  # points in load_dataset("toy:<name>")'s train split
TOY_TEST_SIZE = 2_000


@dataclass(frozen=True, eq=False)
class ImageData:
    """A dataset split into train and test.

    train, test: float32 [N, C, H, W] images in [-1, 1] (for the 2-D toys, [N, 2] points).
    num_levels: K, the number of grey levels per channel (None for continuous toy data).
    name: a short name ("digits", "toy:two_moons", a file or folder name).
    flip: whether training should apply `random_hflip` (False where a mirror image is not a sample
        of the data, as for digits).
    train_labels, test_labels: int64 [N] class labels where the data have them (digits).
    """

    train: Tensor
    test: Tensor
    num_levels: int | None
    name: str
    flip: bool = False
    train_labels: Tensor | None = None
    test_labels: Tensor | None = None


class ToyKind(Enum):
    SWISS_ROLL = "swiss_roll"  # a thin curve: tests whether samples stay on a 1-D manifold
    TWO_MOONS = "two_moons"  # two interleaved arcs, scikit-learn's make_moons
    EIGHT_GAUSSIANS = "eight_gaussians"  # eight well-separated modes: tests mode coverage
    CHECKERBOARD = "checkerboard"  # uniform density with sharp edges


def _uniform(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.rand(n, generator=generator, device=device, dtype=torch.float32)


def _normal(shape: tuple[int, ...], generator, device) -> Tensor:
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


def _swiss_roll(n, generator, device):
    s = 1.5 * math.pi * (1 + 2 * _uniform(n, generator, device))
    points = torch.stack([s * torch.cos(s), s * torch.sin(s)], dim=1) / (4.5 * math.pi)
    return points + SWISS_ROLL_NOISE * _normal((n, 2), generator, device)


def _two_moons(n, generator, device):
    theta = math.pi * _uniform(n, generator, device)
    inner = _uniform(n, generator, device) < 0.5
    outer_pts = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    inner_pts = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    points = torch.where(inner[:, None], inner_pts, outer_pts)
    points = points + MOONS_NOISE * _normal((n, 2), generator, device)
    return (points - torch.tensor([0.5, 0.25], device=device)) / 1.5


def _eight_gaussians(n, generator, device):
    mode = torch.randint(0, 8, (n,), generator=generator, device=device)
    angle = 2 * math.pi * mode.float() / 8
    centres = EIGHT_GAUSSIANS_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centres + EIGHT_GAUSSIANS_STD * _normal((n, 2), generator, device)


def _checkerboard(n, generator, device):
    cell = torch.randint(0, 8, (n,), generator=generator, device=device)
    row = cell // 2
    col = 2 * (cell % 2) + row % 2  # row + col even
    corner = torch.stack([col, row], dim=1).float() * 0.5 - 1
    return corner + 0.5 * torch.rand((n, 2), generator=generator, device=device)


_TOY_SAMPLERS = {
    ToyKind.SWISS_ROLL: _swiss_roll,
    ToyKind.TWO_MOONS: _two_moons,
    ToyKind.EIGHT_GAUSSIANS: _eight_gaussians,
    ToyKind.CHECKERBOARD: _checkerboard,
}


def toy_samples(kind: ToyKind | str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n float32 points [n, 2] from the toy distribution `kind` (scalings in the module docstring),
    on the generator's device (the CPU without a generator)."""
    kind = parse_choice(ToyKind, kind)
    device = generator.device if generator is not None else torch.device("cpu")
    return _TOY_SAMPLERS[kind](n, generator, device)


def _split_indices(n: int) -> tuple[Tensor, Tensor]:
    """The fixed train/test split of n items: a permutation seeded with SPLIT_SEED, the last
    round(TEST_FRACTION * n) items of which form the test split."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = round(TEST_FRACTION * n)
    return perm[: n - n_test], perm[n - n_test :]


def _levels_to_unit(k: np.ndarray, num_levels: int) -> Tensor:
    """Integer levels 0..K-1 (any layout) to float32 x = -1 + 2k/(K-1)."""
    return torch.from_numpy(k.astype(np.float32) * (2.0 / (num_levels - 1)) - 1.0)


def load_digits() -> ImageData:
    """scikit-learn's 1,797 8x8 digits as [N, 1, 8, 8] images with K = 17 levels, split 80/20."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    levels = digits.images.round().astype(np.int64)[:, None]  # [N, 1, 8, 8], values 0..16
    x = _levels_to_unit(levels, DIGITS_LEVELS)
    y = torch.from_numpy(digits.target.astype(np.int64))
    train, test = _split_indices(len(x))
    return ImageData(
        x[train],
        x[test],
        DIGITS_LEVELS,
        "digits",
        flip=False,
        train_labels=y[train],
        test_labels=y[test],
    )


def _from_bytes(images: np.ndarray, name: str) -> ImageData:
    """uint8 [N, C, H, W] -> an ImageData with the fixed split and K = 256."""
    x = _levels_to_unit(images, BYTE_LEVELS)
    train, test = _split_indices(len(x))
    return ImageData(x[train], x[test], BYTE_LEVELS, name, flip=True)


def _read_image(path: Path) -> np.ndarray:
    """One PNG/JPEG as uint8 [H, W] (grey) or [H, W, 3] (colour)."""
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(
            f"{path}: not a PNG or JPEG image (expected a {'/'.join(IMAGE_SUFFIXES)} file)"
        )
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so that a truncated file fails here
            mode = image.mode
            if mode in ("1", "L", "LA"):
                return np.asarray(image.convert("L"))
            if mode.startswith(("I", "F")):
                raise ValueError(
                    f"{path}: {mode} images are not supported, only 8-bit grey or colour"
                )
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: cannot be read as an image ({err})") from err


def load_image_folder(path: str | Path) -> ImageData:
    """The PNG/JPEG images directly inside a folder (sorted by name; hidden files and subfolders are
    skipped), all of one size, as [N, C, H, W] with K = 256: C = 1 if every image is grey, else 3.
    Split 80/20 by the fixed permutation; `flip` is True."""
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ValueError(f"image folder {folder} contains no files (subfolders are not searched)")
    images = [_read_image(p) for p in files]
    first_h, first_w = images[0].shape[:2]
    for p, image in zip(files, images, strict=True):
        if image.shape[:2] != (first_h, first_w):
            h, w = image.shape[:2]
            raise ValueError(
                f"{p}: image is {h}x{w} but {files[0].name} is {first_h}x{first_w}; all images in "
                f"the folder must have the same size"
            )
    if any(image.ndim == 3 for image in images):  # some colour: make all colour
        images = [np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im for im in images]
    else:
        images = [im[:, :, None] for im in images]
    return _from_bytes(np.stack(images).transpose(0, 3, 1, 2), folder.name)


def _check_bytes(array: np.ndarray, where: str) -> np.ndarray:
    """An array of 8-bit levels (uint8, or integers/whole-valued floats in 0..255) as uint8."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "iuf":
        raise ValueError(
            f"{where}: dtype {array.dtype} is not supported; expected uint8 levels 0..255"
        )
    if array.size == 0:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
            raise ValueError(f"{where}: contains NaN or infinite values (first at index {bad})")
        if not (array == np.round(array)).all():
            raise ValueError(
                f"{where}: float values must be whole numbers 0..255 (8-bit levels); "
                f"scale [0, 1] data by 255 and round"
            )
    low, high = array.min(), array.max()
    if low < 0 or high > 255:
        raise ValueError(f"{where}: values range over [{low}, {high}], expected levels 0..255")
    return array.astype(np.uint8)


def _to_nchw(array: np.ndarray, where: str) -> np.ndarray:
    """[N, H, W] -> [N, 1, H, W]; [N, H, W, C] (C = 1 or 3, tried first) or [N, C, H, W] kept."""
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4:
        if array.shape[3] in (1, 3):
            return array.transpose(0, 3, 1, 2)
        if array.shape[1] in (1, 3):
            return array
    raise ValueError(
        f"{where}: shape {array.shape} is not [N, H, W], [N, H, W, C] or [N, C, H, W] "
        f"with C = 1 or 3"
    )


def _images_from_array(array: np.ndarray, where: str) -> np.ndarray:
    images = _to_nchw(_check_bytes(array, where), where)
    if len(images) == 0:
        raise ValueError(f"{where}: contains no images")
    return np.ascontiguousarray(images)


def load_array(path: str | Path) -> ImageData:
    """Images from a .npy file, or a .npz holding one array or the two arrays "train" and "test".

    Arrays hold 8-bit levels (uint8, or integers/whole floats in 0..255) as [N, H, W] (grey),
    [N, H, W, C] or [N, C, H, W] with C = 1 or 3. One array is split 80/20 by the fixed
    permutation. Returns [N, C, H, W] in [-1, 1] with K = 256 and `flip` True.
    """
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"array file {file} does not exist")
    if file.suffix not in (".npy", ".npz"):
        raise ValueError(f"{file}: expected a .npy or .npz file")
    try:
        loaded = np.load(file, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {"": loaded}
        else:  # a .npz archive: its members are read (and can fail) only when accessed
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{file}: cannot be read as a NumPy array ({err})") from err
    if len(arrays) == 1:
        ((key, array),) = arrays.items()
        where = f"{file}['{key}']" if key else str(file)
        return _from_bytes(_images_from_array(array, where), file.stem)
    if sorted(arrays) != ["test", "train"]:
        raise ValueError(
            f"{file}: expected one array, or the arrays 'train' and 'test'; found {sorted(arrays)}"
        )
    train = _images_from_array(arrays["train"], f"{file}['train']")
    test = _images_from_array(arrays["test"], f"{file}['test']")
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(
            f"{file}: 'train' images are {train.shape[1:]} but 'test' images are {test.shape[1:]}"
        )
    return ImageData(
        _levels_to_unit(train, BYTE_LEVELS),
        _levels_to_unit(test, BYTE_LEVELS),
        BYTE_LEVELS,
        file.stem,
        flip=True,
    )


def load_dataset(spec: str) -> ImageData:
    """The dataset named by a string (command line, config files):

    - "digits": `load_digits()`;
    - "toy:<name>", name one of `ToyKind`'s values (or names, any case): TOY_TRAIN_SIZE train
      and TOY_TEST_SIZE test points drawn with seed SPLIT_SEED, num_levels None;
    - a folder of PNG/JPEG images (`load_image_folder`) or a .npy/.npz file (`load_array`).
    """
    if spec == "digits":
        return load_digits()
    if spec.startswith("toy:"):
        try:
            kind = parse_choice(ToyKind, spec[len("toy:") :])
        except ValueError as err:
            raise ValueError(f"dataset {spec!r}: {err}") from None
        generator = torch.Generator().manual_seed(SPLIT_SEED)
        points = toy_samples(kind, TOY_TRAIN_SIZE + TOY_TEST_SIZE, generator)
        return ImageData(
            points[:TOY_TRAIN_SIZE], points[TOY_TRAIN_SIZE:], None, f"toy:{kind.value}"
        )
    toy_names = ", ".join(kind.value for kind in ToyKind)
    valid = f"'digits', 'toy:<name>' with name one of {toy_names}, or a path to an image folder "
    valid += "or a .npy/.npz file"
    path = Path(spec)
    if path.is_dir():
        return load_image_folder(path)
    if path.suffix in (".npy", ".npz"):
        return load_array(path)
    if path.exists():
        raise ValueError(f"dataset {spec!r} is a file but not .npy/.npz; expected {valid}")
    raise ValueError(f"unknown dataset {spec!r} (no such file or folder); expected {valid}")


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each image of a batch [N, C, H, W] left-right with probability 1/2."""
    device = generator.device if generator is not None else x.device
    flip = torch.rand(x.shape[0], generator=generator, device=device) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
