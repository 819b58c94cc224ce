#!/usr/bin/env python
"""Does skipping HEM-settled samples save training? Measured on digits.

Paper appendix B.3 asks whether samples that HEM has settled (zero loss, zero
gradient) need to be presented again. This tool trains the same MLP on
scikit-learn's digits with HEM (margin from ``margin_for_dataset``, SGD with
momentum and a cosine learning rate, DESIGN.md section 4) in several ways, over
several seeds:

- ``full``: every sample every epoch;
- ``skip_rK`` / ``skip_rK_pP``: :class:`hem_plugins.skipping.SkipSettledSampler`,
  revisiting a settled sample every K epochs (and with probability P);
- ``full@skip_...``: full training for as many epochs as it takes to spend the
  sample passes that skip variant spent (cosine over those epochs): the
  control that tells a real saving from just training less.

Profiles: ``smoke`` (2 seeds, 4 epochs: a check that it runs), ``tight``
(8 seeds, 15 epochs: a schedule just long enough for full training) and
``quick`` (8 seeds, 60 epochs: a long schedule, as far as zero training loss).

Training uses 6 digit classes; the other 4 are unknown classes, scored by
maximum softmax probability (MSP) for unknown-class AUROC
(``sklearn.metrics.roc_auc_score``, known = positive). Reported per variant:
test accuracy and AUROC (mean and std over seeds), sample forward+backward
passes, training wall-clock (evaluation excluded), the passes each run needed
to first reach the full run's final accuracy of its seed, and, per epoch, the
fraction of training samples the tracker believes settled and the fraction
truly settled (measured on the whole training set after the epoch).

    python tools/skip_settled.py --out work_dirs/skip_settled --profile quick

Writes ``DIR/skip_settled.json``, ``DIR/skip_settled.png`` and
``DIR/skip_settled.md``. Unless ``--no-continual``, it also runs continual
learning (:func:`run_continual`): Naive and Replay, with and without
``SkipSettledPlugin``, reporting forgetting too, on classes 0-5 split into 3
experiences. The benchmark is built inline with ``nc_benchmark``; that is the
seam (:func:`_continual_benchmark`) where issue 4's ``SplitDigits`` goes after
the merge.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from hem_plugins import HEMLoss, margin_for_dataset, settled_mask
from hem_plugins.skipping import IndexedDataset, SettledTracker, SkipSettledSampler

KNOWN = list(range(6))  # trained classes; 6..9 are the unknown classes


@dataclass
class Profile:
    seeds: int
    epochs: int
    batch_size: int = 32
    lr: float = 0.01
    hidden: int = 128
    cl_epochs: int = 20  # per experience, continual learning


PROFILES = {
    "smoke": Profile(seeds=2, epochs=4, cl_epochs=2),
    "tight": Profile(seeds=8, epochs=15),
    "quick": Profile(seeds=8, epochs=60),
}

# name -> (revisit_every, revisit_prob); None = no skipping
VARIANTS = {
    "full": None,
    "skip_r5": (5, 0.0),
    "skip_r3_p0.1": (3, 0.1),
    "skip_r10": (10, 0.0),
}


def load_data(seed: int = 0):
    """Digits split once (fixed seed): known-class train/test and unknown-class test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target)
    known = torch.isin(y, torch.tensor(KNOWN))
    xk, yk = x[known].numpy(), y[known].numpy()
    xtr, xte, ytr, yte = train_test_split(xk, yk, test_size=0.3, random_state=seed, stratify=yk)
    return {
        "train": (torch.from_numpy(xtr), torch.from_numpy(ytr)),
        "test": (torch.from_numpy(xte), torch.from_numpy(yte)),
        "unknown": x[~known],
    }


def make_model(hidden: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, len(KNOWN)),
    )


@torch.no_grad()
def evaluate(model, data, margin) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    model.eval()
    xte, yte = data["test"]
    logits = model(xte)
    acc = float((logits.argmax(1) == yte).float().mean())
    msp_known = logits.softmax(1).amax(1)
    msp_unknown = model(data["unknown"]).softmax(1).amax(1)
    scores = torch.cat([msp_known, msp_unknown]).numpy()
    labels = np.r_[np.ones(len(msp_known)), np.zeros(len(msp_unknown))]
    xtr, ytr = data["train"]
    settled = settled_mask(model(xtr), ytr, margin)
    model.train()
    return {
        "acc": acc,
        "auroc": float(roc_auc_score(labels, scores)),
        "true_settled": float(settled.float().mean()),
    }


