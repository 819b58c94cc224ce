"""The settled-rule task: registered in beyond not tune, fit with the rule off is plain HEM,
and the task end to end on the smoke profile (records, paired verdicts, report section)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("torchattacks")

from hem_plugins.benchmark.config import load_profile, task_settings  # noqa: E402
from hem_plugins.benchmark.runner import run_benchmark  # noqa: E402
from hem_plugins.benchmark.settled_runs import load_data  # noqa: E402
from hem_plugins.benchmark.tasks import BEYOND_TASKS, TASKS, TUNE_TASKS  # noqa: E402
from hem_plugins.benchmark.tasks.settled_rule import TASK, VARIANTS  # noqa: E402
from hem_plugins.benchmark.training import fit  # noqa: E402


def test_registered_in_beyond_not_in_tune():
    assert TASKS["settled_rule"] is TASK
    assert "settled_rule" in BEYOND_TASKS and "settled_rule" not in TUNE_TASKS
    beyond = load_profile("beyond")
    s = task_settings(beyond, "settled_rule")
    assert len(beyond["seeds"]) * s["repeats"] >= 5  # at least 5 paired training seeds
    assert s["rule"]["weight"] > 0 and s["rule"]["factor"] > 1


def test_fit_with_the_rule_off_is_plain_hem(one_thread):
    """weight 0 trains the very same weights as no rule (the off path costs nothing)."""
    split = load_data([0, 1, 2]).split
    cfg = {"epochs": 1, "batch_size": 32, "lr": 0.01, "schedule": "cosine_epochs"}
    model_cfg = {"kind": "mlp", "hidden": (16, 16), "standardize": False}
    plain, _ = fit(split, "hem", 0, cfg, model_cfg, {})
    off, _ = fit(split, "hem", 0, cfg, model_cfg, {"settled_rule": {"weight": 0.0}})
    on, _ = fit(split, "hem", 0, cfg, model_cfg, {"settled_rule": {"weight": 1.0, "factor": 3.0}})
    a, b, c = (torch.cat([p.flatten() for p in m.parameters()]) for m in (plain, off, on))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.slow
def test_settled_rule_smoke(tmp_path, one_thread):
    run_benchmark(load_profile("smoke"), tmp_path, tasks=["settled_rule"], progress=False,
                  work_dir=tmp_path / "runs")  # fmt: skip
    res = json.loads((tmp_path / "results.json").read_text())["tasks"]["settled_rule"]
    recs = res["per_seed"]["0"]["records"]
    assert [r["group"]["variant"] for r in recs] == list(VARIANTS)
    assert recs[0]["extra"]["rule"] is None and recs[1]["extra"]["rule"] == res["settings"]["rule"]
    for r in recs:
        m = r["metrics"]
        for k in ("acc", "pgd_acc", "auroc", "train_acc", "settled"):
            assert 0.0 <= m[k] <= 1.0, k
        assert m["pgd_acc"] <= m["acc"] + 0.05  # an attack does not help
    d = TASK.diffs(res)
    assert d["acc"]["n"] == 1 and d["acc"]["within_noise"] is None  # one seed: no interval
    report = (tmp_path / "report.md").read_text()
    assert "## Beyond the paper: a margin penalty on samples HEM has settled" in report
    assert "Δ rule − plain" in report and "SettledMarginPenalty(HEMLoss" in report
    assert TASK.units(res["settings"]) == 2
