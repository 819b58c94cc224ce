"""The C++ kernel's build on first use (``native_build.py``): a cache that only its user can
write, a hash checked before every load, one compile under concurrent first use, and a
compiler failure said once in a warning while the loss runs on the torch implementations.

One real compile per session (:func:`real_build`, through a ``CXX`` with arguments: a
logging wrapper in front of ``c++``). The other builds use a stand-in compiler that logs
its command line and copies that library to its ``-o`` path, so a rebuild costs
milliseconds and the log counts the compiles. Where the kernel's per-process state
matters (the build, the warning said once, the fallback, a damaged library that must not
crash the process) a child Python process runs the loss and reports in JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from hem_plugins.implementations import ENV_VAR, native_build

REPO = Path(__file__).resolve().parents[2]
ROOT = os.geteuid() == 0
NOBODY = 65534

# The child: the loss twice (forward and backward, then forward), the reference, and what
# the kernel says. With HEM_TEST_BARRIER, the children start their first call together.
CHILD = r"""
import json, os, time, warnings
import torch
from hem_plugins import hem_loss
from hem_plugins.implementations import LossOptions, choose, cpu_kernel, use

barrier = os.environ.get("HEM_TEST_BARRIER")
if barrier:
    open(os.path.join(barrier, str(os.getpid())), "w").close()
    deadline = time.time() + 120
    while len(os.listdir(barrier)) < int(os.environ["HEM_TEST_CHILDREN"]):
        assert time.time() < deadline, "the other children did not start"
        time.sleep(0.01)
g = torch.Generator().manual_seed(0)
x = torch.randn(64, 5, generator=g, requires_grad=True)
t = torch.randint(0, 5, (64,), generator=g)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loss = hem_loss(x, t, 0.5)
    loss.backward()
    hem_loss(x, t, 0.5)
with use("reference"):
    expected = hem_loss(x.detach(), t, 0.5)
print(json.dumps({
    "available": cpu_kernel.available(),
    "error": cpu_kernel.BUILD_ERROR,
    "chosen": choose(x, LossOptions()),
    "warnings": [str(w.message) for w in caught if w.category is cpu_kernel.KernelBuildWarning],
    "loss": loss.item(),
    "expected": expected.item(),
    "cache": str(cpu_kernel.cache_dir()),
}))
"""

# A compiler wrapper that logs its command line, then runs it (the shape of "ccache g++").
LOGGING_WRAPPER = 'echo "$*" >> "$HEM_TEST_CXX_LOG"\nexec "$@"\n'

# A stand-in compiler: logs its command line, waits $HEM_TEST_CXX_DELAY seconds, then copies
# its first argument (a built library) to the path after -o.
COPYING_COMPILER = """\
echo "$*" >> "$HEM_TEST_CXX_LOG"
sleep "${HEM_TEST_CXX_DELAY:-0}"
library=$1
while [ $# -gt 0 ]; do
  if [ "$1" = -o ]; then out=$2; fi
  shift
done
cp "$library" "$out"
"""


def child_env(cache: Path, cxx: str, log: Path | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_VAR, "XDG_CACHE_HOME")}
    env.update(
        HEM_PLUGINS_CACHE=str(cache),
        CXX=cxx,
        HEM_TEST_CXX_LOG=str(log or os.devnull),
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def report(proc: subprocess.CompletedProcess | subprocess.Popen, out: str, err: str) -> dict:
    assert proc.returncode == 0, f"the child ended with status {proc.returncode}:\n{err[-3000:]}"
    return json.loads(out.splitlines()[-1])


def run_child(cache: Path, cxx: str, log: Path | None = None, umask: int = -1) -> dict:
    """The child's report, from a process with this cache and compiler (its status must be 0)."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        env=child_env(cache, cxx, log),
        capture_output=True,
        text=True,
        timeout=600,
        umask=umask,
    )
    return report(proc, proc.stdout, proc.stderr)


def compiles(log: Path) -> list[str]:
    """The compiler command lines logged (one a compile)."""
    return log.read_text().splitlines() if log.exists() else []


def libraries(cache: Path) -> list[Path]:
    return sorted((cache / "cpu_kernel").glob("*.so"))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def assert_kernel_ran(result: dict) -> None:
    assert result["available"] and result["error"] is None, result["error"]
    assert result["chosen"] == "cpu_kernel"
    assert result["warnings"] == []
    assert result["loss"] == pytest.approx(result["expected"], rel=1e-6)


def assert_torch_ran_after_one_warning(result: dict) -> str:
    """The loss ran on the reference, after one warning naming the variables; the warning."""
    assert not result["available"] and result["error"]
    assert result["chosen"] == "reference"
    assert result["loss"] == result["expected"]
    assert len(result["warnings"]) == 1, result["warnings"]
    warning = result["warnings"][0]
    assert result["error"] in warning
    for name in ("CXX", "HEM_PLUGINS_CACHE", ENV_VAR):
        assert name in warning
    return warning


