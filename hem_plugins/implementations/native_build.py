"""Compile a C++ source into a shared library on first use, in a private cache, and load it.

:func:`load` compiles the source with the compiler of :func:`compiler_command` into the
directory it is given (the C++ kernel's is under :func:`cache_dir`), named by a hash of
the source, the compiler command, the flags and the CPU; later processes load the
library from there. It guards against:

* **another user**: the library's directory is created 0700 (whatever the umask) and
  refused, with :class:`UnsafeCacheError`, when it is not owned by this user or is
  writable by group or others; a library or hash record that is not a regular file of
  this user's, or is writable by group or others, is refused too;
* **a damaged file** (a full disk, a killed copy): ``<library>.sha256`` beside each
  library records its SHA-256 (``sha256sum`` format). A library is hashed and compared
  with its record before it is loaded, so a truncated one never reaches ``dlopen``; one
  that does not match, has no record or does not load is deleted and built once more;
* **concurrent first use** (a DDP launch): an exclusive ``flock`` on ``<library>.lock``,
  held while a process checks, builds and loads, so that one process compiles while
  the others wait and then load what it built;
* **a half-written or empty library**: the compiler writes a temporary file, which must
  be non-empty and load before it is renamed into place (atomically), followed by its
  record (written to a temporary file and renamed too).

A library is loaded by its path after its checks; the directory being this user's alone,
no one else can change the file in between.

Anything that stops the build raises :class:`BuildError`, whose message names the
reason (the compiler's command and the tail of its error output, or the file and what
is wrong with it). Only the standard library is used; POSIX systems only (``fcntl``).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: nothing is built there
    fcntl = None

CACHE_ENV = "HEM_PLUGINS_CACHE"
"""The environment variable naming the cache root (default ``$XDG_CACHE_HOME/hem_plugins``,
else ``~/.cache/hem_plugins``)."""

COMPILER_ENV = "CXX"
"""The environment variable naming the C++ compiler; it may hold arguments (``ccache g++``)."""

COMPILE_TIMEOUT_S = 300
"""How long one compiler run may take."""

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_READ_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0)  # a FIFO must not block


class BuildError(RuntimeError):
    """The library could not be built or loaded; the message names the reason."""


class UnsafeCacheError(BuildError):
    """The cache directory, a library or its record could be written by someone else
    (not owned by this user, or writable by group or others, or not a regular file)."""


def cache_dir() -> Path:
    """The cache root: ``$HEM_PLUGINS_CACHE``, else ``$XDG_CACHE_HOME/hem_plugins``, else
    ``~/.cache/hem_plugins``. Each library lives in a directory of its own below it."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hem_plugins"


def compiler_command() -> list[str]:
    """The compiler as a command line: ``$CXX`` split like a shell would (so it may hold
    arguments), else ``c++``, else ``g++`` found on ``PATH``."""
    value = os.environ.get(COMPILER_ENV, "").strip()
    if value:
        try:
            command = shlex.split(value)
        except ValueError as err:
            raise BuildError(f"{COMPILER_ENV}={value!r} is not a command line: {err}") from None
        if command:
            return command
    found = shutil.which("c++") or shutil.which("g++")
    if not found:
        raise BuildError(
            f"no C++ compiler: {COMPILER_ENV} is not set and neither c++ nor g++ is on PATH"
        )
    return [found]


def load(
    source: Path,
    directory: Path,
    flag_sets: Sequence[Sequence[str]],
    check: Callable[[ctypes.CDLL], object],
) -> ctypes.CDLL:
    """The library compiled from ``source``, loaded from ``directory`` or built there.

    Each flag set is tried in turn (``-march=native`` first, say, then without it) until
    one gives a library that loads and passes ``check`` (which reads its symbols: an
    ``AttributeError`` or ``OSError`` from it counts as a failed load). Raises
    :class:`UnsafeCacheError` at once where a file could be written by someone else, and
    :class:`BuildError` with the last flag set's reason where none builds.
    """
    if fcntl is None:
        raise BuildError("building the kernel needs a POSIX system (no fcntl module)")
    command = compiler_command()
    directory = private_dir(directory)
    code = source.read_bytes()
    error = BuildError("no flag set to build with")
    for flags in flag_sets:
        key = hashlib.sha256(
            b"\0".join(
                [code, "\0".join(command).encode(), " ".join(flags).encode()]
                + [platform.machine().encode(), _cpu_flags().encode()]
            )
        ).hexdigest()[:16]
        library = directory / f"{source.stem}_{key}.so"
        try:
            return _load_or_build(source, library, [*command, *flags], check)
        except UnsafeCacheError:
            raise
        except BuildError as err:
            error = err
        except OSError as err:  # a full disk, a cache made read-only, ...
            error = BuildError(f"the cache directory {directory}: {err}")
    raise error


