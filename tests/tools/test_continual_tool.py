"""tools/continual.py and tools/continual_table.py: a config end to end, overrides, bad configs
failing clearly, a quiet console (one line per experience, the full log in a file), and the
table of several runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hem_plugins.benchmark.avalanche import SplitDigits, cli, summary_table
from hem_plugins.benchmark.avalanche.registry import ConfigError
from hem_plugins.benchmark.avalanche.runner import DivergedError, load_config, run

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/avalanche/replay_hemplus_splitdigits.py"
FAST = {
    "benchmark.n_experiences": 2,
    "strategy.train_epochs": 1,
    "strategy.mem_size": 50,
    "strategy.train_mb_size": 128,
    "model.hidden_sizes": [16],
    "loggers.interactive": False,
}


@pytest.mark.slow
def test_run_config_end_to_end(tmp_path):
    summary = run(CONFIG, cfg_options=FAST, work_dir=tmp_path)
    assert summary["config"]["criterion"]["type"] == "HEMPlusLoss"
    assert len(summary["experience_accuracies"]) == 2
    assert len(summary["accuracy_matrix"]) == 2
    assert 0.0 <= summary["final_accuracy"] <= 1.0 and summary["forgetting"] is not None
    # Margins of both experiences; the second counts the 50 replayed samples.
    assert [m["experience"] for m in summary["margins"]] == [0, 1]
    second = SplitDigits(n_experiences=2, seed=0).train_stream[1]
    assert summary["margins"][1]["num_samples"] == len(second.dataset) + 50
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["final_accuracy"] == summary["final_accuracy"]
    assert (tmp_path / "csv" / "eval_results.csv").is_file()
    assert any((tmp_path / "tb").iterdir())


def test_every_shipped_config_loads():
    configs = sorted((ROOT / "configs/avalanche").glob("*.py"))
    assert len(configs) >= 12
    for path in configs:
        cfg = load_config(path)
        assert cfg.criterion.type in {"CrossEntropyLoss", "HEMLoss", "HEMPlusLoss"}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"criterion.type": "HEMLos"}, r"`criterion.type`: 'HEMLos' .*Did you mean 'HEMLoss'"),
        ({"strategy.type": "Replai"}, r"`strategy.type`: 'Replai'.*'Replay'"),
        ({"plugins": [{"type": "HEMPlus"}]}, r"`plugins\[0\].type`"),
        ({"optimizer.lrr": 0.1}, r"`optimizer` \(type='SGD'\).*lrr"),
        ({"epochs": 3}, r"unknown config key\(s\) `epochs`"),
        ({"loggers.tensorbord": True}, r"tensorbord.*`loggers`"),
    ],
)
def test_bad_config_names_the_key(options, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        run(CONFIG, cfg_options={**FAST, **options}, work_dir=tmp_path)


def test_cli_reports_bad_config(tmp_path, capsys):
    argv = [str(CONFIG), "--cfg-options", "criterion.type=HEMLos", "--work-dir", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "criterion.type" in err and "HEMLos" in err
    assert cli.main(["no/such/config.py"]) == 2
    assert "no/such/config.py" in capsys.readouterr().err


FAST_ARGV = ["benchmark.n_experiences=2", "strategy.train_epochs=1", "strategy.mem_size=50",
             "strategy.train_mb_size=128", "model.hidden_sizes=[16]"]  # fmt: skip


@pytest.mark.slow
def test_the_tool_prints_a_line_per_experience_and_logs_the_rest(tmp_path):
    """``python tools/continual.py CONFIG``: a line per experience and two of summary on the
    console; Avalanche's log and warnings (Replay's DeprecationWarning) in ``log.txt``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, str(ROOT / "tools" / "continual.py"), str(CONFIG),
           "--cfg-options", *FAST_ARGV, "--work-dir", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) == 2 + 2, lines
    assert lines[0].startswith("experience 1/2 (") and "test acc" in lines[0], lines
    assert lines[1].startswith("experience 2/2 (") and "on all 2 experiences" in lines[1], lines
    assert lines[2].startswith("final test acc ") and "forgetting" in lines[2], lines
    assert lines[3] == f"summary: {tmp_path}/summary.json, full log: {tmp_path}/log.txt"
    log = (tmp_path / "log.txt").read_text()
    assert "Epoch 0 ended." in log and "Top1_Acc_Stream/eval_phase/test_stream" in log
    assert "DeprecationWarning" in log
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert f"final test acc {summary['final_accuracy']:.3f}" in lines[2]


def test_cli_json_prints_the_summary(tmp_path, capsys):
    argv = [str(CONFIG), "--cfg-options", *FAST_ARGV, "loggers.text=False",
            "--work-dir", str(tmp_path), "--json"]  # fmt: skip
    assert cli.main(argv) == 0
    shown = json.loads(capsys.readouterr().out.split("\n", 2)[2])  # after the 2 progress lines
    assert set(shown) >= {"final_accuracy", "forgetting", "experience_accuracies", "seconds"}
    assert "config" not in shown and "margins" not in shown
    assert not (tmp_path / "log.txt").exists()


@pytest.mark.slow
def test_the_tools_are_the_command_lines(tmp_path):
    """``python tools/continual.py`` and ``tools/continual_table.py`` exit with their main's status."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for tool, arg, message in [
        ("continual.py", "no/such/config.py", "no/such/config.py"),
        ("continual_table.py", str(tmp_path / "nowhere"), "no summary.json"),
    ]:
        cmd = [sys.executable, str(ROOT / "tools" / tool), arg]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]


def test_table_groups_seeds(tmp_path):
    dirs = []
    for seed, (acc, fgt) in enumerate([(0.9, 0.1), (0.8, 0.3)]):
        d = tmp_path / f"replay_hem_seed{seed}"
        d.mkdir()
        summary = {"config": {"criterion": {"type": "HEMLoss"}}}
        summary.update(final_accuracy=acc, forgetting=fgt)
        (d / "summary.json").write_text(json.dumps(summary))
        dirs.append(str(d))
    out = summary_table.table(dirs)
    assert "| replay_hem | HEMLoss | 2 | 85.0 ± 7.1 | 20.0 ± 14.1 |" in out
    assert summary_table.main([str(tmp_path / "nowhere")]) == 2


@pytest.mark.slow
def test_divergence_names_the_experience(tmp_path):
    options = {**FAST, "criterion.type": "HEMLoss", "optimizer.lr": 1e30}
    with pytest.raises(DivergedError, match=r"diverged in experience 0 .*HEMLoss"):
        run(CONFIG, cfg_options=options, work_dir=tmp_path)
