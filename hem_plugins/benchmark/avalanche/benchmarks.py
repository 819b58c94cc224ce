"""Continual-learning benchmarks built with Avalanche's own generators.

* :func:`SplitDigits` / :func:`PermutedDigits`: scikit-learn's bundled digits
  (1 797 8x8 images, 10 classes; nothing to download), with one stratified
  held-out test split whatever the seed (:data:`..digits.TEST_SPLIT_SEED`); ``validation_fraction`` carves a
  validation stream out of each training experience
  (:func:`with_validation_stream`), for choosing hyper-parameters without the
  test stream.
* :func:`SplitMNIST`, :func:`SplitCIFAR10`, :func:`SplitCIFAR100`: torchvision
  datasets read from a local ``root`` with ``download=False``; when the files
  are missing they raise ``FileNotFoundError`` naming the expected files.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.benchmarks.utils.classification_dataset import (
    _make_taskaware_tensor_classification_dataset,
)

from ..digits import load_digits_split

__all__ = [
    "PermutedDigits",
    "SplitCIFAR10",
    "SplitCIFAR100",
    "SplitDigits",
    "SplitMNIST",
    "load_digits_split",
    "with_validation_stream",
]


def _tensor_dataset(x: torch.Tensor, y: torch.Tensor, task_label: int = 0):
    return _make_taskaware_tensor_classification_dataset(
        x, y, targets=y.tolist(), task_labels=task_label
    )


def with_validation_stream(benchmark, fraction: float, seed: int = 0):
    """``benchmark`` with a ``valid_stream`` carved out of each training experience.

    Each experience's training data is split per class (stratified, seeded by ``seed``):
    ``fraction`` of every class goes to the experience of ``valid_stream``, the rest stays
    in ``train_stream``; ``test_stream`` is unchanged. Built with Avalanche's
    ``benchmark_with_validation_stream`` (experiences keep their task labels and classes),
    with :func:`hem_plugins.benchmark.protocol.carve_validation` as the split.
    """
    from avalanche.benchmarks.scenarios.generic_scenario import CLScenario, EagerCLStream
    from avalanche.benchmarks.scenarios.task_aware import with_task_labels
    from avalanche.benchmarks.scenarios.validation_scenario import (
        benchmark_with_validation_stream,
    )

    from ..protocol import carve_validation

    def split(dataset):
        y = torch.as_tensor(list(dataset.targets), dtype=torch.long)
        train_idx, val_idx = carve_validation(y, fraction, seed)
        return dataset.subset(train_idx.tolist()), dataset.subset(val_idx.tolist())

    def as_before(stream):
        # The split experiences know their classes (as a set) but not their task labels;
        # multi-head models need both as the original experiences had them (a list).
        exps = []
        for exp in with_task_labels(stream):
            exp.classes_in_this_experience = sorted(exp.classes_in_this_experience)
            exps.append(exp)
        return EagerCLStream(stream.name, exps)

    with warnings.catch_warnings():  # the original train stream is lazy: made a list
        warnings.filterwarnings("ignore", message="stream generator will be converted")
        split_bm = benchmark_with_validation_stream(benchmark, split_strategy=split)
    streams = split_bm.streams.values()
    return CLScenario([as_before(s) if s.name in ("train", "valid") else s for s in streams])


def _maybe_validation(benchmark, fraction: float | None, seed: int):
    return with_validation_stream(benchmark, fraction, seed) if fraction else benchmark


def SplitDigits(  # noqa: N802 (Avalanche's naming of benchmark builders)
    n_experiences: int = 5,
    *,
    return_task_id: bool = False,
    seed: int = 0,
    test_size: float = 0.3,
    fixed_class_order: list[int] | None = None,
    shuffle: bool = True,
    sample_ids: bool = False,
    validation_fraction: float | None = None,
):
    """Class-incremental split of scikit-learn's digits: ``n_experiences`` of ``10 / n`` classes.

    Args:
        n_experiences: a divisor of 10 (default 5 experiences of 2 classes).
        return_task_id: task-incremental variant (a task label per experience,
            class ids from 0 in each experience), for multi-head models.
        seed: seeds the class order and the validation carve; the train/test split is
            one for every seed (:data:`~hem_plugins.benchmark.digits.TEST_SPLIT_SEED`).
        test_size: held-out fraction, stratified by class.
        fixed_class_order: class order instead of a seeded shuffle.
        sample_ids: give every training sample a unique ``sample_id`` data
            attribute (:func:`~hem_plugins.avalanche.skip_settled.with_sample_ids`)
            before the split, as :class:`~hem_plugins.avalanche.SkipSettledPlugin` needs.
        validation_fraction: when set, carve this fraction of each training
            experience (per class, seeded by ``seed``) into a ``valid_stream``
            (:func:`with_validation_stream`).

    Returns:
        an Avalanche ``NCScenario`` (``train_stream``, ``test_stream``), or with
        ``validation_fraction`` a scenario that also has ``valid_stream``.
    """
    if n_experiences < 1 or 10 % n_experiences:
        raise ValueError(f"n_experiences must divide the 10 digit classes, got {n_experiences}")
    x_tr, y_tr, x_te, y_te = load_digits_split(test_size)
    train = _tensor_dataset(x_tr, y_tr)
    if sample_ids:
        from hem_plugins.avalanche.skip_settled import with_sample_ids

        train = with_sample_ids(train)
    benchmark = nc_benchmark(
        train,
        _tensor_dataset(x_te, y_te),
        n_experiences=n_experiences,
        task_labels=return_task_id,
        shuffle=shuffle,
        seed=seed,
        fixed_class_order=fixed_class_order,
        class_ids_from_zero_in_each_exp=return_task_id,
    )
    return _maybe_validation(benchmark, validation_fraction, seed)


def PermutedDigits(  # noqa: N802
    n_experiences: int = 5,
    *,
    seed: int = 0,
    test_size: float = 0.3,
    first_identity: bool = True,
    validation_fraction: float | None = None,
):
    """Domain-incremental digits: every experience has all 10 classes, pixels permuted.

    Experience ``k`` applies its own fixed random permutation of the 64 pixels
    (the first one the identity when ``first_identity``) to train and test data;
    ``seed`` draws the permutations, not the train/test split (one for every seed, as in
    :func:`SplitDigits`). ``validation_fraction`` adds a ``valid_stream`` as in :func:`SplitDigits`.
    """
    if n_experiences < 1:
        raise ValueError(f"n_experiences must be >= 1, got {n_experiences}")
    x_tr, y_tr, x_te, y_te = load_digits_split(test_size)
    rng = np.random.RandomState(seed)
    train, test = [], []
    for k in range(n_experiences):
        perm = np.arange(64) if (k == 0 and first_identity) else rng.permutation(64)
        idx = torch.from_numpy(perm).long()
        train.append(_tensor_dataset(x_tr[:, idx], y_tr))
        test.append(_tensor_dataset(x_te[:, idx], y_te))
    benchmark = nc_benchmark(
        train,
        test,
        n_experiences=n_experiences,
        task_labels=False,
        shuffle=False,
        class_ids_from_zero_in_each_exp=True,
        one_dataset_per_exp=True,
    )
    return _maybe_validation(benchmark, validation_fraction, seed)


# ------------------------------------------------------------------ torchvision on disk
_EXPECTED = {
    "MNIST": (
        "MNIST/raw",
        [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ],
    ),
    "CIFAR10": (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"],
    ),
    "CIFAR100": ("cifar-100-python", ["train", "test", "meta"]),
}


def _check_files(name: str, root: str | Path) -> Path:
    root = Path(root).expanduser()
    folder, files = _EXPECTED[name]
    missing = [str(root / folder / f) for f in files if not (root / folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{name} is not on disk under root={str(root)!r} (nothing is downloaded). "
            f"Expected the torchvision {name} files: {', '.join(str(root / folder / f) for f in files)}; "
            f"missing: {', '.join(missing)}"
        )
    return root


def _torchvision_split(name, root, n_experiences, return_task_id, seed, normalize, flatten):
    from torchvision import datasets, transforms

    root = _check_files(name, root)
    cls = getattr(datasets, name)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(*normalize)])
    if flatten:
        tf = transforms.Compose([tf, transforms.Lambda(torch.flatten)])
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as exc:  # torchvision: files present but corrupted (checksums)
        folder = root / _EXPECTED[name][0]
        raise FileNotFoundError(
            f"{name} files under {folder} could not be read by torchvision ({exc}); "
            "replace them with the original torchvision files"
        ) from exc
    return nc_benchmark(
        train,
        test,
        n_experiences=n_experiences,
        task_labels=return_task_id,
        seed=seed,
        class_ids_from_zero_in_each_exp=return_task_id,
        train_transform=tf,
        eval_transform=tf,
    )


def SplitMNIST(  # noqa: N802
    root: str | Path = "data",
    n_experiences: int = 5,
    *,
    return_task_id: bool = False,
    seed: int = 0,
    flatten: bool = True,
):
    """Split MNIST from ``root/MNIST/raw`` (torchvision layout, ``download=False``)."""
    return _torchvision_split(
        "MNIST",
        root,
        n_experiences,
        return_task_id,
        seed,
        ((0.1307,), (0.3081,)),
        flatten,
    )


def SplitCIFAR10(  # noqa: N802
    root: str | Path = "data",
    n_experiences: int = 5,
    *,
    return_task_id: bool = False,
    seed: int = 0,
):
    """Split CIFAR-10 from ``root/cifar-10-batches-py`` (``download=False``)."""
    norm = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    return _torchvision_split("CIFAR10", root, n_experiences, return_task_id, seed, norm, False)


def SplitCIFAR100(  # noqa: N802
    root: str | Path = "data",
    n_experiences: int = 10,
    *,
    return_task_id: bool = False,
    seed: int = 0,
):
    """Split CIFAR-100 from ``root/cifar-100-python`` (``download=False``)."""
    norm = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    return _torchvision_split("CIFAR100", root, n_experiences, return_task_id, seed, norm, False)
