"""3d. Continual learning through the Avalanche plugin: three scenarios on scikit-learn's
digits, Naive / Replay / EWC / LwF, each loss's lr chosen on validation data.

Each (scenario, strategy, loss) trains the shipped config
``configs/avalanche/<strategy>_<loss>_splitdigits.py`` (the Avalanche adapter's recipe:
cosine schedule restarted at every experience, ``ExperienceMarginsPlugin`` for the
margins) through :func:`hem_plugins.benchmark.avalanche.runner.run` (the work of
``tools/continual.py``), with the scenario's options from the profile
(``tasks.continual.scenarios``) merged into it:

* ``class_incremental``: SplitDigits, an incremental head that grows with the classes;
* ``task_incremental``: SplitDigits with task labels (``return_task_id=True``, class ids
  from 0 in each experience) and a ``MultiHeadMLP``, one head per task;
* ``domain_incremental``: PermutedDigits, all 10 classes in every experience under its
  own pixel permutation, a fixed 10-unit head.

**Selection.** The benchmark carves ``selection.val_fraction`` of every training
experience (per class) into a validation stream (``benchmark.validation_fraction``);
every run trains on the rest. In ``selection.mode = "validation"`` each grid point
(``selection.grid``, e.g. ``dict(lr=[...])``) trains with only the validation stream
evaluated (``eval_streams=['valid']``), and its score is the final average accuracy on
it; the chosen point is then trained again, identically seeded, with the test stream
evaluated, and that run is the reported one. In ``"tuned"`` mode the chosen point comes
from the tuned file. The test stream is never evaluated before the choice is made.

**Health.** ``train_acc`` is the mean over experiences of the accuracy on each
experience's training part right after training on it (the runner's
``train_accuracy``); a run that produced non-finite logits is recorded as diverged.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np

from ...resources import config_path, display_path
from .. import protocol
from ..losses import loss_label
from .base import BaseTask, Context, seeds_to_run
from .sections import aggregate, claim_cell, fmt, md_table, per_seed_table, records, save_figure

#: Benchmark loss name -> loss part of the Avalanche config's name.
CONFIG_LOSS = {"ce": "ce", "hem": "hem", "hem_plus": "hemplus"}
STRATEGY_LABEL = {"naive": "Naive", "replay": "Replay", "ewc": "EWC", "lwf": "LwF"}
#: Selection grid names -> config keys of the Avalanche runner (other names are used as
#: dotted config keys as they are, e.g. ``strategy.ewc_lambda``).
PARAM_KEYS = {"lr": "optimizer.lr", "epochs": "strategy.train_epochs"}
METRIC = "final average accuracy on the validation stream"
SCENARIO_LABEL = {
    "class_incremental": "class-incremental SplitDigits",
    "task_incremental": "task-incremental SplitDigits",
    "domain_incremental": "domain-incremental PermutedDigits",
}
HEALTH = ("final_acc", "forgetting", "train_acc")


def scenario_label(settings: dict, scenario: str) -> str:
    """The scenario's ``label`` in the profile, else a built-in one, else its key."""
    spec = settings.get("scenarios", {}).get(scenario, {})
    return spec.get("label") or SCENARIO_LABEL.get(scenario, scenario)


def param_options(params: dict) -> dict:
    """Runner ``cfg_options`` of a selection grid point: ``{'optimizer.lr': 0.02}``."""
    return {PARAM_KEYS.get(k, k): v for k, v in params.items()}


