"""Anomaly segmentation: do HEM / HEM+ reject unknown objects better than CE (and LogitNorm)?
(DigitMosaic with the digits 8 and 9 unknown, mmseg; ``docs/anomaly_segmentation.md``).

Each loss trains its config ``configs/mmseg/fcn-r18tiny_digitmosaic_anomaly_<loss>.py``
(``DigitMosaicAnomalyDataset(unknown_digits=(8, 9))``: 9 known classes, no 8 or 9 in the
training mosaics; in the 100 ``val`` mosaics, the test set, their pixels are labelled 254)
with 3e's recipe through :mod:`.seg_runs`: the same optimiser, batch size and carve of the
training images, the profile's ``iters`` (beyond: 900 of 3e's 1200, for the budget). The lr
is 3e's: the selection key is 3e's (``digitmosaic/iters=<lr_iters>/<loss>``,
:func:`lr_settings`), whose owner is ``segmentation`` (:data:`..protocol.SELECTION_OWNERS`),
so in ``"tuned"`` mode the task reads the lr 3e chose on its validation images, and in
``"validation"`` mode it chooses one itself by known-class mIoU on the validation carve at
its own ``iters`` (no anomaly pixel is seen by a selection). LogitNorm (tau 0.04 in its config)
has no 3e entry: its lr is always chosen inside the task, on the validation carve by
known-class mIoU at the task's ``iters``, over its own grid ``own_lr[loss]``
(:data:`OWN_LR`, :func:`own_lr_settings`).

The kept model is evaluated on the test mosaics with the config's ``test_evaluator``
(mmseg's ``IoUMetric`` over the known classes, and ``AnomalyMetric``: AUROC, AP, FPR95 of
the anomaly pixels against the known ones, for max softmax probability, max logit and
energy) and on its training part (``train_acc``: IoUMetric's mAcc, the health check). The
first seed's records also keep, for one test mosaic, the image, its labels and each score
map, for the report's figure.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import torch

from ...resources import config_path, display_path
from .. import protocol
from ..losses import loss_label
from .base import BaseTask, Context, seeds_to_run
from .sections import aggregate, fmt, md_table, per_seed_table, records, save_figure
from .seg_runs import (
    FIT_METRIC,
    carve_options,
    evaluate_run,
    grid_units,
    recipe_options,
    select_and_train,
)

CONFIG_SUFFIX = {"ce": "ce", "hem": "hem", "hem_plus": "hemplus", "logitnorm": "logitnorm"}
#: Losses 3e does not train (no lr of 3e's to read): chosen on validation inside the task.
OWN_LR = ("logitnorm",)
#: The unknownness scores recorded (AnomalyMetric's names) and their labels.
SCORES = {"msp": "max softmax prob.", "max_logit": "max logit", "energy": "energy"}
#: AnomalyMetric's measures (percent); FPR95 is lower-better.
MEASURES = ("AUROC", "AP", "FPR95")
#: ``(ours, theirs)``: the claim "ours rejects unknown pixels better" (AUROC) per score.
CLAIMS = (("hem", "ce"), ("hem_plus", "ce"), ("hem", "logitnorm"))
CLAIM_SCORES = ("msp", "max_logit")
ANOMALY_LABEL = 254
#: Known-class evaluation only (the validation carve and the training part hold no anomaly).
IOU_ONLY = dict(type="IoUMetric", iou_metrics=["mIoU"])


def metric_names() -> list[str]:
    """The record's anomaly metrics: ``"msp/AUROC"``, ..., ``"energy/FPR95"``."""
    return [f"{s}/{m}" for s in SCORES for m in MEASURES]


