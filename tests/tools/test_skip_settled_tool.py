"""tools/skip_settled.py (the command line of hem_plugins.benchmark.settled_plain): the paired
comparison's JSON and the Markdown block rendered from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("avalanche")

from hem_plugins.benchmark import settled_plain  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_tool_is_the_package_command_line():
    text = (ROOT / "tools" / "skip_settled.py").read_text()
    assert "from hem_plugins.benchmark.settled_plain import main" in text
    assert settled_plain.parse_args([]).json == Path("benchmarks/skip_settled_plain.json")


@pytest.mark.slow
def test_plain_writes_paired_figures(tmp_path):
    """SkipSettledPlugin() with no set-up vs without, per strategy, in one small JSON; its
    table rendered into a Markdown block."""
    out = tmp_path / "plain.json"
    doc = tmp_path / "doc.md"
    doc.write_text("# d\n<!-- skip-plain:start -->\nold\n<!-- skip-plain:end -->\n")
    argv = [
        "--seeds",
        "0",
        "--epochs",
        "4",
        "--json",
        str(out),
        "--threads",
        "1",
        "--doc",
        str(doc),
    ]
    assert settled_plain.main(argv) == 0
    data = json.loads(out.read_text())
    assert data["seeds"] == [0] and set(data["strategies"]) == {"naive", "naive+replay"}
    naive = data["strategies"]["naive"]
    n_train = data["settings"]["n_train"]
    assert naive["runs"]["without"][0]["passes"] == 4 * n_train
    assert 0 < naive["passes_saved"] < 1
    assert naive["runs"]["with"][0]["unidentified"] == 0
    replay = data["strategies"]["naive+replay"]["runs"]["with"][0]
    assert replay["unidentified"] > 0  # the buffer's rows carry no ids: presented, counted
    assert data["meta"]["command"].startswith("python tools/skip_settled.py --seeds 0")
    assert list(data)[-2:] == ["meta", "provenance"]  # the writer stamps it, after meta
    assert data["provenance"]["with_tuned"] is False
    text = doc.read_text()
    assert "old" not in text and "| naive | " in text and f"--render {out}" in text
    # --render: the block again from the JSON alone
    doc.write_text("<!-- skip-plain:start -->\n<!-- skip-plain:end -->\n")
    assert settled_plain.main(["--render", str(out), "--doc", str(doc)]) == 0
    assert "| naive+replay | " in doc.read_text()


@pytest.mark.slow
def test_the_tool_writes_the_trees_provenance_and_renders_without_it(tmp_path):
    """tools/skip_settled.py's JSON of a run holds ``provenance`` (without tuned.json), written
    by settled_plain's writer; --render reads the JSON and writes none."""
    from hem_plugins.benchmark.provenance import content_hash

    out = tmp_path / "plain.json"
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- skip-plain:start -->\n<!-- skip-plain:end -->\n")

    def tool(*args):
        run = subprocess.run([sys.executable, "tools/skip_settled.py", *args], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr

    tool("--seeds", "0", "--epochs", "1", "--json", str(out))
    data = json.loads(out.read_text())
    prov = data["provenance"]
    assert prov["content_hash"] == content_hash(with_tuned=False) and not prov["with_tuned"]
    written = out.read_text()
    tool("--render", str(out), "--doc", str(doc))
    assert out.read_text() == written and "| naive | " in doc.read_text()
