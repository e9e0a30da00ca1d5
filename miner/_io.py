"""Small file helpers shared by the exporters."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_format_json(path: Path, fmt: str, what: str) -> dict:
    """Read a JSON export file, checking its ``format`` tag; errors are one line naming ``what``."""
    from miner.errors import MinerError

    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MinerError(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise MinerError(f"{what} {str(path)!r} is not a miner export (expected format {fmt!r})")
    return d
