"""Small shared pieces of the bench: atomic JSON files, the machine line, the time."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch


def write_json(path: Path, data: Any) -> None:
    """Write whole or not at all (a killed bench never leaves half a record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        import platform

        cpu = platform.processor() or cpu
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads){gpu}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def safe_name(name: str) -> str:
    """A task or row name as a file name: letters, digits and ``-_.`` kept, anything else ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
