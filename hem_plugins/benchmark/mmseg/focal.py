"""``OneHotFocalLoss``: mmseg's sigmoid ``FocalLoss``, given one-hot targets so it runs on a CPU.

mmseg 1.2.2's ``FocalLoss.forward`` turns integer labels into one-hot rows with
``target[:, num_classes]`` where ``target[:, :num_classes]`` is meant on its CPU path
(open-mmlab/mmsegmentation#3249, open), so a multi-class head fails with "The size of
tensor a (C) must match the size of tensor b (N)" off the GPU. This subclass hands it
one-hot targets ``(N, C, H, W)`` instead, the input form that both its CPU and its CUDA
path read correctly, and carries the ignored pixels in ``weight``. The focal math is
mmseg's own, untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmseg.models.losses import FocalLoss
from mmseg.registry import MODELS

__all__ = ["OneHotFocalLoss"]


@MODELS.register_module()
class OneHotFocalLoss(FocalLoss):
    """mmseg's ``FocalLoss`` (sigmoid; same arguments) for integer label maps ``(N, H, W)``.

    Config::

        loss_decode=dict(type='OneHotFocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.5)
    """

    def forward(
        self, pred, target, weight=None, avg_factor=None, reduction_override=None,
        ignore_index=255, **kwargs,
    ):  # fmt: skip
        if target.shape == pred.shape:  # already one-hot
            return super().forward(pred, target, weight, avg_factor, reduction_override,
                                   ignore_index, **kwargs)  # fmt: skip
        num_classes = pred.size(1)
        valid = target != ignore_index
        onehot = F.one_hot(torch.where(valid, target, 0).long(), num_classes)
        onehot = onehot.permute(0, 3, 1, 2).to(pred.dtype)
        # FocalLoss flattens pixels in (N, H, W) order; a weight of one value per pixel.
        pixel_weight = valid.to(pred.dtype) if weight is None else weight * valid
        return super().forward(pred, onehot, pixel_weight.reshape(-1), avg_factor,
                               reduction_override, ignore_index, **kwargs)  # fmt: skip
