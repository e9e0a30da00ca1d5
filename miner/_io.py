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


def process_gone(host: object, pid: object) -> bool:
    """Whether a process recorded as ``(host, pid)`` certainly no longer exists: it ran on this host and
    its pid is gone. False when that cannot be told (another host, no pid, a pid owned by someone else)."""
    import socket

    if host != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the pid exists
    except ProcessLookupError:
        return True
    except OSError:  # exists, not ours to signal
        return False
    return False