class ContinualTask(BaseTask):
    name = "continual"
    title = "3d. Continual learning (three scenarios on digits, Avalanche)"
    claim = (
        "HEM and HEM+ suffer less catastrophic forgetting than CE in continual learning "
        "(higher final average accuracy, lower forgetting)."
    )

    def units(self, settings: dict) -> int:
        """Trainings per seed: the final run, plus every grid point in validation mode."""
        selecting = settings.get("selection", {}).get("mode", "validation") == "validation"
        per_loss = [1 + (len(protocol.grid_points(protocol.grid_for(settings, lo)))
                         if selecting else 0) for lo in settings["losses"]]  # fmt: skip
        return len(settings["scenarios"]) * len(settings["strategies"]) * sum(per_loss)

    def config_for(self, settings: dict, strategy: str, loss: str) -> Path:
        if loss not in CONFIG_LOSS:
            raise ValueError(f"continual: unknown loss {loss!r}; choose from {sorted(CONFIG_LOSS)}")
        name = settings["config"].format(strategy=strategy, loss=CONFIG_LOSS[loss])
        try:
            return config_path(name)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"continual config for {strategy!r}/{loss!r}: {exc}") from None

    def build_config(self, settings: dict, scenario: str, strategy: str, loss: str):
        """The mmengine ``Config`` of one run: the shipped (strategy, loss) config with the
        scenario's options (``tasks.continual.scenarios[scenario]['options']``) merged in."""
        from hem_plugins.benchmark.avalanche.runner import load_config

        scenarios = settings.get("scenarios", {})
        if scenario not in scenarios:
            raise KeyError(
                f"continual: unknown scenario {scenario!r}; tasks.continual.scenarios has "
                f"{sorted(scenarios)}"
            )
        options = copy.deepcopy(scenarios[scenario].get("options") or {})
        return load_config(self.config_for(settings, strategy, loss), options)

    def run_options(self, settings: dict, seed: int, ctx: Context, work_dir: Path) -> dict:
        """Options every run of one seed shares: seeds, validation carve, device, loggers."""
        data_seed, init_seed = protocol.run_seeds(settings, seed)
        opts = {
            "seed": init_seed,
            "benchmark.seed": data_seed,  # class order / permutations, val carve (not the test split)
            "benchmark.validation_fraction": protocol.val_fraction(settings),
            "device": ctx.device,
            "loggers": dict(interactive=False, text=False, csv=False, tensorboard=False),
            "work_dir": str(work_dir),
        }
        if settings.get("epochs"):
            opts["strategy.train_epochs"] = int(settings["epochs"])
        return opts

    def train(self, cfg, opts: dict, params: dict, streams: list[str]) -> dict | None:
        """One run of the Avalanche runner with ``params`` and only ``streams`` evaluated;
        None when the run diverged."""
        from hem_plugins.benchmark.avalanche.runner import DivergedError, run

        run_opts = {**opts, **param_options(params), "eval_streams": streams}
        try:
            return run(cfg, cfg_options=run_opts, work_dir=run_opts["work_dir"])
        except DivergedError:  # non-finite logits: a result, not a crash
            return None

    def select(self, settings: dict, key: str, loss: str, cfg, opts: dict, ctx: Context):
        """``(params, record, run)`` for one (scenario, strategy, loss) through
        :func:`protocol.select`; the score trains with only the validation stream evaluated
        and ``run`` is the chosen point's summary (None in tuned mode)."""

        def score(params: dict) -> tuple[float, dict | None]:
            ctx.advance(f"{self.name} select {key} {protocol.point_label(params)}")
            label = protocol.point_label(params).replace(", ", "_")
            summary = self.train(cfg, {**opts, "work_dir": f"{opts['work_dir']}/select_{label}"},
                                 params, ["valid"])  # fmt: skip
            if summary is None:
                return float("nan"), None
            return float(summary["streams"]["valid"]["final_accuracy"]), summary

        grid = protocol.grid_for(settings, loss)
        return protocol.select(settings, self.name, key, grid, score, METRIC)

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        if self.skip_seed(settings, seed, ctx):
            return {"records": []}
        root = (ctx.work_dir or Path("work_dirs")) / "continual"
        recs = []
        for scenario in settings["scenarios"]:
            for strategy in settings["strategies"]:
                for loss in settings["losses"]:
                    recs.append(self.run_one(settings, seed, ctx, root, scenario, strategy, loss))
        return {"records": recs}

    def run_one(self, settings, seed, ctx, root, scenario, strategy, loss) -> dict:
        """Select the params of one (scenario, strategy, loss), train the final run on the
        training part and evaluate it on the test stream; one record."""
        cfg = self.build_config(settings, scenario, strategy, loss)
        key = protocol.selection_key(scenario, strategy, loss)
        work_dir = root / f"{scenario}_{strategy}_{loss}_{seed}"
        opts = self.run_options(settings, seed, ctx, work_dir)
        params, record, chosen = self.select(settings, key, loss, cfg, opts, ctx)
        ctx.advance(f"{self.name} {key} seed {seed}")
        summary = self.train(cfg, opts, params, ["test"])
        config = display_path(self.config_for(settings, strategy, loss))
        group = {"scenario": scenario, "dataset": cfg.benchmark.type.lower(),
                 "strategy": strategy, "loss": loss}  # fmt: skip
        extra = {"config": config, "scenario_options": settings["scenarios"][scenario].get("options", {}),
                 "params": params, "selection": record,
                 "lr_selected_on": record["lr_selected_on"]}  # fmt: skip
        if summary is None:
            nan = float("nan")
            metrics = dict(final_acc=nan, forgetting=nan, bwt=nan, train_acc=nan, diverged=1.0)
            return {"group": group, "metrics": metrics, "extra": extra}
        c = summary["config"]
        metrics = {
            "final_acc": float(summary["final_accuracy"]),
            "forgetting": float(summary["forgetting"]),
            "bwt": float(summary["bwt"]),
            "train_acc": float(summary["train_accuracy"]),
            "diverged": 0.0,
        }
        if chosen is not None:  # same seeds, one evaluated stream: the very same training
            extra["val_acc"] = chosen["streams"]["valid"]["final_accuracy"]
            extra["same_training_as_selection"] = (
                chosen["train_accuracies"] == summary["train_accuracies"]
            )
        extra.update(
            lr=c["optimizer"].get("lr"),
            epochs=c["strategy"].get("train_epochs"),
            strategy_cfg=c["strategy"],
            experience_accuracies=summary["experience_accuracies"],
            train_accuracies=summary["train_accuracies"],
            margins=summary.get("margins", [])[-1:],
        )
        return {"group": group, "metrics": metrics, "extra": extra}

    # ---- report ------------------------------------------------------------------------
    def plot(self, result: dict, out_dir: Path) -> list[str]:
        """One figure: final average accuracy (top) and forgetting (bottom) per strategy and
        loss, one column per scenario."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        agg = aggregate(result, ("scenario", "strategy", "loss"))
        if not agg:
            return []
        scenarios = list(dict.fromkeys(k[0] for k in agg))
        strategies = list(dict.fromkeys(k[1] for k in agg))
        losses = list(dict.fromkeys(k[2] for k in agg))
        fig, axes = plt.subplots(2, len(scenarios), figsize=(4.2 * len(scenarios), 5.6),
                                 squeeze=False, sharey="row")  # fmt: skip
        width = 0.8 / len(losses)
        for j, sc in enumerate(scenarios):
            for row, (metric, label) in enumerate(
                (("final_acc", "final avg accuracy %"), ("forgetting", "forgetting %"))
            ):
                ax = axes[row, j]
                for i, loss in enumerate(losses):
                    vals = [100 * np.asarray(agg.get((sc, st, loss), {}).get(metric, [np.nan]))
                            for st in strategies]  # fmt: skip
                    xs = np.arange(len(strategies)) + (i - (len(losses) - 1) / 2) * width
                    ax.bar(xs, [np.nanmean(v) if np.isfinite(v).any() else np.nan for v in vals],
                           width, yerr=[np.nanstd(v) if np.isfinite(v).any() else 0 for v in vals],
                           capsize=2, label=loss_label(loss))  # fmt: skip
                ax.set_xticks(np.arange(len(strategies)),
                              [STRATEGY_LABEL.get(s, s) for s in strategies])  # fmt: skip
                if j == 0:
                    ax.set_ylabel(label)
                if row == 0:
                    ax.set_title(scenario_label(result["settings"], sc), fontsize=9)
        axes[0, 0].legend(fontsize=8)
        fig.suptitle("Continual learning on digits, 5 experiences (Avalanche EvaluationPlugin)",
                     fontsize=10)  # fmt: skip
        return [save_figure(fig, out_dir, f"{self.name}_scenarios.png")]

    def _recipes(self, result: dict) -> str:
        """Config, epochs and strategy arguments per (strategy, loss), from the first record."""
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
                         f"`{e['config']}`", str(e["epochs"]),
                         ", ".join(f"{k}={v}" for k, v in st.items()) or "—"])  # fmt: skip
        return md_table(["strategy", "loss", "config", "epochs / exp.", "strategy args"], rows)

    def _scenarios(self, result: dict) -> str:
        """The scenarios' options merged into the configs."""
        rows = [[scenario_label(result["settings"], sc), f"`{sc}`",
                 ", ".join(f"{k}={v}" for k, v in (spec.get("options") or {}).items()) or "—"]
                for sc, spec in result["settings"].get("scenarios", {}).items()]  # fmt: skip
        return md_table(["scenario", "key", "options merged into the config"], rows)

    def _selection(self, result: dict) -> str:
        """Validation score of every grid point (mean over seeds) and the chosen values."""
        slots: dict[tuple, dict] = {}
        for _, rec in records(result):
            sel = rec["extra"].get("selection")
            if not sel:
                continue
            g = rec["group"]
            slot = slots.setdefault((g["scenario"], g["strategy"], g["loss"]),
                                    {"scores": {}, "chosen": [], "on": sel["lr_selected_on"]})  # fmt: skip
            for params, s, *_ in sel.get("grid", []):
                slot["scores"].setdefault(protocol.point_label(params), []).append(s)
            slot["chosen"].append(protocol.point_label(sel["chosen"]))
        rows = []
        for (sc, st, lo), slot in slots.items():
            grid = " · ".join(f"{lab}: {_pct(v)}" for lab, v in slot["scores"].items()) or "—"
            counts = {c: slot["chosen"].count(c) for c in dict.fromkeys(slot["chosen"])}
            chosen = ", ".join(f"{c} (×{n})" if len(counts) > 1 else c for c, n in counts.items())
            rows.append([scenario_label(result["settings"], sc), STRATEGY_LABEL.get(st, st),
                         loss_label(lo), grid, chosen, slot["on"]])  # fmt: skip
        if not rows:
            return ""
        return md_table(["scenario", "strategy", "loss", f"grid: {METRIC} %", "chosen",
                         "selected on"], rows)  # fmt: skip

    def _verdicts(self, agg: dict, settings: dict, scenario: str) -> list[str]:
        min_acc = protocol.min_train_acc(settings)
        lines = []
        for st in dict.fromkeys(k[1] for k in agg if k[0] == scenario):
            ce = agg.get((scenario, st, "ce"))
            for ours in ("hem", "hem_plus"):
                m = agg.get((scenario, st, ours))
                if not (m and ce):
                    continue
                labels = (loss_label(ours), "CE")
                acc = protocol.claim_verdict(m, ce, "final_acc", labels, min_acc)
                fgt = protocol.claim_verdict(m, ce, "forgetting", labels, min_acc,
                                             higher_is_better=False)  # fmt: skip
                lines.append(
                    f"- {STRATEGY_LABEL.get(st, st)}: {loss_label(ours)} vs CE, final acc "
                    f"{fmt(m['final_acc'])} vs {fmt(ce['final_acc'])} "
                    f"({protocol.interval_text(m['final_acc'], ce['final_acc'])}): **{acc}**; "
                    f"forgetting {fmt(m['forgetting'])} vs {fmt(ce['forgetting'])}: **{fgt}** "
                    f"(claim: {loss_label(ours)} higher accuracy, less forgetting)"
                )
        return lines

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        min_acc = protocol.min_train_acc(s)
        agg = aggregate(result, ("scenario", "strategy", "loss"))
        seeds = seeds_to_run({"seeds": result["seeds"], **s})
        parts = [
            f"## {self.title}",
            "scikit-learn's digits (70/30 split) in 5 experiences, in three scenarios: "
            "class-incremental SplitDigits (2 new classes per experience, an MLP 64-256 whose "
            "incremental head grows with the classes, unseen units masked at -1000), "
            "task-incremental SplitDigits (the same split with task labels, one 2-unit head per "
            "task) and domain-incremental PermutedDigits (all 10 classes in every experience "
            "under its own pixel permutation, one 10-unit head). SGD momentum 0.9, cosine "
            "schedule restarted at every experience, batch 32; HEM / HEM+ margins set by "
            "`ExperienceMarginsPlugin` from each experience's training data (replay buffer included). "
            "The runs are the Avalanche adapter's shipped configs (`tools/continual.py`) with "
            "the scenario's options merged in:",
            self._scenarios(result),
            self._recipes(result),
            f"**Learning rate chosen on validation data.** "
            f"{100 * s.get('selection', {}).get('val_fraction', protocol.VAL_FRACTION):g} % of "
            "every training experience (per class) is carved into a validation stream; every "
            "run trains on the rest. Each grid point is scored by the final average accuracy "
            "on the validation stream, the test stream unseen; the chosen point's run is the "
            "reported one (trained again, identically seeded, with the test stream evaluated).",
            self._selection(result),
            "Final average accuracy: mean over the 5 test experiences after the last one; "
            "forgetting: Avalanche's stream forgetting (`forgetting_metrics`), both from its "
            "`EvaluationPlugin`; train acc: mean over experiences of the accuracy on the "
            "experience's training part right after training on it. A run is healthy when it "
            f"did not diverge and its train acc is at least {100 * min_acc:g} %; no verdict "
            "is drawn from a comparison with an unhealthy run. Seeds "
            + ", ".join(str(x) for x in seeds)
            + " (data seed: class order, permutations, splits; init seed: the weights).",
        ]
        for sc in dict.fromkeys(k[0] for k in agg):
            rows = [[STRATEGY_LABEL.get(st, st), loss_label(lo), fmt(m["final_acc"]),
                     fmt(m["forgetting"]), fmt(m.get("train_acc")),
                     protocol.health_cell({k: m[k] for k in HEALTH + ("diverged",) if k in m},
                                          min_acc)]
                    for (sc_, st, lo), m in agg.items() if sc_ == sc]  # fmt: skip
            parts += [
                f"### {scenario_label(s, sc)}",
                md_table(
                    [
                        "strategy",
                        "loss",
                        "final avg accuracy %",
                        "forgetting %",
                        "train acc %",
                        "healthy runs",
                    ],
                    rows,
                ),  # fmt: skip
                f"**Paper's claim.** {self.claim}",
                "\n".join(self._verdicts(agg, s, sc)),
            ]
        parts.append(per_seed_table(result, ("scenario", "strategy", "loss"), HEALTH))
        parts += [f"![Continual learning: accuracy and forgetting per scenario]({f})"
                  for f in self.plot(result, out_dir)]  # fmt: skip
        return "\n\n".join(p for p in parts if p)

    def summary(self, result: dict) -> list[tuple[str, dict[str, str]]]:
        """The claim per scenario, with the headline strategy (Replay): HEM and HEM+ against
        CE in final average accuracy (the README's table of the paper's claims)."""
        s = result["settings"]
        agg = aggregate(result, ("scenario", "strategy", "loss"))
        st = s.get("headline_strategy", "replay")
        min_acc = protocol.min_train_acc(s)
        rows = []
        # (metric, what the row measures, higher is better): final average accuracy over
        # the experiences, and forgetting (mean drop from each experience's best accuracy).
        measures = (("final_acc", "final average accuracy", True),
                    ("forgetting", "forgetting, lower is better", False))  # fmt: skip
        for ours in ("hem", "hem_plus"):
            label = loss_label(ours)
            for metric, what, higher in measures:
                cells = {
                    f"{scenario_label(s, sc)} ({STRATEGY_LABEL.get(st, st)})": claim_cell(
                        agg.get((sc, st, ours)),
                        agg.get((sc, st, "ce")),
                        metric,
                        (label, "CE"),
                        min_acc,
                        higher_is_better=higher,
                    )  # fmt: skip
                    for sc in dict.fromkeys(k[0] for k in agg)
                }
                rows.append((f"3d {label} forgets less than CE ({what})", cells))
        return rows

    def headline(self, result: dict, dataset: str | None = None) -> dict[str, dict[str, str]]:
        """Final accuracy of the main strategy (``headline_strategy``, default Replay) in the
        class-incremental scenario (``headline_scenario``)."""
        s = result["settings"]
        agg = aggregate(result, ("scenario", "strategy", "loss"))
        sc = s.get("headline_scenario", "class_incremental")
        strategies = [k[1] for k in agg if k[0] == sc]
        if not strategies:
            return {}
        st = s.get("headline_strategy", "replay")
        st = st if st in strategies else strategies[0]
        col = {k[2]: fmt(m["final_acc"]) for k, m in agg.items() if k[:2] == (sc, st)}
        return {f"3d final acc % ({STRATEGY_LABEL.get(st, st)}, SplitDigits)": col}


def _pct(values: list[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "diverged"
    return f"{100 * sum(vals) / len(vals):.1f}"


TASK = ContinualTask()
