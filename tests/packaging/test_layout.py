"""Rules of the repository's layout that a reader relies on, checked on the files themselves.

The package has three layers, and imports point down only::

    core         hem_plugins/*.py and every sub-package but the three below (torch only)
    adapters     hem_plugins/mmseg/, hem_plugins/avalanche/ (core + their toolkit)
    experiments  hem_plugins/benchmark/ (anything in the package)

and ``tools/`` sits above them all. The import rules are read from every
module's syntax tree (``ast``): an import that points up a layer, an adapter
importing the other adapter, a module naming a private (``_``) member of
another module of the package, an import of a module the package does not
have, and any ``sys.path`` edit or loading of a file by path. A failure names
the file, the line and the rule.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "hem_plugins"
SOURCES = [p for p in PACKAGE.rglob("*.py") if "configs" not in p.relative_to(PACKAGE).parts]
README = (REPO / "README.md").read_text(encoding="utf-8")

ADAPTERS = ("mmseg", "avalanche")
MAX_ADAPTER_LINES = 1600
STDLIB = frozenset(sys.stdlib_module_names)
# Third-party imports each layer may use: the core torch alone (Triton comes with torch's
# CUDA wheels); each adapter its toolkit and what that toolkit brings (mmengine brings rich
# and prettytable); the experiments anything.
THIRD_PARTY = {
    "core": {"torch", "triton"},
    "mmseg": {"torch", "numpy", "mmseg", "mmengine", "mmcv", "rich", "prettytable"},
    "avalanche": {"torch", "numpy", "avalanche", "mmengine"},
}
LAYERS = "core <- adapters (mmseg, avalanche) <- experiments (benchmark) <- tools"
# Ways to put a file on the import path or import it by its path (a config read with
# ``runpy.run_path`` is data, not a module, and is allowed).
PATH_LOADERS = {"spec_from_file_location", "SourceFileLoader", "addsitedir"}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.rule}] {self.detail}"


def module_name(path: str) -> tuple[str, bool]:
    """``('hem_plugins.mmseg.hook', False)`` for ``hem_plugins/mmseg/hook.py``; packages: True."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def layer(module: str) -> str:
    """``core``, ``mmseg``, ``avalanche`` or ``benchmark`` for a module of the package."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in (*ADAPTERS, "benchmark"):
        return parts[1]
    return "core"


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_module(dotted: str, root: Path) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


@dataclass(frozen=True)
class Import:
    """One imported name: ``from source import name`` (``name`` None for ``import source``)."""

    node: ast.stmt
    source: str
    name: str | None
    target: str  # the module whose layer counts: ``source``, or ``source.name`` when a module
    binds: str | None  # the local name bound to the module ``target``, if any


def _imports(tree: ast.AST, module: str, is_package: bool, root: Path):
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node, alias.name, None, alias.name, alias.asname)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if source.split(".")[0] == "hem_plugins" and _is_module(sub, root):
                    yield Import(node, source, alias.name, sub, alias.asname or alias.name)
                else:
                    yield Import(node, source, alias.name, source, None)


def _private_part(target: str, importer: str) -> str | None:
    """The first private component of ``target`` below what it shares with ``importer``."""
    shared = 0
    for a, b in zip(target.split("."), importer.split("."), strict=False):
        if a != b:
            break
        shared += 1
    return next((p for p in target.split(".")[shared:] if is_private(p)), None)


def check_imports(path: str, source: str, root: Path = REPO) -> list[Violation]:
    """The layer and privacy violations of the package module at ``path`` (relative to root)."""
    tree = ast.parse(source, filename=path)
    module, is_package = module_name(path)
    own = layer(module)
    found: list[Violation] = []
    bound: set[str] = set()

    def flag(node, rule, detail):
        violation = Violation(path, node.lineno, rule, detail)
        if violation not in found:  # once per statement, not per name it imports
            found.append(violation)

    for imp in _imports(tree, module, is_package, root):
        node, target = imp.node, imp.target
        top = target.split(".")[0]
        if top == "tools":
            flag(node, "layers", f"imports {target}: nothing in hem_plugins imports tools/")
        elif top == "hem_plugins":
            theirs = layer(target)
            if not _is_module(target, root):
                flag(node, "exists", f"imports {target}, which is no module of the package")
            elif own == "core" and theirs != "core":
                flag(node, "layers", f"the core imports {target} ({theirs}): {LAYERS}")
            elif own in ADAPTERS and theirs == "benchmark":
                flag(node, "layers", f"adapter {own} imports the experiments' {target}: {LAYERS}")
            elif own in ADAPTERS and theirs in ADAPTERS and theirs != own:
                flag(node, "layers", f"adapter {own} imports adapter {theirs} ({target})")
            part = _private_part(target, module)
            if imp.name is not None and is_private(imp.name):
                flag(node, "private", f"imports {imp.name}, private to {imp.source}")
            elif part is not None:
                flag(node, "private", f"imports {target}, whose {part} is private to its package")
            if imp.binds:
                bound.add(imp.binds)
        elif own != "benchmark" and top not in STDLIB and top not in THIRD_PARTY[own]:
            allowed = ", ".join(sorted(THIRD_PARTY[own]))
            flag(node, "layers", f"{own} imports {target}; it may use the stdlib and {allowed}")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and is_private(node.attr)
        ):
            flag(node, "private", f"uses {node.value.id}.{node.attr}, private to that module")
    return found


def check_path_edits(path: str, source: str) -> list[Violation]:
    """``sys.path`` edits and files loaded by path (``spec_from_file_location`` and kin)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        name = None
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "sys" and node.attr == "path":
                name = "sys.path"
            elif node.attr in PATH_LOADERS:
                name = node.attr
        elif isinstance(node, ast.Name) and node.id in PATH_LOADERS:
            name = node.id
        elif isinstance(node, ast.ImportFrom):
            hits = [a.name for a in node.names if a.name in PATH_LOADERS]
            if node.module == "sys" and any(a.name == "path" for a in node.names):
                hits.append("sys.path")
            name = ", ".join(hits) or None
        if name:
            found.append(
                Violation(path, node.lineno, "no path edits", f"{name}: import modules, not files")
            )
    return found


