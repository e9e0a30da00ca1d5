"""Validated description of where a task's examples come from."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    model_serializer,
    model_validator,
)

from miner.tasks._facts import SUBJECT_FIELD, fact_relations
from miner.tasks._files import DEFAULT_MAX_FILE_MB

# Our split names; hub_splits maps these to the hub dataset's split names.
SPLIT_NAMES = ("train", "dev", "test")

# The seeds numpy's legacy generators (and so scikit-learn's random_state, Optuna's and cmaes'
# samplers) accept; torch and ``random`` accept more, so this range suits every consumer.
SEED_MAX = 2**32 - 1


def _seed_in_range(value: int) -> int:
    if not 0 <= value <= SEED_MAX:
        raise ValueError(
            f"a seed must be an integer in 0..{SEED_MAX} (2**32 - 1, what numpy accepts), got {value}"
        )
    return value


# Strict: YAML's ``true`` or ``4.0`` is not an integer here (pydantic would otherwise read them as 1 and 4).
StrictInt = Annotated[int, Strict()]
Seed = Annotated[int, Strict(), AfterValidator(_seed_in_range)]
PositiveStrictInt = Annotated[int, Strict(), Field(gt=0)]


class TaskSpec(BaseModel):
    """Where a task's data comes from and how to read it.

    Validation errors are ordinary pydantic ``ValueError``s so the config layer
    can report them with the key path they came from. Float fields must be finite
    (no ``.nan`` / ``.inf``) and integer fields take integers only (not ``true`` or ``4.0``).

    ``max_file_mb`` bounds every data file read (source ``files`` and ``kshot``): a file over
    that size is an error, and so is a path that is not a regular file (a FIFO, a device
    such as ``/dev/zero``, a directory), symlinks being followed first.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    source: Literal["builtin", "files", "kshot", "hub", "facts"] = "builtin"
    # builtin: task name; kshot: sub-folder of root; hub: load_dataset path (or a
    # local directory of data files); files: a free name; facts: a relation (fact_relations()).
    name: str = "rotten_tomatoes"
    root: str | None = Field(
        default=None,
        description="kshot: the folder holding the task folders (sst-2/, mr/, ...). A relative path is relative to "
        "the current directory, like every path in a config; unset, it is read from $MINER_FEWSHOT_ROOT.",
    )
    train: str | None = None  # files: .csv, .tsv, .jsonl/.json paths
    dev: str | None = None
    test: str | None = None
    hub_config: str | None = None
    hub_splits: dict[str, str] = Field(default_factory=dict)
    text_fields: list[str] | None = None
    label_column: str = "label"
    label_names: list[str] | None = None
    metric: Literal["accuracy", "macro_f1", "p_at_1", "mrr"] = Field(
        default="accuracy",
        description="the score a job's prompts are ranked by: accuracy, macro_f1, p_at_1 (precision at 1: the gold "
        "label ranked first, the default of fact tasks) or mrr (mean reciprocal rank of the gold label)",
    )
    max_test: StrictInt | None = None
    split_seed: Seed = Field(
        default=0, description=f"seed of the created dev/test splits and the test subsample (0..{SEED_MAX})"
    )
    dev_fraction: float = 0.1
    test_fraction: float = 0.2
    path: str | None = Field(
        default=None,
        description="facts: a TSV file of subject<TAB>object pairs, instead of a built-in relation",
    )
    single_token: bool = Field(
        default=False,
        description="facts: keep only the candidate objects that are one token for the run's model",
    )
    max_file_mb: PositiveStrictInt = Field(
        default=DEFAULT_MAX_FILE_MB,
        description="largest data file read, in MB (2**20 bytes); a larger file, or a path that is not a regular "
        "file, is an error before anything is read past the limit",
    )

    @property
    def max_file_bytes(self) -> int:
        return self.max_file_mb * 2**20

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        # max_file_mb bounds reading, never results: left out at its default, so that the job keys
        # hashed from a dump stay those of the runs recorded before the field existed.
        data = handler(self)
        if isinstance(data, dict):
            # the same for the fact-task fields at their defaults (tasks of the other sources never set them)
            for key, default in (
                ("max_file_mb", DEFAULT_MAX_FILE_MB),
                ("path", None),
                ("single_token", False),
            ):
                if getattr(self, key) == default:
                    data.pop(key, None)
        return data

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        self._check_facts()
        if self.source == "files" and not self.train:
            raise ValueError("source 'files' needs a 'train' path")
        if self.source != "files" and (self.train or self.dev or self.test):
            raise ValueError(
                f"'train'/'dev'/'test' paths are only used with source 'files', not '{self.source}'"
            )
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

    def _check_facts(self) -> None:
        if self.source != "facts":
            for key in ("path", "single_token"):
                if key in self.model_fields_set and getattr(self, key):
                    raise ValueError(f"'{key}' is only used with source 'facts', not '{self.source}'")
            return
        if self.path is None:
            if "name" not in self.model_fields_set:
                raise ValueError(
                    f"source 'facts' needs a relation 'name' (one of {list(fact_relations())}) or a 'path' to a TSV of pairs"
                )
            if self.name not in fact_relations():
                raise ValueError(
                    f"unknown fact relation '{self.name}'; built-in relations: {list(fact_relations())} "
                    "(or give 'path' to a TSV file of subject<TAB>object pairs)"
                )
        if self.text_fields is not None and list(self.text_fields) != [SUBJECT_FIELD]:
            raise ValueError(
                f"a fact task has one text field, '{SUBJECT_FIELD}'; got text_fields {self.text_fields}"
            )
        if self.label_names is not None:
            raise ValueError("a fact task's labels are its relation's objects: leave out label_names")
        if "metric" not in self.model_fields_set:
            self.metric = "p_at_1"