def train_run(data, prof: Profile, seed: int, variant, epochs: int) -> dict:
    """One training run; ``variant`` is None (full) or (revisit_every, revisit_prob)."""
    xtr, ytr = data["train"]
    n = len(ytr)
    margin = margin_for_dataset(n)
    model = make_model(prof.hidden, seed)
    crit = HEMLoss(margin=margin)
    opt = torch.optim.SGD(model.parameters(), lr=prof.lr, momentum=0.9)
    tracker = SettledTracker(n)
    gen = torch.Generator().manual_seed(seed)
    if variant is None:
        sampler = RandomSampler(range(n), generator=gen)
    else:
        sampler = SkipSettledSampler(
            tracker, revisit_every=variant[0], revisit_prob=variant[1], seed=seed
        )
    loader = DataLoader(
        IndexedDataset(TensorDataset(xtr, ytr)), batch_size=prof.batch_size, sampler=sampler
    )
    curve = []
    train_time = 0.0
    for epoch in range(epochs):
        lr = 0.5 * prof.lr * (1 + math.cos(math.pi * epoch / epochs))  # cosine, per epoch
        for group in opt.param_groups:
            group["lr"] = lr
        tracker.epoch = epoch
        t0 = time.perf_counter()
        for xb, yb, idx in loader:
            logits = model(xb)
            loss = crit(logits, yb)
            if variant is None:  # full training needs no mask; only count the passes
                tracker.update(idx, torch.zeros(idx.numel(), dtype=torch.bool))
            else:
                tracker.observe(idx, logits, yb, crit.margins)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        train_time += time.perf_counter() - t0
        ev = evaluate(model, data, margin)
        curve.append(
            {
                "epoch": epoch,
                "passes": int(tracker.passes.sum()),
                "tracked_settled": tracker.fraction_settled,
                **ev,
            }
        )
    return {
        "seed": seed,
        "epochs": epochs,
        "margin": margin,
        "passes": int(tracker.passes.sum()),
        "train_seconds": train_time,
        "acc": curve[-1]["acc"],
        "auroc": curve[-1]["auroc"],
        "curve": curve,
    }


def passes_to_reach(curve, target: float) -> int | None:
    for point in curve:
        if point["acc"] >= target - 1e-9:
            return point["passes"]
    return None


def paired_diff(values, reference) -> dict:
    """Mean paired difference (same seed), its standard error, and whether it is within noise.

    Within noise: ``|mean| <= 2 * standard error`` (about a 95% interval).
    """
    d = [a - b for a, b in zip(values, reference, strict=True)]
    mean = statistics.fmean(d)
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else 0.0
    return {"mean": mean, "se": se, "within_noise": abs(mean) <= 2 * se + 1e-12}


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def run_classification(prof: Profile, log=print) -> dict:
    data = load_data()
    n = len(data["train"][1])
    runs: dict[str, list[dict]] = {}
    for name, variant in VARIANTS.items():
        runs[name] = []
        for seed in range(prof.seeds):
            r = train_run(data, prof, seed, variant, prof.epochs)
            runs[name].append(r)
            log(
                f"{name:>14} seed {seed}: acc {r['acc']:.4f} auroc {r['auroc']:.4f} passes {r['passes']}"
            )
    # The controls: full training with the pass budget of each skip variant.
    for name, variant in VARIANTS.items():
        if variant is None:
            continue
        budget = statistics.fmean(r["passes"] for r in runs[name])
        matched_epochs = max(1, round(budget / n))
        control = f"full@{name}"
        runs[control] = []
        for seed in range(prof.seeds):
            r = train_run(data, prof, seed, None, matched_epochs)
            runs[control].append(r)
            log(
                f"{control:>20} seed {seed}: acc {r['acc']:.4f} auroc {r['auroc']:.4f} passes {r['passes']}"
            )
    summary = {}
    full_passes = statistics.fmean(r["passes"] for r in runs["full"])
    for name, rs in runs.items():
        reach = [
            passes_to_reach(r["curve"], full["acc"])
            for r, full in zip(rs, runs["full"], strict=True)
        ]
        acc_m, acc_s = mean_std([r["acc"] for r in rs])
        au_m, au_s = mean_std([r["auroc"] for r in rs])
        passes = statistics.fmean(r["passes"] for r in rs)
        reach_m, _ = mean_std(reach)
        acc_d = paired_diff([r["acc"] for r in rs], [f["acc"] for f in runs["full"]])
        au_d = paired_diff([r["auroc"] for r in rs], [f["auroc"] for f in runs["full"]])
        summary[name] = {
            "epochs": rs[0]["epochs"],
            "acc_mean": acc_m,
            "acc_std": acc_s,
            "acc_diff_vs_full": acc_d,
            "auroc_diff_vs_full": au_d,
            "auroc_mean": au_m,
            "auroc_std": au_s,
            "passes_mean": passes,
            "passes_saved_vs_full": 1.0 - passes / full_passes,
            "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in rs),
            "reached_full_acc": sum(v is not None for v in reach),
            "passes_to_full_acc_mean": reach_m,
            "final_true_settled_mean": statistics.fmean(r["curve"][-1]["true_settled"] for r in rs),
        }
    return {"n_train": n, "margin": runs["full"][0]["margin"], "summary": summary, "runs": runs}


