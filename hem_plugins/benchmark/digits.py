"""scikit-learn's handwritten digits: the one place the package loads them.

The dataset ships with scikit-learn (1797 images of 8 x 8 pixels, 10 classes),
so every small experiment of the package runs with no download: the benchmark
suite's ``digits`` (:mod:`hem_plugins.benchmark.data`), the Avalanche
benchmarks ``SplitDigits`` / ``PermutedDigits``, the skip-settled runs, and the
source digits that DigitMosaic renders. Needs scikit-learn (the ``bench`` extras).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["TEST_SPLIT_SEED", "digit_images", "load_digits_split"]

#: The seed of the one train/test split of the digits. Fixed, not a run's seed: every seed of
#: every profile (the tune profile's included) tests on the same images, and none of them is
#: in any seed's training data or validation carve.
TEST_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The images ``(1797, 8, 8)`` with ink in ``0..16`` (float64) and their labels ``(1797,)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def load_digits_split(
    test_size: float = 0.3, split_seed: int = TEST_SPLIT_SEED
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x_train, y_train, x_test, y_test``: float32 ``(N, 64)`` in ``[0, 1]`` and int64
    labels, split stratified by class with ``split_seed`` (scikit-learn's
    ``train_test_split``). The benchmark and the Avalanche benchmarks keep the default,
    :data:`TEST_SPLIT_SEED`: one test split whatever the run's seed, which varies only what
    is drawn from the training part (validation carve, subsample, class order, weights).

    Example:
        >>> x_tr, y_tr, x_te, y_te = load_digits_split(0.3)
        >>> tuple(x_tr.shape), tuple(x_te.shape), float(x_tr.max())
        ((1257, 64), (540, 64), 1.0)
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    images, labels = digit_images()
    x = (images.reshape(len(images), -1) / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, labels, test_size=test_size, random_state=split_seed, stratify=labels
    )
    return (
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr).long(),
        torch.from_numpy(x_te),
        torch.from_numpy(y_te).long(),
    )
