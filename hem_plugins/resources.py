"""Files the package ships beside its code: the configs of ``configs/``.

The repository's top-level ``configs/`` is package data (``hem_plugins/configs``
in a checkout is a link to it; a wheel holds a copy), so the benchmark suite and
the runners find the shipped configs from an installed package as from a
checkout::

    >>> from hem_plugins.resources import config_path
    >>> config_path("configs/benchmark/smoke.py").name
    'smoke.py'

A path that names an existing file (absolute, or relative to the working
directory) is a user's own config and is taken as it is.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_ROOT", "config_path", "display_path"]

#: The shipped configs: ``benchmark/`` (profiles, tuned.json), ``mmseg/``, ``avalanche/``.
CONFIG_ROOT = Path(__file__).parent / "configs"


def config_path(path: str | Path) -> Path:
    """A config file: ``path`` itself when it exists, else the shipped ``configs/...`` one.

    ``path`` may start with ``configs/`` (as the repository's files and the
    reports spell it) or be relative to ``configs/`` (``mmseg/x.py``).

    Raises:
        FileNotFoundError: neither exists; the message names both places looked at.
    """
    given = Path(path)
    if given.is_file():
        return given
    rel = given.relative_to("configs") if given.parts[:1] == ("configs",) else given
    shipped = CONFIG_ROOT / rel
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"config {str(path)!r} not found: neither a file here nor a shipped config ({shipped})"
    )


def display_path(path: str | Path) -> str:
    """``configs/...`` for a shipped config (however it was reached), else the path as given."""
    p = Path(path)
    try:
        return str(Path("configs") / p.resolve().relative_to(CONFIG_ROOT.resolve()))
    except ValueError:
        return str(path)