def record_metrics(test: dict, fit: dict, diverged: bool) -> dict[str, float]:
    """A record's metrics from the test evaluation (IoUMetric + AnomalyMetric, percent) and the
    training-part evaluation (IoUMetric): mIoU, mAcc, every anomaly metric, ``train_acc`` (a
    fraction) and ``diverged``. A metric an evaluator did not return is an error naming it."""
    want = ["mIoU", "mAcc", *metric_names()]
    missing = [m for m in want if m not in test] + [FIT_METRIC] * (FIT_METRIC not in fit)
    if missing:
        raise RuntimeError(
            f"anomaly_segmentation: the evaluators returned no {missing}; the config's "
            "test_evaluator must hold IoUMetric and AnomalyMetric(scores=('msp', 'max_logit', "
            "'energy'))"
        )
    out = {m: float(test[m]) for m in want}
    out["train_acc"] = float(fit[FIT_METRIC]) / 100.0
    out["diverged"] = float(diverged)
    return out


def pack_array(a: np.ndarray, dtype: str) -> dict:
    """``a`` as ``{"shape", "dtype", "b64"}``: its bytes in ``dtype`` (``"uint8"`` or
    ``"float16"``), base64 (a score map is 4,096 numbers: a list would be ~100 kB of JSON)."""
    if dtype not in ("uint8", "float16"):
        raise ValueError(f"pack_array: dtype must be 'uint8' or 'float16', got {dtype!r}")
    a = np.asarray(a)
    if dtype == "uint8" and (a.min() < 0 or a.max() > 255):
        raise ValueError(f"pack_array: values {a.min()}..{a.max()} do not fit uint8")
    raw = np.ascontiguousarray(a.astype(dtype)).tobytes()
    return {"shape": list(a.shape), "dtype": dtype, "b64": base64.b64encode(raw).decode("ascii")}


def unpack_array(packed: dict) -> np.ndarray:
    """The array of :func:`pack_array`'s dict (as float32 for float16)."""
    raw = base64.b64decode(packed["b64"])
    a = np.frombuffer(raw, dtype=packed["dtype"]).reshape(packed["shape"])
    return a.astype(np.float32) if packed["dtype"] == "float16" else a.copy()


def score_maps(runner, loader: dict, anomaly_label: int = ANOMALY_LABEL) -> dict:
    """For the first test mosaic holding anomaly pixels: its ``image`` (HxWx3 RGB), ``label``
    (HxW) and the ``msp`` and ``max_logit`` maps of the runner's model (in eval mode), each
    packed by :func:`pack_array`."""
    model = runner.model
    model.eval()
    for batch in runner.build_dataloader(loader):
        with torch.no_grad():
            outs = model.test_step(batch)
        for inp, out in zip(batch["inputs"], outs, strict=True):
            label = out.gt_sem_seg.data[0].cpu().numpy()
            if not (label == anomaly_label).any():
                continue
            logits = out.seg_logits.data.float()
            return {
                "image": pack_array(inp.flip(0).permute(1, 2, 0).cpu().numpy(), "uint8"),
                "label": pack_array(label, "uint8"),
                "msp": pack_array(logits.softmax(0).amax(0).cpu().numpy(), "float16"),
                "max_logit": pack_array(logits.amax(0).cpu().numpy(), "float16"),
            }
    raise RuntimeError("anomaly_segmentation: no test mosaic holds an anomaly pixel")


