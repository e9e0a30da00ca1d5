"""Lazy import of optional heavy dependencies with an install hint."""

from __future__ import annotations

import importlib
from types import ModuleType

from miner.errors import MinerError


def require(module: str, extra: str | None = None) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        hint = f"pip install 'miner[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise MinerError(
            f"optional dependency '{module}' is not installed ({exc}); install it with: {hint}"
        ) from exc
