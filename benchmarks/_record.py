"""One JSON layout for new result files (see results/README.md, "Layout of new result files").

    from _record import command_line, write_result  # sibling module: benchmarks/ is on sys.path
    write_result(REPO / "results" / "scoring" / "scoring_v2.json", command=command_line(),
                 config={"n": 512, "batch_size": 32}, figures={"examples_per_s": 32.8})

The file holds exactly the keys ``command, commit, machine, date, load, config, figures``; the
helper fills ``commit`` (the checkout's, '+dirty' when tracked files differ), ``machine`` and
``date`` itself, so that no script records them its own way.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from _machine import cpu_model, git_commit

KEYS = ("command", "commit", "machine", "date", "load", "config", "figures")


def command_line() -> str:
    """The command that started this process, as a user would type it from the repository root."""
    return shlex.join(["python", *sys.argv])


def machine() -> dict[str, Any]:
    """CPU, core count, host, Python and the versions of torch/transformers when they are installed."""
    out: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "host": platform.node(),
        "python": platform.python_version(),
    }
    for package in ("torch", "transformers"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = None
    torch = sys.modules.get("torch")  # only if the script imported it: importing torch here costs seconds
    if torch is not None and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["torch_threads"] = torch.get_num_threads()
    elif torch is not None:
        out["torch_threads"] = torch.get_num_threads()
    return out


def _load_now() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # not available on every platform
        return None


def write_result(
    path: str | Path, *, command: str, config: dict[str, Any], figures: dict[str, Any], load: Any = None
) -> dict[str, Any]:
    """Write one result file in the shared layout and return what was written.

    ``load``: what the script measured of the machine's load during the run (e.g. the 1-minute
    load average before each repeat); when not given, the 1/5/15-minute load averages at the
    moment of writing. ``config`` and ``figures`` must be JSON data (numbers, strings, lists, dicts).
    The file is written whole or not at all (a temporary file renamed over it).
    """
    record = {
        "command": command,
        "commit": git_commit(),
        "machine": machine(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load": _load_now() if load is None else load,
        "config": config,
        "figures": figures,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return record


def write_report(path: str | Path, lines: list[str], record: dict[str, Any]) -> None:
    """Write a script's Markdown report, its lines then the machine, date and commit of its record, and
    print it."""
    m = record["machine"]
    footer = (
        f"Machine: {m['cpu']} ({m['cores']} cores); written {record['date']} at commit {record['commit']}."
    )
    text = "\n".join([*lines, "", footer, ""])
    Path(path).write_text(text, encoding="utf-8")
    print(text)
