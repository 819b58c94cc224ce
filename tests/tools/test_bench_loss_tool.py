"""tools/bench_loss.py writes the figures of docs/performance.md (its command line is
:mod:`hem_plugins.benchmark.timing.cli`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hem_plugins import implementations
from hem_plugins.benchmark.timing import cli as bench
from hem_plugins.resources import CONFIG_ROOT


@pytest.mark.slow
def test_bench_reports_ratios_peak_and_bandwidth(tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--shapes", "2x19x16x32", "--repeats", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["meta"]["threads"] >= 1
    assert list(data)[:3] == ["meta", "provenance", "results"]  # the writer stamps it
    (seg,) = data["results"]
    for row in (seg,):
        assert row["time_ratio"] > 0 and row["copy_gbps"] > 0 and row["hem_gbps"] > 0
        assert row["hem_peak_bytes"] >= 0 and row["ce_peak_bytes"] >= 0
        # The goal that does not depend on the machine: HEM keeps at most half
        # of what CE keeps for backward (a one-byte mask and small targets, no logits).
        assert row["saved_ratio"] <= 0.5
    assert seg["logits_bytes"] == 2 * 19 * 16 * 32 * 4


def test_bench_rejects_bad_shape():
    with pytest.raises(SystemExit):
        bench.main(["--shapes", "2xCx16"])


@pytest.mark.slow
def test_small_suite_reports_step_and_loss_ratios(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "SMALL_SHAPES", ["32x10", "2x19x8x8"])
    monkeypatch.setattr(bench, "SMALL_BF16_SHAPES", ["2x19x8x8"])
    out = tmp_path / "small.json"
    bench.main(["--suite", "small", "--budget", "0.05", "--out", str(out)])
    data = json.loads(out.read_text())
    assert [r["criterion"] for r in data["mlp_step"]] == [
        "HEMLoss(margin)",
        "HEMPlusLoss(class_counts)",
        "HEMPlusLoss() online",
    ]
    assert [r["case"] for r in data["loss"]] == [
        "32x10 float32",
        "2x19x8x8 float32",
        "2x19x8x8 bfloat16",
    ]
    for row in data["mlp_step"] + data["loss"]:
        assert row["ratio"] > 0 and row["samples"] >= 5
    assert all(r["saved_ratio"] <= 0.5 for r in data["loss"])


@pytest.mark.parametrize(
    "config, loss_args, cls_name, aux",
    [
        ("fcn-r18tiny_digitmosaic_hemplus.py", [], "HEMPlusLoss", "HEMPlusLoss"),
        ("fcn-r18tiny_digitmosaic_ce.py", ["--e2e-loss", "HEMLoss"], "HEMLoss", None),
    ],
)
def test_e2e_times_the_registered_loss_under_the_implementation_given(
    tmp_path, monkeypatch, capfd, config, loss_args, cls_name, aux
):
    """The e2e iteration runs the class mmseg's registry builds, under --implementation for
    this run only."""
    from mmseg.registry import MODELS

    import hem_plugins.mmseg

    cls = getattr(hem_plugins.mmseg, cls_name)
    calls = []
    forward = cls.forward

    def spy(self, *args, **kwargs):
        calls.append((type(self), implementations.setting()))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", spy)
    before = implementations.setting()
    out = tmp_path / "e2e.json"
    config = str(CONFIG_ROOT / "mmseg" / config)
    args = ["--shapes", "2x19x8x8", "--repeats", "1", "--no-peak", "--implementation", "reference"]
    args += ["--e2e", config, "--e2e-size", "32x32", "--e2e-batch", "1", *loss_args]
    capfd.readouterr()
    bench.main([*args, "--out", str(out)])
    # make bench's second job is quiet too: mmseg's warnings are in the log beside the JSON
    shown = capfd.readouterr()
    assert "Warning" not in shown.out + shown.err
    assert out.with_suffix(".log").is_file()
    assert implementations.setting() == before
    data = json.loads(out.read_text())
    assert data["meta"]["implementation"] == "reference"
    e2e = data["e2e"]
    assert MODELS.get(cls_name) is cls and e2e["loss"] == cls_name
    qualname = f"{cls.__module__}.{cls.__qualname__}"
    assert e2e["loss_classes"]["decode_head.loss_decode"] == qualname
    if aux:
        assert e2e["loss_classes"]["auxiliary_head.loss_decode"] == qualname
    else:
        assert e2e["loss_classes"]["auxiliary_head.loss_decode"].endswith("CrossEntropyLoss")
    # warm-up and one timed step, each through the decode loss (and the auxiliary one)
    assert len(calls) >= 2 and all(c == (cls, "reference") for c in calls)


@pytest.mark.slow
def test_the_tool_writes_the_trees_provenance_into_its_json(tmp_path):
    """tools/bench_loss.py's JSON holds ``provenance`` (without tuned.json, which no timing
    reads) after ``meta``, written by the timing's writer (the tool is its command line)."""
    from hem_plugins.benchmark.provenance import content_hash

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "bench.json"
    args = ["--shapes", "4x3", "--repeats", "1", "--no-peak", "--threads", "1", "--out", str(out)]
    run = subprocess.run([sys.executable, "tools/bench_loss.py", *args], cwd=root,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads(out.read_text())
    assert list(data)[:3] == ["meta", "provenance", "results"]
    prov = data["provenance"]
    assert prov["content_hash"] == content_hash(with_tuned=False) and not prov["with_tuned"]
    assert data["results"][0]["shape"] == "4x3"
