"""HEM and HEM+ as MMSegmentation decode-head losses (``mmseg.registry.MODELS``).

The classes wrap the core modules (:class:`hem_plugins.HEMLoss`,
:class:`hem_plugins.HEMPlusLoss`); they hold no math. What they add is
mmseg's loss contract:

* ``forward(cls_score, label, weight=None, avg_factor=None,
  reduction_override=None, ignore_index=255)``, as ``BaseDecodeHead.loss_by_feat``
  calls it (``cls_score`` ``(N, C, H, W)``, ``label`` ``(N, H, W)``, ``weight``
  the pixel weights of a sampler such as ``OHEMPixelSampler``);
* ``loss_weight``, a ``loss_name`` property (``loss_hem`` / ``loss_hem_plus``),
  ``class_weight`` from a list or a file (as mmseg's ``CrossEntropyLoss``);
* the keys of mmseg's ``CrossEntropyLoss`` that a config inherits when only
  ``type`` is overridden (``use_sigmoid=False``, ``avg_non_ignore``,
  ``use_mask=False``), so ``loss_decode=dict(type='HEMPlusLoss')`` works over
  every shipped softmax head. Any other key is an error that names it.

Segmentation has no masked logit units, so the core's ``mask_value`` is off.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from mmseg.registry import MODELS

from .. import modules as core
from ..margins import DEFAULT_SCALE

__all__ = ["HEMLoss", "HEMPlusLoss", "check_num_classes", "load_class_counts"]

_CE_ONLY_KEYS = ("use_sigmoid", "use_mask", "avg_non_ignore")


def _load_class_weight(class_weight: Sequence[float] | str | None) -> list[float] | None:
    """``class_weight`` as mmseg's ``get_class_weight`` reads it, with clear errors."""
    if class_weight is None:
        return None
    if isinstance(class_weight, str):
        from mmseg.models.losses.utils import get_class_weight

        if not os.path.isfile(class_weight):
            raise FileNotFoundError(f"class_weight file {class_weight!r} does not exist")
        try:
            class_weight = get_class_weight(class_weight)
        except Exception as err:  # numpy / mmengine raise many kinds
            raise ValueError(f"class_weight file {class_weight!r} cannot be read: {err}") from err
    try:
        values = [float(v) for v in class_weight]
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"class_weight must be a list of numbers or a file path, got {class_weight!r}"
        ) from err
    return values