# name -> (replay, (revisit_every, revisit_prob, skip_replayed) or None)
CL_VARIANTS = {
    "naive": (False, None),
    "naive+skip_r5": (False, (5, 0.0, False)),
    "replay": (True, None),
    "replay+skip_r5": (True, (5, 0.0, False)),
    "replay+skip_r5_buffer_too": (True, (5, 0.0, True)),
}


def _continual_benchmark(data):
    """Classes 0-5 in three experiences of two classes (fixed order), as SplitDigits will be.

    Built inline with Avalanche's generators until issue 4's ``SplitDigits``
    is merged (the seam: swap this function for it).
    """
    from avalanche.benchmarks import nc_benchmark
    from avalanche.benchmarks.utils.classification_dataset import (
        _make_taskaware_tensor_classification_dataset as make_ds,
    )

    from hem_plugins.avalanche.skip_settled import with_sample_ids

    train = with_sample_ids(make_ds(*data["train"]))
    test = make_ds(*data["test"])
    return nc_benchmark(
        train, test, n_experiences=3, task_labels=False, seed=0, fixed_class_order=KNOWN
    )


def continual_run(data, bench, prof: Profile, seed: int, replay: bool, skip, epochs: int) -> dict:
    from avalanche.training.plugins import LRSchedulerPlugin, ReplayPlugin
    from avalanche.training.supervised import Naive

    from hem_plugins.avalanche.skip_settled import SkipSettledPlugin

    model = make_model(prof.hidden, seed)
    crit = HEMLoss()
    opt = torch.optim.SGD(model.parameters(), lr=prof.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    revisit, prob, buffer_too = skip if skip else (1, 0.0, False)
    counter = SkipSettledPlugin(
        revisit_every=revisit, revisit_prob=prob, skip_replayed=buffer_too, seed=seed
    )
    plugins = [LRSchedulerPlugin(sched), counter]  # revisit_every=1 only counts passes
    mem = 100
    if replay:
        plugins.append(ReplayPlugin(mem_size=mem))
    torch.manual_seed(seed)
    strategy = Naive(
        model=model,
        optimizer=opt,
        criterion=crit,
        train_mb_size=prof.batch_size,
        train_epochs=epochs,
        eval_mb_size=512,
        plugins=plugins,
        evaluator=None,
    )
    xte, yte = data["test"]
    exp_classes = [sorted(set(e.classes_in_this_experience)) for e in bench.train_stream]

    @torch.no_grad()
    def per_exp_acc():
        model.eval()
        pred = model(xte).argmax(1)
        model.train()
        return [
            float(
                (pred[torch.isin(yte, torch.tensor(c))] == yte[torch.isin(yte, torch.tensor(c))])
                .float()
                .mean()
            )
            for c in exp_classes
        ]

    just_trained, train_time, seen = [], 0.0, 0
    for i, exp in enumerate(bench.train_stream):
        seen += len(exp.dataset)
        crit.set_num_samples(
            len(exp.dataset) + (min(mem, seen - len(exp.dataset)) if replay else 0)
        )
        t0 = time.perf_counter()
        strategy.train(exp)
        train_time += time.perf_counter() - t0
        just_trained.append(per_exp_acc()[i])
    final = per_exp_acc()
    ev = evaluate(model, data, float(crit.margins))
    return {
        "seed": seed,
        "passes": int(counter.tracker.passes.sum()),
        "train_seconds": train_time,
        "acc": ev["acc"],
        "auroc": ev["auroc"],
        "forgetting": statistics.fmean(
            j - f for j, f in zip(just_trained[:-1], final[:-1], strict=True)
        ),
        "final_per_experience": final,
        "history": counter.history,
    }


def run_continual(prof: Profile, log=print) -> dict:
    """Skipping in continual learning: Naive and Replay, with and without SkipSettledPlugin.

    Seam: the benchmark is built inline (:func:`_continual_benchmark`); after the
    merge of issue 4 it should be ``SplitDigits`` and the strategies those of
    ``tools/continual.py``. Reports accuracy on all 6 classes after the last
    experience, forgetting (accuracy on an experience's classes just after
    training it minus at the end, averaged over all but the last), unknown-class
    AUROC and sample passes.
    """
    data = load_data()
    bench = _continual_benchmark(data)
    epochs = prof.cl_epochs
    runs = {}
    for name, (replay, skip) in CL_VARIANTS.items():
        runs[name] = []
        for seed in range(prof.seeds):
            r = continual_run(data, bench, prof, seed, replay, skip, epochs)
            runs[name].append(r)
            log(
                f"{name:>20} seed {seed}: acc {r['acc']:.4f} forgetting {r['forgetting']:.4f} auroc {r['auroc']:.4f} passes {r['passes']}"
            )
    summary = {}
    for name, rs in runs.items():
        base = runs[name.split("+")[0]]
        acc_m, acc_s = mean_std([r["acc"] for r in rs])
        f_m, f_s = mean_std([r["forgetting"] for r in rs])
        au_m, au_s = mean_std([r["auroc"] for r in rs])
        passes = statistics.fmean(r["passes"] for r in rs)
        summary[name] = {
            "acc_mean": acc_m,
            "acc_std": acc_s,
            "forgetting_mean": f_m,
            "forgetting_std": f_s,
            "auroc_mean": au_m,
            "auroc_std": au_s,
            "passes_mean": passes,
            "passes_saved_vs_base": 1.0 - passes / statistics.fmean(r["passes"] for r in base),
            "train_seconds_mean": statistics.fmean(r["train_seconds"] for r in rs),
            "acc_diff_vs_base": paired_diff([r["acc"] for r in rs], [r["acc"] for r in base]),
            "forgetting_diff_vs_base": paired_diff(
                [r["forgetting"] for r in rs], [r["forgetting"] for r in base]
            ),
            "auroc_diff_vs_base": paired_diff([r["auroc"] for r in rs], [r["auroc"] for r in base]),
        }
    return {"epochs_per_experience": epochs, "summary": summary, "runs": runs}


def markdown_continual(result: dict, prof: Profile) -> str:
    lines = [
        "#### Continual learning (classes 0-5 in 3 experiences of 2; inline benchmark until SplitDigits)",
        "",
        f"{result['epochs_per_experience']} epochs per experience, cosine lr per experience "
        f"(Avalanche `LRSchedulerPlugin`), HEMLoss with the margin of each experience's data, "
        f"replay buffer 100, {prof.seeds} seeds. Δ: paired difference to the same strategy "
        "without skipping.",
        "",
        "| strategy | sample passes | saved | train s | final acc | Δacc | forgetting | Δforgetting "
        "| AUROC | ΔAUROC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def diff(d):
        mark = "" if d["within_noise"] else " **≠**"
        return f"{d['mean']:+.4f} ± {d['se']:.4f}{mark}"

    for name, v in result["summary"].items():
        lines.append(
            f"| {name} | {v['passes_mean']:.0f} | {100 * v['passes_saved_vs_base']:.1f}% "
            f"| {v['train_seconds_mean']:.2f} | {v['acc_mean']:.4f} ± {v['acc_std']:.4f} "
            f"| {diff(v['acc_diff_vs_base'])} | {v['forgetting_mean']:.4f} ± {v['forgetting_std']:.4f} "
            f"| {diff(v['forgetting_diff_vs_base'])} | {v['auroc_mean']:.4f} ± {v['auroc_std']:.4f} "
            f"| {diff(v['auroc_diff_vs_base'])} |"
        )
    return "\n".join(lines + [""])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, rs in result["runs"].items():
        epochs = [p["epoch"] for p in rs[0]["curve"]]
        true = np.mean([[p["true_settled"] for p in r["curve"]] for r in rs], axis=0)
        passes = np.mean([[p["passes"] for p in r["curve"]] for r in rs], axis=0)
        acc = np.mean([[p["acc"] for p in r["curve"]] for r in rs], axis=0)
        style = ":" if name.startswith("full@") else "-"
        axes[1].plot(passes / result["n_train"], acc, style, label=name)
        if name.startswith("full@"):
            continue
        (line,) = axes[0].plot(epochs, true, label=f"{name} (true)")
        if name.startswith("skip"):
            tracked = np.mean([[p["tracked_settled"] for p in r["curve"]] for r in rs], axis=0)
            axes[0].plot(epochs, tracked, "--", color=line.get_color(), label=f"{name} (tracker)")
    axes[0].set(xlabel="epoch", ylabel="fraction of training samples settled", ylim=(0, 1.02))
    axes[0].legend(fontsize=7)
    axes[1].set(xlabel="sample passes / training-set size", ylabel="test accuracy (known classes)")
    axes[1].set_ylim(bottom=max(0.0, axes[1].get_ylim()[0]))
    axes[1].legend(fontsize=7)
    fig.suptitle("HEM on digits (6 known classes): skipping settled samples, mean over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict, prof: Profile, profile: str, command: str) -> str:
    s = result["summary"]
    lines = [
        "### Skipping settled samples (digits, HEM)",
        "",
        f"`{command}`: MLP on digits classes 0-5 ({result['n_train']} training samples, "
        f"HEM margin {result['margin']:.3f}), SGD momentum 0.9, lr {prof.lr} cosine per epoch, "
        f"batch {prof.batch_size}, {prof.epochs} epochs, {prof.seeds} seeds (profile `{profile}`). "
        "Accuracy on held-out classes 0-5; AUROC of MSP, known vs unknown classes 6-9.",
        "",
        "| variant | epochs | sample passes | saved vs full | train s | test acc | Δacc vs full "
        "| AUROC | ΔAUROC vs full | runs reaching full's acc | passes to reach it |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def diff(d):
        mark = "" if d["within_noise"] else " **≠**"
        return f"{d['mean']:+.4f} ± {d['se']:.4f}{mark}"

    for name, v in s.items():
        reach = f"{v['passes_to_full_acc_mean']:.0f}" if v["passes_to_full_acc_mean"] else "—"
        lines.append(
            f"| {name} | {v['epochs']} | {v['passes_mean']:.0f} "
            f"| {100 * v['passes_saved_vs_full']:.1f}% | {v['train_seconds_mean']:.2f} "
            f"| {v['acc_mean']:.4f} ± {v['acc_std']:.4f} | {diff(v['acc_diff_vs_full'])} "
            f"| {v['auroc_mean']:.4f} ± {v['auroc_std']:.4f} | {diff(v['auroc_diff_vs_full'])} "
            f"| {v['reached_full_acc']}/{prof.seeds} | {reach} |"
        )
    lines += [
        "",
        "Means ± std over seeds; Δ: paired difference to `full` with the same seed, ± its "
        "standard error; **≠** marks a difference larger than two standard errors. `full@X`: full "
        "training for the epochs that spend X's sample passes. Train seconds: training loop only, "
        "1 CPU thread on a shared machine (noisy).",
    ]
    lines += ["", "![fraction settled](skip_settled.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--no-continual", action="store_true", help="skip the continual-learning part (Avalanche)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prof = PROFILES[args.profile]
    args.out.mkdir(parents=True, exist_ok=True)
    command = f"python tools/skip_settled.py --out {args.out} --profile {args.profile}"
    t0 = time.perf_counter()
    result = run_classification(prof)
    if not args.no_continual:
        result["continual"] = run_continual(prof)
    result["profile"] = {"name": args.profile, **asdict(prof)}
    result["command"] = command
    result["environment"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "seconds": time.perf_counter() - t0,
    }
    (args.out / "skip_settled.json").write_text(json.dumps(result, indent=1))
    plot(result, args.out / "skip_settled.png")
    text = markdown(result, prof, args.profile, command)
    if "continual" in result:
        text += "\n" + markdown_continual(result["continual"], prof)
    (args.out / "skip_settled.md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