def private_dir(path: Path) -> Path:
    """``path`` resolved, created 0700 where it is missing; :class:`UnsafeCacheError`
    where it is not a directory of this user's that only this user can write."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise BuildError(f"cannot create the cache directory {path}: {err}") from None
    else:
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
    path = Path(os.path.realpath(path))
    problem = _not_private(os.stat(path), stat.S_ISDIR, "a directory")
    if problem:
        raise UnsafeCacheError(
            f"refusing the cache directory {path}: it {problem}; make it this user's alone "
            f"(chmod 700) or set {CACHE_ENV} to a directory of your own"
        )
    return path


def record_path(library: Path) -> Path:
    """Where the SHA-256 of ``library`` is recorded: ``<library>.sha256``."""
    return library.with_name(library.name + ".sha256")


def _not_private(st: os.stat_result, is_kind: Callable[[int], bool], kind: str) -> str | None:
    """What makes a file with this ``stat`` writable by someone else (None: nothing)."""
    if not is_kind(st.st_mode):
        return f"is not {kind}"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    writers = [
        who for who, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if st.st_mode & bit
    ]
    if writers:
        return f"is writable by {' and '.join(writers)} (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _read_private(path: Path) -> bytes | None:
    """The bytes of ``path`` (None where it does not exist), read through one descriptor
    whose owner and mode are checked first; :class:`UnsafeCacheError` where someone else
    could have written it."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as err:  # a symbolic link (O_NOFOLLOW), no permission, ...
        raise UnsafeCacheError(
            f"refusing {path}: it cannot be opened as a plain file: {err}"
        ) from None
    try:
        problem = _not_private(os.fstat(fd), stat.S_ISREG, "a regular file")
        if problem:
            raise UnsafeCacheError(
                f"refusing {path}: it {problem}; delete it, or set {CACHE_ENV} to a directory of your own"
            )
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created 0600) for the block; a cache where the
    lock file cannot be created (read-only) is read without it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits while another process builds
        yield
    finally:
        os.close(fd)  # releases the lock


def _load_or_build(
    source: Path, library: Path, command: list[str], check: Callable[[ctypes.CDLL], object]
) -> ctypes.CDLL:
    record = record_path(library)
    with _locked(library.with_name(library.name + ".lock")):
        for stale in library.parent.glob(f".{library.name}.*.tmp"):  # left by a killed build
            stale.unlink(missing_ok=True)
        data = _read_private(library)
        if data is not None:
            recorded = _read_private(record) or b""
            if recorded.split(b" ", 1)[0] == _sha256(data).encode():
                try:
                    lib = ctypes.CDLL(str(library))
                    check(lib)
                    return lib
                except (OSError, AttributeError):
                    pass  # a library that does not load is built again below
            library.unlink(missing_ok=True)  # no record, another hash, or no load
            record.unlink(missing_ok=True)
        return _build(source, library, command, check)


def _build(
    source: Path, library: Path, command: list[str], check: Callable[[ctypes.CDLL], object]
) -> ctypes.CDLL:
    """Compile into a temporary file, load and check it, then rename it and write its record."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{library.name}.", suffix=".tmp", dir=library.parent)
    except OSError as err:
        raise BuildError(f"cannot write to the cache directory {library.parent}: {err}") from None
    os.close(fd)
    try:
        _compile([*command, "-o", tmp, str(source)])
        os.chmod(tmp, 0o700)  # the linker's file mode follows the umask
        data = _read_private(Path(tmp))
        if not data:
            raise BuildError(
                f"{_shown(command)} exited with status 0 but wrote no library (an empty file)"
            )
        try:
            lib = ctypes.CDLL(tmp)
            check(lib)
        except (OSError, AttributeError) as err:
            raise BuildError(
                f"the library that {_shown(command)} wrote does not load: {err}"
            ) from None
        os.replace(tmp, library)  # atomic: others see no library or this whole one
        _write_record(record_path(library), data)
        return lib
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _compile(command: list[str]) -> None:
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    except FileNotFoundError:
        raise BuildError(f"the compiler {command[0]!r} was not found") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{_shown(command)} ran past {COMPILE_TIMEOUT_S} s") from None
    except OSError as err:
        raise BuildError(f"the compiler {command[0]!r} could not run: {err}") from None
    if run.returncode != 0:
        output = (run.stderr or run.stdout).strip()
        tail = output[-1200:] if output else "(no output)"
        raise BuildError(f"{_shown(command)} exited with status {run.returncode}: {tail}")


def _write_record(record: Path, data: bytes) -> None:
    """``<hash>  <library name>`` into ``record``, through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{record.name}.", suffix=".tmp", dir=record.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{_sha256(data)}  {record.name.removesuffix('.sha256')}\n")
        os.replace(tmp, record)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _shown(command: list[str]) -> str:
    """The compiler and its flags, without the output and source paths."""
    return shlex.join(command[: command.index("-o")] if "-o" in command else command)


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return platform.processor()
