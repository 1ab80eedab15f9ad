"""A fixed digits classifier whose penultimate layer is the feature space of the digits Frechet
distance (the role Inception-v3 plays for FID on natural images).

Fixed by code, not by shipped weights: the network is trained on the train split of
`ddpm.data.load_digits()` (scikit-learn's 8x8 digits, which ship with scikit-learn) with a fixed
seed, a fixed number of epochs, a fixed minibatch order, deterministic kernels and one CPU thread
(a matmul's summation order depends on the thread count), so every training run on the same
software gives the same weights bit for bit. The test split, which samples are compared against,
is never trained on. Training takes a few seconds; the result is cached in memory, and on disk
when a cache folder is given.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

NUM_CLASSES = 10


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and training recipe; every field enters the disk-cache key."""

    channels: tuple[int, int] = (16, 32)  # widths of the two 3x3 convolutions
    # Width of the penultimate layer, i.e. the dimension of the Frechet feature space: small, so
    # that the covariance of a few hundred images (the digits test split has 359) is well estimated.
    feature_dim: int = 64
    epochs: int = 20  # ~98% test accuracy; more epochs buy little
    batch_size: int = 64
    lr: float = 1e-3  # Adam
    seed: int = 0  # initial weights and minibatch order


class DigitsNet(nn.Module):
    """conv3x3 -> ReLU -> conv3x3 -> ReLU -> 2x2 max-pool -> linear -> ReLU (features) -> linear.

    Input: images [N, 1, 8, 8] in [-1, 1]. Output: class logits [N, 10].
    """

    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        c1, c2 = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (N, c2, 4, 4)
            nn.Flatten(),
            nn.Linear(c2 * 4 * 4, config.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(config.feature_dim, NUM_CLASSES)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations [N, feature_dim] of images [N, 1, 8, 8]."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@dataclass(frozen=True, eq=False)
class DigitsClassifier:
    """A trained `DigitsNet` with its test accuracy; always evaluated on the CPU in float32."""

    net: DigitsNet
    config: ClassifierConfig
    test_accuracy: float  # fraction of the digits test split classified correctly
    train_seconds: float  # wall-clock time of the training run that produced the weights

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 1024) -> np.ndarray:
        """Float64 features [N, feature_dim] of images [N, 1, 8, 8] in [-1, 1] (any device)."""
        self.net.eval()
        x = images.detach().to("cpu", torch.float32)
        chunks = [self.net.features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return torch.cat(chunks).double().numpy()

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """Predicted classes, int64 [N], of images [N, 1, 8, 8] in [-1, 1] (any device)."""
        self.net.eval()
        return self.net(images.detach().to("cpu", torch.float32)).argmax(dim=1)


@contextlib.contextmanager
def _reproducible(seed: int):
    """One thread, deterministic kernels and a seeded global RNG for the duration of the block;
    the caller's thread count, determinism flags and RNG state are restored afterwards."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)


def train_digits_classifier(config: ClassifierConfig = ClassifierConfig()) -> DigitsClassifier:
    """Train a `DigitsNet` on the digits train split with Adam and cross-entropy (uncached)."""
    from ddpm.data import load_digits

    data = load_digits()
    x, y = data.train, data.train_labels
    start = time.perf_counter()
    with _reproducible(config.seed):
        net = DigitsNet(config)
        optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        for _ in range(config.epochs):
            order = torch.randperm(len(x))
            for i in range(0, len(x), config.batch_size):
                batch = order[i : i + config.batch_size]
                loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    seconds = time.perf_counter() - start
    net.eval()
    with torch.no_grad():
        accuracy = (net(data.test).argmax(dim=1) == data.test_labels).double().mean().item()
    return DigitsClassifier(net, config, accuracy, seconds)


def _cache_key(config: ClassifierConfig) -> str:
    """Hash of the recipe: the config, the source of the network and of the training loop, and
    torch's version, so that a change to any of them retrains instead of loading stale weights."""
    text = repr(sorted(asdict(config).items())) + inspect.getsource(train_digits_classifier)
    text += inspect.getsource(DigitsNet) + torch.__version__
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def digits_classifier(
    config: ClassifierConfig = ClassifierConfig(), cache_dir: str | os.PathLike | None = None
) -> DigitsClassifier:
    """The trained digits classifier, trained once per process (and per config).

    With cache_dir, the weights are also kept on disk as
    `cache_dir/digits-classifier-<key>.safetensors`, the key a hash of the training recipe, and
    loaded from there when present.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    if cache_dir is None:
        return train_digits_classifier(config)
    path = Path(cache_dir) / f"digits-classifier-{_cache_key(config)}.safetensors"
    if path.exists():
        with safe_open(path, framework="pt") as f:
            meta = f.metadata()
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten anyway
            net = DigitsNet(config)
        net.load_state_dict(load_file(path))
        net.eval()
        accuracy, seconds = float(meta["test_accuracy"]), float(meta["train_seconds"])
        return DigitsClassifier(net, config, accuracy, seconds)
    trained = train_digits_classifier(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "test_accuracy": repr(trained.test_accuracy),
        "train_seconds": repr(trained.train_seconds),
    }
    partial = path.with_suffix(f".{os.getpid()}.partial")  # atomic for concurrent processes
    save_file(trained.net.state_dict(), partial, metadata=meta)
    os.replace(partial, path)
    return trained
