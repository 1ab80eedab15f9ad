"""Tests for the datasets (ddpm/data.py)."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits as sklearn_digits
from sklearn.datasets import make_moons

from ddpm import data
from ddpm.data import (
    ImageData,
    ToyKind,
    load_array,
    load_dataset,
    load_digits,
    load_image_folder,
    random_hflip,
    toy_samples,
)


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_digits()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def digit_keys(x: torch.Tensor) -> list[bytes]:
    """Each digit image [1, 8, 8] in [-1, 1] back to its 64 levels 0..16, as bytes."""
    levels = ((x + 1) * 8).round().to(torch.uint8).reshape(len(x), -1).numpy()
    return [row.tobytes() for row in levels]


# --- digits -------------------------------------------------------------------------------------


def test_digits_shapes_and_levels(digits):
    assert digits.name == "digits" and digits.num_levels == 17 and not digits.flip
    for x in (digits.train, digits.test):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
    # Every pixel is one of the 17 values -1 + 2k/16, and all 17 occur.
    values = torch.cat([digits.train, digits.test]).unique()
    torch.testing.assert_close(values, -1 + 2 * torch.arange(17.0) / 16)


def test_digits_split_is_a_fixed_80_20_partition(digits):
    images = sklearn_digits().images
    n = len(images)
    assert len(digits.test) == round(0.2 * n)
    # Together the splits hold exactly scikit-learn's images (as a multiset): none lost, none in
    # both.
    ours = Counter(digit_keys(digits.train)) + Counter(digit_keys(digits.test))
    theirs = Counter(row.tobytes() for row in images.astype(np.uint8).reshape(n, -1))
    assert ours == theirs
    # The split is shuffled: the test images come from all through scikit-learn's order, not
    # from one end of it.
    first_index = {}
    for i, row in enumerate(images.astype(np.uint8).reshape(n, -1)):
        first_index.setdefault(row.tobytes(), i)
    positions = np.array([first_index[key] for key in digit_keys(digits.test)])
    assert positions.min() < 0.05 * n and positions.max() > 0.95 * n
    assert abs(np.median(positions) - n / 2) < 0.1 * n
    again = load_digits()
    assert torch.equal(again.train, digits.train) and torch.equal(again.test, digits.test)


def test_digits_labels_follow_the_split(digits):
    sk = sklearn_digits()
    pairs = set(
        zip(
            (row.tobytes() for row in sk.images.astype(np.uint8).reshape(len(sk.images), -1)),
            sk.target.tolist(),
            strict=True,
        )
    )
    for x, y in ((digits.train, digits.train_labels), (digits.test, digits.test_labels)):
        assert set(zip(digit_keys(x), y.tolist(), strict=True)) <= pairs
    # A random 20% of 1,797 images holds each class about 36 times.
    counts = torch.bincount(digits.test_labels, minlength=10)
    assert counts.min() >= 20 and counts.max() <= 55


# --- 2-D toys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ToyKind))
def test_toys_are_seeded_float32_points_in_about_the_unit_square(kind):
    points = toy_samples(kind, 4000, gen(1))
    assert points.shape == (4000, 2) and points.dtype == torch.float32
    assert torch.equal(points, toy_samples(kind, 4000, gen(1)))
    assert not torch.equal(points, toy_samples(kind, 4000, gen(2)))
    assert points.abs().max() < 1.3
    assert points.abs().max() > 0.7  # they fill the square rather than a corner of it


def test_eight_gaussians_modes():
    points = toy_samples(ToyKind.EIGHT_GAUSSIANS, 16000, gen())
    radius, std = data.EIGHT_GAUSSIANS_RADIUS, data.EIGHT_GAUSSIANS_STD
    angles = 2 * math.pi * torch.arange(8) / 8
    centres = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    nearest = torch.cdist(points, centres).argmin(dim=1)
    counts = torch.bincount(nearest, minlength=8)
    assert counts.min() > 16000 / 8 * 0.9 and counts.max() < 16000 / 8 * 1.1
    for mode in range(8):
        members = points[nearest == mode]
        assert (members.mean(0) - centres[mode]).norm() < 0.01
        torch.testing.assert_close(members.std(0), torch.full((2,), std), rtol=0.1, atol=0)


def test_two_moons_have_make_moons_geometry():
    points = toy_samples(ToyKind.TWO_MOONS, 4000, gen())
    raw = points * 1.5 + torch.tensor([0.5, 0.25])  # undo the documented scaling
    reference = torch.from_numpy(make_moons(n_samples=4000, noise=0.0)[0]).float()
    gaps = torch.cdist(raw, reference)
    # Every point lies within noise of the noise-free moons, and every part of the moons is
    # reached; the gaps have the spread of 2-D Gaussian noise projected off the curve.
    assert gaps.min(dim=1).values.max() < 5 * data.MOONS_NOISE
    assert gaps.min(dim=0).values.max() < 0.05
    rms = gaps.min(dim=1).values.square().mean().sqrt()
    assert rms == pytest.approx(data.MOONS_NOISE, rel=0.15)
    # Half the points on each moon: the upper one is the unit circle.
    upper = (raw.norm(dim=1) - 1).abs() < (raw - torch.tensor([1.0, 0.5])).norm(dim=1).sub(1).abs()
    assert upper.float().mean() == pytest.approx(0.5, abs=0.03)


def test_swiss_roll_follows_the_spiral():
    points = toy_samples(ToyKind.SWISS_ROLL, 4000, gen())
    # The noise-free spiral (s cos s, s sin s) / (4.5 pi), s from 1.5 pi to 4.5 pi, finely sampled.
    s = torch.linspace(1.5 * math.pi, 4.5 * math.pi, 5000)
    curve = torch.stack([s * torch.cos(s), s * torch.sin(s)], dim=1) / (4.5 * math.pi)
    gaps = torch.cdist(points, curve)
    nearest = gaps.min(dim=1).values
    # As for the moons: near the curve, by the noise's spread, and along all of it.
    assert nearest.max() < 5 * data.SWISS_ROLL_NOISE
    assert nearest.square().mean().sqrt() == pytest.approx(data.SWISS_ROLL_NOISE, rel=0.15)
    assert gaps.min(dim=0).values.max() < 0.05


def test_checkerboard_fills_the_even_squares_evenly():
    points = toy_samples(ToyKind.CHECKERBOARD, 16000, gen())
    assert points.min() >= -1 and points.max() <= 1
    col, row = ((points + 1) / 0.5).floor().long().clamp(max=3).unbind(1)
    assert ((col + row) % 2 == 0).all()
    counts = torch.bincount(row * 4 + col, minlength=16)
    assert counts[counts > 0].numel() == 8
    assert counts.max() < 16000 / 8 * 1.1 and counts[counts > 0].min() > 16000 / 8 * 0.9


def test_toy_samples_takes_names():
    assert torch.equal(
        toy_samples("two-moons", 10, gen()), toy_samples(ToyKind.TWO_MOONS, 10, gen())
    )
    with pytest.raises(ValueError, match="spiral.*swiss_roll, two_moons, eight_gaussians"):
        toy_samples("spiral", 10)


# --- load_dataset -------------------------------------------------------------------------------


def test_load_dataset_dispatch(tmp_path):
    assert load_dataset("digits").num_levels == 17
    moons = load_dataset("toy:two_moons")
    assert moons.name == "toy:two_moons" and moons.num_levels is None and not moons.flip
    assert moons.train.shape == (data.TOY_TRAIN_SIZE, 2)
    assert moons.test.shape == (data.TOY_TEST_SIZE, 2)
    assert torch.equal(load_dataset("toy:two_moons").train, moons.train)
    np.save(tmp_path / "a.npy", np.zeros((10, 4, 4), np.uint8))
    assert load_dataset(str(tmp_path / "a.npy")).name == "a"
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.new("L", (4, 4)).save(folder / "x.png")
    assert load_dataset(str(folder)).name == "pics"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("toy:spiral", r"dataset 'toy:spiral'.*'spiral'.*valid names: swiss_roll, two_moons"),
        ("cifar10", r"unknown dataset 'cifar10'.*'digits', 'toy:<name>'.*folder.*npz"),
    ],
)
def test_load_dataset_unknown_spec_lists_the_valid_ones(spec, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(spec)


# --- image folders ------------------------------------------------------------------------------


def test_image_folder_grey_and_colour(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    for i, image in enumerate(grey):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    loaded = load_image_folder(tmp_path)
    assert loaded.num_levels == 256 and loaded.flip and loaded.train.shape[1:] == (1, 6, 4)
    assert len(loaded.train) + len(loaded.test) == 5
    # Images are sorted by name, then split by the fixed permutation: undo the split to compare.
    train_idx, test_idx = data._split_indices(5)
    expected = torch.from_numpy(-1 + 2 * grey.astype(np.float32) / 255)[:, None]
    torch.testing.assert_close(loaded.train, expected[train_idx])
    torch.testing.assert_close(loaded.test, expected[test_idx])

    # One colour image makes every image RGB: grey ones repeat their channel.
    Image.fromarray(rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)).save(tmp_path / "c.jpg")
    loaded = load_image_folder(tmp_path)
    assert loaded.train.shape[1:] == (3, 6, 4)
    everything = torch.cat([loaded.train, loaded.test])
    assert (everything.amin((1, 2, 3)) >= -1).all() and (everything.amax((1, 2, 3)) <= 1).all()


def test_image_folder_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_image_folder(tmp_path / "nope")


def test_image_folder_empty(tmp_path):
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="contains no files"):
        load_image_folder(tmp_path)


def test_image_folder_mixed_sizes(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 6)).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"b\.png: image is 6x8 but a\.png is 8x8"):
        load_image_folder(tmp_path)


def test_image_folder_non_image_file(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt: not a PNG or JPEG image"):
        load_image_folder(tmp_path)


def test_image_folder_corrupt_image(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"b\.png: cannot be read as an image"):
        load_image_folder(tmp_path)


def test_image_folder_truncated_image(tmp_path):
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(
        tmp_path / "b.png"
    )
    whole = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"b\.png: cannot be read as an image"):
        load_image_folder(tmp_path)


def test_image_folder_16_bit_image(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"a\.png: I;16 images are not supported"):
        load_image_folder(tmp_path)


# --- arrays -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout", ["nhwc", "nchw", "nhw"], ids=["[N,H,W,C]", "[N,C,H,W]", "[N,H,W]"]
)
def test_array_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    channels = 1 if layout == "nhw" else 3
    nchw = rng.integers(0, 256, (10, channels, 6, 4), dtype=np.uint8)
    stored = {"nhwc": nchw.transpose(0, 2, 3, 1), "nchw": nchw, "nhw": nchw[:, 0]}[layout]
    np.save(tmp_path / "x.npy", stored)
    loaded = load_array(tmp_path / "x.npy")
    assert loaded.num_levels == 256 and loaded.flip and loaded.name == "x"
    train_idx, test_idx = data._split_indices(10)
    expected = torch.from_numpy(-1 + 2 * nchw.astype(np.float32) / 255)
    torch.testing.assert_close(loaded.train, expected[train_idx])
    torch.testing.assert_close(loaded.test, expected[test_idx])


def test_array_npz_with_train_and_test(tmp_path):
    train = np.full((6, 4, 4, 3), 255, np.uint8)
    test = np.zeros((2, 4, 4, 3), np.float64)  # whole-valued floats are 8-bit levels too
    np.savez(tmp_path / "c.npz", train=train, test=test)
    loaded = load_array(tmp_path / "c.npz")
    assert torch.equal(loaded.train, torch.ones(6, 3, 4, 4))
    assert torch.equal(loaded.test, -torch.ones(2, 3, 4, 4))


def test_array_npz_with_one_array_is_split(tmp_path):
    np.savez(tmp_path / "c.npz", images=np.zeros((10, 4, 4), np.uint8))
    loaded = load_array(tmp_path / "c.npz")
    assert (len(loaded.train), len(loaded.test)) == (8, 2)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.array([[[0.0, np.nan]]]), r"NaN or infinite values \(first at index \(0, 0, 1\)\)"),
        (np.full((2, 4, 4), 0.5), "whole numbers 0..255"),
        (np.full((2, 4, 4), 300, np.int64), r"values range over \[300, 300\], expected levels"),
        (np.full((2, 4, 4), -1, np.int16), r"values range over \[-1, -1\]"),
        (np.zeros((2, 4, 4), bool), "dtype bool is not supported"),
        (np.zeros((2, 4, 4, 4, 1), np.uint8), r"shape \(2, 4, 4, 4, 1\) is not"),
        (np.zeros((2, 5, 4, 4), np.uint8), r"shape \(2, 5, 4, 4\) is not"),
        (np.zeros((0, 4, 4), np.uint8), "contains no images"),
    ],
    ids=["nan", "fraction", "above-255", "negative", "bool", "5-d", "5-channels", "empty"],
)
def test_array_bad_contents(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(ValueError, match=r"bad\.npy.*" + message):
        load_array(tmp_path / "bad.npy")


def test_array_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_array(tmp_path / "missing.npy")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_dataset(str(tmp_path / "missing.npz"))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match=r"junk\.npy: cannot be read as a NumPy array"):
        load_array(tmp_path / "junk.npy")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"objects\.npy: cannot be read"):
        load_array(tmp_path / "objects.npy")
    np.savez(tmp_path / "member.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"member\.npz: cannot be read"):
        load_array(tmp_path / "member.npz")
    whole = (tmp_path / "member.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz: cannot be read"):
        load_array(tmp_path / "cut.npz")
    np.savez(tmp_path / "keys.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(ValueError, match=r"keys\.npz: expected one array.*\['a', 'b'\]"):
        load_array(tmp_path / "keys.npz")
    np.savez(tmp_path / "sizes.npz", train=np.zeros((2, 4, 4), np.uint8), test=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"sizes\.npz: 'train' images are \(1, 4, 4\)"):
        load_array(tmp_path / "sizes.npz")


# --- flips --------------------------------------------------------------------------------------


def test_random_hflip_mirrors_about_half_the_images():
    x = torch.randn(400, 3, 4, 5)
    out = random_hflip(x, gen())
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped ^ kept).all()  # each image is either mirrored or untouched, never mixed
    assert flipped.float().mean() == pytest.approx(0.5, abs=0.1)
    assert torch.equal(out, random_hflip(x, gen()))
