"""One commit, one hash (hem_plugins/benchmark/provenance.py): the content hash ignores
comments, docstrings and formatting and follows code and config values; every committed
results JSON in :data:`GATED` carries the hash of the tree it is committed in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hem_plugins.benchmark.provenance import (
    EXCLUDED,
    TUNED_JSON,
    content_hash,
    hashed_files,
    provenance,
)

REPO = Path(__file__).resolve().parents[2]

#: The committed JSONs the gate checks: the profiles' results (benchmarks/<profile>/results.json),
#: configs/benchmark/tuned.json, and the measurements of tools/bench_loss.py and
#: tools/skip_settled.py (benchmarks/*.json; docs/performance.md and docs/skip_settled.md are
#: rendered from them). Regenerate after a change of code or configs (docs/development.md).
PROFILE_RESULTS = [
    "configs/benchmark/tuned.json",
    "benchmarks/quick/results.json",
    "benchmarks/beyond/results.json",
]
#: The measurements: one command each, no tasks (so no per-task hashes).
MEASUREMENTS = {
    "benchmarks/bench_loss_small_cpu.json": "python tools/bench_loss.py --suite small "
    "--budget 10 --out benchmarks/bench_loss_small_cpu.json",
    "benchmarks/bench_loss_small_cpu_1thread.json": "python tools/bench_loss.py --suite small "
    "--budget 10 --threads 1 --out benchmarks/bench_loss_small_cpu_1thread.json",
    "benchmarks/bench_loss_cpu.json": "python tools/bench_loss.py --repeats 9 "
    "--out benchmarks/bench_loss_cpu.json",
    "benchmarks/bench_loss_cpu_bfloat16.json": "python tools/bench_loss.py --dtype bfloat16 "
    "--repeats 9 --out benchmarks/bench_loss_cpu_bfloat16.json",
    "benchmarks/bench_e2e_digitmosaic_cpu.json": "the command in docs/performance.md",
    "benchmarks/bench_e2e_fcn_r18_cpu.json": "the command in docs/performance.md",
    "benchmarks/skip_settled_plain.json": "python tools/skip_settled.py --seeds 0 1 2 3 4 5 6 7 "
    "8 9",
}
GATED: list[str] = [*PROFILE_RESULTS, *MEASUREMENTS]

#: The command that regenerates each gated JSON.
REGENERATE = {
    TUNED_JSON: "python -m hem_plugins.benchmark --profile tune --out work_dirs/benchmark/tune",
    "benchmarks/quick/results.json": "python -m hem_plugins.benchmark --profile quick "
    "--out benchmarks/quick",
    "benchmarks/beyond/results.json": "python -m hem_plugins.benchmark --profile beyond "
    "--out benchmarks/beyond",
}


def _copy_tree(tmp_path: Path) -> Path:
    """hem_plugins/ (with its configs link) and configs/ in a temp folder."""
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copytree(REPO / "hem_plugins", root / "hem_plugins", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))  # fmt: skip
    assert (root / "hem_plugins" / "configs").is_symlink()
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_the_hash_covers_code_and_configs_and_only_the_named_exclusions():
    rels = [rel for rel, _ in hashed_files(REPO)]
    assert rels == sorted(rels) and len(set(rels)) == len(rels)
    assert "hem_plugins/functional.py" in rels and "configs/benchmark/quick.py" in rels
    assert "hem_plugins/implementations/cpu_kernel.cpp" in rels
    assert TUNED_JSON in rels and "configs/benchmark/beyond.py" in rels
    assert not any(r.startswith("hem_plugins/configs/") for r in rels)  # the link, once
    assert not set(EXCLUDED) & set(rels) and all((REPO / r).is_file() for r in EXCLUDED)
    assert TUNED_JSON not in [rel for rel, _ in hashed_files(REPO, with_tuned=False)]
    prov = provenance(REPO)
    assert set(prov) >= {"commit", "dirty", "content_hash", "hashed_files"}
    assert prov["content_hash"] == content_hash() == content_hash(REPO)
    assert prov["hashed_files"] == len(rels)


def test_comments_docstrings_and_formatting_leave_the_hash_code_and_values_change_it(tmp_path):
    root = _copy_tree(tmp_path)
    base = content_hash(root)
    assert base == content_hash(REPO)
    margins = root / "hem_plugins" / "margins.py"
    text = margins.read_text(encoding="utf-8")
    # a comment, a module docstring, a function's docstring, blank lines and wrapping
    assert text.startswith('"""')
    margins.write_text(
        '# a comment\n\n"""Another module docstring. ' + text[3:].replace(
            "def ", 'def _x():\n    """doc"""\n    return (\n        1\n    )\n\n\ndef ', 1
        ),
        encoding="utf-8",
    )  # fmt: skip
    changed = content_hash(root)
    assert changed != base  # a new function is code
    margins.write_text(text.replace("def ", "def _x():\n    return 1\n\n\ndef ", 1), "utf-8")
    assert content_hash(root) == changed  # the same code, without docstring and wrapping
    margins.write_text(text, encoding="utf-8")
    _edit(root / "configs" / "benchmark" / "quick.py", "seeds = [0, 1, 2, 3, 4]",
          "seeds = [0, 1, 2, 3, 4]  # five")  # fmt: skip
    assert content_hash(root) == base
    for rel in EXCLUDED:  # modules that only render or print
        (root / rel).write_text((root / rel).read_text() + "\nX = 1\n", encoding="utf-8")
    assert content_hash(root) == base
    # tuned.json: its commands and provenance say how it was made, the tuned values matter
    tuned = root / TUNED_JSON
    data = json.loads(tuned.read_text())
    data["commands"] = {}
    data["provenance"] = {"content_hash": "x"}
    tuned.write_text(json.dumps(data))
    assert content_hash(root) == base
    data["tuned"]["openset"]["digits/ce"]["chosen"]["lr"] = 0.3
    tuned.write_text(json.dumps(data))
    assert content_hash(root) != base and content_hash(root, with_tuned=False) == content_hash(
        REPO, with_tuned=False
    )
    tuned.write_text(json.dumps(json.loads((REPO / TUNED_JSON).read_text())))
    assert content_hash(root) == base
    # a config value, a code change
    _edit(root / "configs" / "benchmark" / "quick.py", "seeds = [0, 1, 2, 3, 4]", "seeds = [0]")
    assert content_hash(root) != base
    _edit(root / "configs" / "benchmark" / "quick.py", "seeds = [0]", "seeds = [0, 1, 2, 3, 4]")
    assert content_hash(root) == base
    _edit(root / "hem_plugins" / "benchmark" / "runner.py", "indent=1", "indent=2")
    assert content_hash(root) != base
    # a file's path is part of the hash
    _edit(root / "hem_plugins" / "benchmark" / "runner.py", "indent=2", "indent=1")
    shutil.move(root / "configs" / "benchmark" / "full.py", root / "configs" / "benchmark" / "f.py")
    assert content_hash(root) != base


