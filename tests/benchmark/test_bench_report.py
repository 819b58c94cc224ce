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

from hem_plugins.benchmark.report import headline_table, render_from_json  # noqa: E402
from hem_plugins.benchmark.tasks.base import fmt, verdict  # noqa: E402

FIXTURE = Path(__file__).parent / "fixtures" / "results_small.json"
ROOT = Path(__file__).resolve().parents[2]


def test_verdict_and_format():
    assert fmt([0.9, 0.8]) == "85.0 ± 7.1"
    assert fmt([]) == "—"
    assert verdict([0.9, 0.92], [0.7, 0.7]) == "agrees"
    assert verdict([0.5, 0.5], [0.7, 0.7]) == "disagrees"
    assert verdict([0.71, 0.69], [0.7, 0.7]) == "inconclusive (within seed noise)"
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
    # settings beside the results: model, epochs, optimizer, lr per loss, margins
    assert (
        "| digits | MLP 8, ReLU | 2 | 64 | SGD m=0.9 wd=0.0005 | cosine | CE 0.1, HEM 0.05 |"
        in text
    )
    assert "| dataset=digits, loss=hem | 757 | 1.250 |" in text
    # claims with verdicts computed from the fixture's numbers
    assert "HEM AUROC (MSP) higher than CE — measured 91.0 ± 1.4 vs 70.0 ± 0.0: **agrees**" in text
    assert (
        "HEM AUROC (max-logit) higher than CE — measured 60.0 ± 0.0 vs 70.0 ± 0.0: **disagrees**"
        in text
    )
    assert "PGD ε=0.05: HEM 35.0 ± 7.1 vs CE 10.0 ± 0.0: **agrees**" in text
    assert "HEM+ vs CE balanced acc 70.0 ± 0.0 vs 60.0 ± 0.0: **agrees**" in text
    assert "HEM vs MM, accuracy: 80.0 ± 0.0 vs 70.0 ± 0.0: **agrees**" in text
    assert (
        "best initial lr CE 0.1 (95.0 %), HEM 0.01 (93.0 %): claim 'HEM needs a lower lr' **agrees**"
        in text
    )
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [
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