class AnomalySegmentationTask(BaseTask):
    name = "anomaly_segmentation"
    title = "Anomaly segmentation (DigitMosaic with unknown digits, mmseg)"
    claim = (
        "A margin loss keeps the known classes' logits apart, so pixels of objects never "
        "seen in training get a lower confidence: HEM and HEM+ reject unknown objects better "
        "than CE (higher AUROC of the anomaly pixels, by max softmax probability and by max logit); "
        "HEM also against LogitNorm, a loss made to curb overconfidence."
    )

    def units(self, settings: dict) -> int:
        own = [loss for loss in settings["losses"] if loss in OWN_LR]
        rest = [loss for loss in settings["losses"] if loss not in OWN_LR]
        return grid_units(settings, rest) + sum(grid_units(own_lr_settings(settings, loss), [loss])
                                                for loss in own)  # fmt: skip

    def config_for(self, settings: dict, loss: str) -> Path:
        if loss not in CONFIG_SUFFIX:
            raise ValueError(
                f"anomaly_segmentation: unknown loss {loss!r}; choose from {sorted(CONFIG_SUFFIX)}"
            )
        return config_path(settings["config"].format(loss=CONFIG_SUFFIX[loss]))

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        if self.skip_seed(settings, seed, ctx):
            return {"records": []}
        first = seed == seeds_to_run(settings)[0]
        return {"records": [self.run_loss(settings, loss, seed, ctx, first)
                            for loss in settings["losses"]]}  # fmt: skip

    def run_loss(self, settings: dict, loss: str, seed: int, ctx: Context, maps: bool) -> dict:
        config = self.config_for(settings, loss)
        iters = int(settings["iters"])
        data_seed, init_seed = protocol.run_seeds(settings, seed)
        base = {
            **recipe_options(settings, iters, init_seed, keep_checkpoint=ctx.keep_checkpoints),
            **carve_options(protocol.val_fraction(settings), data_seed),
            # the validation carve comes from the training images: no anomaly pixel there
            "val_evaluator": [IOU_ONLY],
        }
        work_dir = (ctx.work_dir or Path("work_dirs")) / self.name / f"{loss}_{seed}"
        params, record, run = select_and_train(
            own_lr_settings(settings, loss) if loss in OWN_LR else lr_settings(settings),
            self.name, loss, config, base, work_dir,
            lambda lr: ctx.advance(f"{self.name} {loss} lr {lr:g} {iters} it seed {seed}"),
        )  # fmt: skip
        test, fit = evaluate_run(run, IOU_ONLY)
        extra = {
            "iters": iters,
            "config": display_path(config),
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "lr": float(params["lr"]),
            "n_train": len(run.runner.train_dataloader.dataset),
            "data_seed": data_seed,
            "init_seed": init_seed,
            "selection": record,
            "lr_selected_on": record["lr_selected_on"],
        }
        if maps:
            from .seg_runs import loader_test_images

            extra["score_maps"] = score_maps(run.runner, loader_test_images(run.runner.cfg))
        return {
            "group": {"dataset": "digitmosaic_anomaly", "loss": loss},
            "metrics": record_metrics(test, fit, run.diverged),
            "extra": extra,
        }

    # ---- report ---------------------------------------------------------------------------
    def verdict_lines(self, result: dict) -> list[str]:
        return verdict_lines(aggregate(result, ("loss",)),
                             protocol.min_train_acc(result["settings"]))  # fmt: skip

    def plot(self, result: dict, out_dir: Path) -> list[str]:
        maps = {}
        for _, rec in records(result):
            if rec.get("extra", {}).get("score_maps"):
                maps.setdefault(rec["group"]["loss"], rec["extra"]["score_maps"])
        if not maps:
            return []
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        losses = list(maps)
        first = maps[losses[0]]
        fig, axes = plt.subplots(2, 1 + len(losses), figsize=(2.4 * (1 + len(losses)), 4.9),
                                 squeeze=False)  # fmt: skip
        axes[0][0].imshow(unpack_array(first["image"]))
        axes[0][0].set_title("test mosaic", fontsize=8)
        label = unpack_array(first["label"]).astype(float)
        shown = np.ma.masked_where(label >= 255, np.where(label == ANOMALY_LABEL, -1, label))
        axes[1][0].imshow(shown, cmap="tab10", vmin=-1, vmax=9, interpolation="nearest")
        axes[1][0].contour(label == ANOMALY_LABEL, levels=[0.5], colors="red", linewidths=0.8)
        axes[1][0].set_title("labels; unknown digits (red)", fontsize=8)
        for col, loss in enumerate(losses, start=1):
            for row, (key, cmap) in enumerate((("msp", "viridis"), ("max_logit", "magma"))):
                ax = axes[row][col]
                im = ax.imshow(unpack_array(maps[loss][key]), cmap=cmap)
                ax.contour(label == ANOMALY_LABEL, levels=[0.5], colors="red", linewidths=0.6)
                ax.set_title(f"{loss_label(loss)}: {SCORES[key]}", fontsize=8)
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle("Confidence per pixel (low = rejected as unknown); red: the unknown "
                     "digits' outline", fontsize=9)  # fmt: skip
        return [save_figure(fig, out_dir, f"{self.name}.png")]

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        min_acc = protocol.min_train_acc(s)
        agg = aggregate(result, ("loss",))
        lrs = {}
        for _, rec in records(result):
            lrs.setdefault(rec["group"]["loss"], []).append(rec["extra"].get("lr"))
        rows = []
        for (loss,), m in agg.items():
            lr = " / ".join(dict.fromkeys(f"{v:g}" for v in lrs.get(loss, []) if v is not None))
            rows.append([loss_label(loss), protocol.health_cell(m, min_acc), lr or "—",
                         fmt(m.get("mIoU"), 1.0, 1),
                         *(fmt(m.get(k), 1.0, 1) for k in metric_names())])  # fmt: skip
        header = ["loss", "healthy runs", "lr", "known mIoU %",
                  *(f"{SCORES[k.split('/')[0]]} {k.split('/')[1]} %" for k in metric_names())]  # fmt: skip
        seeds = seeds_to_run({"seeds": result["seeds"], **s})
        sel = s.get("selection", {})
        lr_text = (
            f"the lr of each loss is 3e's at {lr_settings(s)['iters']} iterations, read from "
            f"`{sel.get('file', 'tuned.py')}` (chosen there by mIoU on the validation images of "
            "closed-set DigitMosaic)"
            if sel.get("mode") == "tuned"
            else "the lr of each loss is chosen by known-class mIoU on the validation images"
        )
        own = [loss for loss in s["losses"] if loss in OWN_LR]
        if own and sel.get("mode") == "tuned":
            lr_text += "; " + ", ".join(
                f"{loss_label(loss)}'s (3e does not train it) by known-class mIoU on the "
                f"validation images at {s['iters']} iterations, from "
                + ", ".join(f"{v:g}" for v in own_lr_grid(s, loss))
                for loss in own
            )
        parts = [
            f"## {self.title}",
            "DigitMosaic with the digits 8 and 9 unknown (`DigitMosaicAnomalyDataset`): "
            "the training mosaics hold no 8 or 9 (9 known classes: background and the digits "
            "0-7); in the 100 test mosaics their pixels are the anomaly label. 3e's recipe: the "
            f"tiny FCN, {s['iters']} iterations of batch {s.get('batch_size') or 8}, "
            f"{(s.get('optimizer') or {}).get('type', 'SGD')}, poly decay, the training images "
            f"carved into training and validation by the data seed; {lr_text}. Configs `"
            + s["config"]
            + "`. The kept model is evaluated by the config's `test_evaluator`: mmseg's "
            "`IoUMetric` on the known classes and `AnomalyMetric` (AUROC, AP and FPR95 of the "
            "anomaly pixels against the known ones; scores: max softmax probability, max "
            "logit, energy). Health: IoUMetric's mAcc on the run's training images at least "
            f"{100 * min_acc:g} %. Mean ± std over seeds " + ", ".join(str(x) for x in seeds) + ".",
            md_table(header, rows),
            f"**Claim tested.** {self.claim}",
            "\n".join(self.verdict_lines(result)),
            per_seed_table(result, ("loss",), ("mIoU", *metric_names()), scale=1.0),
        ]
        parts += [f"![Anomaly score maps of one test mosaic]({f})"
                  for f in self.plot(result, out_dir)]  # fmt: skip
        return "\n\n".join(p for p in parts if p)

    def summary(self, result: dict) -> list[tuple[str, dict[str, str]]]:
        from .sections import claim_cell

        agg = aggregate(result, ("loss",))
        min_acc = protocol.min_train_acc(result["settings"])
        rows = []
        for ours, other in CLAIMS:
            a, b = agg.get((ours,)), agg.get((other,))
            if a and b:
                labels = (loss_label(ours), loss_label(other))
                cell = claim_cell(a, b, "max_logit/AUROC", labels, min_acc, scale=1.0)
                rows.append((f"anomaly seg.: {labels[0]} rejects unknown objects better than "
                             f"{labels[1]} (AUROC, max logit)", {"digitmosaic": cell}))  # fmt: skip
        return rows