def test_outside_a_checkout_there_is_no_commit(tmp_path):
    root = _copy_tree(tmp_path)
    # the configs a wheel holds: a copy in the package, no top-level configs/
    (root / "hem_plugins" / "configs").unlink()
    shutil.move(root / "configs", root / "hem_plugins" / "configs")
    prov = provenance(root)
    assert prov["commit"] is None and prov["dirty"] is None
    assert prov["content_hash"] == content_hash(REPO)


def _hashes_of(path: Path) -> tuple[dict | None, dict[str, str | None]]:
    """A committed JSON's provenance and the content hash of each task it holds."""
    data = json.loads(path.read_text(encoding="utf-8"))
    per_task = data.get("content_hashes") or data.get("meta", {}).get("task_content_hash", {})
    return data.get("provenance"), per_task


def _regenerate(rel: str) -> str:
    if rel in MEASUREMENTS:
        return MEASUREMENTS[rel]
    return REGENERATE.get(rel, f"python -m hem_plugins.benchmark --profile <its profile> --out "
                               f"{Path(rel).parent}")  # fmt: skip


@pytest.mark.parametrize(
    "rel", GATED or [pytest.param(None, marks=pytest.mark.skip("GATED empty"))]
)
def test_a_gated_json_has_provenance(rel):
    prov, per_task = _hashes_of(REPO / rel)
    assert prov and prov.get("content_hash"), (
        f"{rel} has no provenance: regenerate it with `{_regenerate(rel)}`"
    )
    if rel in MEASUREMENTS:
        return  # one command, no tasks
    assert per_task and all(per_task.values()), (
        f"{rel} has tasks without a content hash ({per_task}): regenerate it with "
        f"`{_regenerate(rel)}`"
    )