def load_class_counts(path: str) -> dict[str, Any]:
    """Read a class-counts JSON written by ``tools/class_counts.py`` (or the hook).

    Returns the dict with at least ``counts`` (pixels per class) and
    ``num_images``; raises a clear error when the file is missing or malformed.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"class_counts file {path!r} does not exist (write it with "
            "`python tools/class_counts.py CONFIG --out FILE`)"
        )
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"class_counts file {path!r} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or "counts" not in data or "num_images" not in data:
        raise ValueError(
            f"class_counts file {path!r} must hold a JSON object with 'counts' and 'num_images'"
        )
    counts = data["counts"]
    if not isinstance(counts, list) or not all(
        isinstance(c, (int, float)) and not isinstance(c, bool) for c in counts
    ):
        raise ValueError(f"class_counts file {path!r}: 'counts' must be a list of numbers")
    return data


def _check_loss_name(loss_name: str) -> str:
    if not isinstance(loss_name, str) or not loss_name.startswith("loss_"):
        raise ValueError(
            f"loss_name must start with 'loss_' (mmseg only back-propagates such keys), "
            f"got {loss_name!r}"
        )
    return loss_name


def _check_ce_keys(cls_name: str, use_sigmoid: bool, use_mask: bool, extra: dict) -> None:
    if extra:
        raise TypeError(
            f"{cls_name} got unknown config key(s) {sorted(extra)}; it accepts loss_weight, "
            "loss_name, class_weight, reduction, scale, p, "
            + ("margin, num_images" if cls_name == "HEMLoss" else "class_counts, num_images")
            + f" and mmseg CrossEntropyLoss's {list(_CE_ONLY_KEYS)}"
        )
    if use_sigmoid:
        raise ValueError(
            f"{cls_name} is a softmax-style multi-class loss: use_sigmoid=True is not "
            "supported (it comes from a binary / sigmoid head config; set use_sigmoid=False "
            "and out_channels=num_classes)"
        )
    if use_mask:
        raise ValueError(f"{cls_name} does not support use_mask=True (mask cross-entropy)")


def check_num_classes(loss: torch.nn.Module, num_classes: int, where: str = "") -> None:
    """Raise if the config's ``class_weight`` / ``class_counts`` do not have ``num_classes`` entries.

    mmseg does not pass ``num_classes`` to a loss it builds, so the check runs
    where the number is known: :class:`~hem_plugins.mmseg.HEMMarginHook` calls
    it before training with each head's ``num_classes`` (``where`` names the
    loss in the model, e.g. ``decode_head.loss_decode``), and every loss calls
    it at its first forward with the channel count of the logits.
    """
    key = f"{where}." if where else "loss_decode."
    if ".loss_decode" in where:
        head = f"{where.rsplit('.loss_decode', 1)[0]}.num_classes is {num_classes}"
    else:
        head = f"the head's num_classes is {num_classes} (the channels of its logits)"
    checks = [("class_weight", loss._buffers.get("class_weight"))]
    if isinstance(loss, core.HEMPlusLoss) and not loss._online:
        checks.append(("class_counts", loss._buffers.get("class_counts")))
    for name, values in checks:
        if values is not None and values.numel() and values.numel() != num_classes:
            raise ValueError(
                f"{type(loss).__name__}: {key}{name} has {values.numel()} entries but "
                f"{head}; give one entry per class"
            )


class _MMSegLossMixin:
    """The mmseg side shared by both losses: forward signature, weight, name."""

    loss_weight: float
    _loss_name: str

    def _init_mmseg(
        self, loss_weight: float, loss_name: str, avg_non_ignore: bool, use_sigmoid: bool
    ) -> None:
        self._width_checked = False  # set by the first forward that passes check_num_classes
        if not isinstance(loss_weight, (int, float)) or not math.isfinite(loss_weight):
            raise ValueError(f"loss_weight must be a finite number, got {loss_weight!r}")
        self.loss_weight = float(loss_weight)
        self._loss_name = _check_loss_name(loss_name)
        self.avg_non_ignore = bool(avg_non_ignore)
        self.use_sigmoid = bool(use_sigmoid)

    @property
    def loss_name(self) -> str:
        """Key of this loss in mmseg's loss dict (and the training log)."""
        return self._loss_name

    def forward(
        self,
        cls_score: torch.Tensor,
        label: torch.Tensor,
        weight: torch.Tensor | None = None,
        avg_factor: float | torch.Tensor | None = None,
        reduction_override: str | None = None,
        ignore_index: int | None = 255,
        **kwargs: Any,
    ) -> torch.Tensor:
        """``loss_weight`` times the core loss of ``cls_score`` ``(N, C, H, W)`` vs ``label`` ``(N, H, W)``.

        ``ignore_index`` is the head's (255 by default), used for this call
        only (the module's own ``ignore_index`` stays 255); ``weight`` the
        per-pixel weights of a sampler (``(N, H, W)``), a pixel of weight 0
        takes no part. ``reduction_override`` replaces ``reduction``.
        """
        if reduction_override not in (None, "none", "mean", "sum"):
            raise ValueError(
                f"reduction_override must be None, 'none', 'mean' or 'sum', got {reduction_override!r}"
            )
        if not self._width_checked and cls_score.dim() >= 2:
            check_num_classes(self, int(cls_score.shape[1]))  # type: ignore[arg-type]
            self._width_checked = True
        loss = super().forward(  # type: ignore[misc]
            cls_score,
            label,
            weight=weight,
            avg_factor=avg_factor,
            reduction=reduction_override,
            ignore_index=-100 if ignore_index is None else ignore_index,
        )
        return self.loss_weight * loss


