"""Unknown rejection scores and their metrics from fixed-bin histograms (torch only).

What ``AnomalyMetric`` of :mod:`hem_plugins.mmseg` computes, kept toolkit-free.

Scores. Each sample (pixel) gets an *unknownness* ``u`` (higher = more anomalous)
from its logits ``z`` over the ``C`` known classes, as in the OoD-segmentation
literature: ``'msp'``: ``u = 1 - max softmax(z)`` (maximum softmax probability, in
``[0, 1]``); ``'max_logit'``: ``u = -max z``; ``'energy'``: ``u = -logsumexp(z)`` (the
free energy at temperature 1).

Metrics, with the anomalies as positive class, as SegmentMeIfYouCan and Fishyscapes
define them: ``AUROC``; ``AP``, average precision with scikit-learn's definition (the
precision at each threshold weighted by the recall gained there, no interpolation);
``FPR95``, the false-positive rate at the first threshold, going down from the highest
``u``, whose true-positive rate reaches 95 %.

Histograms. :func:`bin_index` quantises ``u`` into ``num_bins`` equal bins over a
fixed range (values outside are clamped into the end bins); :func:`histogram_metrics`
computes the metrics from the per-bin counts of positives and negatives with every
threshold at a bin edge. They are the *exact* metrics of the quantised scores, the
samples of one bin counting as tied (as scikit-learn treats equal scores).

Error bound. Against the unquantised scores the difference comes only from positives
and negatives that share a bin. With ``P_b``, ``N_b`` the positives and negatives of bin
``b``, ``P``, ``N`` their totals, and ``T_b``, ``F_b`` the positives and negatives in
the bins above ``b``:

* ``|AUROC - exact| <= sum_b P_b N_b / (2 P N)`` (a pair within one bin counts 1/2
  instead of 0 or 1);
* ``|AP - exact| <= sum_b (P_b / P) (hi_b - lo_b)``, ``hi_b = (T_b + P_b) / (T_b + P_b +
  F_b)``, ``lo_b = (T_b + 1) / (T_b + 1 + F_b + N_b)`` (the exact precision of any
  positive of bin ``b``, and the histogram's, lie in ``[lo_b, hi_b]``);
* ``|FPR95 - exact| <= N_k / N`` for the bin ``k`` in which the TPR reaches 95 %.

Each bound is at most the mass sharing a bin, which shrinks with the bin width
``(high - low) / num_bins`` for scores with a density; clamped values all share an end
bin, and the bounds, computed from the histograms, still hold.
:func:`histogram_metrics` returns them beside the metrics.
"""

from __future__ import annotations

import math

import torch

__all__ = ["SCORES", "bin_index", "histogram_metrics", "unknownness"]

SCORES = ("msp", "max_logit", "energy")


def unknownness(logits: torch.Tensor, score: str, dim: int = 1) -> torch.Tensor:
    """The unknownness ``u`` of ``logits`` (classes along ``dim``), in float32 or wider."""
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    if score == "msp":
        return 1.0 - torch.softmax(z, dim=dim).amax(dim=dim)
    if score == "max_logit":
        return -z.amax(dim=dim)
    if score == "energy":
        return -torch.logsumexp(z, dim=dim)
    raise ValueError(f"unknown score {score!r}; use one of {SCORES}")


def bin_index(u: torch.Tensor, low: float, high: float, num_bins: int) -> tuple[torch.Tensor, int]:
    """``(bins, clamped)``: the bin of each value of ``u`` (``num_bins`` equal bins over
    ``[low, high]``, outside values clamped to the end bins) and how many were outside."""
    if not torch.isfinite(u).all():
        raise ValueError("unknownness scores must be finite (NaN or inf logits?)")
    clamped = int(((u < low) | (u > high)).sum())
    idx = ((u.double() - low) * (num_bins / (high - low))).floor().long()
    return idx.clamp_(0, num_bins - 1), clamped


def histogram_metrics(pos, neg, tpr_level: float = 0.95) -> dict[str, float]:
    """AUROC, AP, FPR at ``tpr_level`` TPR (fractions) and their error bounds.

    ``pos``/``neg``: counts of positives/negatives per bin, bins in increasing order of
    the score (high = positive). Returns ``dict(AUROC, AP, FPR95, AUROC_bound, AP_bound,
    FPR95_bound)`` (module docstring); all NaN when ``pos`` or ``neg`` is empty.
    """
    p = torch.as_tensor(pos, dtype=torch.float64).flip(0)  # from the top bin down
    n = torch.as_tensor(neg, dtype=torch.float64).flip(0)
    n_pos, n_neg = float(p.sum()), float(n.sum())
    keys = ("AUROC", "AP", "FPR95", "AUROC_bound", "AP_bound", "FPR95_bound")
    if n_pos == 0 or n_neg == 0:
        return dict.fromkeys(keys, math.nan)
    tp, fp = p.cumsum(0), n.cumsum(0)  # at the threshold of each bin's lower edge
    zero = torch.zeros(1, dtype=torch.float64)
    tpr, fpr = torch.cat([zero, tp / n_pos]), torch.cat([zero, fp / n_neg])
    auroc = float(((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2).sum())
    hit = p > 0
    ap = float((p[hit] / n_pos * tp[hit] / (tp[hit] + fp[hit])).sum())
    k = int(torch.searchsorted(tpr[1:], torch.tensor([tpr_level - 1e-12], dtype=torch.float64)))
    t_above, f_above = tp - p, fp - n
    hi = (t_above + p) / (t_above + p + f_above).clamp(min=1.0)
    lo = (t_above + 1) / (t_above + 1 + f_above + n)
    return dict(AUROC=auroc, AP=ap, FPR95=float(fpr[1:][k]),
                AUROC_bound=float((p * n).sum()) / (2 * n_pos * n_neg),
                AP_bound=float((p / n_pos * (hi - lo))[hit].sum()),
                FPR95_bound=float(n[k]) / n_neg)  # fmt: skip