def lr_settings(settings: dict) -> dict:
    """The settings the lr is looked up with: in ``"tuned"`` mode with ``lr_iters`` set, 3e's
    entry at that iteration count (``digitmosaic/iters=<lr_iters>/<loss>``) while the runs
    train ``iters`` (the options carry the iterations; the key alone reads ``iters``). In
    ``"validation"`` mode the task selects at its own ``iters``: ``lr_iters`` is ignored."""
    lr_iters = settings.get("lr_iters")
    if lr_iters is None or settings.get("selection", {}).get("mode") != "tuned":
        return settings
    if isinstance(lr_iters, bool) or not isinstance(lr_iters, int) or lr_iters < 1:
        raise ValueError(f"anomaly_segmentation: lr_iters must be a positive int, got {lr_iters!r}")
    return {**settings, "iters": lr_iters}


def own_lr_grid(settings: dict, loss: str) -> list[float]:
    """``settings["own_lr"][loss]``: the lrs the task tries for a loss of :data:`OWN_LR`."""
    grid = settings.get("own_lr", {}).get(loss)
    if (
        not isinstance(grid, (list, tuple))
        or not grid
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in grid)
    ):
        raise ValueError(
            f"anomaly_segmentation: own_lr[{loss!r}] must be a non-empty list of positive lrs "
            f"(3e has no lr for {loss!r}, the task chooses one on validation); got {grid!r}"
        )
    return [float(v) for v in grid]


