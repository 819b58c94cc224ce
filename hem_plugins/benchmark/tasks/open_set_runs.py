"""The open-set runs that 3a (``openset``) and 3f (``ablation``) share, and their table.

Each dataset is cut into its known classes (``known_classes``, default the first 60 %),
on which every loss trains, and the test samples of the other classes, the unknowns.
A run records accuracy, ECE and NLL on the known test classes, AUROC and FPR at 95 % TPR
of known against unknown samples (MSP and max-logit scores), the health and margin
diagnostics, and the MSP histograms of both.

Every run, whatever its loss, also records the logit statistics of :func:`logit_stats`
on the known test samples and on the unknowns: the top-1 minus top-2 logit gap (raw, and
in units of *HEM's default margin* for the dataset, ``gap_hem_margins_*``: one unit for
every loss, so that CE, MM, HEM and LogitNorm compare), and the share of (sample, wrong
class) entries that HEM's threshold would keep at that margin (``kept_hem_*``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ... import margin_for_dataset
from ...settled import kept_mask
from ..data import Split, open_set
from ..losses import MARGIN_LOSSES, loss_label
from ..metrics import classification_metrics, msp, open_set_metrics
from ..protocol import health_cell, min_train_acc, selection_key
from ..training import predict, row_margins
from .base import Context
from .classification import ClassificationRun, ClassificationTask, Trained
from .sections import aggregate, diagnostics_cells, fmt, md_table

#: Bins of the MSP histograms over [0, 1] that the records keep.
HIST_BINS = 20


@torch.no_grad()
def logit_stats(logits: torch.Tensor, target: torch.Tensor | None, hem_margin: float,
                own_margin=None, part: str = "known") -> dict[str, float]:  # fmt: skip
    """The gap and kept statistics of one set of samples (``part``: known / unknown).

    * ``gap_<part>``: mean top-1 minus top-2 logit over every sample of the set (not only
      the correctly classified ones, unlike the training diagnostic ``gap_over_margin``);
    * ``gap_hem_margins_<part>``: the same in units of ``hem_margin`` (HEM's default
      margin for the dataset, whatever loss trained);
    * ``kept_hem_<part>``: the share of the entries (j, i != t_j) whose HEM error at
      ``hem_margin`` lies above the set's mean error (HEM's threshold, computed over the
      whole set at once by :func:`hem_plugins.settled.kept_mask`), over N C like the training
      diagnostic ``kept_fraction``;
    * ``settled_hem_<part>``: the share of samples classified as their target whose every
      error is zero at that margin (top logit ahead of the others by ``hem_margin``);
    * ``gap_own_margins_<part>`` (a loss with a margin only): the gap in the loss's own
      margins (HEM at another margin scale, HEM+'s per-class margins).

    ``target`` None (the unknowns, which have no class of the task): each sample's predicted
    class stands in as its target, so its errors measure how far the other logits lie
    below the top one.
    """
    z = logits.float()
    t = z.argmax(1) if target is None else target
    top2 = z.topk(2, dim=1).values
    gap = top2[:, 0] - top2[:, 1]
    n, c = z.shape
    kept = int(kept_mask(z, t, float(hem_margin)).sum())
    settled = (gap >= hem_margin) & (z.argmax(1) == t)
    out = {
        f"gap_{part}": float(gap.mean()),
        f"gap_hem_margins_{part}": float(gap.mean()) / float(hem_margin),
        f"kept_hem_{part}": kept / max(n * c, 1),
        f"settled_hem_{part}": float(settled.float().mean()),
    }
    if own_margin is not None:
        out[f"gap_own_margins_{part}"] = float((gap / row_margins(own_margin, t)).mean())
    return out


class OpenSetClassification(ClassificationTask):
    """Train on the known classes, measure the rejection of the unknown ones."""

    test_diagnostics = True

    @staticmethod
    def planned(settings: dict) -> list[tuple[str, float | None]]:
        """``(loss, margin_scale)`` of every run: the losses, then HEM at each
        ``margin_scales`` entry (the margin-sensitivity table of 3a), which trains with the
        lr chosen for HEM at the default scale (so HEM must be among the losses)."""
        runs: list[tuple[str, float | None]] = [(loss, None) for loss in settings["losses"]]
        scales = settings.get("margin_scales") or []
        if scales and "hem" not in settings["losses"]:
            raise ValueError(
                "margin_scales: HEM's runs at other margins train with the lr chosen for "
                "'hem', which is not among the task's losses"
            )
        runs += [("hem", float(sc)) for sc in scales]
        return runs

    def units(self, settings: dict) -> int:
        return len(settings["datasets"]) * len(self.planned(settings))

    def runs(
        self, settings: dict, dataset: str, data: Split, data_seed: int
    ) -> Iterator[ClassificationRun]:
        known = settings.get("known_classes") or list(range(data.num_classes * 6 // 10))
        split, x_unknown = open_set(data, known)
        default_scale = float(settings.get("loss_options", {}).get("margin_scale", 2000.0))
        data = {"known": known, "x_unknown": x_unknown, "hem_margin_scale": default_scale}
        for loss, scale in self.planned(settings):
            run_settings, group = settings, {"dataset": dataset, "loss": loss}
            params_from = None
            if scale is not None:  # the margin sweep: only the margin moves, not the lr
                opts = {**settings.get("loss_options", {}), "margin_scale": scale}
                run_settings = {**settings, "loss_options": opts}
                group["margin_scale"] = scale
                params_from = selection_key(dataset, loss)
            key = selection_key(dataset, loss if scale is None else f"{loss}@scale={scale:g}")
            yield ClassificationRun(split, loss, key, group, f"{dataset} {loss}", run_settings,
                                    data, params_from)  # fmt: skip

    def records(self, run: ClassificationRun, trained: Trained, ctx: Context) -> list[dict]:
        split = run.split
        z_known = predict(trained.model, split.x_test, ctx.device)
        z_unknown = predict(trained.model, run.data["x_unknown"], ctx.device)
        cls = classification_metrics(z_known, split.y_test)
        metrics = {k: cls[k] for k in ("acc", "ece", "nll")}
        metrics.update(open_set_metrics(z_known, z_unknown))
        metrics.update(trained.health(run.loss in MARGIN_LOSSES))
        # HEM's default margin for this training part, the unit of every loss's statistics
        hem_margin = margin_for_dataset(trained.part.n_train, run.data["hem_margin_scale"])
        own = trained.hist.get("margin")
        metrics.update(logit_stats(z_known, split.y_test, hem_margin, own, "known"))
        metrics.update(logit_stats(z_unknown, None, hem_margin, own, "unknown"))
        edges = np.linspace(0, 1, HIST_BINS + 1)
        extra = {
            **trained.extra(),
            "hem_margin": hem_margin,
            "known_classes": run.data["known"],
            "msp_hist_known": np.histogram(msp(z_known).numpy(), edges)[0].tolist(),
            "msp_hist_unknown": np.histogram(msp(z_unknown).numpy(), edges)[0].tolist(),
        }
        return [{"group": run.group, "metrics": metrics, "extra": extra}]

    @staticmethod
    def main_run(group: dict) -> bool:
        """True for a run of the losses (not of the margin-sensitivity table)."""
        return "margin_scale" not in group

    def results_table(self, result: dict) -> tuple[str, dict]:
        """The table of the losses' runs per dataset, and its aggregate."""
        min_acc = min_train_acc(result["settings"])
        agg = aggregate(result, ("dataset", "loss"), where=self.main_run)
        header = ["dataset", "loss", "healthy runs", "acc %", "AUROC MSP %", "AUROC MLS %",
                  "FPR95 MSP %", "FPR95 MLS %", "ECE %", "NLL", "kept %", "gap / margin"]  # fmt: skip
        rows = []
        for (ds, loss), m in agg.items():
            rows.append(
                [ds, loss_label(loss), health_cell(m, min_acc)]
                + [
                    fmt(m.get(k))
                    for k in ("acc", "auroc_msp", "auroc_mls", "fpr95_msp", "fpr95_mls", "ece")
                ]
                + [fmt(m.get("nll"), 1.0, 3)]
                + diagnostics_cells(m)
            )
        return md_table(header, rows), agg
