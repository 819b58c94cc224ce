"""``--jobs N`` runs the (task, seed) units in worker processes: the records are those of one
process, in the same order."""

from __future__ import annotations

import json

import pytest

from hem_plugins.benchmark.cli import main


def _records(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    return data, {
        t: {s: per["records"] for s, per in res["per_seed"].items()}
        for t, res in data["tasks"].items()
    }


@pytest.mark.slow
def test_two_jobs_give_the_records_of_one(tmp_path):
    args = ["--profile", "smoke", "--tasks", "imbalanced,openset", "--seeds", "0", "1",
            "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "one"), "--work-dir", str(tmp_path / "r1")]) == 0
    assert (
        main([*args, "--out", str(tmp_path / "two"), "--work-dir", str(tmp_path / "r2"),
              "--jobs", "2"]) == 0
    )  # fmt: skip
    one, rec1 = _records(tmp_path / "one" / "results.json")
    two, rec2 = _records(tmp_path / "two" / "results.json")
    assert list(two["tasks"]) == list(one["tasks"]) == ["imbalanced", "openset"]
    assert rec2 == rec1
    assert two["meta"]["jobs"] == 2 and one["meta"]["jobs"] == 1
    assert set(two["meta"]["task_cpu_seconds"]) == {"openset", "imbalanced"}
    assert (tmp_path / "two" / "report.md").is_file()
    # the workers' log is in the work dir, --out holds the results alone
    assert (tmp_path / "r2" / "benchmark.log").is_file()
    assert not [p for p in (tmp_path / "two").iterdir() if p.suffix not in (".json", ".md", ".png")]
