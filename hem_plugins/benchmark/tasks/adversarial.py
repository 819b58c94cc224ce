"""3b. Adversarial robustness: accuracy under FGSM and PGD (L-inf) from torchattacks.

Inputs are in ``[0, 1]`` (the model standardises internally), so the epsilons
are fractions of the input range. PGD: ``steps`` iterations of size ``eps / 4``
from a random start. Attacks maximise cross-entropy of the logits (torchattacks'
default) for every loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from ..data import Split
from ..losses import loss_label
from ..protocol import (
    claim_verdict,
    health_cell,
    interval_text,
    min_train_acc,
    selection_key,
)
from ..training import predict
from .base import Context
from .classification import ClassificationRun, ClassificationTask, Trained
from .sections import (
    aggregate,
    claim_cell,
    fmt,
    health_fmt,
    health_note,
    margins_table,
    md_table,
    mean_std,
    per_seed_table,
    save_figure,
    selection_table,
    train_settings_table,
)


def _accuracy_under(attack, model, x, y, device, batch=1024) -> float:
    correct = 0
    for i in range(0, len(x), batch):
        xb, yb = x[i : i + batch].to(device), y[i : i + batch].to(device)
        adv = attack(xb, yb) if attack is not None else xb
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == yb).sum())
    return correct / len(x)


class AdversarialTask(ClassificationTask):
    name = "adversarial"
    title = "3b. Adversarial robustness (FGSM, PGD)"
    claim = (
        "HEM is more robust to adversarial attacks than CE (higher accuracy under FGSM and PGD)."
    )

    def units(self, settings: dict) -> int:
        return len(settings["datasets"]) * len(settings["losses"])

    def runs(
        self, settings: dict, dataset: str, data: Split, data_seed: int
    ) -> Iterator[ClassificationRun]:
        for loss in settings["losses"]:
            group = {"dataset": dataset, "loss": loss}
            yield ClassificationRun(data, loss, selection_key(dataset, loss), group,
                                    f"{dataset} {loss}", settings)  # fmt: skip

    def records(self, run: ClassificationRun, trained: Trained, ctx: Context) -> list[dict]:
        """Accuracy on the first ``max_eval`` test samples, clean and under each attack at
        each epsilon (one record each); every record carries the run's health."""
        import torchattacks

        model, s = trained.model, run.settings
        steps = int(s.get("pgd_steps", 10))
        n_eval = int(s.get("max_eval", 1000))
        x, y = run.split.x_test[:n_eval], run.split.y_test[:n_eval]
        for p in model.parameters():
            p.requires_grad_(False)
        health = trained.health(margin_loss=False)  # every record of the run
        extra = trained.extra()
        clean = float((predict(model, x, ctx.device).argmax(1) == y).float().mean())
        recs = [{"group": {**run.group, "attack": "clean", "eps": 0.0},
                 "metrics": {"acc": clean, **health}, "extra": extra}]  # fmt: skip
        extra = {k: v for k, v in extra.items() if k != "selection"}  # once per run
        for eps in s["eps"]:
            torch.manual_seed(trained.init_seed)  # PGD's random start
            for attack_name, attack in (
                ("FGSM", torchattacks.FGSM(model, eps=eps)),
                ("PGD", torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=steps,
                                         random_start=True)),
            ):  # fmt: skip
                acc = _accuracy_under(attack, model, x, y, ctx.device)
                recs.append({"group": {**run.group, "attack": attack_name, "eps": float(eps)},
                             "metrics": {"acc": acc, **health}, "extra": extra})  # fmt: skip
        return recs

    def plot(self, result: dict, out_dir: Path) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        agg = aggregate(result, ("dataset", "loss", "attack", "eps"))
        files = []
        for ds in dict.fromkeys(k[0] for k in agg):
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
            for ax, attack in zip(axes, ("FGSM", "PGD"), strict=True):
                for loss in dict.fromkeys(k[1] for k in agg if k[0] == ds):
                    pts = sorted(
                        (k[3], mean_std(v["acc"])) for k, v in agg.items()
                        if k[0] == ds and k[1] == loss and k[2] in (attack, "clean")
                    )  # fmt: skip
                    xs = [p[0] for p in pts]
                    ms = [100 * p[1][0] for p in pts]
                    ss = [100 * p[1][1] for p in pts]
                    ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=loss_label(loss))
                ax.set_title(f"{attack} ({ds})")
                ax.set_xlabel("epsilon (L-inf, inputs in [0, 1])")
            axes[0].set_ylabel("test accuracy %")
            axes[0].legend()
            files.append(save_figure(fig, out_dir, f"{self.name}_{ds}.png"))
        return files

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        min_acc = min_train_acc(s)
        agg = aggregate(result, ("dataset", "loss", "attack", "eps"))
        cols = sorted({(k[2], k[3]) for k in agg}, key=lambda c: (c[0] != "clean", c[0], c[1]))
        header = ["dataset", "loss", "healthy runs"]
        header += [a if a == "clean" else f"{a} ε={e:g}" for a, e in cols]
        rows = []
        for ds, loss in dict.fromkeys((k[0], k[1]) for k in agg):
            rows.append([ds, loss_label(loss), health_cell(agg[(ds, loss, "clean", 0.0)], min_acc)]
                        + [fmt(agg.get((ds, loss, a, e), {}).get("acc")) for a, e in cols])  # fmt: skip
        lines = []
        for ds in dict.fromkeys(k[0] for k in agg):
            for other in [x for x in s["losses"] if x != "hem"]:
                for a, e in cols:
                    if a == "clean":
                        continue
                    h, o = agg.get((ds, "hem", a, e)), agg.get((ds, other, a, e))
                    if h and o:
                        v = claim_verdict(h, o, "acc", ("HEM", loss_label(other)), min_acc)
                        lines.append(
                            f"- {ds} {a} ε={e:g}: HEM {fmt(h['acc'])} vs {loss_label(other)} "
                            f"{fmt(o['acc'])}, paired {interval_text(h['acc'], o['acc'])}: "
                            f"**{v}** (claim: HEM higher)"
                        )
        parts = [
            f"## {self.title}",
            f"torchattacks FGSM and PGD ({s.get('pgd_steps', 10)} steps of ε/4, random start), "
            f"L-inf, on up to {s.get('max_eval', 1000)} test samples; inputs in [0, 1]. "
            "Accuracy %, mean ± std over seeds " + ", ".join(str(x) for x in result["seeds"]) + ".",
            train_settings_table(s, s["losses"]),
            selection_table(result, ("dataset", "loss")),
            margins_table(result),
            md_table(header, rows),
            health_note(min_acc),
            per_seed_table(result, ("dataset", "loss", "attack", "eps"), ("train_acc", "acc")),
            f"**Paper's claim.** {self.claim}",
            "\n".join(lines),
            "Caveat: both attacks follow the gradient of cross-entropy on the model's logits. A "
            "model with very large logits (see the NLL column of 3a: LogitNorm's runs reach NLLs in "
            "the thousands) saturates the softmax, so that gradient vanishes in float32 and the "
            "attack barely moves the input: high accuracy under attack together with a huge NLL is "
            "gradient masking, not robustness.",
        ]
        parts += [f"![accuracy under attack]({f})" for f in self.plot(result, out_dir)]
        return "\n\n".join(p for p in parts if p)

    def summary(self, result: dict) -> list[tuple[str, dict[str, str]]]:
        agg = aggregate(result, ("dataset", "loss", "attack", "eps"))
        eps = sorted({k[3] for k in agg if k[2] == "PGD"})
        if not eps:
            return []
        e = eps[len(eps) // 2]
        min_acc = min_train_acc(result["settings"])
        row = {
            ds: claim_cell(
                agg.get((ds, "hem", "PGD", e)),
                agg.get((ds, "ce", "PGD", e)),
                "acc",
                ("HEM", "CE"),
                min_acc,
            )  # fmt: skip
            for ds in dict.fromkeys(k[0] for k in agg)
        }
        return [(f"3b HEM is more robust than CE (PGD accuracy, ε={e:g})", row)]

    def headline(self, result: dict, dataset: str) -> dict[str, dict[str, str]]:
        agg = aggregate(result, ("dataset", "loss", "attack", "eps"))
        eps = sorted({k[3] for k in agg if k[2] == "PGD"})
        if not eps:
            return {}
        e = eps[len(eps) // 2]
        min_acc = min_train_acc(result["settings"])
        col = {
            k[1]: health_fmt(v, "acc", min_acc)
            for k, v in agg.items()
            if k[0] == dataset and k[2] == "PGD" and k[3] == e
        }
        return {f"3b PGD acc % (ε={e:g})": col}


TASK = AdversarialTask()
