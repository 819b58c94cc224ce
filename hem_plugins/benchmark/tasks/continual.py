"""3d. Continual learning through the Avalanche plugin: SplitDigits, Naive / Replay / EWC / LwF.

Each (strategy, loss) pair trains its shipped config
``configs/avalanche/<strategy>_<loss>_splitdigits.py`` (the per-loss recipes of the
Avalanche adapter: learning rates, cosine schedule restarted at every experience,
``HEMPlusPlugin`` for the margins) through ``tools/continual.py``'s ``run()``.
Metrics are those of Avalanche's ``EvaluationPlugin`` as the tool's summary
reports them: final average accuracy over the experiences and stream forgetting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..losses import loss_label
from .base import (
    REPO_ROOT,
    Context,
    aggregate,
    fmt,
    load_tool,
    md_table,
    records,
    save_figure,
    verdict,
)
from .segmentation import seeds_to_run, skip_seed

#: Benchmark loss name -> loss part of the Avalanche config's name.
CONFIG_LOSS = {"ce": "ce", "hem": "hem", "hem_plus": "hemplus"}
STRATEGY_LABEL = {"naive": "Naive", "replay": "Replay", "ewc": "EWC", "lwf": "LwF"}


class ContinualTask:
    name = "continual"
    title = "3d. Continual learning (SplitDigits, Avalanche)"
    claim = (
        "HEM and HEM+ suffer less catastrophic forgetting than CE in continual learning "
        "(higher final average accuracy, lower forgetting)."
    )

    def units(self, settings: dict) -> int:
        return len(settings["strategies"]) * len(settings["losses"])

    def config_for(self, settings: dict, strategy: str, loss: str) -> Path:
        if loss not in CONFIG_LOSS:
            raise ValueError(f"continual: unknown loss {loss!r}; choose from {sorted(CONFIG_LOSS)}")
        path = REPO_ROOT / settings["config"].format(strategy=strategy, loss=CONFIG_LOSS[loss])
        if not path.is_file():
            raise FileNotFoundError(f"continual config for {strategy!r}/{loss!r} not found: {path}")
        return path

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        if skip_seed(self, settings, seed, ctx):
            return {"records": []}
        tool = load_tool("continual")
        run, diverged = tool.run, tool.DivergedError
        recs = []
        for strategy in settings["strategies"]:
            for loss in settings["losses"]:
                config = self.config_for(settings, strategy, loss)
                ctx.advance(f"{self.name} {strategy} {loss} seed {seed}")
                opts = {
                    "seed": seed,
                    "benchmark.seed": seed,  # class order and train/test split
                    "device": ctx.device,
                    "loggers": dict(interactive=False, csv=False, tensorboard=False),
                }
                if settings.get("epochs"):
                    opts["strategy.train_epochs"] = int(settings["epochs"])
                work_dir = (ctx.work_dir or Path("work_dirs")) / "continual" / f"{strategy}_{loss}_{seed}"  # fmt: skip
                try:
                    summary = run(str(config), cfg_options=opts, work_dir=str(work_dir))
                except diverged as err:  # non-finite logits: a result, not a crash
                    recs.append({
                        "group": {"dataset": "splitdigits", "strategy": strategy, "loss": loss},
                        "metrics": {"final_acc": float("nan"), "forgetting": float("nan"),
                                    "bwt": float("nan"), "diverged": 1.0},
                        "extra": {"config": str(config.relative_to(REPO_ROOT)), "error": str(err)},
                    })  # fmt: skip
                    continue
                cfg = summary["config"]
                recs.append({
                    "group": {"dataset": "splitdigits", "strategy": strategy, "loss": loss},
                    "metrics": {"final_acc": float(summary["final_accuracy"]),
                                "forgetting": float(summary["forgetting"]),
                                "bwt": float(summary["bwt"]), "diverged": 0.0},
                    "extra": {"config": str(config.relative_to(REPO_ROOT)),
                              "lr": cfg["optimizer"].get("lr"),
                              "epochs": cfg["strategy"].get("train_epochs"),
                              "strategy_cfg": cfg["strategy"],
                              "experience_accuracies": summary["experience_accuracies"],
                              "margins": summary.get("margins", [])[-1:]},
                })  # fmt: skip
        return {"records": recs}

    def plot(self, result: dict, out_dir: Path) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        agg = aggregate(result, ("strategy", "loss"))
        if not agg:
            return []
        strategies = list(dict.fromkeys(k[0] for k in agg))
        losses = list(dict.fromkeys(k[1] for k in agg))
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        width = 0.8 / len(losses)
        for ax, metric, label in zip(
            axes,
            ("final_acc", "forgetting"),
            ("final average accuracy %", "forgetting %"),
            strict=True,
        ):
            for i, loss in enumerate(losses):
                vals = [100 * np.asarray(agg.get((st, loss), {}).get(metric, [np.nan]))
                        for st in strategies]  # fmt: skip
                xs = np.arange(len(strategies)) + (i - (len(losses) - 1) / 2) * width
                ax.bar(xs, [v.mean() for v in vals], width, yerr=[v.std() for v in vals],
                       capsize=2, label=loss_label(loss))  # fmt: skip
            ax.set_xticks(
                np.arange(len(strategies)), [STRATEGY_LABEL.get(s, s) for s in strategies]
            )
            ax.set_ylabel(label)
        axes[0].legend(fontsize=8)
        fig.suptitle("SplitDigits, 5 experiences (Avalanche EvaluationPlugin)", fontsize=10)
        return [save_figure(fig, out_dir, f"{self.name}_splitdigits.png")]

    def _recipes(self, result: dict) -> str:
        rows, seen = [], set()
        for _, rec in records(result):
            g, e = rec["group"], rec["extra"]
            key = (g["strategy"], g["loss"])
            if key in seen or "strategy_cfg" not in e:
                continue
            seen.add(key)
            st = {k: v for k, v in e["strategy_cfg"].items()
                  if k not in ("type", "train_mb_size", "eval_mb_size", "train_epochs")}  # fmt: skip
            rows.append([STRATEGY_LABEL.get(g["strategy"], g["strategy"]), loss_label(g["loss"]),
                         f"`{e['config']}`", f"{e['lr']:g}", str(e["epochs"]),
                         ", ".join(f"{k}={v}" for k, v in st.items()) or "—"])  # fmt: skip
        return md_table(
            ["strategy", "loss", "config", "lr", "epochs / exp.", "strategy args"], rows
        )

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        agg = aggregate(result, ("strategy", "loss"))
        rows = [[STRATEGY_LABEL.get(st, st), loss_label(lo), fmt(m["final_acc"]),
                 fmt(m["forgetting"]), f"{int(sum(m['diverged']))}/{len(m['diverged'])}"]
                for (st, lo), m in agg.items()]  # fmt: skip
        lines = []
        for st in dict.fromkeys(k[0] for k in agg):
            ce = agg.get((st, "ce"))
            for ours in ("hem", "hem_plus"):
                m = agg.get((st, ours))
                if not (m and ce):
                    continue
                lab = STRATEGY_LABEL.get(st, st)
                lines.append(
                    f"- {lab}: {loss_label(ours)} vs CE, final acc {fmt(m['final_acc'])} vs "
                    f"{fmt(ce['final_acc'])}: **{verdict(m['final_acc'], ce['final_acc'])}**; "
                    f"forgetting {fmt(m['forgetting'])} vs {fmt(ce['forgetting'])}: "
                    f"**{verdict(m['forgetting'], ce['forgetting'], higher_is_better=False)}** "
                    f"(claim: {loss_label(ours)} higher accuracy, less forgetting)"
                )
        seeds = seeds_to_run({"seeds": result["seeds"], **s})
        parts = [
            f"## {self.title}",
            "SplitDigits: scikit-learn's digits (70/30 split) in 5 class-incremental "
            "experiences of 2 classes; an MLP (64-256-classes) whose incremental head grows "
            "with the classes (unseen units masked at -1000); SGD momentum 0.9, cosine "
            "schedule restarted at every experience; batch 32. HEM / HEM+ margins set by "
            "`HEMPlusPlugin` from each experience's training data (replay buffer included). "
            "The recipes are the Avalanche adapter's shipped configs (`tools/continual.py`):",
            self._recipes(result),
            "Final average accuracy: mean over the 5 test experiences after the last one; "
            "forgetting: Avalanche's stream forgetting (`forgetting_metrics`), both from its "
            "`EvaluationPlugin`. Seeds (model and class order) "
            + ", ".join(str(x) for x in seeds)
            + ".",
            md_table(
                ["strategy", "loss", "final avg accuracy %", "forgetting %", "diverged runs"], rows
            ),  # fmt: skip
            f"**Paper's claim.** {self.claim}",
            "\n".join(lines),
        ]
        parts += [
            f"![SplitDigits accuracy and forgetting]({f})" for f in self.plot(result, out_dir)
        ]
        return "\n\n".join(p for p in parts if p)

    def headline(self, result: dict, dataset: str | None = None) -> dict[str, dict[str, str]]:
        """Final accuracy of the main strategy (``headline_strategy``, default Replay)."""
        agg = aggregate(result, ("strategy", "loss"))
        strategies = [k[0] for k in agg]
        if not strategies:
            return {}
        st = result["settings"].get("headline_strategy", "replay")
        st = st if st in strategies else strategies[0]
        col = {k[1]: fmt(m["final_acc"]) for k, m in agg.items() if k[0] == st}
        return {f"3d final acc % ({STRATEGY_LABEL.get(st, st)}, SplitDigits)": col}


TASK = ContinualTask()
