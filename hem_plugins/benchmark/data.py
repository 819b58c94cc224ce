"""Datasets of the benchmark, as float tensors in ``[0, 1]`` and integer labels.

Offline by default: scikit-learn's digits (1 797 8x8 images) and MNIST-1D
(generated locally by the ``mnist1d`` package). MNIST / CIFAR-10 / CIFAR-100 are
read with torchvision from ``data_root`` (``download=False``) when present.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

OFFLINE = ("digits", "mnist1d")
ON_DISK = {
    "mnist": ("MNIST", ["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/t10k-images-idx3-ubyte"]),
    "cifar10": ("CIFAR10", ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch"]),
    "cifar100": ("CIFAR100", ["cifar-100-python/train", "cifar-100-python/test"]),
}
DATASETS = OFFLINE + tuple(ON_DISK)


@dataclass(frozen=True)
class Split:
    """A train/test split; inputs in ``[0, 1]``, labels ``0 .. num_classes - 1``."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    def class_counts(self) -> list[int]:
        return torch.bincount(self.y_train, minlength=self.num_classes).tolist()


def _to_split(name, x_tr, y_tr, x_te, y_te) -> Split:
    x_tr, x_te = (
        torch.as_tensor(x_tr, dtype=torch.float32),
        torch.as_tensor(x_te, dtype=torch.float32),
    )
    y_tr, y_te = torch.as_tensor(y_tr, dtype=torch.long), torch.as_tensor(y_te, dtype=torch.long)
    return Split(name, x_tr, y_tr, x_te, y_te, int(max(y_tr.max(), y_te.max())) + 1)


@functools.lru_cache(maxsize=8)
def _digits(test_size: float) -> Split:
    from .digits import TEST_SPLIT_SEED, load_digits_split

    return _to_split("digits", *load_digits_split(test_size, TEST_SPLIT_SEED))


@functools.lru_cache(maxsize=8)
def _mnist1d(num_samples: int) -> Split:
    from mnist1d.data import get_dataset_args, make_dataset

    from .digits import TEST_SPLIT_SEED

    # make_dataset draws the samples *and* their train/test split from one seed: fixed, so
    # that every run's seed tests on the same samples and trains on the same others.
    args = get_dataset_args()
    args.num_samples, args.seed = int(num_samples), TEST_SPLIT_SEED
    state = np.random.get_state()  # make_dataset reseeds numpy's global generator
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)
    lo, hi = d["x"].min(), d["x"].max()  # min-max from the training set; test clipped
    scale = lambda a: np.clip((a - lo) / (hi - lo), 0.0, 1.0)  # noqa: E731
    return _to_split("mnist1d", scale(d["x"]), d["y"], scale(d["x_test"]), d["y_test"])


def _torchvision(name: str, data_root: str | None) -> Split:
    cls_name, expected = ON_DISK[name]
    if not data_root:
        raise FileNotFoundError(f"dataset {name!r} needs --data-root DIR holding {expected}")
    root = Path(data_root).expanduser()
    missing = [f for f in expected if not (root / f).exists()]
    if missing:
        raise FileNotFoundError(
            f"dataset {name!r}: files not found under {root}: {missing} "
            "(torchvision's layout; nothing is downloaded)"
        )
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    parts = []
    for train in (True, False):
        ds = cls(root=str(root), train=train, download=False)
        x = torch.as_tensor(np.asarray(ds.data), dtype=torch.float32) / 255.0
        x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)  # N, C, H, W
        parts += [x, torch.as_tensor(np.asarray(ds.targets))]
    return _to_split(name, *parts)


def load_dataset(name: str, seed: int, options: dict | None = None, data_root=None) -> Split:
    """Load dataset ``name`` (one of :data:`DATASETS`).

    The train/test split is one per dataset (and options), whatever ``seed``: digits split
    with :data:`.digits.TEST_SPLIT_SEED`, MNIST-1D generated with it, the torchvision sets'
    own split. ``seed`` picks only the ``max_train`` subset; the run's validation carve and
    long-tailed subsample are drawn from the training part by their own callers.

    Options: digits ``test_size`` (0.3); mnist1d ``num_samples`` (5000, 80 % train);
    any dataset ``max_train`` (keep a random subset of the training set, by ``seed``).
    """
    options = dict(options or {})
    if name == "digits":
        split = _digits(float(options.get("test_size", 0.3)))
    elif name == "mnist1d":
        split = _mnist1d(int(options.get("num_samples", 5000)))
    elif name in ON_DISK:
        split = _torchvision(name, data_root)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from {DATASETS}")
    max_train = options.get("max_train")
    if max_train and max_train < split.n_train:
        g = torch.Generator().manual_seed(int(seed))
        keep = torch.randperm(split.n_train, generator=g)[: int(max_train)]
        split = replace(split, x_train=split.x_train[keep], y_train=split.y_train[keep])
    return split


def open_set(split: Split, known: list[int]) -> tuple[Split, torch.Tensor]:
    """Train/test on the ``known`` classes (relabelled ``0 .. k-1``); return the unknown test inputs."""
    known_t = torch.as_tensor(sorted(known))
    if len(known_t) < 2 or known_t.min() < 0 or known_t.max() >= split.num_classes:
        raise ValueError(
            f"known classes {known} must be >= 2 classes of 0..{split.num_classes - 1}"
        )
    relabel = torch.full((split.num_classes,), -1, dtype=torch.long)
    relabel[known_t] = torch.arange(len(known_t))
    tr = relabel[split.y_train] >= 0
    te = relabel[split.y_test] >= 0
    known_split = Split(
        split.name,
        split.x_train[tr],
        relabel[split.y_train[tr]],
        split.x_test[te],
        relabel[split.y_test[te]],
        len(known_t),
    )
    return known_split, split.x_test[~te]


def long_tailed(split: Split, ratio: float, seed: int) -> Split:
    """Subsample the training set to an exponential profile: class ``c`` keeps
    ``n_max * ratio ** (-c / (C - 1))`` samples (``n_max`` the smallest class size),
    so the most frequent class has ``ratio`` times the samples of the rarest.
    The test set stays balanced."""
    if ratio < 1:
        raise ValueError(f"imbalance ratio must be >= 1, got {ratio}")
    c = split.num_classes
    n_max = min(split.class_counts())
    g = torch.Generator().manual_seed(int(seed))
    keep = []
    for k in range(c):
        n_k = max(1, int(round(n_max * ratio ** (-k / (c - 1)))))
        idx = torch.nonzero(split.y_train == k).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=g)[:n_k]])
    keep_t = torch.cat(keep)
    return replace(split, x_train=split.x_train[keep_t], y_train=split.y_train[keep_t])
