"""3g. Learning-rate sensitivity of CE and HEM.

Every loss over a grid of initial learning rates, with the cosine schedule and
with a constant lr; final test accuracy, and its spread over the last quarter
of the epochs (evaluated after every epoch) as a measure of oscillation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import load_dataset
from ..losses import loss_label
from ..training import fit
from .base import (
    Context,
    aggregate,
    fmt,
    md_table,
    mean_std,
    model_cfg_for,
    records,
    save_figure,
    train_cfg_for,
    train_settings_table,
)


def _lr_as_grid(settings: dict) -> dict:
    """Settings whose initial lr reads 'grid' in the settings table (the lr is swept)."""
    grid = {"default": float("nan")}
    per_ds = {ds: {**o, "lr": grid} for ds, o in settings.get("dataset_train", {}).items()}
    return {**settings, "train": {**settings["train"], "lr": grid}, "dataset_train": per_ds}


class LRSensitivityTask:
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
        for ds in settings["datasets"]:
            split = load_dataset(
                ds, seed, settings.get("dataset_options", {}).get(ds), ctx.data_root
            )
            xt, yt = split.x_test.to(ctx.device), split.y_test.to(ctx.device)

            @torch.no_grad()
            def test_acc(model, xt=xt, yt=yt):
                return float((torch.nan_to_num(model(xt)).argmax(1) == yt).float().mean())

            for schedule in settings["schedules"]:
                train = {**train_cfg_for(settings, ds), "schedule": schedule}
                for loss in settings["losses"]:
                    for lr in settings["lrs"]:
                        ctx.advance(f"{self.name} {ds} {loss} {schedule} lr={lr} seed {seed}")
                        model, hist = fit(split, loss, seed, train, model_cfg_for(settings, ds),
                                          settings.get("loss_options", {}), ctx.device, lr=lr,
                                          epoch_eval=test_acc)  # fmt: skip
                        curve = hist["eval"]
                        tail = curve[-max(1, len(curve) // 4) :] if curve else [0.0]
                        final = test_acc(model)  # also defined after a divergence
                        recs.append({
                            "group": {"dataset": ds, "schedule": schedule, "loss": loss, "lr": float(lr)},
                            "metrics": {"final_acc": final,
                                        "tail_std": float(np.std(tail)),
                                        "diverged": float(hist["diverged"])},
                            "extra": {"test_acc_curve": curve, "train_loss": hist["train_loss"],
                                      "margin": hist["margin"], "n_train": split.n_train},
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

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        agg = aggregate(result, ("dataset", "schedule", "loss", "lr"))
        lrs = sorted({k[3] for k in agg})
        rows = []
        for ds, sch, loss in dict.fromkeys(k[:3] for k in agg):
            cells = []
            for lr in lrs:
                m = agg.get((ds, sch, loss, lr))
                cells.append(f"{fmt(m['final_acc'])} ({fmt(m['tail_std'])})" if m else "—")
            rows.append([ds, sch, loss_label(loss)] + cells)
        table = md_table(["dataset", "schedule", "loss"] + [f"lr={lr:g}" for lr in lrs], rows)
        lines = []
        for ds in dict.fromkeys(k[0] for k in agg):
            for sch in dict.fromkeys(k[1] for k in agg if k[0] == ds):
                best = {}
                for loss in s["losses"]:
                    cand = [(mean_std(v["final_acc"])[0], k[3]) for k, v in agg.items()
                            if k[:3] == (ds, sch, loss)]  # fmt: skip
                    if cand:
                        best[loss] = max(cand)
                if "ce" in best and "hem" in best:
                    lines.append(
                        f"- {ds}, {sch}: best initial lr CE {best['ce'][1]:g} "
                        f"({100 * best['ce'][0]:.1f} %), HEM {best['hem'][1]:g} "
                        f"({100 * best['hem'][0]:.1f} %): claim 'HEM needs a lower lr' "
                        + (
                            "**agrees**"
                            if best["hem"][1] < best["ce"][1]
                            else "**disagrees**"
                            if best["hem"][1] > best["ce"][1]
                            else "**inconclusive** (same best lr)"
                        )  # fmt: skip
                    )
        parts = [
            f"## {self.title}",
            "Final test accuracy % (a run whose logits become non-finite stops there and is "
            "evaluated as it is), and in brackets the std of the per-epoch test accuracy over "
            "the last quarter of the epochs (oscillation), each mean ± std over seeds "
            + ", ".join(str(x) for x in result["seeds"])
            + ".",
            train_settings_table(_lr_as_grid(s), s["losses"]).replace("nan", "grid"),
            table,
            f"**Paper's claim.** {self.claim}",
            "\n".join(lines),
        ]
        parts += [f"![lr sensitivity]({f})" for f in self.plot(result, out_dir)]
        return "\n\n".join(p for p in parts if p)

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
