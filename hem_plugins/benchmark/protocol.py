"""The benchmark protocol: hyper-parameters chosen on validation data, health before verdicts,
and verdicts from paired differences over seeds.

Every task of the suite uses these pieces, so that a verdict in ``report.md`` says
something about the losses and not about the recipe:

* **Selection** (:func:`select`, :func:`carve_validation`). A task's learning rate (and
  LogitNorm's temperature, or epochs where a profile offers a grid) is chosen per
  ``(task, dataset, loss)`` from a grid by a score on a validation split carved from the
  *training* data. In ``selection.mode = "validation"`` every run selects; in
  ``"tuned"`` the values come from a file that the ``tune`` profile wrote
  (``configs/benchmark/tuned.py``), and the record says which file. The test split is
  never seen by a selection: it is not passed to it.
* **Health** (:func:`unhealthy`). A run whose final accuracy on its own training data
  (``train_acc``) is below the profile's ``min_train_acc``, or that diverged, is
  unhealthy: tables mark it and no verdict is drawn from a comparison with it.
* **Verdicts** (:func:`paired_interval`, :func:`verdict`, :func:`claim_verdict`).
  Runs of two losses with the same seed are paired; a claim *agrees* / *disagrees*
  only when the 95 % t-interval of the paired differences excludes 0 (or, for a claim of
  "at most ``tolerance`` worse", excludes ``-tolerance``); otherwise "no difference
  measured".
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch

#: Health threshold when neither the profile nor the task sets ``min_train_acc``.
MIN_TRAIN_ACC = 0.95
#: Fraction of the training data carved out for validation when the profile does not say.
VAL_FRACTION = 0.2
NO_DIFFERENCE = "no difference measured"
#: ``lr_selected_on`` of a run whose settings hold no selection grid (``train.lr`` is used).
NOT_SELECTED = "not selected (train.lr of the profile; no selection grid)"


# ---- seeds ---------------------------------------------------------------------------------
def run_seeds(settings: dict, seed: int) -> tuple[int, int]:
    """``(data_seed, init_seed)`` of the run keyed ``seed``.

    ``data_seed`` picks the validation carve and the long-tailed subsample (the class order
    and permutations of 3d, the carve of 3e's training images), never the test split: that
    is one per dataset, the same for every seed (:data:`.digits.TEST_SPLIT_SEED`);
    ``init_seed`` the initial weights and the batch order. Each is set in the
    profile as ``"run"`` (the run's seed, the default) or a fixed int (the same for every
    run, e.g. ``data_seed = 0`` to measure initialisation noise alone).
    """

    def pick(key: str) -> int:
        v = settings.get(key, "run")
        return int(seed) if v == "run" else int(v)

    return pick("data_seed"), pick("init_seed")


# ---- selection -----------------------------------------------------------------------------
def carve_validation(
    y: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, val)`` of a per-class (stratified) split of labels ``y``.

    Each class gives ``round(fraction * n_c)`` of its samples to validation but keeps at
    least one for training (a class with one sample gives none).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"selection.val_fraction must be in (0, 1), got {fraction}")
    g = torch.Generator().manual_seed(int(seed))
    train, val = [], []
    for c in torch.unique(y).tolist():
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = min(int(round(fraction * len(idx))), len(idx) - 1)
        val.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def val_fraction(settings: dict) -> float:
    """``selection.val_fraction`` of a task's settings (:data:`VAL_FRACTION` when unset)."""
    return float(settings.get("selection", {}).get("val_fraction", VAL_FRACTION))


def grid_points(grid: dict[str, Sequence]) -> list[dict]:
    """Every combination of a grid ``{name: [values]}``, as dicts (in the grid's order)."""
    if not grid:
        raise ValueError("selection grid is empty")
    names = list(grid)
    return [dict(zip(names, vals, strict=True)) for vals in itertools.product(*grid.values())]


def point_label(params: dict) -> str:
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def grid_for(settings: dict, loss: str) -> dict[str, list]:
    """The task's selection grid for ``loss``: ``selection.grid`` overlaid with
    ``selection.grid_by_loss[loss]``."""
    sel = settings.get("selection", {})
    grid = dict(sel.get("grid", {}))
    grid.update(sel.get("grid_by_loss", {}).get(loss, {}))
    return grid


def selection_key(*parts) -> str:
    """The key of one selection in the tuned file: ``"digits/hem"``, ``"digits/ratio=100/hem"``,
    ``"digitmosaic/iters=300/hem"``. A key names the setting it selects for: two tasks whose
    runs have the same key train the same thing (:data:`SELECTION_OWNERS`)."""
    return "/".join(str(p) for p in parts)


#: Tasks that rerun settings of other tasks, and those tasks (the *owners*), in the order they
#: are looked up. A selection key of such a task that an owner also has (for ``divisor`` the
#: key less its ``<part>/`` prefix, the owner being that part) is one setting selected twice:
#: the tuned file keeps the owner's entry alone (:func:`drop_shared`) and the task reads it
#: (:func:`tuned_entry`), so one (dataset, setting, loss) has one tuned value across the file.
#: Keys that only the rerunning task has (HEM+'s adaptive rules, HEM's other divisors, HEM
#: without the threshold) stay its own.
SELECTION_OWNERS: dict[str, tuple[str, ...]] = {
    "ablation": ("openset",),
    "adaptive_margins": ("imbalanced", "segmentation"),
    # its keys are 3e's (digitmosaic/iters=<n>/<loss>): it trains 3e's recipe, reads 3e's lr
    "anomaly_segmentation": ("segmentation",),
    "divisor": ("openset", "imbalanced", "segmentation"),
}


def owner_key(tuned: dict, task: str, key: str) -> tuple[str, str] | None:
    """``(owner task, its key)`` whose entry in ``tuned`` (``{task: {key: entry}}``) is the
    one of ``(task, key)`` (:data:`SELECTION_OWNERS`), or None when ``key`` is ``task``'s own."""
    for owner in SELECTION_OWNERS.get(task, ()):
        if task == "divisor":
            if not key.startswith(owner + "/"):
                continue
            inner = key[len(owner) + 1 :]
        else:
            inner = key
        if inner in tuned.get(owner, {}):
            return owner, inner
    return None


def tuned_entry(tuned: dict, task: str, key: str) -> dict | None:
    """The tuned entry that ``(task, key)`` runs with: its owner's when another task owns the
    setting (:func:`owner_key`), else ``tuned[task][key]`` (None when neither has one)."""
    owned = owner_key(tuned, task, key)
    if owned:
        return tuned[owned[0]][owned[1]]
    return tuned.get(task, {}).get(key)


def drop_shared(tuned: dict) -> dict:
    """``tuned`` without the entries whose setting an owner task also holds: one value per
    setting (the owner's). Returns a new dict; tasks left empty are dropped."""
    out: dict[str, dict] = {}
    for task, entries in tuned.items():
        kept = {k: e for k, e in entries.items() if owner_key(tuned, task, k) is None}
        if kept:
            out[task] = kept
    return out


def check_tuned(tuned: dict, evaluated_seeds: Sequence[int] = ()) -> list[str]:
    """What is wrong with a tuned file's ``tuned`` section, one line per problem (empty when
    nothing is): a setting held twice (an entry of a rerunning task whose owner also holds
    it, :data:`SELECTION_OWNERS`; with its two values when they differ), an entry whose
    ``chosen`` is not the grid point :func:`best_point` picks from its ``grid``, or one
    chosen on a seed in ``evaluated_seeds`` (the seeds of the profiles that report)."""
    problems = []
    for task, entries in tuned.items():
        for key, entry in entries.items():
            owned = owner_key(tuned, task, key)
            if owned:
                other = tuned[owned[0]][owned[1]]["chosen"]
                diff = "" if other == entry["chosen"] else f": {other} vs {entry['chosen']}"
                problems.append(f"{task}/{key} is the setting of {owned[0]}/{owned[1]}, held "
                                f"twice{diff}")  # fmt: skip
            grid = entry.get("grid") or []
            if grid and not (task == "divisor" and key.endswith("/hem_floor")):
                best = grid[best_point(grid)][0]
                if best != entry["chosen"]:
                    problems.append(f"{task}/{key} chose {entry['chosen']}, its grid's best "
                                    f"(best_point) is {best}")  # fmt: skip
            bad = sorted(set(entry.get("seeds", [])) & {int(x) for x in evaluated_seeds})
            if bad:
                problems.append(f"{task}/{key} was chosen on evaluated seed(s) {bad}")
    return problems


def select(
    settings: dict,
    task: str,
    key: str,
    grid: dict[str, Sequence],
    score: Callable[[dict], tuple[float, Any]],
    metric: str,
) -> tuple[dict, dict, Any]:
    """Choose hyper-parameters for one ``(task, key)``: ``(params, record, run)``.

    ``score(params)`` trains on the training part (the training data less its validation
    split) and returns ``(validation score, run)`` or ``(validation score, run, healthy)``:
    higher is better, NaN for a run that diverged; ``run`` is whatever the caller needs
    later (the trained model and its history); ``healthy`` False marks a run that did not
    reach the task's training accuracy. In ``"validation"`` mode every grid point is
    scored, the best healthy one chosen (:func:`best_point`) and its ``run`` returned, so the chosen run is the final run
    and is not trained twice. In ``"tuned"`` mode the chosen values are read from
    ``settings["tuned"][task][key]`` (or the owner's entry when another task owns the
    setting, :func:`tuned_entry`), ``score`` is not called and ``run`` is None: the
    caller trains with ``params``. Without a grid (and not tuned) nothing is chosen:
    ``params`` is empty, the training settings' own lr applies, and the record says so.

    The record (for the run's ``extra["selection"]``) holds ``lr_selected_on``
    (``"validation"`` or the tuned file), ``metric``, ``grid`` (``[[params, score],
    ...]``, a third entry ``False`` on a point whose run did not train), ``chosen`` and
    ``key``.
    """
    sel = settings.get("selection", {})
    mode = sel.get("mode", "validation")
    if not grid and mode != "tuned":  # nothing to choose: the training settings' own lr
        record = {"lr_selected_on": NOT_SELECTED, "metric": metric, "grid": [], "chosen": {},
                  "key": key}  # fmt: skip
        return {}, record, None
    if mode == "tuned":
        entry = tuned_entry(settings.get("tuned", {}), task, key)
        source = sel.get("file", "tuned.py")
        if entry is None:
            raise KeyError(
                f"selection.mode='tuned' but {source} has no entry tuned[{task!r}][{key!r}]: "
                "rerun `python -m hem_plugins.benchmark --profile tune` (it writes that file)"
            )
        record = {
            "lr_selected_on": source,
            "metric": entry.get("metric", metric),
            "grid": entry.get("grid", []),
            "chosen": dict(entry["chosen"]),
            "key": key,
        }
        return dict(entry["chosen"]), record, None
    if mode != "validation":
        raise ValueError(f"selection.mode must be 'validation' or 'tuned', got {mode!r}")
    scored, runs = [], []
    for params in grid_points(grid):
        out = score(params)
        healthy = bool(out[2]) if len(out) > 2 else True
        scored.append([params, float(out[0])] + ([] if healthy else [False]))
        runs.append(out[1])
    i = best_point(scored)
    best, best_run = (scored[i][0], scored[i][1]), runs[i]
    record = {
        "lr_selected_on": "validation",
        "metric": metric,
        "grid": scored,
        "chosen": dict(best[0]),
        "key": key,
    }
    return dict(best[0]), record, best_run


#: Decimals a validation score is compared at: the precision the records and the tuned file
#: keep (:func:`tuned_from_results` rounds the mean scores to it). Scores equal at this
#: precision are a tie.
SCORE_DECIMALS = 4


def _point_lr(params: dict) -> float:
    lr = params.get("lr") if isinstance(params, dict) else None
    return math.inf if lr is None else float(lr)


def best_and_ties(grid: list[list]) -> tuple[int, list[int]]:
    """``(best, tied)``: the index of the best ``[params, score(, healthy)]`` grid point
    (:func:`best_point`) and the indices of every point tied with it (``best`` included,
    a list of one when nothing ties)."""
    if not grid:
        raise ValueError("best_point: the grid is empty")

    def key(i: int) -> tuple:
        point = grid[i]
        score = float(point[1])
        finite = math.isfinite(score)
        healthy = (len(point) < 3 or bool(point[2])) and finite
        return (healthy, finite, round(score, SCORE_DECIMALS) if finite else -math.inf)

    top = max(key(i) for i in range(len(grid)))
    # sorted() is stable: points of one lr keep their grid order
    tied = sorted((i for i in range(len(grid)) if key(i) == top),
                  key=lambda i: _point_lr(grid[i][0]))  # fmt: skip
    return tied[0], tied


def best_point(grid: list[list]) -> int:
    """Index of the best ``[params, score(, healthy)]`` grid point: the one rule of the suite
    for choosing a grid point (selection, the tuned file, 3g's best lr, the divisor's f).

    1. Only points whose run trained (no third entry ``False``) and whose score is finite
       compete; when there is none, the finite scores of all points; NaN (a diverged run)
       wins only when every score is NaN.
    2. The highest score wins, compared at :data:`SCORE_DECIMALS` decimals: scores equal
       after rounding are a tie.
    3. A tie goes to the smaller learning rate (``params["lr"]``; a point without one counts
       as the largest), and among points of one lr (a grid of several parameters, e.g.
       LogitNorm's lr x temperature) to the first in grid order.

    Why the smaller lr: it is the conservative choice (a tie says the larger step buys
    nothing on validation data), and it does not favour the paper's claim in 3g ("HEM needs
    a lower lr than CE"): a tie in CE's scores resolved to CE's smaller lr brings CE's best
    lr down towards HEM's, which makes that claim harder to agree with.
    """
    return best_and_ties(grid)[0]


def tuned_from_results(results: dict) -> dict:
    """``{task: {key: {"chosen", "metric", "grid", "seeds"}}}``: every selection in
    ``results`` averaged over its seeds (mean validation score per grid point; the best
    mean wins, :func:`best_point`), less the settings that an owner task of ``results``
    also selected (:func:`drop_shared`: one value per setting). What the ``tune`` profile
    writes into its tuned file."""
    acc: dict[str, dict[str, dict]] = {}
    for task, res in results["tasks"].items():
        for seed, per in res["per_seed"].items():
            for rec in per["records"]:
                sel = rec.get("extra", {}).get("selection")
                if not sel or sel.get("lr_selected_on") != "validation":
                    continue
                slot = acc.setdefault(task, {}).setdefault(
                    sel["key"], {"metric": sel["metric"], "scores": {}, "params": {}, "seeds": []}
                )
                if int(seed) in slot["seeds"]:
                    continue  # several records of one run share its selection
                slot["seeds"].append(int(seed))
                for point in sel["grid"]:
                    params, s = point[0], point[1]
                    label = point_label(params)
                    slot["params"][label] = params
                    slot["scores"].setdefault(label, []).append(s)
                    if len(point) > 2 and not point[2]:
                        slot.setdefault("unhealthy", set()).add(label)
    out: dict[str, dict[str, dict]] = {}
    for task, keys in acc.items():
        for key, slot in keys.items():
            bad = slot.get("unhealthy", set())
            grid = [[slot["params"][lab], round(_nanmean(v), 4)] + ([False] if lab in bad else [])
                    for lab, v in slot["scores"].items()]  # fmt: skip
            out.setdefault(task, {})[key] = {
                "chosen": grid[best_point(grid)][0],
                "metric": slot["metric"],
                "grid": grid,
                "seeds": sorted(slot["seeds"]),
            }
    return drop_shared(out)


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return statistics.fmean(vals) if vals else float("nan")


# ---- health --------------------------------------------------------------------------------
def min_train_acc(settings: dict) -> float:
    return float(settings.get("min_train_acc", MIN_TRAIN_ACC))


def unhealthy(metrics: dict, min_acc: float) -> str | None:
    """Why one run is unhealthy (``"diverged"``, ``"did not train (train acc 0.67)"``, ``"no
    train acc recorded"``), or None."""
    if metrics.get("diverged"):
        return "diverged"
    acc = metrics.get("train_acc")
    if acc is None:  # a run that cannot show it trained is not counted as healthy
        return "no train acc recorded"
    if math.isnan(acc) or acc < min_acc:
        return f"did not train (train acc {acc:.2f})"
    return None


def unhealthy_seeds(slot: dict[str, list[float]], min_acc: float) -> list[str]:
    """Reasons of the unhealthy runs in an aggregate slot ``{metric: [value per seed]}``."""
    n = max((len(v) for v in slot.values()), default=0)
    out = []
    for i in range(n):
        m = {k: v[i] for k, v in slot.items() if i < len(v)}
        why = unhealthy(m, min_acc)
        if why:
            out.append(why)
    return out


def health_cell(slot: dict[str, list[float]], min_acc: float) -> str:
    """``"5/5"`` healthy runs, or ``"3/5 ⚠"`` when some are unhealthy."""
    n = max((len(v) for v in slot.values()), default=0)
    bad = len(unhealthy_seeds(slot, min_acc))
    return f"{n - bad}/{n}" + (" ⚠" if bad else "")


# ---- verdicts ------------------------------------------------------------------------------
def paired_interval(
    ours: Sequence[float], theirs: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of the paired differences ``ours - theirs`` and its ``confidence`` t-interval.

    Pairs with a NaN on either side are dropped. Fewer than 2 pairs give an interval of
    ``(-inf, inf)``.
    """
    if len(ours) != len(theirs):
        raise ValueError(
            f"paired comparison needs one value per seed on both sides, got {len(ours)} "
            f"and {len(theirs)}"
        )
    d = [a - b for a, b in zip(ours, theirs, strict=True) if not (math.isnan(a) or math.isnan(b))]
    if not d:
        return float("nan"), float("nan"), float("nan")
    mean = statistics.fmean(d)
    if len(d) < 2:
        return mean, -math.inf, math.inf
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, len(d) - 1)) * statistics.stdev(d) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def verdict(
    ours: Sequence[float],
    theirs: Sequence[float],
    higher_is_better: bool = True,
    tolerance: float = 0.0,
) -> str:
    """``agrees`` / ``disagrees`` / ``no difference measured`` for the claim "ours better".

    The claim is read in the direction ``higher_is_better``. ``agrees`` when the 95 %
    interval of the paired differences lies wholly on the claimed side of 0,
    ``disagrees`` when wholly on the other side, else no difference measured. With
    ``tolerance > 0`` the claim is "ours at most ``tolerance`` worse": it agrees when the
    interval lies above ``-tolerance``, disagrees when below it.
    """
    mean, lo, hi = paired_interval(ours, theirs)
    if math.isnan(mean):
        return "not measured"
    if not higher_is_better:
        lo, hi = -hi, -lo
    if lo > -tolerance:
        return "agrees"
    if hi < -tolerance:
        return "disagrees"
    if tolerance > 0:  # the interval holds the tolerance's bound, not necessarily 0
        return f"not decided (the interval spans -{100 * tolerance:g} points)"
    return NO_DIFFERENCE


def claim_verdict(
    ours: dict[str, list[float]],
    theirs: dict[str, list[float]],
    metric: str,
    labels: tuple[str, str],
    min_acc: float,
    higher_is_better: bool = True,
    tolerance: float = 0.0,
) -> str:
    """:func:`verdict` of ``metric`` between two aggregate slots, after their health.

    When a run on either side is unhealthy the answer is ``not decided: <label> did not
    train (train acc x)`` (or ``... diverged``), naming the first unhealthy side.
    """
    for slot, label in zip((ours, theirs), labels, strict=True):
        bad = unhealthy_seeds(slot, min_acc)
        if bad:
            extra = (
                f" in {len(bad)} of {max(len(v) for v in slot.values())} runs"
                if len(bad) > 1
                else ""
            )
            return f"not decided: {label} {bad[0]}{extra}"
    return verdict(ours[metric], theirs[metric], higher_is_better, tolerance)


def interval_text(ours: Sequence[float], theirs: Sequence[float], scale: float = 100.0) -> str:
    """``Δ +1.2 [−0.3, +2.7]``: the paired mean difference and its 95 % interval."""
    m, lo, hi = paired_interval(ours, theirs)
    if math.isnan(m):
        return "Δ —"
    return f"Δ {m * scale:+.1f} [{lo * scale:+.1f}, {hi * scale:+.1f}]"
