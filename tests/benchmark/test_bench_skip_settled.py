"""Benchmark task skip_settled: renderer from a fixture, smoke profile end to end, SplitDigits ids."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from hem_plugins.benchmark.config import load_profile, task_settings  # noqa: E402
from hem_plugins.benchmark.settled_runs import paired_diff, passes_to_reach  # noqa: E402
from hem_plugins.benchmark.tasks import PAPER_TASKS, TASKS  # noqa: E402
from hem_plugins.benchmark.tasks.skip_settled import TASK  # noqa: E402

# A result of the task on a 10-epoch (4 per experience) variant of the smoke profile, seeds 0 1.
FIXTURE = Path(__file__).parent / "fixtures" / "skip_settled_small.json"


def test_task_is_registered_last_with_settings_in_every_profile():
    names = list(TASKS)  # after the paper's tasks; only tasks beyond the paper follow it
    assert not set(names[names.index("skip_settled") :]) & set(PAPER_TASKS)
    assert TASKS["skip_settled"] is TASK
    for profile in ("smoke", "beyond", "full"):
        s = task_settings(load_profile(profile), "skip_settled")
        assert s["losses"] == ["hem"] and s["classification"]["variants"], profile
    assert task_settings(load_profile("smoke"), "skip_settled")["classification"]["epochs"] <= 3


def test_paired_diff_and_passes_to_reach():
    d = paired_diff([0.9, 0.8, 0.7], [0.9, 0.9, 0.9])
    assert d["mean"] == pytest.approx(-0.1) and d["within_noise"] is True  # t-interval holds 0
    assert d["lo"] < 0 < d["hi"] and d["n"] == 3
    d = paired_diff([0.5, 0.52, 0.51], [0.9, 0.9, 0.9])
    assert d["within_noise"] is False
    assert paired_diff([0.5], [0.6])["within_noise"] is None  # one seed: no noise estimate
    curve = [{"acc": 0.5, "passes": 10, "train_seconds": 1.0},
             {"acc": 0.8, "passes": 20, "train_seconds": 2.0}]  # fmt: skip
    assert passes_to_reach(curve, 0.7) == (20, 2.0)
    assert passes_to_reach(curve, 0.9) is None


def test_renderer_from_fixture(tmp_path):
    result = json.loads(FIXTURE.read_text())
    text = TASK.render(result, tmp_path)
    assert text.startswith(f"## {TASK.title}")
    for variant in ("full", "skip_r3_p0.1", "skip_r5", "full@skip_r5", "replay+skip_r5"):
        assert f"| {variant} |" in text, variant
    # the fixture's skip_r5 saves 36.4 % of the passes; over its 2 seeds the 95 % t-interval
    # of the accuracy difference holds 0: no difference measured, so it meets the aim
    assert "| skip_r5 | 10 ± 0 | 4816 | 36.4% |" in text
    assert "`skip_r5`: 36.4% fewer passes than `full`, Δacc -1.1 [-3.0, +0.9]" in text
    assert "**meets the aim**" in text and "no better than a shorter schedule" in text
    png = tmp_path / "skip_settled.png"
    assert "](skip_settled.png)" in text and png.stat().st_size > 20_000
    head = TASK.headline(result, "digits")
    (column,) = head
    assert head[column] == {"hem": "36.4% (skip_r5, Δacc -1.1 [-3.0, +0.9])"}


def _variant(result: dict, name: str):
    for _, per in result["per_seed"].items():
        for rec in per["records"]:
            if rec["group"]["variant"] == name:
                yield rec


def test_a_consistent_loss_is_beyond_noise_and_an_unhealthy_run_decides_nothing(tmp_path):
    result = json.loads(FIXTURE.read_text())
    fulls = {r["group"]["train_seed"]: r for r in _variant(result, "full")}
    for i, rec in enumerate(_variant(result, "skip_r5")):  # 5 and 5.1 points below full
        rec["metrics"]["acc"] = (
            fulls[rec["group"]["train_seed"]]["metrics"]["acc"] - 0.05 - 0.001 * i
        )
    text = TASK.render(result, tmp_path)
    assert "**≠**" in text and "**does not meet the aim** (accuracy or AUROC differs" in text
    rec = next(_variant(result, "skip_r5"))
    rec["metrics"]["train_acc"] = 0.5  # below the profile's health threshold
    text = TASK.render(result, tmp_path)
    assert "⚠ (did not train (train acc 0.50) in 1 run(s))" in text
    assert "`skip_r5`" in text and "**not decided** (an unhealthy run)" in text
    del rec["metrics"]["train_acc"]  # a run that cannot show it trained is not healthy either
    assert "no train acc recorded" in TASK.render(result, tmp_path)


def test_headline_picks_the_largest_saving_within_noise():
    result = json.loads(FIXTURE.read_text())
    for _, per in result["per_seed"].items():
        for rec in per["records"]:
            if rec["group"]["variant"] == "skip_r3_p0.1":  # make its accuracy equal to full's
                full = next(r for r in per["records"] if r["group"]["variant"] == "full")
                rec["metrics"]["acc"] = full["metrics"]["acc"]
    (cell,) = TASK.headline(result, "digits").values()
    assert cell["hem"] == "36.4% (skip_r5, Δacc -1.1 [-3.0, +0.9])"  # the larger saving


@pytest.mark.slow
def test_smoke_profile_runs_the_task_end_to_end(tmp_path):
    pytest.importorskip("avalanche")
    from hem_plugins.benchmark.runner import run_benchmark

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = run_benchmark(load_profile("smoke"), tmp_path, tasks=["skip_settled"],
                                command="pytest skip_settled smoke", progress=False,
                                work_dir=tmp_path / "runs")  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    saved = json.loads((tmp_path / "results.json").read_text())
    res = saved["tasks"]["skip_settled"]
    recs = {(r["group"]["part"], r["group"]["variant"]): r for r in res["per_seed"]["0"]["records"]}
    s = res["settings"]
    variants = s["classification"]["variants"]
    assert set(recs) == (
        {("classification", "full")}
        | {("classification", v) for v in variants}
        | {("classification", f"full@{v}") for v in variants}
        | {("continual", v) for v in s["continual"]["variants"]}
    )
    full = recs[("classification", "full")]
    epochs = s["classification"]["epochs"]
    assert full["metrics"]["passes"] == full["extra"]["n_train"] * epochs
    assert len(full["extra"]["curve"]) == epochs
    for v in variants:
        assert recs[("classification", v)]["metrics"]["passes"] <= full["metrics"]["passes"]
    for rec in recs.values():
        assert 0.0 < rec["metrics"]["acc"] <= 1.0 and 0.0 <= rec["metrics"]["auroc"] <= 1.0
    naive, replay = recs[("continual", "naive")], recs[("continual", "replay")]
    assert replay["metrics"]["passes"] > naive["metrics"]["passes"]  # buffer rows are counted
    assert not math.isnan(replay["metrics"]["forgetting"])
    assert len(replay["extra"]["history"]) == 3 * s["continual"]["epochs"]  # 3 experiences
    text = (tmp_path / "report.md").read_text()
    assert f"## {TASK.title}" in text and "](skip_settled.png)" in text
    assert (tmp_path / "skip_settled.png").is_file()
    assert results["tasks"]["skip_settled"]["seeds"] == [0]


def test_split_digits_sample_ids_are_unique_across_experiences():
    pytest.importorskip("avalanche")
    from hem_plugins.benchmark.avalanche import SplitDigits

    bench = SplitDigits(n_experiences=5, seed=0, fixed_class_order=list(range(10)),
                        sample_ids=True)  # fmt: skip
    ids = [int(i) for e in bench.train_stream for i in e.dataset.sample_id]
    assert len(ids) == len(set(ids)) == sum(len(e.dataset) for e in bench.train_stream)
    assert len(bench.train_stream[0].dataset[0]) == 4  # x, y, task label, sample id
    plain = SplitDigits(n_experiences=5, seed=0)
    assert len(plain.train_stream[0].dataset[0]) == 3
