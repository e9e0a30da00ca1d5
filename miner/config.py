"""Run configuration: pydantic models validated at the edge.

YAML is data only (``yaml.safe_load``'s rules: no tags, no code), and a config file is read
with these further rules, each broken one a :class:`ConfigError` naming the file and the line:

- at most 1 MB (:data:`MAX_CONFIG_BYTES`) and 64 levels of nesting;
- no anchors' aliases (``*name``, ``<<: *name``): one alias can expand to gigabytes, and no
  shipped config needs them, so write the value out;
- no duplicate keys in a mapping (YAML would silently keep the last one).

An unknown key, a wrong type or a missing field is a :class:`ConfigError` naming the key
path, e.g. ``config error at task.label_column: ...``. Integer fields take integers only
(``true`` and ``4.0`` are not integers), float fields must be finite (no ``.nan``/``.inf``,
inside searcher ``params`` too), seeds lie in 0..2**32-1, and each prompt is checked as far
as it can be without the task and the model (its template, verbalizer and trigger ids).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    field_validator,
    model_validator,
)

from miner.errors import ConfigError, DataError, MinerError
from miner.tasks import PositiveStrictInt, Seed, StrictInt, TaskSpec, read_bytes_bounded

MAX_CONFIG_BYTES = 2**20
MAX_CONFIG_DEPTH = 64
NonNegativeStrictInt = Annotated[int, Strict(), Field(ge=0)]
# What torch can be asked for; pick_device then checks that this machine has it.
DEVICE_FORMS = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class StrictModel(BaseModel):
    """A config section: unknown keys refused, floats finite (shared by run and bench configs)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSpec(StrictModel):
    name: str = "smollm2"  # default-model alias, local directory or hub id
    kind: Literal["auto", "causal", "masked"] = "auto"
    device: str = Field(
        default="auto",
        description="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps; checked against this machine's "
        "devices when the model loads",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto = bf16 on CUDA
    batch_size: PositiveStrictInt = 32
    max_batch_tokens: PositiveStrictInt = 8192
    max_length: PositiveStrictInt | None = None
    # causal LMs: key/value cache of the text before a prompt's first trigger, kept per job (0 = off)
    stem_cache_mb: NonNegativeStrictInt = 1024

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        if not DEVICE_FORMS.fullmatch(v):
            raise ValueError(f"device {v!r} is not one of auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps")
        return v


class PromptSpec(StrictModel):
    """A hand-written prompt. Checked here as far as it goes without the task and the model: the
    template parses and has a text field slot, the verbalizer gives each label its own words, and
    there is one non-negative trigger id per ``{trigger}`` slot (the vocabulary is checked when the
    model is loaded)."""

    template: str
    verbalizer: dict[str, list[str] | str]
    calibrate: bool = False
    triggers: list[NonNegativeStrictInt] = Field(default_factory=list)

    @field_validator("verbalizer", mode="before")
    @classmethod
    def _integer_labels(cls, v: Any) -> Any:
        # YAML reads `{0: bad, 1: good}` with integer keys; label names are strings ("0", "1").
        if isinstance(v, dict):
            return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: w for k, w in v.items()}
        return v

    @model_validator(mode="after")
    def _check_prompt(self) -> PromptSpec:
        from miner.prompts import Prompt

        try:
            prompt = Prompt.create(
                self.template, self.verbalizer, triggers=tuple(self.triggers), distinct=True
            )
            prompt.parsed.check_has_field()
        except MinerError as exc:
            raise ValueError(str(exc)) from None
        return self


