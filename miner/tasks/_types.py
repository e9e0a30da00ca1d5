"""The data a job works on: examples and the materialised train/dev/test splits."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One labelled input.

    ``fields`` holds only the task's text fields, keyed by the task's field names
    (not the file's column names, which may differ between files of one task).
    """

    fields: dict[str, str]
    label: int  # index into TaskData.label_names

    # The generated hash would try to hash the dict; hashing its items lets
    # examples go into sets (dedup) while keeping the plain-dict field the API promises.
    def __hash__(self) -> int:
        return hash((tuple(sorted(self.fields.items())), self.label))


@dataclass(frozen=True)
class TaskData:
    """One materialised job's data: a seeded k-shot sample plus the fixed test split."""

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...]
    metric: str  # "accuracy" or "macro_f1"
    train: tuple[Example, ...]
    dev: tuple[Example, ...]
    test: tuple[Example, ...]
    k: int | None  # shots per class; None = full data
    seed: int

    def without_test(self) -> TaskData:
        """The same data with the test split removed: what a searcher receives."""
        return dataclasses.replace(self, test=())
