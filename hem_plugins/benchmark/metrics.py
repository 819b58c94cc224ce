"""Metrics from well-kept libraries: torchmetrics (accuracy, calibration error)
and scikit-learn (AUROC, ROC curve for FPR at 95 % TPR)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
)


def classification_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict:
    """``acc``, ``balanced_acc`` (mean per-class recall), ``per_class_acc``,
    ``ece`` (15 bins, L1, on softmax confidences) and ``nll`` (cross-entropy of the logits)."""
    c = logits.shape[1]
    probs = logits.float().softmax(1)
    per_class = multiclass_accuracy(probs, target, num_classes=c, average=None)
    return {
        "acc": float(multiclass_accuracy(probs, target, num_classes=c, average="micro")),
        "balanced_acc": float(multiclass_accuracy(probs, target, num_classes=c, average="macro")),
        "per_class_acc": [float(v) for v in per_class],
        "ece": float(
            multiclass_calibration_error(probs, target, num_classes=c, n_bins=15, norm="l1")
        ),
        "nll": float(F.cross_entropy(logits.float(), target)),
    }


def _fpr_at_tpr(y_true: np.ndarray, score: np.ndarray, tpr_level: float = 0.95) -> float:
    fpr, tpr, _ = roc_curve(y_true, score)
    return float(fpr[np.searchsorted(tpr, tpr_level, side="left")])


def msp(logits: torch.Tensor) -> torch.Tensor:
    """Maximum softmax probability."""
    return logits.float().softmax(1).amax(1)


def open_set_metrics(known_logits: torch.Tensor, unknown_logits: torch.Tensor) -> dict:
    """Known (positive) vs unknown samples scored by MSP and by the max logit (MLS):
    ``auroc_msp``, ``fpr95_msp``, ``auroc_mls``, ``fpr95_mls`` (FPR at 95 % TPR)."""
    y = np.r_[np.ones(len(known_logits)), np.zeros(len(unknown_logits))]
    out = {}
    for name, fn in (("msp", msp), ("mls", lambda z: z.float().amax(1))):
        s = torch.cat([fn(known_logits), fn(unknown_logits)]).numpy().astype(np.float64)
        out[f"auroc_{name}"] = float(roc_auc_score(y, s))
        out[f"fpr95_{name}"] = _fpr_at_tpr(y, s)
    return out
