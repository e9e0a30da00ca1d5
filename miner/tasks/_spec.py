"""Validated description of where a task's examples come from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Our split names; hub_splits maps these to the hub dataset's split names.
SPLIT_NAMES = ("train", "dev", "test")


class TaskSpec(BaseModel):
    """Where a task's data comes from and how to read it.

    Validation errors are ordinary pydantic ``ValueError``s so the config layer
    can report them with the key path they came from.
    """

    model_config = ConfigDict(extra="forbid")

    source: Literal["builtin", "files", "kshot", "hub"] = "builtin"
    # builtin: task name; kshot: sub-folder of root; hub: load_dataset path (or a
    # local directory of data files); files: a free name.
    name: str = "rotten_tomatoes"
    root: str | None = None  # kshot root; falls back to $MINER_FEWSHOT_ROOT
    train: str | None = None  # files: .csv, .tsv, .jsonl/.json paths
    dev: str | None = None
    test: str | None = None
    hub_config: str | None = None
    hub_splits: dict[str, str] = Field(default_factory=dict)
    text_fields: list[str] | None = None
    label_column: str = "label"
    label_names: list[str] | None = None
    metric: Literal["accuracy", "macro_f1"] = "accuracy"
    max_test: int | None = None
    split_seed: int = 0
    dev_fraction: float = 0.1
    test_fraction: float = 0.2

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.source == "files" and not self.train:
            raise ValueError("source 'files' needs a 'train' path")
        if self.source != "files" and (self.train or self.dev or self.test):
            raise ValueError(f"'train'/'dev'/'test' paths are only used with source 'files', not '{self.source}'")
        unknown = sorted(set(self.hub_splits) - set(SPLIT_NAMES))
        if unknown:
            raise ValueError(f"hub_splits keys must be among {list(SPLIT_NAMES)}, got {unknown}")
        fields = self.text_fields
        if fields is not None and (not fields or len(set(fields)) != len(fields)):
            raise ValueError("text_fields must be a non-empty list of distinct names")
        if self.text_fields is not None and self.label_column in self.text_fields:
            raise ValueError(f"label_column '{self.label_column}' cannot also be a text field")
        if self.label_names is not None and (
            len(self.label_names) < 2 or len(set(self.label_names)) != len(self.label_names)
        ):
            raise ValueError("label_names must list at least two distinct names")
        if self.max_test is not None and self.max_test < 1:
            raise ValueError("max_test must be at least 1")
        for key in ("dev_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0.0 < value < 1.0:
                raise ValueError(f"{key} must be between 0 and 1 (exclusive), got {value}")
        if self.dev_fraction + self.test_fraction >= 1.0:
            raise ValueError("dev_fraction + test_fraction must be below 1")
        return self
