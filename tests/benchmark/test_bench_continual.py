"""Task 3d: its three scenarios build, its selection never sees the test stream, and the
tuned mode trains once."""

from __future__ import annotations

import pytest

pytest.importorskip("avalanche")
pytest.importorskip("mmengine")

from hem_plugins.benchmark.avalanche import runner as av_runner  # noqa: E402
from hem_plugins.benchmark.avalanche.registry import BENCHMARKS, MODELS, build  # noqa: E402
from hem_plugins.benchmark.config import load_profile, task_settings  # noqa: E402
from hem_plugins.benchmark.tasks import TASKS  # noqa: E402
from hem_plugins.benchmark.tasks.base import Context  # noqa: E402

CL = TASKS["continual"]


def _settings(**over) -> dict:
    s = task_settings(load_profile("smoke"), "continual")
    s.update(seeds=[0], **over)
    return s


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_three_scenarios_in_every_profile(profile):
    s = task_settings(load_profile(profile), "continual")
    assert list(s["scenarios"]) == ["class_incremental", "task_incremental", "domain_incremental"]
    assert s["strategies"] == ["naive", "replay", "ewc", "lwf"]
    assert s["losses"] == ["ce", "hem", "hem_plus"]


def test_three_scenarios_build():
    s = _settings()
    seen = {}
    for scenario in s["scenarios"]:
        cfg = CL.build_config(s, scenario, "replay", "hem")
        cfg.merge_from_dict({"benchmark.validation_fraction": 0.2, "benchmark.n_experiences": 5})
        bm = build(BENCHMARKS, av_runner._plain(cfg.benchmark), "benchmark")
        model = build(MODELS, av_runner._plain(cfg.model), "model")
        seen[scenario] = (bm, type(model).__name__)
        assert len(bm.train_stream) == len(bm.valid_stream) == len(bm.test_stream) == 5
    bm, model = seen["class_incremental"]
    assert model == "IncrementalMLP"
    assert {e.task_label for e in bm.train_stream} == {0}
    assert len({c for e in bm.train_stream for c in e.classes_in_this_experience}) == 10
    bm, model = seen["task_incremental"]
    assert model == "MultiHeadMLP"
    assert [e.task_label for e in bm.train_stream] == [0, 1, 2, 3, 4]
    assert all(sorted(e.classes_in_this_experience) == [0, 1] for e in bm.valid_stream)
    bm, model = seen["domain_incremental"]
    assert model == "MLP"
    assert all(sorted(e.classes_in_this_experience) == list(range(10)) for e in bm.test_stream)
    with pytest.raises(KeyError, match="unknown scenario 'online'"):
        CL.build_config(s, "online", "naive", "ce")


class _StreamSpy:
    """A benchmark that logs which of its streams are read, into a shared log."""

    def __init__(self, benchmark, log: list):
        self._benchmark, self._log = benchmark, log

    def __getattr__(self, name):
        if name.endswith("_stream"):
            self._log.append(("stream", name))
        return getattr(self._benchmark, name)


@pytest.fixture
def stream_log(monkeypatch):
    """Every benchmark the Avalanche runner builds logs its stream reads into this list."""
    log: list = []

    def spying_build(registry, cfg, key, **kwargs):
        obj = build(registry, cfg, key, **kwargs)
        return _StreamSpy(obj, log) if registry is BENCHMARKS else obj

    monkeypatch.setattr(av_runner, "build", spying_build)
    return log


@pytest.mark.slow
def test_selection_never_sees_the_test_stream(stream_log, tmp_path):
    s = _settings(
        scenarios={"class_incremental": {"options": {"benchmark.n_experiences": 2}}},
        selection={"mode": "validation", "val_fraction": 0.2, "grid": {"lr": [0.02, 0.1]}},
    )
    ctx = Context(work_dir=tmp_path, advance=lambda desc: stream_log.append(("advance", desc)))
    rec = CL.run_one(s, 0, ctx, tmp_path, "class_incremental", "naive", "hem")
    final = next(i for i, (kind, d) in enumerate(stream_log)
                 if kind == "advance" and "select" not in d)  # fmt: skip
    before = [d for kind, d in stream_log[:final] if kind == "stream"]
    after = [d for kind, d in stream_log[final:] if kind == "stream"]
    assert "test_stream" not in before, before  # the selection never read the test stream
    assert before.count("valid_stream") == 2  # one evaluation stream per grid point
    assert "test_stream" in after and "valid_stream" not in after
    sel = rec["extra"]["selection"]
    assert rec["extra"]["lr_selected_on"] == sel["lr_selected_on"] == "validation"
    assert [p["lr"] for p, _ in sel["grid"]] == [0.02, 0.1]
    best = max(sel["grid"], key=lambda ps: ps[1])[0]
    assert sel["chosen"] == best and rec["extra"]["lr"] == best["lr"]
    assert sel["key"] == "class_incremental/naive/hem"
    m = rec["metrics"]
    assert 0.0 <= m["train_acc"] <= 1.0 and m["diverged"] == 0.0
    assert 0.0 <= m["final_acc"] <= 1.0


@pytest.mark.slow
def test_tuned_mode_trains_once_with_the_tuned_lr(stream_log, tmp_path):
    s = _settings(
        scenarios={"domain_incremental": {"options": {
            "benchmark": dict(_delete_=True, type="PermutedDigits", n_experiences=2),
            "model": dict(_delete_=True, type="MLP", hidden_sizes=[16], num_classes=10)}}},
        selection={"mode": "tuned", "file": "configs/benchmark/tuned.py"},
        tuned={"continual": {"domain_incremental/naive/ce": {
            "chosen": {"lr": 0.05}, "metric": "m", "grid": [[{"lr": 0.05}, 0.9]]}}},
    )  # fmt: skip
    advanced = []
    rec = CL.run_one(s, 0, Context(advance=advanced.append), tmp_path, "domain_incremental",
                     "naive", "ce")  # fmt: skip
    assert len(advanced) == 1 and rec["extra"]["lr"] == 0.05
    assert rec["extra"]["lr_selected_on"] == "configs/benchmark/tuned.py"
    assert [d for _, d in stream_log if d != "train_stream"] == ["test_stream"]
    assert rec["group"] == {"scenario": "domain_incremental", "dataset": "permuteddigits",
                            "strategy": "naive", "loss": "ce"}  # fmt: skip
    with pytest.raises(KeyError, match="domain_incremental/naive/hem"):
        CL.run_one(s, 0, Context(), tmp_path, "domain_incremental", "naive", "hem")


def test_units_count_every_training():
    s = _settings()
    n = len(s["scenarios"]) * len(s["strategies"]) * len(s["losses"])
    grid = len(s["selection"]["grid"]["lr"])
    assert CL.units({**s, "selection": {**s["selection"], "mode": "validation"}}) == n * (grid + 1)
    assert CL.units({**s, "selection": {**s["selection"], "mode": "tuned"}}) == n
