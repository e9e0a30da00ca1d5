"""Tasks loaded through ``datasets.load_dataset``: hub datasets, or a local directory of data files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from miner._lazy import require
from miner.errors import DataError
from miner.tasks._rows import RawSplit

logger = logging.getLogger(__name__)

DEFAULT_HUB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load(name: str, config: str | None) -> Any:
    datasets = require("datasets")
    try:
        return datasets.load_dataset(name, config)
    # load_dataset raises many unrelated types (ConnectionError, FileNotFoundError,
    # DatasetNotFoundError, ValueError ...); all mean "this data is not loadable".
    except Exception as exc:
        if Path(name).expanduser().exists():
            raise DataError(f"cannot load dataset from local path '{name}': {_one_line(exc)}") from exc
        shown = f"'{name}' (config '{config}')" if config else f"'{name}'"
        raise DataError(
            f"cannot load dataset {shown} from the Hugging Face hub (offline and not in the local cache): "
            f"{_one_line(exc)}"
        ) from exc


def _class_label_names(dataset: Any, label_column: str) -> tuple[str, ...] | None:
    feature = dataset.features.get(label_column)
    names = getattr(feature, "names", None)  # a ClassLabel feature carries its names
    return tuple(names) if names else None


def read_hub(
    name: str, config: str | None, hub_splits: dict[str, str], label_column: str
) -> tuple[dict[str, RawSplit | None], tuple[str, ...] | None]:
    """Raw splits (None where absent) and the label names a ClassLabel feature declares."""
    loaded = _load(name, config)
    mapping = {**DEFAULT_HUB_SPLITS, **hub_splits}
    available = list(loaded.keys())
    splits: dict[str, RawSplit | None] = {}
    label_names = None
    for ours, theirs in mapping.items():
        if theirs not in loaded:
            if ours == "train" or ours in hub_splits:
                raise DataError(
                    f"dataset '{name}' has no split '{theirs}' (for {ours}); available splits: {available}"
                )
            splits[ours] = None
            continue
        dataset = loaded[theirs]
        where = f"dataset '{name}' split '{theirs}'"
        rows = tuple(dataset.to_list())
        labels = [row.get(label_column) for row in rows]
        # GLUE-style test splits ship without labels (all -1); such a split is
        # treated as absent so a labelled test split gets created instead.
        if ours != "train" and labels and all(v == -1 for v in labels):
            logger.info("%s is unlabelled (all labels -1); treating it as absent", where)
            splits[ours] = None
            continue
        splits[ours] = RawSplit(where, tuple(dataset.column_names), rows)
        label_names = label_names or _class_label_names(dataset, label_column)
    return splits, label_names