def _non_finite(value: Any, path: str, depth: int = 0) -> str | None:
    """The key path of the first NaN or infinite float in ``value``, or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if depth > MAX_CONFIG_DEPTH:
        return None
    items: Iterable[tuple[Any, Any]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for key, v in items:
        sub = f"{path}{key}" if str(key).startswith("[") else f"{path}.{key}"
        found = _non_finite(v, sub, depth + 1)
        if found:
            return found
    return None


class SearcherSpec(StrictModel):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        bad = _non_finite(v, "params")
        if bad:
            raise ValueError(f"{bad} must be a finite number (no .nan or .inf)")
        return v


class BudgetSpec(StrictModel):
    """Per job (task x model x searcher x seed x k). Unset means unlimited; set values are finite."""

    max_evaluations: PositiveStrictInt | None = None  # distinct prompts scored
    max_forward_passes: PositiveStrictInt | None = None  # model calls, counted by the scorer
    max_seconds: Annotated[float, Field(strict=True, gt=0)] | None = None  # an int is fine too, a bool is not
    backward_cost: Annotated[float, Field(ge=0)] = Field(
        default=0.0,
        description="forward passes charged to max_forward_passes per backward pass (0: backward passes are "
        "not charged there); miner bench sets it to the measured cost of a backward pass relative to a "
        "forward pass on the same batch, so that gradient searchers get no free work",
    )


class ParallelSpec(StrictModel):
    """Where the jobs run. One process by default; with ``n_jobs`` > 1 they go to joblib workers.

    ``backend``: ``loky`` (processes on this machine), ``dask`` (a Dask cluster: ``scheduler`` is its
    address, or a local cluster of ``n_jobs`` workers when unset), or null for the backend active in
    the caller's ``joblib.parallel_config`` (loky when none is). Each worker loads the model once and
    writes to the shared ``storage``, which must therefore be a database file or server.
    """

    n_jobs: PositiveStrictInt = 1
    backend: Literal["loky", "dask"] | None = None
    scheduler: str | None = None  # dask only: e.g. tcp://10.0.0.5:8786
    threads_per_job: PositiveStrictInt | None = None  # torch threads per worker; default: cores / n_jobs


class SelectionSpec(StrictModel):
    """How a job's candidates are ranked (docs/selection.md)."""

    rule: Literal["auto", "dev", "pooled", "kfold"] = Field(
        default="auto",
        description="dev: the dev metric; pooled: a 90% Wilson lower bound of the metric on train + dev; "
        "kfold: the search runs on `folds` folds of train + dev and a candidate is ranked by its held-out "
        "fold; auto: each searcher's default (results/selection/defaults.md)",
    )
    folds: Annotated[int, Strict(), Field(ge=2, le=10)] = Field(
        default=4, description="kfold: folds of train + dev (the budget is split evenly between them)"
    )
    guard_level: Annotated[float, Field(gt=0.5, lt=1)] = Field(
        default=0.9,
        description="pick: guarded: a candidate replaces the best hand-written prompt only when the one-sided "
        "paired-bootstrap lower bound of its advantage at this level is above zero",
    )


class EnsembleSpec(StrictModel):
    """An ensemble of each job's best discrete candidates, built after the search from cached scores."""

    top: NonNegativeStrictInt = Field(
        default=0,
        description="members: the job's best `top` discrete candidates by the ranking rule (0: off)",
    )
    weights: Literal["uniform", "learned"] = Field(
        default="uniform",
        description="uniform: the mean of the members' label probabilities; learned: softmax weights fitted "
        "on the members' cached label distributions of the ranking examples (LPAQA)",
    )

    @field_validator("top")
    @classmethod
    def _not_one(cls, v: int) -> int:
        if v == 1:
            raise ValueError("an ensemble needs at least 2 members: use 0 (off) or 2 or more")
        return v


