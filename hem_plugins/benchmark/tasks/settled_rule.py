"""Beyond the paper: a margin penalty on the samples HEM has settled (the paper's question 3).

The paper asks whether samples HEM has settled (zero loss, zero gradient) should get a
regularisation term or stronger augmentation to generalise better. This task measures one
targeted rule, :class:`~hem_plugins.settled_rules.SettledMarginPenalty` (``weight`` x the
multi-class margin loss at ``factor`` x HEM's margin, on the settled rows of each batch
only), against plain HEM with the same data, model, schedule, lr and seed:

* data: :func:`..settled_runs.load_data` (digits as SplitDigits splits them, known
  classes 0-5, the held-out test samples of classes 6-9 the unknowns);
* runs: :func:`..training.fit` with loss ``hem`` and, for the rule, ``loss_cfg``
  ``settled_rule=dict(weight, factor)`` (fixed in the profile before any run: the rule
  selects nothing, and the lr is the profile's for both sides);
* metrics: clean test accuracy, accuracy under torchattacks PGD on cross-entropy at
  ``eps`` (3b's recipe: ``pgd_steps`` steps of ``eps / 4``, random start), unknown-class
  AUROC of the max softmax probability (:func:`..metrics.open_set_metrics`, 3a's) and the
  fraction of training samples settled at the end.

Verdicts: the paired difference (rule - plain, same training seed) with its 95 %
t-interval (:func:`..settled_runs.paired_diff`, the suite's rule), no verdict where a run
fails the health gate (:func:`..protocol.unhealthy`).

Settings (``tasks.settled_rule`` in ``configs/benchmark/*.py``)::

    settled_rule=dict(known_classes=[0, 1, 2, 3, 4, 5], test_size=0.3, repeats=2,
                      epochs=15, batch_size=32, lr=0.01, momentum=0.9, hidden=128,
                      rule=dict(weight=0.1, factor=2.0), eps=0.05, pgd_steps=10)
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ...settled import settled_mask
from ..metrics import open_set_metrics
from ..protocol import min_train_acc, unhealthy
from ..settled_runs import SettledData, load_data, paired_diff
from ..training import fit
from .base import BaseTask, Context
from .sections import md_table, mean_std, records

VARIANTS = ("hem", "hem+settled_rule")
METRICS = (("acc", "clean acc %"), ("pgd_acc", "PGD acc %"), ("auroc", "unknown AUROC %"))


def pgd_accuracy(model: torch.nn.Module, x, y, eps: float, steps: int, seed: int) -> float:
    """Accuracy under torchattacks PGD on cross-entropy, 3b's recipe (steps of eps/4)."""
    import torchattacks

    torch.manual_seed(seed)  # PGD's random start
    model.eval()
    attack = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=steps, random_start=True)
    adv = attack(x, y)
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


def one_run(data: SettledData, s: dict, seed: int, rule: dict | None) -> dict:
    """One HEM training (with the rule when ``rule``) and its metrics."""
    split = data.split
    train_cfg = {"epochs": int(s["epochs"]), "batch_size": int(s["batch_size"]), "lr": s["lr"],
                 "momentum": s.get("momentum", 0.9), "weight_decay": 0.0,
                 "schedule": "cosine_epochs"}  # fmt: skip
    model_cfg = {"kind": "mlp", "hidden": (s["hidden"], s["hidden"]), "standardize": False}
    loss_cfg = {"settled_rule": dict(rule)} if rule else {}
    model, hist = fit(split, "hem", seed, train_cfg, model_cfg, loss_cfg)
    with torch.no_grad():
        known, unknown = model(split.x_test), model(data.unknown)
        train_logits = model(split.x_train)
    return {
        "acc": float((known.argmax(1) == split.y_test).float().mean()),
        "pgd_acc": pgd_accuracy(
            model, split.x_test, split.y_test, float(s["eps"]), int(s.get("pgd_steps", 10)), seed
        ),  # fmt: skip
        "auroc": open_set_metrics(known, unknown)["auroc_msp"],
        "train_acc": float((train_logits.argmax(1) == split.y_train).float().mean()),
        "settled": float(settled_mask(train_logits, split.y_train, hist["margin"]).float().mean()),
        "diverged": bool(hist["diverged"]),
        "margin": hist["margin"],
        "train_seconds": sum(hist["epoch_seconds"]),
    }