@MODELS.register_module(name="HEMLoss")
class HEMLoss(_MMSegLossMixin, core.HEMLoss):
    """HEM loss for an mmseg decode head: one margin for every pixel.

    ``mu = sqrt(scale / n_images)`` (``docs/design.md`` section 2; Cityscapes' 2975
    training images give 0.82). Config::

        loss_decode=dict(type='HEMLoss')                 # margin set by HEMMarginHook
        loss_decode=dict(type='HEMLoss', margin=0.82)    # or fixed by hand
        loss_decode=dict(type='HEMLoss', num_images=2975)

    Args:
        margin: the margin; None (default) leaves it to :class:`HEMMarginHook`
            (or ``num_images``). Without either the core's fallback margin 1.0
            applies, with a one-time warning.
        num_images: number of training images, sets ``margin`` from ``scale``.
        scale: the paper's constant (:data:`~hem_plugins.margins.DEFAULT_SCALE`, 2000).
        reduction: ``'mean'`` (over kept errors), ``'sum'`` or ``'none'``.
        p: 1, or 2 to square the errors.
        class_weight: ``(C,)`` list or a file (``.npy``, json, yaml, pkl), as
            mmseg's ``CrossEntropyLoss``.
        loss_weight: multiplies the loss.
        loss_name: key in the loss dict; must start with ``loss_``.
        use_sigmoid: must be False (accepted so the swap works over CE configs).
        use_mask: must be False (as above).
        avg_non_ignore: accepted and without effect: the mean is over the kept
            errors, which never include ignored pixels, so the loss already
            averages over non-ignored pixels only.
        divisor: what ``'mean'`` divides by: ``'kept'`` (the kept errors,
            the paper's; default), ``'rows'`` (the valid pixels) or
            ``'floor'`` / ``('floor', f)`` (``max(kept, f * valid pixels)``);
            see :func:`hem_plugins.hem_loss` and ``docs/divisor.md``. An
            ``avg_factor`` passed by the caller takes precedence over it (the
            loss is then ``sum / avg_factor``).

    Shape:
        ``cls_score`` ``(N, C, H, W)``; ``label`` ``(N, H, W)``; output scalar
        (or ``(N, H, W)`` with ``reduction='none'``).

    Example:
        >>> import torch
        >>> loss = HEMLoss(num_images=2975)
        >>> round(float(loss.margins), 2)
        0.82
        >>> label = torch.randint(0, 19, (2, 8, 8))
        >>> label[0, 0, 0] = 255
        >>> loss(torch.randn(2, 19, 8, 8), label, ignore_index=255).shape
        torch.Size([])
    """

    def __init__(
        self,
        margin: float | None = None,
        num_images: int | None = None,
        scale: float = DEFAULT_SCALE,
        reduction: str = "mean",
        p: int = 1,
        class_weight: Sequence[float] | str | None = None,
        loss_weight: float = 1.0,
        loss_name: str = "loss_hem",
        use_sigmoid: bool = False,
        use_mask: bool = False,
        avg_non_ignore: bool = False,
        divisor: str | Sequence = "kept",
        **kwargs: Any,
    ) -> None:
        _check_ce_keys("HEMLoss", use_sigmoid, use_mask, kwargs)
        if margin is not None and num_images is not None:
            raise ValueError("HEMLoss: give margin or num_images, not both")
        cw = _load_class_weight(class_weight)
        core.HEMLoss.__init__(
            self,
            margin,
            scale=scale,
            ignore_index=255,
            reduction=reduction,
            p=p,
            class_weight=cw,
            mask_value=None,
            divisor=tuple(divisor) if isinstance(divisor, list) else divisor,
        )
        if num_images is not None:
            self.set_num_samples(num_images)
        self._init_mmseg(loss_weight, loss_name, avg_non_ignore, use_sigmoid)