def own_lr_settings(settings: dict, loss: str) -> dict:
    """The settings a loss of :data:`OWN_LR` is selected with, in either mode: validation at
    the task's own ``iters`` over :func:`own_lr_grid` (the profile's ``grid_by_loss`` is not
    read: the classification tasks' LogitNorm grid also searches a temperature)."""
    sel = settings.get("selection", {})
    own = {"mode": "validation", "grid": {"lr": own_lr_grid(settings, loss)}}
    if "val_fraction" in sel:
        own["val_fraction"] = sel["val_fraction"]
    return {**settings, "selection": own}


def verdict_lines(agg: dict, min_acc: float) -> list[str]:
    """One line per claim (:data:`CLAIMS`) and score (:data:`CLAIM_SCORES`): the AUROCs, the
    paired interval (points) and the protocol's verdict (not decided when a run of either side
    is unhealthy)."""
    lines = []
    for ours, other in CLAIMS:
        a, b = agg.get((ours,)), agg.get((other,))
        if not (a and b):
            continue
        labels = (loss_label(ours), loss_label(other))
        for score in CLAIM_SCORES:
            metric = f"{score}/AUROC"
            v = protocol.claim_verdict(a, b, metric, labels, min_acc)
            lines.append(
                f"- {labels[0]} vs {labels[1]}, AUROC of {SCORES[score]}: "
                f"{fmt(a[metric], 1.0, 1)} vs {fmt(b[metric], 1.0, 1)}, "
                f"{protocol.interval_text(a[metric], b[metric], 1.0)}: **{v}** "
                f"(claim: {labels[0]} higher)"
            )
    return lines


TASK = AnomalySegmentationTask()
