"""The report generator: a fixture results JSON in, report.md tables and PNG plots out."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from hem_plugins.benchmark.protocol import verdict  # noqa: E402
from hem_plugins.benchmark.report import headline_table, render_from_json  # noqa: E402
from hem_plugins.benchmark.tasks.sections import fmt  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "results_small.json"
ROOT = Path(__file__).resolve().parents[2]


def test_verdict_and_format():
    # The tasks' verdict is the protocol's paired-interval rule (tests/benchmark/test_bench_protocol.py).
    assert fmt([0.9, 0.8]) == "85.0 ± 7.1"
    assert fmt([]) == "—"
    assert verdict([0.9, 0.92], [0.7, 0.7]) == "agrees"
    assert verdict([0.5, 0.5], [0.7, 0.7]) == "disagrees"
    assert verdict([0.71, 0.69], [0.7, 0.7]) == "no difference measured"
    assert verdict([0.3, 0.3], [0.5, 0.5], higher_is_better=False) == "agrees"
    assert verdict([0.69, 0.69], [0.7, 0.7], tolerance=0.02) == "agrees"
    assert verdict([0.6, 0.6], [0.7, 0.7], tolerance=0.02) == "disagrees"


def test_headline_table_rows_and_columns():
    table = headline_table(json.loads(FIXTURE.read_text()))
    lines = table.splitlines()
    assert lines[0].startswith("| loss | 3a clean acc % | 3a AUROC MSP % | 3b PGD acc % (ε=0.05)")
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    assert set(rows) == {"CE", "MM", "HEM", "HEM+"}
    assert "| 85.0 ± 7.1 | 70.0 ± 0.0 | 10.0 ± 0.0 | 60.0 ± 0.0 | — |" in rows["CE"]
    assert "91.0 ± 1.4" in rows["HEM"] and "35.0 ± 7.1" in rows["HEM"]
    assert "10.0 (lr 0.1) – 93.0 (lr 0.01)" in rows["HEM"]


def test_report_from_fixture(tmp_path):
    path = render_from_json(FIXTURE, tmp_path)
    text = path.read_text()
    for title in (
        "3a. Clean accuracy",
        "3b. Adversarial",
        "3c. Imbalanced",
        "3f. Ablation",
        "3g. Learning-rate",
    ):
        assert f"## {title}" in text
    # settings beside the results: model, epochs, optimizer, how the lr was chosen, margins
    assert (
        "| digits | MLP 8, BN, ReLU | 2 | 64 | SGD m=0.9 wd=0.0005 | cosine | chosen per loss on "
        "validation data from lr {0.01, 0.1} |" in text
    )
    assert "| dataset=digits, loss=hem | 757 | 1.250 |" in text
    # claims with verdicts computed from the fixture's numbers
    assert (
        "HEM AUROC (MSP) higher than CE — measured 91.0 ± 1.4 vs 70.0 ± 0.0, paired "
        "Δ +21.0 [+8.3, +33.7]: **agrees**" in text
    )
    assert (
        "HEM AUROC (max-logit) higher than CE — measured 60.0 ± 0.0 vs 70.0 ± 0.0, paired "
        "Δ -10.0 [-10.0, -10.0]: **disagrees**" in text
    )
    # Two seeds of 10 and 45 points' difference: the interval holds 0.
    assert (
        "PGD ε=0.05: HEM 35.0 ± 7.1 vs CE 10.0 ± 0.0, paired Δ +25.0 [-38.5, +88.5]: "
        "**no difference measured**" in text
    )
    # 3b: the eps at which each attack's verdict falls, from the protocol's rule
    # (APGD-DLR: HEM 10 points above CE in both seeds)
    assert "- digits, PGD: **no difference measured** at ε 0.05" in text
    assert "- digits, APGD-DLR: **agrees** at ε 0.05" in text
    assert "| digits | APGD-DLR | Δ +10.0 [+10.0, +10.0]: **agrees** |" in text
    assert "HEM+ vs CE balanced acc 70.0 ± 0.0 vs 60.0 ± 0.0, paired Δ +10.0" in text
    # MM's second run reached 50 % training accuracy: no verdict from it.
    assert (
        "HEM vs MM, accuracy: 80.0 ± 0.0 vs 70.0 ± 0.0, paired Δ +10.0 [+10.0, +10.0]: "
        "**not decided: MM did not train (train acc 0.50)**" in text
    )
    assert "| digits | MM | 1/2 ⚠ |" in text
    assert (
        "best initial lr on validation data CE 0.1, HEM 0.01 (n=2): claim 'HEM needs a lower lr' — "
        "**agrees**" in text
    )
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [
        "adversarial_attacks.png",
        "adversarial_digits.png",
        "imbalanced_per_class_digits.png",
        "lr_sensitivity_digits.png",
        "openset_msp_hist_digits.png",
    ]
    for name in pngs:
        assert f"]({name})" in text
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_render(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "results.json")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "benchmark.py"),
            "--render",
            str(tmp_path / "results.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report.md").is_file()


def test_readme_block_is_rendered_from_the_json(tmp_path):
    from hem_plugins.benchmark.report import (
        HEADLINE_END,
        HEADLINE_START,
        README_END,
        README_START,
        render_readme,
    )

    results = json.loads(FIXTURE.read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{README_START}\nold table\n{README_END}\n\nafter\n")
    render_readme(results, readme, "tests/fixture.json", ("README.md",))
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n\nbefore\n\n")
    assert text.rstrip().endswith("after")
    assert "--render tests/fixture.json --readme README.md" in text
    assert "| 3a HEM rejects unknowns better than CE (AUROC, MSP) | digits | 91.0 vs 70.0" in text
    assert "Headline, dataset `digits`" in text
    # 3b's margin attack has its claim row beside PGD's, with the same rule and health gate
    assert "| 3b HEM is more robust than CE (PGD accuracy, ε=0.05) | digits | 35.0 vs 10.0" in text
    assert (
        "| 3b HEM is more robust than CE (APGD-DLR accuracy, ε=0.05) | digits | 15.0 vs 5.0 "
        "(n=2), Δ +10.0 [+10.0, +10.0]: **agrees** |" in text
    )
    # The README's front page has the short block: the claims table, no headline tables.
    front = tmp_path / "front.md"
    front.write_text(f"top\n{HEADLINE_START}\nstale rows\n{HEADLINE_END}\nend\n")
    render_readme(results, front, "tests/fixture.json", ("front.md", "README.md"))
    short = front.read_text()
    assert "--readme front.md README.md" in short and "stale rows" not in short
    assert "| 3a HEM rejects unknowns better than CE (AUROC, MSP) | digits |" in short
    assert "Headline, dataset" not in short and short.endswith("end\n")
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="no <!-- benchmark-results:start -->"):
        render_readme(results, readme, "x.json")


def test_update_merges_a_task_into_earlier_results(tmp_path):
    from hem_plugins.benchmark.config import load_profile
    from hem_plugins.benchmark.runner import run_benchmark

    cfg = load_profile("smoke")
    cfg["datasets"] = ["digits"]
    runs = tmp_path / "runs"
    run_benchmark(cfg, tmp_path, tasks=["ablation"], command="first", progress=False,
                  work_dir=runs)  # fmt: skip
    merged = run_benchmark(cfg, tmp_path, tasks=["imbalanced"], command="second",
                           progress=False, update=True, work_dir=runs)  # fmt: skip
    assert set(merged["tasks"]) == {"ablation", "imbalanced"}
    assert merged["meta"]["task_commands"] == {"ablation": "first", "imbalanced": "second"}
    assert (
        "commands: `first` (ablation); `second` (imbalanced)"
        in (tmp_path / "report.md").read_text()
    )
    with pytest.raises(ValueError, match="seeds"):
        run_benchmark(cfg, tmp_path, tasks=["ablation"], seeds=[1], progress=False, update=True,
                      work_dir=runs)  # fmt: skip


def test_fill_block_replaces_only_its_named_block(tmp_path):
    from hem_plugins.benchmark.report import fill_block
    from hem_plugins.benchmark.settled_plain import plain_table

    run = {"passes": 10, "unidentified": 4}
    result = {"seeds": [0, 1], "strategies": {"naive": {
        "passes_saved": 0.5, "passes_saved_min": 0.4, "acc_diff_points": -1.0,
        "acc_diff_points_se": 0.5, "acc_just_trained_diff_points": -2.0,
        "acc_just_trained_diff_points_se": None, "runs": {"with": [run, run]}}}}  # fmt: skip
    doc = tmp_path / "d.md"
    doc.write_text(
        "a\n<!-- t:start -->\nold\n<!-- t:end -->\nb\n<!-- u:start -->\nkeep\n<!-- u:end -->\n"
    )
    fill_block(doc, "t", plain_table(result))
    text = doc.read_text()
    assert "old" not in text and "keep" in text and text.startswith("a\n")
    assert "| naive | 50.0 % (least 40.0 %) | -1.0 ± 0.5 | -2.0 | 0.0 % | 4 |" in text
    with pytest.raises(ValueError, match="no <!-- v:start -->"):
        fill_block(doc, "v", "x")


def test_task_section_is_rendered_into_a_page_with_its_plots_linked(tmp_path):
    from hem_plugins.benchmark.report import render_readme

    results = json.loads(FIXTURE.read_text())
    (tmp_path / "bench").mkdir()
    docs = tmp_path / "docs"
    docs.mkdir()
    page = docs / "page.md"
    page.write_text(
        "# Page\n<!-- task-section:openset:start -->\nstale\n<!-- task-section:openset:end -->\n"
    )
    render_readme(results, page, str(tmp_path / "bench" / "results.json"), ("docs/page.md",))
    text = page.read_text()
    assert "stale" not in text and text.startswith("# Page\n")
    assert "## " + "3a" not in text  # the task's own heading is left to the page
    assert "| digits |" in text and "](../bench/openset_msp_hist_digits.png)" in text
    assert (tmp_path / "bench" / "openset_msp_hist_digits.png").is_file()
    page.write_text("<!-- task-section:nope:start -->\n<!-- task-section:nope:end -->\n")
    with pytest.raises(ValueError, match="no results of task 'nope'"):
        render_readme(results, page, "x.json")


def test_render_fills_only_the_blocks_its_json_has_results_for(tmp_path):
    """quick's JSON (the paper's tasks) fills the claims blocks, not the beyond tasks'
    sections; a JSON of the beyond tasks alone fills its sections, not the claims."""
    from hem_plugins.benchmark.report import HEADLINE_END, HEADLINE_START, render_readme

    results = json.loads(FIXTURE.read_text())
    page = tmp_path / "page.md"
    stale = ("<!-- task-section:divisor:start -->\nstale divisor\n"
             "<!-- task-section:divisor:end -->\n")  # fmt: skip
    page.write_text(f"{HEADLINE_START}\nold\n{HEADLINE_END}\n{stale}")
    render_readme(results, page, str(tmp_path / "results.json"))
    text = page.read_text()
    assert "old\n" not in text and stale in text
    beyond = {**results, "tasks": {}}  # no paper task: the claims block stays
    page.write_text(f"{HEADLINE_START}\nold\n{HEADLINE_END}\n")
    with pytest.raises(ValueError, match="no results of the paper's claims"):
        render_readme(beyond, page, "beyond.json")
    assert "old" in page.read_text()