@pytest.fixture(scope="session")
def scripts(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("compilers")
    (folder / "logging_wrapper.sh").write_text(LOGGING_WRAPPER)
    (folder / "copying_compiler.sh").write_text(COPYING_COMPILER)
    return SimpleNamespace(
        wrapper=folder / "logging_wrapper.sh", copier=folder / "copying_compiler.sh"
    )


@pytest.fixture(scope="session")
def real_build(tmp_path_factory, scripts) -> SimpleNamespace:
    """The kernel compiled once for real, in a child under umask 002, through
    ``CXX="/bin/sh logging_wrapper.sh c++"``."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler (c++, g++) on PATH")
    folder = tmp_path_factory.mktemp("real_build")
    cache, log = folder / "cache", folder / "compiles.log"
    cxx = f"/bin/sh {scripts.wrapper} {compiler}"
    result = run_child(cache, cxx, log, umask=0o002)
    if not result["available"]:
        pytest.skip(f"the C++ kernel does not build here: {result['error']}")
    (library,) = libraries(cache)
    return SimpleNamespace(result=result, cache=cache, library=library, log=log, compiler=compiler)


@pytest.fixture(scope="session")
def copying_cxx(real_build, scripts) -> str:
    """``CXX`` for the stand-in compiler that copies the real build's library."""
    return f"/bin/sh {scripts.copier} {real_build.library}"


@pytest.fixture(scope="session")
def seeded_cache(tmp_path_factory, copying_cxx) -> Path:
    """A cache where the stand-in compiler built the kernel (copy it before changing it)."""
    folder = tmp_path_factory.mktemp("seeded")
    assert_kernel_ran(run_child(folder / "cache", copying_cxx, folder / "compiles.log"))
    return folder / "cache"


def test_a_cxx_with_arguments_builds_the_kernel_into_a_private_cache(real_build):
    assert_kernel_ran(real_build.result)
    lines = compiles(real_build.log)
    assert lines and all(line.startswith(real_build.compiler + " -O3") for line in lines)
    assert len(lines) in (1, 2), "a second compile only where -march=native is rejected"
    kernel_dir = real_build.cache / "cpu_kernel"
    assert real_build.result["cache"] == str(kernel_dir)
    assert mode(kernel_dir) == 0o700, "created 0700 under umask 002"
    assert not mode(real_build.library) & 0o022
    record = native_build.record_path(real_build.library).read_text()
    digest = hashlib.sha256(real_build.library.read_bytes()).hexdigest()
    assert record == f"{digest}  {real_build.library.name}\n"


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated to 50 %", "truncated to 90 %", "a byte flipped"])
def test_a_damaged_library_is_rebuilt_and_never_loaded(damage, seeded_cache, copying_cxx, tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "compiles.log"
    shutil.copytree(seeded_cache, cache)
    (library,) = libraries(cache)
    data = library.read_bytes()
    if damage.startswith("truncated"):
        library.write_bytes(data[: len(data) * int(damage.split()[2]) // 100])
    else:
        middle = len(data) // 2
        library.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    assert_kernel_ran(run_child(cache, copying_cxx, log))
    assert len(compiles(log)) == 1, "built once more"
    assert library.read_bytes() == data
    assert (
        native_build.record_path(library).read_text().startswith(hashlib.sha256(data).hexdigest())
    )


@pytest.mark.slow
def test_processes_started_together_on_an_empty_cache_compile_once(copying_cxx, tmp_path):
    cache, log, barrier = tmp_path / "cache", tmp_path / "compiles.log", tmp_path / "barrier"
    barrier.mkdir()
    children = 3
    env = child_env(
        cache,
        copying_cxx,
        log,
        HEM_TEST_BARRIER=str(barrier),
        HEM_TEST_CHILDREN=str(children),
        HEM_TEST_CXX_DELAY="1",  # the compile outlasts the others' arrival
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(children)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert_kernel_ran(report(proc, out, err))
    assert len(compiles(log)) == 1, compiles(log)


@pytest.mark.slow
@pytest.mark.parametrize(
    "cxx, reason",
    [
        pytest.param("/bin/false", "/bin/false -O3", id="false"),
        pytest.param(
            "/bin/sh -c 'echo unknown flag >&2; exit 3'",
            "status 3: unknown flag",
            id="with arguments",
        ),
        pytest.param("/bin/true", "exited with status 0 but wrote no library", id="true"),
    ],
)
def test_a_failing_compiler_is_said_once_and_the_loss_runs_on_torch(cxx, reason, tmp_path):
    cache = tmp_path / "cache"
    warning = assert_torch_ran_after_one_warning(run_child(cache, cxx))
    assert reason in warning and "exited with status" in warning
    assert f"CXX={cxx!r}" in warning
    left = sorted(p.name for p in (cache / "cpu_kernel").iterdir())
    assert all(name.endswith(".lock") for name in left), f"no library nor temporary file: {left}"


UNSAFE = {  # what makes a cache writable by another user: the file, the change, the message
    "the directory is group-writable": ("", 0o770, "writable by group (mode 0770)"),
    "the library is group-writable": ("*.so", 0o775, "writable by group (mode 0775)"),
    "the record is writable by others": ("*.sha256", 0o602, "writable by others (mode 0602)"),
    "the directory is another user's": ("", NOBODY, f"owned by uid {NOBODY}"),
    "the library is another user's": ("*.so", NOBODY, f"owned by uid {NOBODY}"),
    "the record is another user's": ("*.sha256", NOBODY, f"owned by uid {NOBODY}"),
}


def make_unsafe(directory: Path, case: str) -> tuple[Path, str]:
    """Apply ``UNSAFE[case]`` in ``directory``; the file changed and the expected message."""
    pattern, change, problem = UNSAFE[case]
    if change == NOBODY and not ROOT:
        pytest.skip("only root can give a file to another user")
    (target,) = directory.glob(pattern) if pattern else [directory]
    if change == NOBODY:
        os.chown(target, NOBODY, NOBODY)
    else:
        os.chmod(target, change)
    return target, f"{os.path.realpath(target)}: it is {problem}"


@pytest.fixture
def built(copying_cxx, tmp_path, monkeypatch) -> SimpleNamespace:
    """A library that the stand-in compiler built in this process into ``tmp_path/cache``,
    and ``load()`` to load it again."""
    source, log, directory = tmp_path / "kernel.cpp", tmp_path / "compiles.log", tmp_path / "cache"
    source.write_text("// the stand-in compiler ignores the source\n")
    monkeypatch.setenv("CXX", copying_cxx)
    monkeypatch.setenv("HEM_TEST_CXX_LOG", str(log))

    def load():
        return native_build.load(source, directory, [["-O1"]], lambda lib: lib.hem_count_online)

    load()
    (library,) = directory.glob("*.so")
    return SimpleNamespace(load=load, library=library, directory=directory, log=log)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    [
        "the directory is group-writable",
        "the library is another user's" if ROOT else "the library is group-writable",
    ],
)
def test_the_kernel_refuses_a_cache_that_others_can_write_in_a_warning(
    case, seeded_cache, copying_cxx, tmp_path
):
    cache, log = tmp_path / "cache", tmp_path / "compiles.log"
    shutil.copytree(seeded_cache, cache)
    kernel_dir = cache / "cpu_kernel"
    before = {p.name: p.read_bytes() for p in kernel_dir.iterdir()}
    _, problem = make_unsafe(kernel_dir, case)
    warning = assert_torch_ran_after_one_warning(run_child(cache, copying_cxx, log))
    assert problem in warning and "refusing" in warning
    assert compiles(log) == [], "refused, not rebuilt"
    assert {p.name: p.read_bytes() for p in kernel_dir.iterdir()} == before


@pytest.mark.parametrize("case", UNSAFE)
def test_a_cache_that_others_can_write_is_refused(case, built):
    before = {p.name: p.read_bytes() for p in built.directory.iterdir()}
    _, problem = make_unsafe(built.directory, case)
    with pytest.raises(native_build.UnsafeCacheError, match="refusing") as caught:
        built.load()
    assert problem in str(caught.value)
    assert len(compiles(built.log)) == 1, "refused, not rebuilt"
    assert {p.name: p.read_bytes() for p in built.directory.iterdir()} == before


def test_a_library_without_its_record_is_rebuilt(built):
    data = built.library.read_bytes()
    native_build.record_path(built.library).unlink()
    built.load()
    assert len(compiles(built.log)) == 2
    assert built.library.read_bytes() == data
    assert native_build.record_path(built.library).exists()


def test_a_library_that_is_a_symbolic_link_is_refused(built, real_build):
    """A link is not followed, even to a good library: the checks read the file itself."""
    built.library.unlink()
    built.library.symlink_to(real_build.library)
    with pytest.raises(native_build.UnsafeCacheError, match="cannot be opened as a plain file"):
        built.load()


def test_the_cache_directory_is_created_0700_whatever_the_umask(tmp_path):
    umask = os.umask(0o002)
    try:
        path = native_build.private_dir(tmp_path / "root" / "kernel")
    finally:
        os.umask(umask)
    assert mode(path) == 0o700


def test_a_world_writable_or_foreign_directory_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(native_build.UnsafeCacheError, match="writable by group and others"):
        native_build.private_dir(shared)
    mine = tmp_path / "mine"
    native_build.private_dir(mine)
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 1)  # as another user sees it
    with pytest.raises(native_build.UnsafeCacheError, match=r"owned by uid \d+, not by this user"):
        native_build.private_dir(mine)


def test_cxx_is_split_like_a_shell_command_line(monkeypatch):
    monkeypatch.setenv("CXX", "ccache 'g++' -O2")
    assert native_build.compiler_command() == ["ccache", "g++", "-O2"]
    monkeypatch.setenv("CXX", "g++ 'unclosed")
    with pytest.raises(native_build.BuildError, match="CXX=.* is not a command line"):
        native_build.compiler_command()


def test_a_missing_compiler_is_named(tmp_path, monkeypatch):
    source = tmp_path / "kernel.cpp"
    source.write_text("int x;\n")
    monkeypatch.setenv("CXX", "no-such-compiler-for-hem --flag")
    with pytest.raises(native_build.BuildError, match="'no-such-compiler-for-hem' was not found"):
        native_build.load(source, tmp_path / "cache", [["-O1"]], lambda lib: None)
