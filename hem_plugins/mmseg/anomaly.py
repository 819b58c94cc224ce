"""``AnomalyMetric``: pixel-level unknown rejection (anomaly segmentation) from ``seg_logits``.

The scores (``msp``, ``max_logit``, ``energy``), the metrics (AUROC, AP, FPR95) and the
error bound of their fixed-bin histograms are :mod:`hem_plugins.unknown`'s.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmseg.registry import METRICS

from ..unknown import SCORES, bin_index, histogram_metrics, unknownness

__all__ = ["AnomalyMetric", "AnomalyMetricWarning"]


class AnomalyMetricWarning(UserWarning):
    """``AnomalyMetric`` saw no anomaly (or no known-class) pixel: its metrics are NaN."""


@METRICS.register_module()
class AnomalyMetric(BaseMetric):
    """AUROC, AP and FPR95 (percent, keys ``<score>/AUROC`` ...) of each unknownness score.

    Positives: pixels labelled ``anomaly_label``; negatives: pixels of a known class
    (``0 <= label < C``, ``C`` the logits' channels); the rest (``ignore_index``, other
    labels) is left out. Nothing per pixel is kept: each image appends, per score, the
    sparse counts of its positives and negatives in ``num_bins`` bins (``msp`` over
    ``[0, 1]``, ``max_logit``/``energy`` over ``score_range``, clamped), which mmengine
    gathers across DDP ranks and ``compute_metrics`` sums; the metrics of the summed
    histograms are within the logged bounds of the exact ones (:mod:`hem_plugins.unknown`).

    ``ValueError``: ``anomaly_label == ignore_index``, an unknown score, bad ``num_bins`` or
    ``score_range``; at ``process`` an ``anomaly_label < C`` or one-channel logits (and
    ``KeyError`` without ``seg_logits``). No positive (or negative) pixel at compute
    time: an :class:`AnomalyMetricWarning` and NaN metrics.
    """

    def __init__(self, anomaly_label: int = 254, ignore_index: int = 255,
                 scores: Sequence[str] = SCORES, num_bins: int = 10000,
                 score_range: Sequence[float] = (-50.0, 50.0), collect_device: str = "cpu",
                 prefix: str | None = None) -> None:  # fmt: skip
        super().__init__(collect_device=collect_device, prefix=prefix)
        if int(anomaly_label) == int(ignore_index):
            raise ValueError(f"AnomalyMetric: anomaly_label ({anomaly_label}) must differ "
                             f"from ignore_index ({ignore_index})")  # fmt: skip
        scores = (scores,) if isinstance(scores, str) else tuple(scores)
        bad = [s for s in scores if s not in SCORES]
        if bad or not scores:
            raise ValueError(f"AnomalyMetric: unknown score(s) {bad}; use some of {SCORES}")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"AnomalyMetric: num_bins must be an int >= 1, got {num_bins!r}")
        low, high = (float(v) for v in score_range)
        if not low < high:
            raise ValueError(f"AnomalyMetric: score_range must be (low, high), got {score_range!r}")
        self.anomaly_label, self.ignore_index = int(anomaly_label), int(ignore_index)
        self.scores = tuple(dict.fromkeys(scores))
        self.num_bins, self.score_range = num_bins, (low, high)

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if "seg_logits" not in sample:
                raise KeyError("AnomalyMetric needs the decode head's 'seg_logits' (mmseg's "
                               "segmentors set them in predict mode)")  # fmt: skip
            logits = sample["seg_logits"]["data"]
            c = logits.shape[0]
            if c < 2 or 0 <= self.anomaly_label < c:
                raise ValueError(f"AnomalyMetric: needs softmax logits of >= 2 classes and an "
                                 f"anomaly_label outside them; got {c} classes, anomaly_label "
                                 f"{self.anomaly_label}")  # fmt: skip
            label = sample["gt_sem_seg"]["data"].squeeze(0).to(logits.device)
            masks = {"pos": label == self.anomaly_label, "neg": (label >= 0) & (label < c)}
            result = {}
            for score in self.scores:
                low, high = (0.0, 1.0) if score == "msp" else self.score_range
                idx, clamped = bin_index(
                    unknownness(logits, score, dim=0), low, high, self.num_bins
                )
                result[score] = {"clamped": clamped}
                for name, mask in masks.items():
                    bins, counts = torch.unique(idx[mask], return_counts=True)
                    result[score][name] = (bins.int().cpu(), counts.cpu())
            self.results.append(result)

    def histograms(self, results: list) -> dict[str, tuple[torch.Tensor, torch.Tensor, int]]:
        """Per score, the summed ``(positives, negatives, clamped)`` of ``results``."""
        out = {}
        for score in self.scores:
            hist = {k: torch.zeros(self.num_bins, dtype=torch.int64) for k in ("pos", "neg")}
            for r in results:
                for k, h in hist.items():
                    h.index_add_(0, r[score][k][0].long(), r[score][k][1].long())
            out[score] = (hist["pos"], hist["neg"], sum(r[score]["clamped"] for r in results))
        return out

    def compute_metrics(self, results: list) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for score, (pos, neg, clamped) in self.histograms(results).items():
            m = histogram_metrics(pos, neg)
            if math.isnan(m["AUROC"]):
                what = "anomaly" if int(pos.sum()) == 0 else "known-class"
                warnings.warn(f"AnomalyMetric: no {what} pixel in {len(results)} images "
                              f"(anomaly_label={self.anomaly_label}); the {score} metrics are NaN",
                              AnomalyMetricWarning, stacklevel=2)  # fmt: skip
            metrics.update({f"{score}/{k}": 100.0 * m[k] for k in ("AUROC", "AP", "FPR95")})
            print_log(f"AnomalyMetric {score}: {int(pos.sum())} anomaly / {int(neg.sum())} known "
                      f"pixels, {clamped} clamped; error bounds (fractions): AUROC "
                      f"{m['AUROC_bound']:.2g}, AP {m['AP_bound']:.2g}, FPR95 "
                      f"{m['FPR95_bound']:.2g}", logger="current")  # fmt: skip
        return metrics