@MODELS.register_module(name="HEMPlusLoss")
class HEMPlusLoss(_MMSegLossMixin, core.HEMPlusLoss):
    """HEM+ loss for an mmseg decode head: a margin per class from pixel frequencies.

    ``mu[c] = sqrt(scale / (n * s[c]))`` with image-equivalent counts
    ``s[c] = num_images * pixels[c] / labelled_pixels`` and ``n`` the classes
    present (``docs/design.md`` section 2); each pixel uses its target class's margin.
    Config::

        loss_decode=dict(type='HEMPlusLoss')   # counts from HEMMarginHook, else online
        loss_decode=dict(type='HEMPlusLoss', class_counts='work_dirs/counts.json')
        loss_decode=dict(type='HEMPlusLoss', class_counts=[...], num_images=2975)

    Args:
        class_counts: None (counts set by :class:`HEMMarginHook`, or estimated
            online from the labels seen in training, with a warning); a list
            of ``C`` pixel counts (then ``num_images`` is required); or the
            path of a JSON written by ``tools/class_counts.py``.
        num_images: number of training images (read from the JSON when a path
            is given and this is None).
        scale, reduction, p, class_weight, loss_weight, use_sigmoid, use_mask,
            avg_non_ignore, divisor: as in :class:`HEMLoss`.
        loss_name: default ``loss_hem_plus``.
        margin_rule: None, or a rule that adapts the margins during training,
            e.g. ``'error'`` or ``dict(type='scheduled', warmup_steps=2000)``
            (``docs/adaptive_margins.md``).

    Example:
        >>> import torch
        >>> loss = HEMPlusLoss(class_counts=[9000, 1000], num_images=100)
        >>> loss.margins  # the rare class gets the larger margin
        tensor([ 3.3333, 10.0000])
        >>> loss(torch.randn(2, 2, 4, 4), torch.randint(0, 2, (2, 4, 4))).shape
        torch.Size([])
    """

    def __init__(
        self,
        class_counts: Sequence[float] | str | None = None,
        num_images: int | None = None,
        scale: float = DEFAULT_SCALE,
        reduction: str = "mean",
        p: int = 1,
        class_weight: Sequence[float] | str | None = None,
        loss_weight: float = 1.0,
        loss_name: str = "loss_hem_plus",
        use_sigmoid: bool = False,
        use_mask: bool = False,
        avg_non_ignore: bool = False,
        margin_rule: str | dict | None = None,
        divisor: str | Sequence = "kept",
        **kwargs: Any,
    ) -> None:
        _check_ce_keys("HEMPlusLoss", use_sigmoid, use_mask, kwargs)
        self.counts_file = None
        counts = class_counts
        if isinstance(class_counts, str):
            data = load_class_counts(class_counts)
            self.counts_file = class_counts
            counts = data["counts"]
            if num_images is None:
                num_images = data["num_images"]
        elif class_counts is not None:
            if isinstance(class_counts, torch.Tensor):
                counts = class_counts.tolist()
            try:
                counts = [float(c) for c in counts]
            except (TypeError, ValueError) as err:
                raise ValueError(
                    "HEMPlusLoss: class_counts must be None, a list of pixel counts or a "
                    f"JSON path, got {class_counts!r}"
                ) from err
            if num_images is None:
                raise ValueError(
                    "HEMPlusLoss: class_counts given as a list of pixel counts needs "
                    "num_images (the number of training images) to turn them into "
                    "image-equivalent counts"
                )
        cw = _load_class_weight(class_weight)
        core.HEMPlusLoss.__init__(
            self,
            counts,
            num_samples=num_images,
            scale=scale,
            ignore_index=255,
            reduction=reduction,
            p=p,
            class_weight=cw,
            mask_value=None,
            margin_rule=margin_rule,
            divisor=tuple(divisor) if isinstance(divisor, list) else divisor,
        )
        self._init_mmseg(loss_weight, loss_name, avg_non_ignore, use_sigmoid)
