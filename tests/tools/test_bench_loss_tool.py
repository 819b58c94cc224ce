"""tools/bench_loss.py writes the figures of docs/performance.md (through tools/loss_timing/)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).parent.parent / "tools" / "bench_loss.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_loss", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_reports_ratios_peak_and_bandwidth(bench, tmp_path):
    out = tmp_path / "bench.json"
    bench.main(["--shapes", "2x19x16x32", "--repeats", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["meta"]["threads"] >= 1
    (seg,) = data["results"]
    for row in (seg,):
        assert row["time_ratio"] > 0 and row["copy_gbps"] > 0 and row["hem_gbps"] > 0
        assert row["hem_peak_bytes"] >= 0 and row["ce_peak_bytes"] >= 0
        # The goal that does not depend on the machine: HEM keeps at most half
        # of what CE keeps for backward (a one-byte mask and small targets, no logits).
        assert row["saved_ratio"] <= 0.5
    assert seg["logits_bytes"] == 2 * 19 * 16 * 32 * 4


def test_bench_rejects_bad_shape(bench):
    with pytest.raises(SystemExit):
        bench.main(["--shapes", "2xCx16"])


@pytest.mark.slow
def test_small_suite_reports_step_and_loss_ratios(bench, tmp_path, monkeypatch):
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


def test_fast_path_is_scoped(bench):
    from hem_plugins import functional

    before = functional.FAST_PATH
    with pytest.raises(RuntimeError), bench.fast_path("off"):
        assert functional.FAST_PATH is False
        raise RuntimeError("a failing run")
    assert functional.FAST_PATH == before


@pytest.mark.parametrize(
    "config, loss_args, cls_name, aux",
    [
        ("fcn-r18tiny_digitmosaic_hemplus.py", [], "HEMPlusLoss", "HEMPlusLoss"),
        ("fcn-r18tiny_digitmosaic_ce.py", ["--e2e-loss", "HEMLoss"], "HEMLoss", None),
    ],
)
def test_e2e_times_the_registered_loss_and_restores_fast_path(
    bench, tmp_path, monkeypatch, capfd, config, loss_args, cls_name, aux
):
    """The e2e iteration runs the class mmseg's registry builds, under --fast-path only."""
    from mmseg.registry import MODELS

    import hem_plugins.mmseg
    from hem_plugins import functional

    cls = getattr(hem_plugins.mmseg, cls_name)
    calls = []
    forward = cls.forward

    def spy(self, *args, **kwargs):
        calls.append((type(self), functional.FAST_PATH))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", spy)
    before = functional.FAST_PATH
    out = tmp_path / "e2e.json"
    config = str(TOOL.parents[1] / "configs" / "mmseg" / config)
    args = ["--shapes", "2x19x8x8", "--repeats", "1", "--no-peak", "--fast-path", "off"]
    args += ["--e2e", config, "--e2e-size", "32x32", "--e2e-batch", "1", *loss_args]
    capfd.readouterr()
    bench.main([*args, "--out", str(out)])
    # make bench's second job is quiet too: mmseg's warnings are in the log beside the JSON
    shown = capfd.readouterr()
    assert "Warning" not in shown.out + shown.err
    assert out.with_suffix(".log").is_file()
    assert functional.FAST_PATH == before
    e2e = json.loads(out.read_text())["e2e"]
    assert MODELS.get(cls_name) is cls and e2e["loss"] == cls_name
    qualname = f"{cls.__module__}.{cls.__qualname__}"
    assert e2e["loss_classes"]["decode_head.loss_decode"] == qualname
    if aux:
        assert e2e["loss_classes"]["auxiliary_head.loss_decode"] == qualname
    else:
        assert e2e["loss_classes"]["auxiliary_head.loss_decode"].endswith("CrossEntropyLoss")
    # warm-up and one timed step, each through the decode loss (and the auxiliary one)
    assert len(calls) >= 2 and all(c == (cls, False) for c in calls)
