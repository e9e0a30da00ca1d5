"""Library versions stamped on every stored evaluation and run."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

_LIBRARIES = ("torch", "transformers")


def _dist_version(name: str) -> str | None:
    # importlib.metadata reads the installed dist-info only: no import of torch itself.
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _miner_version() -> str:
    found = _dist_version("miner")
    if found:
        return found
    # Running from a source checkout that was never pip-installed.
    from miner._version import __version__

    return __version__


@functools.cache
def _computed() -> tuple[tuple[str, str | None], ...]:
    versions: list[tuple[str, str | None]] = [
        ("miner", _miner_version()),
        ("python", platform.python_version()),
    ]
    versions += [(name, _dist_version(name)) for name in _LIBRARIES]
    return tuple(versions)


def library_versions() -> dict[str, str | None]:
    """``{"miner": ..., "python": ..., "torch": ..., "transformers": ...}``, computed once.

    A fresh dict each call, so a caller that adds keys does not change the cache.
    """
    return dict(_computed())
