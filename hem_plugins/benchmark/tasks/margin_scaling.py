"""The margin's scaling law: is HEM's best margin ``sqrt(2000 / N)`` across training-set sizes
(``docs/margin_scaling.md``; issue 21)?

For each dataset and each training-set size ``N`` of ``sizes`` (a log grid), each seed draws a
validation carve of ``val_size`` samples from the training split (stratified, by the data
seed) and a training subset of ``N`` samples from the rest (the first ``N`` of one
permutation, so a seed's subsets are nested), trains HEM at every margin
``factor * sqrt(2000 / N)`` of ``factors`` (the paper's margin is ``factor = 1``) and picks
the margin with the best validation accuracy (:func:`..protocol.best_point`: a tie goes to
the first, smaller margin). The test split scores every margin too, for the report only
(what the paper's rule costs against the margin validation picks); it chooses nothing.

Every run trains for the same number of SGD steps (``steps``, batches of ``batch_size``:
``epochs = round(steps / batches per epoch)``, at least 1), so that small and large ``N``
get the same optimisation budget, with one fixed lr (``lr``, HEM's tuned lr of 3a on both
datasets) and the suite's model of each dataset.

The fit, :func:`fit_exponent`: least squares of ``log mu* = a + b log N`` over the (N, seed)
points of a dataset, with the 95 % t-interval of ``b``. The paper's rule is ``b = -0.5``,
``a = log sqrt(2000)``; it *holds* on a dataset when ``-0.5`` lies inside the interval.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ...margins import DEFAULT_SCALE, margin_for_dataset
from ..config import model_cfg_for, train_cfg_for
from ..data import Split, load_dataset
from ..protocol import best_point, carve_validation, interval_text, run_seeds
from ..training import accuracy, fit, predict
from .base import BaseTask, Context, seeds_to_run
from .sections import aggregate, fmt, md_table, records, save_figure

#: The exponent of the paper's rule ``mu = sqrt(2000 / N)``.
PAPER_EXPONENT = -0.5


def fit_exponent(n: list[float], mu: list[float], level: float = 0.95) -> dict:
    """Least-squares fit of ``log mu = a + b log n`` (natural logs) with the ``level``
    t-interval of ``b`` (``n - 2`` degrees of freedom; scipy's ``linregress``).

    Returns ``{"exponent", "exponent_low", "exponent_high", "intercept", "scale", "points",
    "paper_inside", "scale_at_paper_exponent" (with ``_low`` / ``_high``)}``: ``scale`` is
    ``exp(2 a)``; ``paper_inside`` whether ``-0.5`` lies in the interval;
    ``scale_at_paper_exponent`` the constant of ``mu = sqrt(scale / n)`` fitted with the
    exponent held at the paper's (the geometric mean of ``mu^2 n``) and its ``level``
    t-interval (of the mean of ``log(mu^2 n)``, ``len(n) - 1`` degrees of freedom).
    """
    from scipy import stats

    n_a, mu_a = np.asarray(n, dtype=float), np.asarray(mu, dtype=float)
    if n_a.shape != mu_a.shape or n_a.ndim != 1:
        raise ValueError(f"n and mu must be 1-D of one length, got {n_a.shape} and {mu_a.shape}")
    if len(n_a) < 3 or len(np.unique(n_a)) < 2:
        raise ValueError(
            f"fit_exponent needs >= 3 points over >= 2 distinct sizes, got {len(n_a)} points"
        )
    both = np.concatenate([n_a, mu_a])
    if not (np.isfinite(both).all() and (both > 0).all()):
        raise ValueError("fit_exponent: n and mu must be positive and finite")
    x, y = np.log(n_a), np.log(mu_a)
    res = stats.linregress(x, y)
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 2) * res.stderr)
    b = float(res.slope)
    # the paper's exponent held fixed: log(mu^2 N) = log(scale), its mean and t-interval
    c = 2 * y + x
    c_half = float(stats.t.ppf(0.5 + level / 2, len(c) - 1) * c.std(ddof=1) / math.sqrt(len(c)))
    return {
        "scale_at_paper_exponent": float(math.exp(c.mean())),
        "scale_at_paper_exponent_low": float(math.exp(c.mean() - c_half)),
        "scale_at_paper_exponent_high": float(math.exp(c.mean() + c_half)),
        "exponent": b,
        "exponent_low": b - half,
        "exponent_high": b + half,
        "intercept": float(res.intercept),
        "scale": float(math.exp(2 * res.intercept)),
        "points": int(len(x)),
        "level": float(level),
        "paper_inside": bool(b - half - 1e-9 <= PAPER_EXPONENT <= b + half + 1e-9),
    }


def subsets(split: Split, val_size: int, sizes: list[int], seed: int):
    """``(x_val, y_val, {N: training Split})``: a stratified validation carve of ``val_size``
    samples of ``split``'s training data and nested training subsets of the rest."""
    n = split.n_train
    if val_size >= n:
        raise ValueError(f"val_size {val_size} must be smaller than the training split ({n})")
    rest, val = carve_validation(split.y_train, val_size / n, seed)
    too_big = [s for s in sizes if s > len(rest)]
    if too_big:
        raise ValueError(
            f"{split.name}: sizes {too_big} exceed the {len(rest)} training samples left after "
            f"a validation carve of {len(val)}; lower them or raise num_samples"
        )
    order = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))]
    parts = {int(s): replace(split, x_train=split.x_train[order[: int(s)]],
                             y_train=split.y_train[order[: int(s)]]) for s in sizes}  # fmt: skip
    return split.x_train[val], split.y_train[val], parts


