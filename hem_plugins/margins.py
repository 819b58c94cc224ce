"""Margins of HEM and HEM+ from dataset sizes and class counts.

HEM uses one margin for every sample, ``mu = sqrt(scale / n_train)``; HEM+
gives each class its own margin from its share of the training data,
``mu[c] = sqrt(scale / (n * s[c]))`` where ``s[c]`` is the number of training
samples of class ``c`` and ``n`` the number of classes present (``s[c] > 0``).
With balanced classes (``s[c] = n_train / n``) the two coincide.

Whether HEM's best margin follows ``sqrt(2000 / n_train)`` across dataset sizes is measured
by the benchmark task ``margin_scaling`` (``docs/margin_scaling.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["DEFAULT_SCALE", "FALLBACK_MARGIN", "margin_for_dataset", "class_margins"]

#: The paper's constant: CIFAR-10's 50 000 training samples give a margin of 0.2.
DEFAULT_SCALE = 2000.0

#: Margin used by :class:`~hem_plugins.HEMLoss` / :class:`~hem_plugins.HEMPlusLoss`
#: before they know the size of their training set (the margin of
#: ``torch.nn.MultiMarginLoss``). A one-time warning says so.
FALLBACK_MARGIN = 1.0


def _check_scale(scale: float) -> float:
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    return scale


def margin_for_dataset(n_train: int | float, scale: float = DEFAULT_SCALE) -> float:
    """HEM margin for a balanced training set of ``n_train`` samples.

    ``mu = sqrt(scale / n_train)``; for segmentation ``n_train`` is the number
    of training images.

    Example:
        >>> round(margin_for_dataset(50_000), 3)  # CIFAR-10
        0.2
        >>> round(margin_for_dataset(2_975), 2)  # Cityscapes
        0.82
    """
    scale = _check_scale(scale)
    n = float(n_train)
    if not math.isfinite(n) or n <= 0:
        raise ValueError(f"n_train must be a positive number of training samples, got {n_train}")
    return math.sqrt(scale / n)


def class_margins(
    class_counts: Sequence[float] | torch.Tensor, scale: float = DEFAULT_SCALE
) -> torch.Tensor:
    """HEM+ per-class margins from per-class training-sample counts.

    ``mu[c] = sqrt(scale / (n * s[c]))`` for every class with ``s[c] > 0``,
    ``n`` being the number of such classes. A class with ``s[c] = 0`` never
    supplies a row margin (no training row has it as target), but it still
    gets a finite value: the largest margin of the present classes.

    Segmentation counts are image-equivalents,
    ``s[c] = n_images * pixels[c] / labelled_pixels`` (see
    :meth:`hem_plugins.HEMPlusLoss.set_class_counts`).

    Args:
        class_counts: ``(C,)`` non-negative counts (ints or floats), at least one > 0.
        scale: the constant of the margin formula.

    Returns:
        ``(C,)`` float32 tensor of margins.

    Example:
        >>> class_margins([500, 500])  # balanced: the HEM margin of 1000 samples
        tensor([1.4142, 1.4142])
        >>> m = class_margins([900, 100, 0])
        >>> bool(m[1] > m[0]) and float(m[2]) == float(m[1])
        True
    """
    scale = _check_scale(scale)
    counts = torch.as_tensor(class_counts, dtype=torch.float64).detach().cpu()
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(
            f"class_counts must be a non-empty 1-D sequence, got shape {tuple(counts.shape)}"
        )
    if not torch.isfinite(counts).all():
        raise ValueError(f"class_counts must be finite, got {counts.tolist()}")
    if (counts < 0).any():
        bad = torch.nonzero(counts < 0).flatten().tolist()
        raise ValueError(f"class_counts must be non-negative; negative at classes {bad}")
    present = counts > 0
    n_present = int(present.sum())
    if n_present == 0:
        raise ValueError("class_counts are all zero: no class to compute a margin for")
    margins = torch.zeros_like(counts)
    margins[present] = torch.sqrt(scale / (n_present * counts[present]))
    margins[~present] = margins[present].max()
    return margins.float()
