"""3g. Learning-rate sensitivity of CE and HEM.

Every loss over a grid of initial learning rates, with the cosine schedule and
with a constant lr; final test accuracy, and its spread over the last quarter
of the epochs (evaluated after every epoch) as a measure of oscillation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import model_cfg_for, train_cfg_for
from ..data import load_dataset
from ..losses import loss_label
from ..protocol import (
    NO_DIFFERENCE,
    SCORE_DECIMALS,
    best_and_ties,
    min_train_acc,
    run_seeds,
    unhealthy_seeds,
    val_fraction,
    verdict,
)
from ..training import accuracy, fit, predict, validation_carve
from .base import BaseTask, Context
from .sections import (
    aggregate,
    fmt,
    health_fmt,
    md_table,
    mean_std,
    per_seed_table,
    records,
    save_figure,
    train_settings_table,
)

#: What a 3g record says of its lr: the task sweeps it, every grid point is a run.
LR_SWEPT = "swept (3g trains every lr of its grid)"


class LRSensitivityTask(BaseTask):
    name = "lr_sensitivity"
    title = "3g. Learning-rate sensitivity"
    claim = (
        "HEM needs a lower initial learning rate than CE (the paper trains HEM at 0.05 where CE "
        "uses 0.1, same schedule); at a high constant lr HEM oscillates."
    )

    def units(self, settings: dict) -> int:
        n = len(settings["datasets"]) * len(settings["losses"])
        return n * len(settings["lrs"]) * len(settings["schedules"])

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        recs = []
        data_seed, init_seed = run_seeds(settings, seed)
        for ds in settings["datasets"]:
            full = load_dataset(
                ds, data_seed, settings.get("dataset_options", {}).get(ds), ctx.data_root
            )
            # Every lr of the grid is a run; "best lr" is read on the validation carve.
            split, x_val, y_val = validation_carve(full, val_fraction(settings), data_seed)
            xt, yt = split.x_test.to(ctx.device), split.y_test.to(ctx.device)

            @torch.no_grad()
            def test_acc(model, xt=xt, yt=yt):
                return float((torch.nan_to_num(model(xt)).argmax(1) == yt).float().mean())

            for schedule in settings["schedules"]:
                train = {**train_cfg_for(settings, ds), "schedule": schedule}
                for loss in settings["losses"]:
                    for lr in settings["lrs"]:
                        ctx.advance(f"{self.name} {ds} {loss} {schedule} lr={lr} seed {seed}")
                        model, hist = fit(split, loss, init_seed, train, model_cfg_for(settings, ds),
                                          settings.get("loss_options", {}), ctx.device, lr=lr,
                                          epoch_eval=test_acc)  # fmt: skip
                        curve = hist["eval"]
                        tail = curve[-max(1, len(curve) // 4) :] if curve else [0.0]
                        final = test_acc(model)  # also defined after a divergence
                        train_acc = accuracy(
                            predict(model, split.x_train, ctx.device), split.y_train
                        )
                        recs.append({
                            "group": {"dataset": ds, "schedule": schedule, "loss": loss, "lr": float(lr)},
                            "metrics": {"final_acc": final,
                                        "val_acc": accuracy(predict(model, x_val, ctx.device), y_val),
                                        "tail_std": float(np.std(tail)),
                                        "train_acc": train_acc,
                                        "diverged": float(hist["diverged"])},
                            "extra": {"test_acc_curve": curve, "train_loss": hist["train_loss"],
                                      "margin": hist["margin"], "n_train": split.n_train,
                                      "data_seed": data_seed, "init_seed": init_seed,
                                      "lr_selected_on": LR_SWEPT},
                        })  # fmt: skip
        return {"records": recs}

    def plot(self, result: dict, out_dir: Path) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        s = result["settings"]
        agg = aggregate(result, ("dataset", "schedule", "loss", "lr"))
        files = []
        curves: dict[tuple, list[list[float]]] = {}
        for _, rec in records(result):
            g = rec["group"]
            curves.setdefault((g["dataset"], g["schedule"], g["loss"], g["lr"]), []).append(
                rec["extra"]["test_acc_curve"]
            )
        probe = float(s.get("curve_lr", max(s["lrs"])))
        for ds in dict.fromkeys(k[0] for k in agg):
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
            for schedule, ls in (("cosine", "-"), ("constant", "--")):
                for loss in s["losses"]:
                    pts = sorted((k[3], mean_std(v["final_acc"])) for k, v in agg.items()
                                 if k[0] == ds and k[1] == schedule and k[2] == loss)  # fmt: skip
                    if pts:
                        axes[0].errorbar([p[0] for p in pts], [100 * p[1][0] for p in pts],
                                         yerr=[100 * p[1][1] for p in pts], ls=ls, marker="o",
                                         capsize=3, label=f"{loss_label(loss)}, {schedule}")  # fmt: skip
                    for c in curves.get((ds, schedule, loss, probe), [])[:1]:
                        axes[1].plot(range(1, len(c) + 1), [100 * v for v in c], ls=ls,
                                     label=f"{loss_label(loss)}, {schedule}")  # fmt: skip
            axes[0].set_xscale("log")
            axes[0].set_xlabel("initial learning rate")
            axes[0].set_ylabel("final test accuracy %")
            axes[0].set_title(f"lr sensitivity ({ds})")
            axes[0].legend(fontsize=7)
            axes[1].set_xlabel("epoch")
            axes[1].set_ylabel("test accuracy %")
            axes[1].set_title(f"test accuracy per epoch, lr={probe:g}, first seed ({ds})")
            axes[1].legend(fontsize=7)
            files.append(save_figure(fig, out_dir, f"{self.name}_{ds}.png"))
        return files

    @staticmethod
    def _best_lr_line(agg: dict, ds: str, sch: str, min_acc: float) -> str:
        """Best lr of CE and HEM by mean validation accuracy over healthy cells
        (:func:`..protocol.best_point`: a tie at 4 decimals goes to the smaller lr, and the line
        says so), and whether HEM's is lower beyond seed noise (each loss's validation
        accuracy at the two lrs differs, paired over seeds)."""
        best: dict[str, float] = {}
        ties: list[str] = []
        mine = [v for k, v in agg.items() if k[:2] == (ds, sch) and k[2] in ("ce", "hem")]
        n = max((len(v["val_acc"]) for v in mine), default=0)
        bad = any(unhealthy_seeds(v, min_acc) for v in mine)
        n_text = f"n={n}" + (" ⚠: an unhealthy run at some lr, left out" if bad else "")
        for loss in ("ce", "hem"):
            cells = {k[3]: v for k, v in agg.items() if k[:3] == (ds, sch, loss)}
            cand = [[{"lr": lr}, mean_std(v["val_acc"])[0]] for lr, v in cells.items()
                    if not unhealthy_seeds(v, min_acc)]  # fmt: skip
            if not cand:
                return f"- {ds}, {sch}: not decided: {loss_label(loss)} did not train at any lr"
            i, tied = best_and_ties(cand)  # the suite's one rule: a tie goes to the smaller lr
            best[loss] = cand[i][0]["lr"]
            if len(tied) > 1:
                lrs = ", ".join(f"{cand[j][0]['lr']:g}" for j in tied)
                ties.append(f"{loss_label(loss)}'s best lr is a tie (lr {lrs} at validation acc "
                            f"{100 * round(cand[i][1], SCORE_DECIMALS):.2f} %), decided by the "
                            "tie rule: the smaller lr")  # fmt: skip
        tie_note = f" ({'; '.join(ties)})" if ties else ""
        ce, hem = best["ce"], best["hem"]
        head = (
            f"- {ds}, {sch}: best initial lr on validation data CE {ce:g}, HEM {hem:g} ({n_text})"
        )
        if ce == hem:
            return (f"{head}: claim 'HEM needs a lower lr' — **{NO_DIFFERENCE}** (same best lr)"
                    f"{tie_note}")  # fmt: skip
        # Does each loss really prefer its own best lr to the other's, beyond seed noise?
        distinct = []
        for loss in ("ce", "hem"):
            own, other = (
                agg[(ds, sch, loss, best[loss])],
                agg.get((ds, sch, loss, best["hem" if loss == "ce" else "ce"])),
            )
            distinct.append(
                other is not None and verdict(own["val_acc"], other["val_acc"]) == "agrees"
            )
        if not any(distinct):
            v = f"{NO_DIFFERENCE} (each loss is as good at the other's best lr)"
        else:
            v = "agrees" if hem < ce else "disagrees"
        return f"{head}: claim 'HEM needs a lower lr' — **{v}**{tie_note}"

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        min_acc = min_train_acc(s)
        agg = aggregate(result, ("dataset", "schedule", "loss", "lr"))
        lrs = sorted({k[3] for k in agg})
        rows = []
        for ds, sch, loss in dict.fromkeys(k[:3] for k in agg):
            cells = []
            for lr in lrs:
                m = agg.get((ds, sch, loss, lr))
                cells.append(f"{health_fmt(m, 'final_acc', min_acc)} ({fmt(m['tail_std'])})"
                             if m else "—")  # fmt: skip
            rows.append([ds, sch, loss_label(loss)] + cells)
        table = md_table(["dataset", "schedule", "loss"] + [f"lr={lr:g}" for lr in lrs], rows)
        lines = []
        for ds in dict.fromkeys(k[0] for k in agg):
            for sch in dict.fromkeys(k[1] for k in agg if k[0] == ds):
                lines.append(self._best_lr_line(agg, ds, sch, min_acc))
        parts = [
            f"## {self.title}",
            "Final test accuracy % (a run whose logits become non-finite stops there and is "
            "evaluated as it is), and in brackets the std of the per-epoch test accuracy over "
            "the last quarter of the epochs (oscillation), each mean ± std over seeds "
            "(⚠: a run of that cell did not train or diverged; here that is a result, not a "
            "failed baseline). Every run trains on the training data less a validation carve "
            f"({100 * val_fraction(s):g} %); the "
            "*best* lr of a loss is the one with the highest mean validation accuracy, never "
            "read on the test split. Seeds " + ", ".join(str(x) for x in result["seeds"]) + ".",
            train_settings_table(
                s, s["losses"], lr_text="swept: " + ", ".join(f"{x:g}" for x in s["lrs"])
            ),
            table,
            per_seed_table(
                result, ("dataset", "schedule", "loss", "lr"), ("train_acc", "val_acc", "final_acc")
            ),  # fmt: skip
            f"**Paper's claim.** {self.claim}",
            "\n".join(lines),
        ]
        parts += [f"![lr sensitivity]({f})" for f in self.plot(result, out_dir)]
        return "\n\n".join(p for p in parts if p)

    def summary(self, result: dict) -> list[tuple[str, dict[str, str]]]:
        agg = aggregate(result, ("dataset", "schedule", "loss", "lr"))
        min_acc = min_train_acc(result["settings"])
        row = {}
        for ds in dict.fromkeys(k[0] for k in agg):
            line = self._best_lr_line(agg, ds, "cosine", min_acc)
            row[ds] = line.split(": ", 1)[1].replace("best initial lr on validation data ", "")
        return [("3g HEM needs a lower lr than CE (cosine schedule)", row)]

    def headline(self, result: dict, dataset: str) -> dict[str, dict[str, str]]:
        agg = aggregate(result, ("dataset", "schedule", "loss", "lr"))
        col: dict[str, str] = {}
        for loss in dict.fromkeys(k[2] for k in agg):
            vals = [(mean_std(v["final_acc"])[0], k[3]) for k, v in agg.items()
                    if k[0] == dataset and k[1] == "cosine" and k[2] == loss]  # fmt: skip
            if vals:
                lo, hi = min(vals), max(vals)
                col[loss] = f"{100 * lo[0]:.1f} (lr {lo[1]:g}) – {100 * hi[0]:.1f} (lr {hi[1]:g})"
        return {"3g acc % over the lr grid, cosine (worst – best)": col}


TASK = LRSensitivityTask()
