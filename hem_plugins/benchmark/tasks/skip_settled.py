"""Beyond the paper: skip the training samples HEM has settled (paper appendix B.3).

HEM gives zero loss and zero gradient to a sample whose target logit beats every
other by its margin. This task measures whether presenting such samples less
often saves training at equal quality, with the runs of
:mod:`hem_plugins.benchmark.settled_runs` (the suite's data, model and training loop):

* digits classification (known classes 0-5): ``full`` (every sample every
  epoch), each skip variant (``SkipSettledSampler(revisit_every, revisit_prob)``)
  and, per skip variant and seed, ``full@<variant>``: full training for the
  epochs that spend the passes that variant spent (the control for "just train
  less");
* SplitDigits continual learning (its first experiences, classes 0-5): Naive
  and Replay with and without ``SkipSettledPlugin``.

Reported: sample forward+backward passes and training seconds (in total and to
first reach the full run's final accuracy of the same seed), accuracy,
forgetting and unknown-class AUROC as paired differences to the run without
skipping, with the suite's verdict rule (the 95 % t-interval of the paired
differences, :func:`..protocol.paired_interval`) and health gate (every run's
``train_acc`` at least ``min_train_acc``, :func:`..protocol.unhealthy`), and a plot
of the fraction of settled training samples over training.

Settings (``tasks.skip_settled`` in ``configs/benchmark/*.py``)::

    skip_settled=dict(
        losses=["hem"], datasets=["digits"], known_classes=[0, 1, 2, 3, 4, 5], test_size=0.3,
        classification=dict(epochs=15, batch_size=32, lr=0.01, momentum=0.9, hidden=128,
                            variants={"skip_r3_p0.1": [3, 0.1]}, controls=True),
        continual=dict(epochs=10, batch_size=32, lr=0.01, momentum=0.9, hidden=128,
                       mem_size=100, variants={"replay": [True, None],
                                               "replay+skip_r5": [True, [5, 0.0, False]]}),
    )

A continual variant is ``[replay, skip]`` with ``skip`` None or
``[revisit_every, revisit_prob, skip_replayed]``; its reference is the variant
named before the ``+``. ``continual=None`` leaves continual learning out.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch

from ..protocol import (
    grid_for,
    min_train_acc,
    run_seeds,
    select,
    selection_key,
    unhealthy,
    val_fraction,
)
from ..settled_runs import (
    SettledData,
    classification_run,
    continual_run,
    hold_out_validation,
    load_data,
    paired_diff,
    passes_to_reach,
)
from .base import BaseTask, Context
from .sections import md_table, mean_std, records, save_figure

PLOT = "skip_settled.png"
#: The aim the report tests: at least this fraction of the sample passes saved at equal
#: accuracy and AUROC.
AIM = 0.30
#: The continual part compares skipping with not skipping at one lr, fixed in the profile.
FIXED_LR = "profile (fixed: a paired comparison of skipping at one lr, not of losses)"


def _curve(run: dict) -> list[dict]:
    keys = ("epoch", "passes", "train_seconds", "acc", "auroc", "tracked_settled", "true_settled")
    return [{k: p[k] for k in keys} for p in run["curve"]]


def _lrs(runs: dict) -> str:
    """The lrs the runs used (one per benchmark seed when each seed selected its own)."""
    return "/".join(f"{v:g}" for v in sorted({r["extra"].get("lr") for r in runs.values()
                                               if r["extra"].get("lr") is not None}))  # fmt: skip


class SkipSettledTask(BaseTask):
    name = "skip_settled"
    title = "Beyond the paper: skipping samples HEM has settled"
    claim = (
        "Open question of the paper (appendix B.3): samples HEM has settled (zero loss, zero "
        "gradient) need not be presented again. The aim: at least 30 % fewer sample "
        "passes at equal accuracy and unknown-class AUROC."
    )

    def units(self, settings: dict) -> int:
        c = settings["classification"]
        n = 1 + len(c["variants"]) * (2 if c.get("controls", True) else 1)
        n += len((settings.get("continual") or {}).get("variants", {}))
        return n * int(settings.get("repeats", 1))

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        """``repeats`` trainings of every variant, with training seeds ``seed * repeats + j``.

        The classification runs train on the training set less a validation carve (carved
        with the run's data seed), on which HEM's lr is chosen from the selection grid."""
        data = load_data(settings["known_classes"], settings.get("test_size", 0.3))
        data_seed, _ = run_seeds(settings, seed)
        cls_data, val = hold_out_validation(data, val_fraction(settings), data_seed)
        c = settings["classification"]

        def score(params: dict) -> tuple[float, None]:
            run = classification_run(cls_data, {**c, **params}, seed, None, int(c["epochs"]))
            with torch.no_grad():
                acc = float((run["model"](val[0]).argmax(1) == val[1]).float().mean())
            return acc, None

        params, selection, _ = select(settings, self.name, selection_key("digits", "hem"),
                                      grid_for(settings, "hem"), score, "acc")  # fmt: skip
        c = {**c, **params}
        repeats = int(settings.get("repeats", 1))
        recs = []
        for j in range(repeats):
            recs += self._run_one({**settings, "classification": c}, cls_data, data,
                                  seed * repeats + j, ctx, selection)  # fmt: skip
        return {"records": recs}

    def _run_one(
        self,
        settings: dict,
        data: SettledData,
        all_data: SettledData,
        seed: int,
        ctx: Context,
        selection: dict,
    ) -> list[dict]:
        """Every variant of both parts trained once with training seed ``seed``: ``data`` is
        the training set less the validation carve, ``all_data`` the whole of it."""
        c = settings["classification"]
        recs = []

        def record(part: str, variant: str, metrics: dict, extra: dict) -> None:
            ds = "digits" if part == "classification" else "splitdigits"
            group = {"dataset": ds, "loss": "hem", "part": part, "variant": variant,
                     "train_seed": seed}  # fmt: skip
            recs.append({"group": group, "metrics": metrics, "extra": extra})

        def cls(variant_name: str, variant, epochs: int, full: dict | None) -> dict:
            ctx.advance(f"{self.name} {variant_name} seed {seed}")
            run = classification_run(data, c, seed, variant, epochs)
            reach = passes_to_reach(run["curve"], (full or run)["acc"])
            metrics = {
                "acc": run["acc"],
                "train_acc": run["train_acc"],
                "auroc": run["auroc"],
                "passes": run["passes"],
                "train_seconds": run["train_seconds"],
                "epochs": epochs,
                "passes_to_full_acc": reach[0] if reach else math.nan,
                "seconds_to_full_acc": reach[1] if reach else math.nan,
                "final_true_settled": run["curve"][-1]["true_settled"],
            }
            extra = {"margin": run["margin"], "n_train": run["n_train"], "curve": _curve(run),
                     "lr": c["lr"], "lr_selected_on": selection["lr_selected_on"],
                     "selection": selection}  # fmt: skip
            if variant is not None:
                extra["revisit"] = list(variant)
            record("classification", variant_name, metrics, extra)
            return run

        full = cls("full", None, int(c["epochs"]), None)
        skips = {k: cls(k, tuple(v), int(c["epochs"]), full) for k, v in c["variants"].items()}
        if c.get("controls", True):
            for k, run in skips.items():
                epochs = max(1, round(run["passes"] / run["n_train"]))
                cls(f"full@{k}", None, epochs, full)

        cl = settings.get("continual")
        if cl and importlib.util.find_spec("avalanche") is None:
            cl = None  # the `bench` extras alone: classification only (see render)
        if cl:
            for k, (replay, skip) in cl["variants"].items():
                ctx.advance(f"{self.name} continual {k} seed {seed}")
                run = continual_run(all_data, cl, seed, bool(replay), tuple(skip) if skip else None)
                metrics = {x: run[x] for x in ("acc", "auroc", "forgetting", "passes",
                                               "train_seconds", "train_acc")}  # fmt: skip
                hist = [{"epoch": h["epoch"], "experience": h["experience"],
                         "presented": h["presented"], "fraction_settled": h["fraction_settled"]}
                        for h in run["history"]]  # fmt: skip
                record("continual", k, metrics, {"history": hist, "skip": skip, "replay": replay,
                                                 "lr": cl["lr"], "lr_selected_on": FIXED_LR})  # fmt: skip
        return recs

    # ---- report ---------------------------------------------------------------------------
    @staticmethod
    def _by_variant(result: dict, part: str) -> dict[str, dict[int, dict]]:
        """``{variant: {training seed: record}}`` of one part, in first-seen order."""
        out: dict[str, dict[int, dict]] = {}
        for seed, rec in records(result):
            if rec["group"].get("part") == part:
                key = rec["group"].get("train_seed", seed)
                out.setdefault(rec["group"]["variant"], {})[key] = rec
        return out

    @staticmethod
    def _diff(runs: dict[int, dict], ref: dict[int, dict], key: str, min_acc: float) -> dict:
        """:func:`paired_diff` of ``key`` over the seeds both sides ran, and ``unhealthy``:
        why a run of either side fails the health gate (None when all are healthy)."""
        seeds = [s for s in runs if s in ref]
        out = paired_diff([runs[s]["metrics"][key] for s in seeds],
                          [ref[s]["metrics"][key] for s in seeds])  # fmt: skip
        bad = [why for s in seeds for r in (runs[s], ref[s])
               if (why := unhealthy(r["metrics"], min_acc))]  # fmt: skip
        out["unhealthy"] = f"{bad[0]} in {len(bad)} run(s)" if bad else None
        return out

    @staticmethod
    def _fd(d: dict, scale: float = 100.0) -> str:
        """``+1.2 [-0.3, +2.7]``, ``**≠**`` when the interval excludes 0, ``⚠ (why)`` when a
        run is unhealthy (then no verdict is drawn)."""
        if math.isnan(d["mean"]):
            return "—"
        text = f"{d['mean'] * scale:+.1f}"
        if d["within_noise"] is not None:
            text += f" [{d['lo'] * scale:+.1f}, {d['hi'] * scale:+.1f}]"
            text += "" if d["within_noise"] else " **≠**"
        if d.get("unhealthy"):
            text += f" ⚠ ({d['unhealthy']})"
        return text

    @staticmethod
    def _ms(runs: dict[int, dict], key: str, scale: float = 1.0, digits: int = 0) -> str:
        m, s = mean_std([r["metrics"][key] for r in runs.values()])
        if math.isnan(m):
            return "—"
        return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"

    def _classification(self, result: dict) -> tuple[str, list[str], dict]:
        v = self._by_variant(result, "classification")
        if "full" not in v:
            return "", [], {}
        min_acc = min_train_acc(result["settings"])
        full = v["full"]
        full_passes = mean_std([r["metrics"]["passes"] for r in full.values()])[0]
        rows, summary = [], {}
        for name, runs in v.items():
            passes = mean_std([r["metrics"]["passes"] for r in runs.values()])[0]
            reached = [r for r in runs.values() if not math.isnan(r["metrics"]["passes_to_full_acc"])]  # fmt: skip
            summary[name] = {
                "saved": 1.0 - passes / full_passes,
                "acc": self._diff(runs, full, "acc", min_acc),
                "auroc": self._diff(runs, full, "auroc", min_acc),
            }
            rows.append([
                name, self._ms(runs, "epochs"), f"{passes:.0f}",
                "—" if name == "full" else f"{100 * summary[name]['saved']:.1f}%",
                self._ms(runs, "train_seconds", digits=2),
                self._ms(runs, "acc", 100, 1), "—" if name == "full" else self._fd(summary[name]["acc"]),
                self._ms(runs, "auroc", 100, 1),
                "—" if name == "full" else self._fd(summary[name]["auroc"]),
                f"{len(reached)}/{len(runs)}",
                self._ms({s: r for s, r in runs.items() if r in reached}, "passes_to_full_acc")
                if reached else "—",
                self._ms({s: r for s, r in runs.items() if r in reached}, "seconds_to_full_acc",
                         digits=2) if reached else "—",
                self._ms(runs, "final_true_settled", 100, 1),
            ])  # fmt: skip
        header = ["variant", "epochs", "sample passes", "saved vs full", "train s", "acc %",
                  "Δacc pts", "AUROC %", "ΔAUROC pts", "runs reaching full's acc",
                  "passes to reach it", "train s to reach it", "settled at end %"]  # fmt: skip
        first = next(iter(full.values()))
        s = result["settings"]
        c = s["classification"]
        intro = (
            f"**Digits classification.** MLP 64-{c['hidden']}-{c['hidden']}-{len(s['known_classes'])}"
            f" with BatchNorm on classes {s['known_classes']} ({first['extra']['n_train']} training "
            "samples: SplitDigits' split less a validation carve), HEM margin `margin_for_dataset` = "
            f"{first['extra']['margin']:.3f}, SGD momentum {c.get('momentum', 0.9)}, lr "
            f"{_lrs(full)} (chosen for full training on the validation carve: "
            f"{first['extra'].get('lr_selected_on', 'profile')}) cosine per epoch, batch "
            f"{c['batch_size']}, {c['epochs']} epochs. `skip_rK_pP`: `SkipSettledSampler("
            "revisit_every=K, revisit_prob=P)`; `full@X`: full training for the epochs that spend "
            "X's passes (same seed). AUROC: MSP, known vs the held-out test samples of the other "
            "classes."
        )
        lines = []
        for name, d in summary.items():
            if name == "full" or name.startswith("full@"):
                continue
            equal = d["acc"]["within_noise"] and d["auroc"]["within_noise"]
            healthy = not (d["acc"]["unhealthy"] or d["auroc"]["unhealthy"])
            ok = d["saved"] >= AIM and equal and healthy
            line = (
                f"- `{name}`: {100 * d['saved']:.1f}% fewer passes than `full`, Δacc "
                f"{self._fd(d['acc'])}, ΔAUROC {self._fd(d['auroc'])} points: "
                + ("**meets the aim** (≥ 30 % saved, accuracy and AUROC within seed noise)"
                   if ok else "**not decided** (an unhealthy run)" if not healthy
                   else "**does not meet the aim**"
                   + (" (accuracy or AUROC differs beyond seed noise)" if equal is False
                      else " (saving below 30 %)" if equal else " (one seed: no noise estimate)"))
            )  # fmt: skip
            ctrl = v.get(f"full@{name}")
            if ctrl:
                dc = self._diff(v[name], ctrl, "acc", min_acc)
                da = self._diff(v[name], ctrl, "auroc", min_acc)
                line += (
                    f"; against `full@{name}` (full training, same passes): Δacc {self._fd(dc)}, "
                    f"ΔAUROC {self._fd(da)} — {self._against_control(dc, da)}"
                )
            lines.append(line)
        return intro + "\n\n" + md_table(header, rows), lines, summary

    @staticmethod
    def _against_control(dc: dict, da: dict) -> str:
        """Skipping against full training with the same passes, metric by metric."""

        def word(d: dict, label: str) -> str:
            if d.get("unhealthy"):
                return f"{label} not decided ({d['unhealthy']})"
            if d["within_noise"] is None:
                return f"{label} {'higher' if d['mean'] > 0 else 'lower'} (no noise estimate)"
            if d["within_noise"]:
                return f"{label} equal within noise"
            return f"{label} {'higher' if d['mean'] > 0 else 'lower'} beyond noise"

        acc, au = word(dc, "accuracy"), word(da, "AUROC")
        better = [d for d in (dc, da) if d["within_noise"] is False and d["mean"] > 0]
        worse = [d for d in (dc, da) if d["within_noise"] is False and d["mean"] < 0]
        if better and not worse:
            head = "skipping beats a shorter schedule"
        elif worse and not better:
            head = "skipping is worse than a shorter schedule"
        elif better and worse:
            head = "a trade-off against a shorter schedule"
        else:
            head = "no better than a shorter schedule"
        return f"{head} ({acc}, {au})"

    def _continual(self, result: dict) -> str:
        v = self._by_variant(result, "continual")
        if not v:
            if result["settings"].get("continual"):
                return ("**Continual learning** was configured but not run: it needs "
                        "avalanche-lib (`pip install -e .[avalanche]`).")  # fmt: skip
            return ""
        cl = result["settings"]["continual"]
        min_acc = min_train_acc(result["settings"])
        rows = []
        for name, runs in v.items():
            base = v.get(name.split("+")[0], runs)
            is_base = base is runs
            passes = mean_std([r["metrics"]["passes"] for r in runs.values()])[0]
            base_passes = mean_std([r["metrics"]["passes"] for r in base.values()])[0]
            rows.append([
                name, f"{passes:.0f}", "—" if is_base else f"{100 * (1 - passes / base_passes):.1f}%",
                self._ms(runs, "train_seconds", digits=2),
                self._ms(runs, "acc", 100, 1), "—" if is_base else self._fd(self._diff(runs, base, "acc", min_acc)),
                self._ms(runs, "forgetting", 100, 1),
                "—" if is_base else self._fd(self._diff(runs, base, "forgetting", min_acc)),
                self._ms(runs, "auroc", 100, 1),
                "—" if is_base else self._fd(self._diff(runs, base, "auroc", min_acc)),
            ])  # fmt: skip
        header = ["strategy", "sample passes", "saved", "train s", "final acc %", "Δacc pts",
                  "forgetting %", "Δforgetting pts", "AUROC %", "ΔAUROC pts"]  # fmt: skip
        n_exp = len(result["settings"]["known_classes"]) // 2
        intro = (
            f"**Continual learning.** `SplitDigits(n_experiences=5, fixed_class_order=0..9, "
            f"sample_ids=True)`, its first {n_exp} experiences (classes "
            f"{result['settings']['known_classes']}), Avalanche `Naive` (+ `ReplayPlugin("
            f"mem_size={cl['mem_size']})` for replay), {cl['epochs']} epochs per experience, lr "
            f"{cl['lr']} cosine per experience, batch {cl['batch_size']}, the same MLP without BatchNorm (Avalanche's replay loader can yield one-sample batches), HEMLoss "
            "with the margin of each experience's training rows. `skip_rK`: `SkipSettledPlugin("
            "revisit_every=K)`; `buffer_too`: `skip_replayed=True`. Δ: paired difference to the "
            "strategy without skipping; forgetting: accuracy on an experience's classes just "
            "after training it minus at the end (mean over all but the last)."
        )
        return intro + "\n\n" + md_table(header, rows)

    def plot(self, result: dict, out_dir: Path) -> str | None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cv = self._by_variant(result, "classification")
        ct = self._by_variant(result, "continual")
        if not cv:
            return None
        n_train = next(iter(cv["full"].values()))["extra"]["n_train"] if "full" in cv else 1
        fig, axes = plt.subplots(1, 3 if ct else 2, figsize=(16 if ct else 11, 4))

        def mean_curve(runs, key):
            curves = [[p[key] for p in r["extra"]["curve"]] for r in runs.values()]
            n = min(len(c) for c in curves)
            return np.mean([c[:n] for c in curves], axis=0)

        for name, runs in cv.items():
            style = ":" if name.startswith("full@") else "-"
            axes[1].plot(mean_curve(runs, "passes") / n_train, mean_curve(runs, "acc") * 100,
                         style, label=name)  # fmt: skip
            if name.startswith("full@"):
                continue
            epochs = np.arange(len(mean_curve(runs, "true_settled")))
            (line,) = axes[0].plot(epochs, mean_curve(runs, "true_settled"), label=f"{name} (true)")
            if name != "full":
                axes[0].plot(epochs, mean_curve(runs, "tracked_settled"), "--",
                             color=line.get_color(), label=f"{name} (tracker)")  # fmt: skip
        axes[0].set(xlabel="epoch", ylabel="fraction of training samples settled", ylim=(0, 1.02),
                    title="digits: settled fraction (mean over seeds)")  # fmt: skip
        axes[1].set(xlabel="sample passes / training-set size", ylabel="test accuracy %",
                    title="digits: accuracy against passes")  # fmt: skip
        for ax in axes[:2]:
            ax.legend(fontsize=7)
        if ct:
            for name, runs in ct.items():
                hists = [[h["fraction_settled"] for h in r["extra"]["history"]] for r in runs.values()]  # fmt: skip
                n = min(len(h) for h in hists)
                axes[2].plot(np.arange(n), np.mean([h[:n] for h in hists], axis=0), label=name)
            axes[2].set(xlabel="epoch (all experiences)", ylim=(0, 1.02),
                        ylabel="fraction settled (samples seen this experience)",
                        title="SplitDigits: settled fraction (tracker)")  # fmt: skip
            axes[2].legend(fontsize=7)
        return save_figure(fig, out_dir, PLOT)

    def _n_runs(self, result: dict) -> int:
        return len(self._by_variant(result, "classification").get("full", {}))

    def render(self, result: dict, out_dir: Path) -> str:
        table, lines, _ = self._classification(result)
        repeats = result["settings"].get("repeats", 1)
        parts = [
            f"## {self.title}",
            f"Mean ± std over {self._n_runs(result)} training seeds ({repeats} per benchmark seed "
            f"{', '.join(str(x) for x in result['seeds'])}); Δ: mean paired "
            "difference (same seed) [its 95 % t-interval], in points; **≠**: the interval "
            "excludes 0 (the suite's verdict rule); ⚠: a run below the health threshold "
            f"(train acc {min_train_acc(result['settings']):g}), no verdict drawn. Sample "
            "passes: forward+backward passes of "
            "single samples. Train seconds: training loops only, 1 CPU thread, noisy on a "
            "shared machine.",
            table,
            self._continual(result),
            f"**Question.** {self.claim}",
            "\n".join(lines),
        ]
        png = self.plot(result, Path(out_dir))
        if png:
            parts.append(f"![fraction of settled samples over training]({png})")
        return "\n\n".join(p for p in parts if p)

    def headline(self, result: dict, dataset: str | None = None) -> dict[str, dict[str, str]]:
        """The skip variant with the largest saving whose accuracy stays within seed noise."""
        _, _, summary = self._classification(result)
        best = None
        for name, d in summary.items():
            if name == "full" or name.startswith("full@") or d["acc"]["within_noise"] is False:
                continue
            if d["acc"]["unhealthy"]:
                continue
            if best is None or d["saved"] > summary[best]["saved"]:
                best = name
        cell = "none within noise"
        if best:
            d = summary[best]
            cell = f"{100 * d['saved']:.1f}% ({best}, Δacc {self._fd(d['acc'])})"
        return {"skip settled: passes saved (digits)": {"hem": cell}}


TASK = SkipSettledTask()