def _relative(paths) -> list[tuple[str, str]]:
    return [(p.relative_to(REPO).as_posix(), p.read_text(encoding="utf-8")) for p in sorted(paths)]


def _report(violations: list[Violation]) -> str:
    return f"{len(violations)} violation(s):\n" + "\n".join(map(str, violations))


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_imports_point_down_and_name_no_private_member_of_another_module():
    found = [v for path, text in _relative(SOURCES) for v in check_imports(path, text)]
    assert not found, _report(found)


def test_no_sys_path_edit_nor_file_loaded_by_path():
    files = [*SOURCES, *(REPO / "tools").rglob("*.py"), *(REPO / "tests").rglob("*.py")]
    found = [v for path, text in _relative(files) for v in check_path_edits(path, text)]
    assert not found, _report(found)


@pytest.mark.parametrize(
    "path, code, rule",
    [
        ("hem_plugins/modules.py", "from .benchmark import baselines", "layers"),
        ("hem_plugins/modules.py", "import hem_plugins.mmseg.losses", "layers"),
        ("hem_plugins/modules.py", "import numpy", "layers"),
        ("hem_plugins/mmseg/hook.py", "from ..benchmark.mmseg import runner", "layers"),
        ("hem_plugins/mmseg/hook.py", "from hem_plugins.avalanche import plugin", "layers"),
        ("hem_plugins/avalanche/plugin.py", "import mmseg", "layers"),
        ("hem_plugins/benchmark/report.py", "from tools.continual import main", "layers"),
        ("hem_plugins/modules.py", "from .functional import _hem", "private"),
        ("hem_plugins/mmseg/hook.py", "from .. import functional\nfunctional._hem(1)", "private"),
        ("hem_plugins/benchmark/report.py", "import hem_plugins._cpu_kernel", "private"),
        ("hem_plugins/benchmark/report.py", "from hem_plugins._fast import run", "private"),
        ("hem_plugins/settled.py", "from . import _checks", "private"),
        ("hem_plugins/benchmark/data.py", "from ..digits import load_digits_split", "exists"),
    ],
)
def test_the_import_rules_catch(path, code, rule, tmp_path):
    for module in ("__init__", "functional", "_cpu_kernel", "_fast", "_checks", "modules",
                   "benchmark/__init__", "benchmark/mmseg/__init__", "avalanche/__init__",
                   "mmseg/__init__", "mmseg/losses"):  # fmt: skip
        (tmp_path / "hem_plugins" / f"{module}.py").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "hem_plugins" / f"{module}.py").touch()
    found = check_imports(path, code, root=tmp_path)
    assert [v.rule for v in found] == [rule], found
    assert str(found[0]).startswith(f"{path}:")


@pytest.mark.parametrize(
    "code",
    [
        "from hem_plugins import HEMLoss\nfrom ..margins import DEFAULT_SCALE",
        "from .. import modules as core\ncore.HEMLoss",
        "import torch\nfrom mmseg.registry import MODELS\nfrom .counts import write_counts as _w",
        "from hem_plugins import __version__",
    ],
)
def test_the_import_rules_let_through(code):
    assert check_imports("hem_plugins/mmseg/hook.py", code) == []


@pytest.mark.parametrize(
    "code",
    [
        "import sys\nsys.path.insert(0, 'x')",
        "from sys import path",
        "import importlib.util\nimportlib.util.spec_from_file_location('m', 'm.py')",
        "from importlib.util import spec_from_file_location",
        "import site\nsite.addsitedir('tools')",
    ],
)
def test_the_path_rule_catches(code):
    assert check_path_edits("tests/x.py", code)


def test_timing_lives_in_the_package_and_tests_share_a_root_conftest():
    assert not (REPO / "tools" / "loss_timing").exists(), "tools/loss_timing/ exists"
    assert (PACKAGE / "benchmark" / "timing" / "__init__.py").is_file()
    assert (REPO / "tests" / "conftest.py").is_file(), "tests/conftest.py is missing"


def test_the_adapters_hold_at_most_1600_lines():
    files = [p for name in ADAPTERS for p in (PACKAGE / name).rglob("*.py")]
    lines = {p.relative_to(REPO).as_posix(): len(p.read_text().splitlines()) for p in files}
    total = sum(lines.values())
    assert total <= MAX_ADAPTER_LINES, f"the adapters hold {total} lines (> 1600): {lines}"


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


@pytest.mark.parametrize("pattern", ["REPO_ROOT", "load_tool", "parents[2] / \"configs\"",
                                     "parents[3]"])  # fmt: skip
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