class SettledRuleTask(BaseTask):
    name = "settled_rule"
    title = "Beyond the paper: a margin penalty on samples HEM has settled"
    claim = (
        "Open question 3 of the paper: should samples HEM has settled get a regularisation "
        "term to generalise better? Measured: HEM + SettledMarginPenalty against plain HEM, "
        "clean accuracy, PGD accuracy and unknown-class AUROC."
    )

    def units(self, settings: dict) -> int:
        return len(VARIANTS) * int(settings.get("repeats", 1))

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        """Both variants ``repeats`` times, training seeds ``seed * repeats + j``."""
        data = load_data(settings["known_classes"], settings.get("test_size", 0.3))
        repeats = int(settings.get("repeats", 1))
        recs = []
        for j in range(repeats):
            train_seed = seed * repeats + j
            for variant in VARIANTS:
                ctx.advance(f"{self.name} {variant} seed {train_seed}")
                rule = settings["rule"] if variant != "hem" else None
                run = one_run(data, settings, train_seed, rule)
                extra = {k: run.pop(k) for k in ("margin",)}
                extra.update(lr=settings["lr"], rule=rule, epochs=settings["epochs"])
                group = {"dataset": "digits", "loss": "hem", "variant": variant,
                         "train_seed": train_seed}  # fmt: skip
                recs.append({"group": group, "metrics": run, "extra": extra})
        return {"records": recs}

    @staticmethod
    def by_variant(result: dict) -> dict[str, dict[int, dict]]:
        out: dict[str, dict[int, dict]] = {}
        for _, rec in records(result):
            out.setdefault(rec["group"]["variant"], {})[rec["group"]["train_seed"]] = rec
        return out

    def diffs(self, result: dict) -> dict[str, dict]:
        """Per metric: the paired difference rule - plain, with ``unhealthy`` (or None)."""
        v = self.by_variant(result)
        plain, rule = v.get(VARIANTS[0], {}), v.get(VARIANTS[1], {})
        seeds = [s for s in plain if s in rule]
        min_acc = min_train_acc(result["settings"])
        bad = [why for s in seeds for r in (plain[s], rule[s])
               if (why := unhealthy(r["metrics"], min_acc))]  # fmt: skip
        out = {}
        for key, _ in (*METRICS, ("settled", "")):
            d = paired_diff([rule[s]["metrics"][key] for s in seeds],
                            [plain[s]["metrics"][key] for s in seeds])  # fmt: skip
            d["unhealthy"] = f"{bad[0]} in {len(bad)} run(s)" if bad else None
            out[key] = d
        return out

    @staticmethod
    def fmt(d: dict) -> str:
        if math.isnan(d["mean"]):
            return "—"
        text = f"{100 * d['mean']:+.1f}"
        if d["within_noise"] is not None:
            text += f" [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
            text += "" if d["within_noise"] else " **≠**"
        if d.get("unhealthy"):
            text += f" ⚠ ({d['unhealthy']})"
        return text

    @staticmethod
    def word(d: dict) -> str:
        if d.get("unhealthy"):
            return "not decided (an unhealthy run)"
        if d["within_noise"] is None:
            return "no noise estimate (one seed)"
        if d["within_noise"]:
            return "no difference measured (within seed noise)"
        return "higher beyond seed noise" if d["mean"] > 0 else "lower beyond seed noise"

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        v = self.by_variant(result)
        if not v:
            return f"## {self.title}\n\nNo runs."
        d = self.diffs(result)
        rows = []
        for name, runs in v.items():
            row = [f"`{name}`", str(len(runs))]
            for key, _ in (*METRICS, ("settled", "")):
                m, sd = mean_std([r["metrics"][key] for r in runs.values()])
                row.append(f"{100 * m:.1f} ± {100 * sd:.1f}")
            rows.append(row)
        rows.append(["Δ rule − plain", "paired", *(self.fmt(d[k]) for k, _ in METRICS),
                     self.fmt(d["settled"])])  # fmt: skip
        header = ["variant", "runs", *(label for _, label in METRICS), "settled at end %"]
        rule, first = s["rule"], next(iter(next(iter(v.values())).values()))
        intro = (
            f"Digits, known classes {s['known_classes']} (unknowns: the held-out test samples "
            f"of the other classes), MLP 64-{s['hidden']}-{s['hidden']}-{len(s['known_classes'])}"
            f" with BatchNorm on the raw pixels, HEM margin {first['extra']['margin']:.3f}, SGD "
            f"momentum {s.get('momentum', 0.9)}, lr {s['lr']} (the profile's, both sides) "
            f"cosine per epoch, batch {s['batch_size']}, {s['epochs']} epochs. Rule: "
            f"`SettledMarginPenalty(HEMLoss, weight={rule['weight']}, factor={rule['factor']})`"
            " (fixed before any run, nothing selected). PGD: torchattacks, cross-entropy, "
            f"ε = {s['eps']} of the input range, {s.get('pgd_steps', 10)} steps of ε/4, random "
            f"start. Mean ± std over training seeds ({s.get('repeats', 1)} per benchmark seed "
            f"{', '.join(str(x) for x in result['seeds'])}); Δ: mean paired difference (same "
            "seed) [95 % t-interval] in points, **≠** where it excludes 0; ⚠: a run below the "
            f"health threshold (train acc {min_train_acc(s):g}), no verdict drawn."
        )
        lines = [f"- {label}: {self.word(d[k])}, Δ {self.fmt(d[k])} points."
                 for k, label in METRICS]  # fmt: skip
        return "\n\n".join([f"## {self.title}", intro, md_table(header, rows),
                            f"**Question.** {self.claim}", "\n".join(lines)])  # fmt: skip


TASK = SettledRuleTask()
