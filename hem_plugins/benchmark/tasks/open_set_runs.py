"""The open-set runs that 3a (``openset``) and 3f (``ablation``) share, and their table.

Each dataset is cut into its known classes (``known_classes``, default the first 60 %),
on which every loss trains, and the test samples of the other classes, the unknowns.
A run records accuracy, ECE and NLL on the known test classes, AUROC and FPR at 95 % TPR
of known against unknown samples (MSP and max-logit scores), the health and margin
diagnostics, and the MSP histograms of both.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..data import Split, open_set
from ..losses import MARGIN_LOSSES, loss_label
from ..metrics import classification_metrics, msp, open_set_metrics
from ..protocol import health_cell, min_train_acc, selection_key
from ..training import predict
from .base import Context
from .classification import ClassificationRun, ClassificationTask, Trained
from .sections import aggregate, diagnostics_cells, fmt, md_table

#: Bins of the MSP histograms over [0, 1] that the records keep.
HIST_BINS = 20


class OpenSetClassification(ClassificationTask):
    """Train on the known classes, measure the rejection of the unknown ones."""

    test_diagnostics = True

    @staticmethod
    def planned(settings: dict) -> list[tuple[str, float | None]]:
        """``(loss, margin_scale)`` of every run: the losses, then HEM at each
        ``margin_scales`` entry (the margin-sensitivity table of 3a)."""
        runs: list[tuple[str, float | None]] = [(loss, None) for loss in settings["losses"]]
        runs += [("hem", float(sc)) for sc in settings.get("margin_scales", [])]
        return runs

    def units(self, settings: dict) -> int:
        return len(settings["datasets"]) * len(self.planned(settings))

    def runs(
        self, settings: dict, dataset: str, data: Split, data_seed: int
    ) -> Iterator[ClassificationRun]:
        known = settings.get("known_classes") or list(range(data.num_classes * 6 // 10))
        split, x_unknown = open_set(data, known)
        for loss, scale in self.planned(settings):
            run_settings, group = settings, {"dataset": dataset, "loss": loss}
            if scale is not None:
                opts = {**settings.get("loss_options", {}), "margin_scale": scale}
                run_settings = {**settings, "loss_options": opts}
                group["margin_scale"] = scale
            key = selection_key(dataset, loss if scale is None else f"{loss}@scale={scale:g}")
            yield ClassificationRun(split, loss, key, group, f"{dataset} {loss}", run_settings,
                                    {"known": known, "x_unknown": x_unknown})  # fmt: skip

    def records(self, run: ClassificationRun, trained: Trained, ctx: Context) -> list[dict]:
        split = run.split
        z_known = predict(trained.model, split.x_test, ctx.device)
        z_unknown = predict(trained.model, run.data["x_unknown"], ctx.device)
        cls = classification_metrics(z_known, split.y_test)
        metrics = {k: cls[k] for k in ("acc", "ece", "nll")}
        metrics.update(open_set_metrics(z_known, z_unknown))
        metrics.update(trained.health(run.loss in MARGIN_LOSSES))
        edges = np.linspace(0, 1, HIST_BINS + 1)
        extra = {
            **trained.extra(),
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
