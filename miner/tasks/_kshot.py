"""The LM-BFF k-shot folder layout: ROOT/TASK/{K}-{SEED}/{train,dev}.tsv and ROOT/TASK/test.tsv."""

from __future__ import annotations

import os
import re
from pathlib import Path

from miner.errors import ConfigError, DataError
from miner.tasks._files import read_table
from miner.tasks._rows import RawSplit

ROOT_ENV = "MINER_FEWSHOT_ROOT"
_FOLDER = re.compile(r"^(\d+)-(\d+)$")


def resolve_root(root: str | None) -> Path:
    value = root or os.environ.get(ROOT_ENV)
    if not value:
        raise ConfigError(
            f"source 'kshot' needs 'root' (the k-shot data folder) or the {ROOT_ENV} environment variable"
        )
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(f"k-shot root {path} is not a directory")
    return path


def available_folders(task_dir: Path) -> list[str]:
    """The K-SEED folders present, sorted by (k, seed)."""
    found = [p.name for p in task_dir.iterdir() if p.is_dir() and _FOLDER.match(p.name)]
    return sorted(found, key=lambda name: tuple(int(x) for x in name.split("-")))


def read_kshot(root: str | None, name: str, k: int | None, seed: int) -> dict[str, RawSplit | None]:
    """Raw train/dev/test. k=0 reads only the test file (zero-shot needs no folder).

    k=None is an error rather than a silent choice of one folder: this layout holds
    only k-shot samples, and pretending one of them is "full data" would mislead.
    """
    base = resolve_root(root)
    task_dir = base / name
    if not task_dir.is_dir():
        tasks = sorted(p.name for p in base.iterdir() if p.is_dir())
        raise DataError(f"no k-shot task '{name}' under {base}; available: {tasks}")
    folders = available_folders(task_dir)
    if k is None:
        raise DataError(
            f"k-shot task '{name}' has no full-data split; give k (available K-SEED folders: {folders})"
        )
    test = read_table(task_dir / "test.tsv")
    if k == 0:
        return {"train": None, "dev": None, "test": test}
    folder = task_dir / f"{k}-{seed}"
    if not folder.is_dir():
        raise DataError(f"no k-shot folder '{k}-{seed}' for task '{name}' in {task_dir}; available: {folders}")
    return {"train": read_table(folder / "train.tsv"), "dev": read_table(folder / "dev.tsv"), "test": test}
