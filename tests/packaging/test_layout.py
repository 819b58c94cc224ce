"""Rules of the repository's layout that a reader relies on, checked on the files themselves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "hem_plugins"
SOURCES = [p for p in PACKAGE.rglob("*.py") if "configs" not in p.relative_to(PACKAGE).parts]
README = (REPO / "README.md").read_text(encoding="utf-8")


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_is_a_short_guide_with_an_install_line():
    assert len(README.splitlines()) <= 300
    assert 'pip install -e ".[mmseg]"' in README and "make test" in README
    for doc in re.findall(r"\]\((docs/[^)#]+)\)", README):
        assert (REPO / doc).is_file(), f"README links to missing {doc}"


def test_design_is_cited_inside_the_repository():
    assert (REPO / "docs" / "design.md").is_file()
    files = [*SOURCES, *(REPO / "tests").rglob("*.py"), *(REPO / "tools").glob("*"),
             *(REPO / "docs").glob("*.md"), REPO / "README.md"]  # fmt: skip
    citing = [str(p.relative_to(REPO)) for p in files if p.is_file()
              and "DESIGN.md" in p.read_text(encoding="utf-8", errors="ignore")
              and p.name != "test_layout.py"]  # fmt: skip
    assert not citing, f"these cite a DESIGN.md outside the repository: {citing}"


@pytest.mark.parametrize("pattern", ["REPO_ROOT", "load_tool", "spec_from_file_location",
                                     "parents[2] / \"configs\"", "parents[3]"])  # fmt: skip
def test_no_module_reaches_into_a_checkout(pattern):
    hits = [str(p.relative_to(REPO)) for p in SOURCES if pattern in p.read_text(encoding="utf-8")]
    assert not hits, f"{pattern!r} in {hits}"


def test_one_module_loads_scikit_learns_digits():
    hits = [str(p.relative_to(REPO)) for p in [*SOURCES, *(REPO / "tools").glob("*.py")]
            if re.search(r"\bload_digits\(", p.read_text(encoding="utf-8"))]  # fmt: skip
    assert hits == ["hem_plugins/benchmark/digits.py"]


def test_the_mmseg_adapter_does_not_walk_interpreter_frames():
    for p in (PACKAGE / "mmseg").glob("*.py"):
        text = p.read_text(encoding="utf-8")
        assert "_getframe" not in text and "currentframe" not in text and "f_back" not in text, p


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path):
    """The core and Avalanche quick starts run as written (the mmseg one is a config)."""
    blocks = [b for b in _python_blocks(README) if "custom_imports" not in b]
    assert len(blocks) >= 2
    for code in blocks:
        run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)  # fmt: skip
        assert run.returncode == 0, run.stderr[-2000:]