def test_the_gate_lists_every_committed_results_json():
    """GATED, once filled, names every profile's committed results and tuned.json."""
    if not GATED:
        pytest.skip("GATED is filled when the JSONs are regenerated")
    committed = {p.relative_to(REPO).as_posix() for p in REPO.glob("benchmarks/*/results.json")}
    committed |= {p.relative_to(REPO).as_posix() for p in REPO.glob("benchmarks/*.json")}
    assert committed | {TUNED_JSON} <= set(GATED), sorted(committed - set(GATED))


@pytest.mark.parametrize(
    "rel", GATED or [pytest.param(None, marks=pytest.mark.skip("GATED empty"))]
)
def test_gate_committed_json_comes_from_this_tree(rel):
    """THE GATE: a committed JSON whose content hash is not the tree's is stale."""
    prov, per_task = _hashes_of(REPO / rel)
    with_tuned = (prov or {}).get("with_tuned", rel != TUNED_JSON)
    tree = content_hash(REPO, with_tuned=with_tuned)
    stale = sorted(t for t, h in per_task.items() if h != tree)
    assert (prov or {}).get("content_hash") == tree and not stale, (
        f"{rel} was not produced from this tree (its content hash "
        f"{(prov or {}).get('content_hash')}, tasks from another: {stale}; the tree's {tree}): "
        f"the code or configs changed since. Regenerate it with `{_regenerate(rel)}`"
        + (" (tune first, then quick and beyond)" if rel != TUNED_JSON else "")
    )


def test_results_and_tuned_json_say_which_command_and_tree_made_each_task(tmp_path):
    from hem_plugins.benchmark.runner import write_tuned

    def seed(lr_lo, lr_hi):
        sel = {"lr_selected_on": "validation", "metric": "acc", "key": "digits/hem",
               "grid": [[{"lr": 0.01}, lr_lo], [{"lr": 0.1}, lr_hi]], "chosen": {"lr": 0.1}}  # fmt: skip
        return {"records": [{"group": {}, "metrics": {}, "extra": {"selection": sel}}]}

    tree = content_hash(with_tuned=False)
    # `--update` merged openset (an earlier command, another tree) into this run's adversarial
    results = {
        "meta": {
            "task_commands": {"openset": "cmd A", "adversarial": "cmd B"},
            "task_content_hash": {"openset": "old", "adversarial": tree},
        },  # fmt: skip
        "provenance": provenance(with_tuned=False),
        "tasks": {t: {"per_seed": {"0": seed(0.5, 0.6)}} for t in ("openset", "adversarial")},
    }
    data = json.loads(
        write_tuned(results, tmp_path / "t.json", "cmd B", ran=["adversarial"]).read_text()
    )
    assert data["commands"]["adversarial"].startswith("cmd B (")
    assert data["commands"]["openset"].startswith("cmd A (merged by --update")
    assert data["content_hashes"] == {"openset": "old", "adversarial": tree}
    assert data["provenance"]["content_hash"] == tree and not data["provenance"]["with_tuned"]
    # a later run of openset alone replaces its entry; adversarial's stays with its command
    results["meta"] = {"task_commands": {"openset": "cmd C"}, "task_content_hash": {}}
    del results["tasks"]["adversarial"]
    data = json.loads(
        write_tuned(results, tmp_path / "t.json", "cmd C", ran=["openset"]).read_text()
    )
    assert data["commands"]["openset"].startswith("cmd C (")
    assert data["commands"]["adversarial"].startswith("cmd B (")
    assert data["content_hashes"] == {"openset": tree, "adversarial": tree}