def run_cfg(settings: dict, dataset: str, n: int) -> dict:
    """``train`` of ``dataset`` with the task's fixed lr and the epochs that give ``steps``
    SGD steps on ``n`` samples."""
    bs = int(settings["batch_size"])
    epochs = max(1, round(int(settings["steps"]) / math.ceil(n / bs)))
    return {**train_cfg_for(settings, dataset), "epochs": epochs, "batch_size": bs,
            "lr": float(settings["lr"])}  # fmt: skip


class MarginScalingTask(BaseTask):
    name = "margin_scaling"
    title = "The margin's scaling law: HEM's best margin against the training-set size"

    def units(self, settings: dict) -> int:
        return sum(len(settings["sizes"][ds]) for ds in settings["datasets"]) * len(
            settings["factors"]
        )

    def run_seed(self, settings: dict, seed: int, ctx: Context) -> dict:
        if list(settings.get("losses", ["hem"])) != ["hem"]:
            raise ValueError(f"{self.name}: losses must be ['hem'], got {settings['losses']}")
        if self.skip_seed(settings, seed, ctx):
            return {"records": []}
        data_seed, init_seed = run_seeds(settings, seed)
        factors = [float(f) for f in settings["factors"]]
        if 1.0 not in factors:
            raise ValueError(
                f"{self.name}: factors must hold 1 (the paper's margin), got {factors}"
            )
        recs = []
        for ds in settings["datasets"]:
            full = load_dataset(ds, data_seed, settings.get("dataset_options", {}).get(ds),
                                ctx.data_root)  # fmt: skip
            x_val, y_val, parts = subsets(full, int(settings["val_size"][ds]),
                                          settings["sizes"][ds], data_seed)  # fmt: skip
            for n, part in parts.items():
                recs.append(self._sweep(settings, ds, n, part, x_val, y_val, factors,
                                        init_seed, data_seed, seed, ctx))  # fmt: skip
        return {"records": recs}

    def _sweep(self, s, ds, n, part, x_val, y_val, factors, init_seed, data_seed, seed, ctx):
        paper = margin_for_dataset(n)
        train_cfg, model_cfg = run_cfg(s, ds, n), model_cfg_for(s, ds)
        grid, test, train_acc, diverged = [], [], [], []
        for f in factors:
            mu = f * paper
            ctx.advance(f"{self.name} {ds} N={n} margin {mu:.3g} seed {seed}")
            model, hist = fit(part, "hem", init_seed, train_cfg, model_cfg,
                              {"margin_scale": mu * mu * n}, ctx.device)  # fmt: skip
            bad = bool(hist["diverged"])
            val = math.nan if bad else accuracy(predict(model, x_val, ctx.device), y_val)
            grid.append([{"margin": mu}, val])
            test.append(accuracy(predict(model, part.x_test, ctx.device), part.y_test))
            train_acc.append(accuracy(predict(model, part.x_train, ctx.device), part.y_train))
            diverged.append(bad)
        i, k = best_point(grid), factors.index(1.0)
        best = float(grid[i][0]["margin"])
        metrics = {
            "best_margin": best,
            "best_factor": factors[i],
            "val_acc_best": grid[i][1],
            "test_acc_best": test[i],
            "val_acc_paper": grid[k][1],
            "test_acc_paper": test[k],
            "train_acc": train_acc[i],
            "diverged": float(diverged[i]),
        }
        return {
            "group": {"dataset": ds, "n_train": int(n), "loss": "hem"},
            "metrics": metrics,
            "extra": {"paper_margin": paper, "margins": [p[0]["margin"] for p in grid],
                      "val_acc": [p[1] for p in grid], "test_acc": test, "train_acc": train_acc,
                      "diverged": diverged, "at_edge": i in (0, len(factors) - 1),
                      "epochs": train_cfg["epochs"], "steps": int(s["steps"]),
                      "lr": train_cfg["lr"], "val_size": len(y_val), "data_seed": data_seed,
                      "init_seed": init_seed, "selected_on": "validation"},
        }  # fmt: skip

    # -- the fit ------------------------------------------------------------------------

    @staticmethod
    def points(result: dict, dataset: str) -> list[tuple[int, float, bool]]:
        """``(N, best margin, at the grid's edge)`` of every (N, seed) of ``dataset``."""
        return [(rec["group"]["n_train"], rec["metrics"]["best_margin"], rec["extra"]["at_edge"])
                for _, rec in records(result) if rec["group"]["dataset"] == dataset]  # fmt: skip

    def fits(self, result: dict) -> dict[str, dict]:
        """Per dataset, :func:`fit_exponent` of its points (with ``edge_points``, the number
        whose best margin sat at an end of the grid); datasets with too few points are left out."""
        out = {}
        for ds in result["settings"]["datasets"]:
            pts = self.points(result, ds)
            try:
                f = fit_exponent([p[0] for p in pts], [p[1] for p in pts])
            except ValueError:
                continue
            f["edge_points"] = sum(p[2] for p in pts)
            f["sizes"] = sorted({p[0] for p in pts})
            out[ds] = f
        return out

    def aggregate_result(self, result: dict) -> dict:
        """What results.json keeps besides the records: the fits (:meth:`fits`)."""
        return {"fits": self.fits(result)}

    # -- report -------------------------------------------------------------------------

    def render(self, result: dict, out_dir: Path) -> str:
        s = result["settings"]
        fits = self.fits(result)
        seeds = seeds_to_run({**s, "seeds": result["seeds"]})
        parts = [
            f"## {self.title}",
            "HEM trained at the margins "
            + ", ".join(f"{f:g}" for f in s["factors"])
            + f" × sqrt({DEFAULT_SCALE:g} / N) (the paper's rule at 1) for each training-set "
            f"size N, {s['steps']} SGD steps of batch {s['batch_size']} whatever N, lr "
            f"{s['lr']:g}; the best margin is chosen by accuracy on a validation carve of "
            + ", ".join(f"{s['val_size'][d]} ({d})" for d in s["datasets"])
            + " training samples, the test split chooses nothing. Seeds "
            + ", ".join(str(x) for x in seeds)
            + ". Fit: least squares of log μ* = a + b log N over the (N, seed) points, 95 % "
            "t-interval of b; the paper's rule is b = −0.5.",
        ]
        rows = []
        for ds, f in fits.items():
            verdict = "**holds**" if f["paper_inside"] else "**does not hold**"
            rows.append([ds, ", ".join(str(n) for n in f["sizes"]), str(f["points"]),
                         f"{f['exponent']:.3f} [{f['exponent_low']:.3f}, {f['exponent_high']:.3f}]",
                         str(f["edge_points"]), verdict,
                         f"{f['scale_at_paper_exponent']:.3g} "
                         f"[{f['scale_at_paper_exponent_low']:.3g}, "
                         f"{f['scale_at_paper_exponent_high']:.3g}]"])  # fmt: skip
        if rows:
            parts += [
                "### Fitted exponent",
                md_table(
                    [
                        "dataset",
                        "N",
                        "points",
                        "exponent b [95 %]",
                        "best at grid edge",
                        "b = −0.5 (paper)",
                        "scale with b = −0.5 [95 %] (paper: 2000)",
                    ],
                    rows,
                ),  # fmt: skip
                "*scale with b = −0.5*: the constant of μ = sqrt(scale / N) that fits the best "
                "margins with the paper's exponent held (geometric mean of μ*² N over the "
                "points, t-interval of the mean of its log).",
            ]
        parts += ["### Best margin and what the paper's margin costs", self._table(result)]
        for fig in self.plot(result, out_dir, fits):
            parts.append(f"![HEM's best margin against N]({fig})")
        return "\n\n".join(p for p in parts if p)

    def _table(self, result: dict) -> str:
        agg = aggregate(result, ("dataset", "n_train"))
        rows = []
        for (ds, n), m in agg.items():
            edges = sum(r["extra"]["at_edge"] for _, r in records(result)
                        if (r["group"]["dataset"], r["group"]["n_train"]) == (ds, n))  # fmt: skip
            rows.append([ds, str(n), f"{margin_for_dataset(n):.3g}",
                         " / ".join(f"{v:.3g}" for v in m["best_margin"]), str(edges),
                         fmt(m["val_acc_best"]), fmt(m["val_acc_paper"]),
                         fmt(m["test_acc_best"]), fmt(m["test_acc_paper"]),
                         interval_text(m["test_acc_best"], m["test_acc_paper"])])  # fmt: skip
        return md_table(
            ["dataset", "N", "paper's μ", "best μ per seed", "at edge", "val acc % (best)",
             "val acc % (paper)", "test acc % (best)", "test acc % (paper)",
             "test: best − paper"],
            rows,
        )  # fmt: skip

    def plot(self, result: dict, out_dir: Path, fits: dict) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        datasets = [ds for ds in result["settings"]["datasets"] if self.points(result, ds)]
        if not datasets:
            return []
        fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.8),
                                 squeeze=False)  # fmt: skip
        for ax, ds in zip(axes[0], datasets, strict=True):
            pts = self.points(result, ds)
            ns = np.asarray([p[0] for p in pts], dtype=float)
            mus = np.asarray([p[1] for p in pts], dtype=float)
            jitter = np.exp(np.random.default_rng(0).uniform(-0.04, 0.04, len(ns)))
            ax.scatter(ns * jitter, mus, s=14, color="tab:blue", label="best μ (per seed)")
            grid = np.geomspace(ns.min(), ns.max(), 50)
            ax.plot(grid, np.sqrt(DEFAULT_SCALE / grid), "k--", label="paper: sqrt(2000/N)")
            f = fits.get(ds)
            if f:
                ax.plot(grid, np.exp(f["intercept"]) * grid ** f["exponent"], color="tab:red",
                        label=f"fit: b = {f['exponent']:.2f}")  # fmt: skip
                band = _band(pts, grid, f["level"])
                if band is not None:
                    ax.fill_between(grid, *band, color="tab:red", alpha=0.15, label="95 % band")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("training-set size N")
            ax.set_ylabel("margin μ")
            ax.set_title(ds)
            ax.legend(fontsize=7)
        fig.tight_layout()
        return [save_figure(fig, out_dir, f"{self.name}.png")]


def _band(pts, grid: np.ndarray, level: float):
    """The ``level`` confidence band of the fitted line's mean at ``grid`` (log-log OLS)."""
    from scipy import stats

    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    if len(x) < 3:
        return None
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    s2 = float(resid @ resid) / (len(x) - 2)
    sxx = float(((x - x.mean()) ** 2).sum())
    if sxx == 0:
        return None
    g = np.log(grid)
    se = np.sqrt(s2 * (1 / len(x) + (g - x.mean()) ** 2 / sxx))
    t = stats.t.ppf(0.5 + level / 2, len(x) - 2)
    return np.exp(a + b * g - t * se), np.exp(a + b * g + t * se)


TASK = MarginScalingTask()