class RunConfig(StrictModel):
    name: str | None = None
    task: TaskSpec = Field(default_factory=TaskSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    prompts: list[PromptSpec] = Field(default_factory=list)
    searchers: list[SearcherSpec] = Field(default_factory=lambda: [SearcherSpec(name="manual")])
    seeds: list[Seed] = Field(default_factory=lambda: [42], description="job seeds, each in 0..2**32-1")
    # shots per class: an integer >= 0 (0 = zero-shot) or null for the full data
    k: list[StrictInt | None] = Field(default_factory=lambda: list[int | None]([16]))
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    storage: str = "sqlite:///miner.db"
    artifacts: str | None = None  # soft-prompt tensors; default: beside a SQLite file, else ./miner-artifacts
    resume: bool = False  # reuse rows of identical jobs already in storage (continue a killed run)
    # How many of each job's best prompts (by the ranking rule) get a test score; the job's guarded pick,
    # unguarded pick and best hand-written prompt always do (each distinct prompt once).
    test_top: PositiveStrictInt | Literal["all"] = 1
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    pick: Literal["guarded", "unguarded"] = Field(
        default="guarded",
        description="guarded: the searcher's pick replaces the best hand-written prompt (scored in every job) "
        "only when its paired advantage clears the guard; unguarded: the searcher's pick",
    )
    ensemble: EnsembleSpec = Field(default_factory=EnsembleSpec)
    score_train: bool = True
    content_free: list[str] = Field(
        default_factory=lambda: ["N/A", "", "[MASK]"],
        min_length=1,
        description="texts for content-free calibration (a non-empty list of strings)",
    )
    progress: bool = True
    parallel: ParallelSpec = Field(default_factory=ParallelSpec)

    @model_validator(mode="after")
    def _ranking_needs_train(self) -> RunConfig:
        if self.selection.rule in ("pooled", "kfold") and not self.score_train:
            raise ValueError(
                f"selection.rule {self.selection.rule!r} ranks on train + dev: it needs score_train: true"
            )
        return self

    @field_validator("model", mode="before")
    @classmethod
    def _model_str(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("searchers", mode="before")
    @classmethod
    def _searchers_str(cls, v: Any) -> Any:
        if isinstance(v, (str, dict)):
            v = [v]
        return [{"name": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v

    @field_validator("seeds", "k", mode="before")
    @classmethod
    def _scalar_to_list(cls, v: Any) -> Any:
        return v if isinstance(v, list) else [v]

    @field_validator("k")
    @classmethod
    def _k_nonnegative(cls, v: list[int | None]) -> list[int | None]:
        if any(k is not None and k < 0 for k in v):
            raise ValueError("k must be >= 0 (or null for full data)")
        return v

    @field_validator("seeds", "k")
    @classmethod
    def _some(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("give at least one value (an empty list runs no job)")
        return v

    @field_validator("searchers")
    @classmethod
    def _nonempty(cls, v: list[SearcherSpec]) -> list[SearcherSpec]:
        if not v:
            raise ValueError("at least one searcher is needed")
        return v


def format_error(exc: pydantic.ValidationError) -> str:
    """A validation error as one line naming the key path (``config error at task.name: ...``)."""
    err = exc.errors()[0]
    loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"]).replace(".[", "[")
    if err["type"] == "extra_forbidden":
        return f"config error at {loc}: unknown key"
    if err["type"] == "missing":
        return f"config error at {loc}: missing required field"
    msg = err["msg"].removeprefix("Value error, ")
    return f"config error at {loc or 'top level'}: {msg}" + (
        f" (got {err['input']!r})"
        if err["type"] not in ("value_error",) and not isinstance(err.get("input"), (dict, list))
        else ""
    )


def parse_config(data: Any) -> RunConfig:
    if isinstance(data, RunConfig):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping of keys to values, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_error(exc)) from None


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing aliases, duplicate keys, deep nesting and endless integers."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"alias *{event.anchor} is not allowed: a config may not use anchors and aliases (write the value out)",
                event.start_mark,
            )
        if self._depth >= MAX_CONFIG_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_CONFIG_DEPTH} levels", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if seen is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given at line {seen})", key_node.start_mark
                    )
                first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node: Any) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # Python's limit on digits in an int: 4300 by default
            raise yaml.constructor.ConstructorError(
                None, None, f"integer of {len(node.value)} characters is too long", node.start_mark
            ) from None


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _ConfigLoader.construct_yaml_int)


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """A YAML file's data under the module docstring's rules; each broken one a one-line ConfigError."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} {str(p)!r} does not exist")
    try:
        data = read_bytes_bounded(p, f"{what} {str(p)!r}", MAX_CONFIG_BYTES)
    except DataError as exc:
        raise ConfigError(str(exc)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {str(p)!r} is not UTF-8 (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_ConfigLoader)  # _ConfigLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{what} {str(p)!r} is not valid YAML{where}: {problem}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML config file (see the module docstring for the rules)."""
    return parse_config(read_yaml(path))
