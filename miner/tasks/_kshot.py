"""The LM-BFF k-shot folder layout: ROOT/TASK/{K}-{SEED}/{train,dev}.tsv and ROOT/TASK/test.tsv."""

from __future__ import annotations

import os
import re
from pathlib import Path

from miner.errors import ConfigError, DataError
from miner.tasks._files import DEFAULT_MAX_FILE_MB, read_table
from miner.tasks._rows import RawSplit

ROOT_ENV = "MINER_FEWSHOT_ROOT"
_FOLDER = re.compile(r"^(\d+)-(\d+)$")


_GET_DATA = (
    f"set ${ROOT_ENV} to the folder holding sst-2/, mr/, subj/, agnews/, ... "
    "(the LM-BFF/RLPrompt 16-shot splits, laid out as TASK/16-SEED/{train,dev}.tsv and TASK/test.tsv)"
)


def resolve_root(root: str | None) -> Path:
    """The k-shot root: ``root`` when the config gives one (relative to the current directory), else
    ``$MINER_FEWSHOT_ROOT``; a :class:`ConfigError` saying how to get the data when neither is set."""
    value = root or os.environ.get(ROOT_ENV)
    if not value:
        raise ConfigError(f"few-shot data not found: source 'kshot' needs 'root' or ${ROOT_ENV}; {_GET_DATA}")
    path = Path(value).expanduser()
    if not path.is_dir():
        given = "task.root" if root else f"${ROOT_ENV}"
        raise DataError(f"few-shot data not found at {path} (from {given}): {_GET_DATA}, or task.root to it")
    return path


def available_folders(task_dir: Path) -> list[str]:
    """The K-SEED folders present, sorted by (k, seed)."""
    found = [p.name for p in task_dir.iterdir() if p.is_dir() and _FOLDER.match(p.name)]
    return sorted(found, key=lambda name: tuple(int(x) for x in name.split("-")))


def read_kshot(
    root: str | None, name: str, k: int | None, seed: int, max_bytes: int = DEFAULT_MAX_FILE_MB * 2**20
) -> dict[str, RawSplit | None]:
    """Raw train/dev/test. k=0 reads only the test file (zero-shot needs no folder).

    k=None is an error rather than a silent choice of one folder: this layout holds
    only k-shot samples, and pretending one of them is "full data" would mislead.
    """
    base = resolve_root(root)
    task_dir = base / name
    if not task_dir.is_dir():
        tasks = sorted(p.name for p in base.iterdir() if p.is_dir())
        hint = "" if tasks else f" ({_GET_DATA})"
        raise DataError(f"no k-shot task '{name}' under {base}; available: {tasks}{hint}")
    folders = available_folders(task_dir)
    if k is None:
        raise DataError(
            f"k-shot task '{name}' has no full-data split; give k (available K-SEED folders: {folders})"
        )
    test = read_table(task_dir / "test.tsv", max_bytes)
    if k == 0:
        return {"train": None, "dev": None, "test": test}
    folder = task_dir / f"{k}-{seed}"
    if not folder.is_dir():
        raise DataError(
            f"no k-shot folder '{k}-{seed}' for task '{name}' in {task_dir}; available: {folders}"
        )
    train, dev = read_table(folder / "train.tsv", max_bytes), read_table(folder / "dev.tsv", max_bytes)
    return {"train": train, "dev": dev, "test": test}
