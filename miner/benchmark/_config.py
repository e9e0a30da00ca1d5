"""The bench config: one grid of tasks x searchers x seeds x k at one budget (docs/bench.md).

Read with the same rules as a run config (``miner.config``: safe YAML, no aliases, no duplicate
keys, unknown keys refused); everything that can be checked without the data and the model is
checked here, the rest (each task's test split, the prompts against each task) by
:func:`miner.benchmark.check` before the first job.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, Strict, field_validator, model_validator

from miner.config import (
    EnsembleSpec,
    ModelSpec,
    ParallelSpec,
    PromptSpec,
    SearcherSpec,
    SelectionSpec,
    StrictModel,
    format_error,
    read_yaml,
)
from miner.errors import ConfigError
from miner.tasks import PositiveStrictInt, Seed, StrictInt, TaskSpec

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
BENCH_ROOT = Path("results") / "bench"


class BenchTask(StrictModel):
    """One task of the grid and its hand-written prompts (none: the task's default prompts)."""

    task: TaskSpec
    prompts: list[PromptSpec] = Field(
        default_factory=list,
        description="hand-written prompts; each is also scored calibrated (the bench's manual baselines)",
    )


class BenchBudget(StrictModel):
    """Every job's budget, in forward passes; a backward pass is charged at its measured cost."""

    max_forward_passes: PositiveStrictInt = Field(
        description="forward-pass equivalents per job, for every searcher alike (hand-written prompts' "
        "scoring included: the guard's comparison is paid from it)"
    )
    backward_cost: Literal["measure"] | Annotated[float, Field(ge=0)] = Field(
        default="measure",
        description="forward passes charged per backward pass: measure (timed once per model on a "
        "training batch and recorded in cost_model.json) or a number",
    )


class BaselineSpec(StrictModel):
    zero_shot: bool = Field(
        default=True,
        description="the first hand-written prompt, raw: what a user writes with no labelled data",
    )
    demonstrations: Annotated[int, Strict(), Field(ge=0, le=20)] = Field(
        default=3,
        description="the best hand-written prompt by dev with one training example per class before the "
        "query, averaged over this many seeded draws (0: off)",
    )
    linear_probe: bool = Field(
        default=True,
        description="logistic regression (cross-validated C) on the frozen model's hidden state at the answer "
        "position of the best hand-written template, fitted on train + dev",
    )
    peft: bool = Field(
        default=True,
        description="PEFT prompt tuning at the bench's budget, where the peft package is installed",
    )
    peft_tokens: PositiveStrictInt = 8


class BenchConfig(StrictModel):
    name: str
    tasks: list[BenchTask] = Field(min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    searchers: list[SearcherSpec] | Literal["all"] = Field(
        default="all", description="the searchers compared (all: every registered searcher but manual)"
    )
    seeds: list[Seed] = Field(default_factory=lambda: [13, 21, 42, 87, 100])
    k: list[StrictInt | None] = Field(default_factory=lambda: list[int | None]([16]))
    budget: BenchBudget
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    pick: Literal["guarded", "unguarded"] = "guarded"
    ensemble: EnsembleSpec = Field(default_factory=EnsembleSpec)
    test_top: PositiveStrictInt = Field(
        default=3,
        description="each job's best candidates by its ranking rule that get a test score besides its pick "
        "(the pick-versus-best-candidate gap)",
    )
    baselines: BaselineSpec = Field(default_factory=BaselineSpec)
    content_free: list[str] = Field(default_factory=lambda: ["N/A", "", "[MASK]"], min_length=1)
    out: str | None = Field(default=None, description="the report folder (default: results/bench/<name>)")
    storage: str | None = Field(default=None, description="the leaderboard (default: <out>/bench.db)")
    parallel: ParallelSpec = Field(default_factory=ParallelSpec)
    progress: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.fullmatch(v):
            raise ValueError(
                f"name {v!r} must be 1-64 letters, digits, '_', '.' or '-' (it names the report folder)"
            )
        return v

    @field_validator("tasks", mode="before")
    @classmethod
    def _bare_tasks(cls, v: Any) -> Any:
        # a task given as its spec alone (no prompts): {source: kshot, name: sst-2} -> {task: {...}}
        if isinstance(v, list):
            return [{"task": t} if isinstance(t, dict) and "task" not in t else t for t in v]
        return v

    @field_validator("model", mode="before")
    @classmethod
    def _model_str(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("searchers", mode="before")
    @classmethod
    def _searchers(cls, v: Any) -> Any:
        if v == "all":
            return v
        if isinstance(v, (str, dict)):
            v = [v]
        return [{"name": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v

    @field_validator("seeds", "k", mode="before")
    @classmethod
    def _scalar_to_list(cls, v: Any) -> Any:
        return v if isinstance(v, list) else [v]

    @field_validator("seeds", "k")
    @classmethod
    def _some(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("give at least one value (an empty list runs no job)")
        if len(set(v)) != len(v):
            raise ValueError(f"values must be distinct, got {v}")
        return v

    @field_validator("k")
    @classmethod
    def _k_positive(cls, v: list[int | None]) -> list[int | None]:
        if any(k is not None and k < 1 for k in v):
            raise ValueError("k must be >= 1 (searchers and the dev-chosen baselines need labelled examples)")
        return v

    @field_validator("searchers")
    @classmethod
    def _known(cls, v: Any) -> Any:
        from miner.search import searchers

        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one searcher (or all)")
            seen: set[str] = set()
            for s in v:
                try:
                    searchers.get(s.name)
                except ConfigError as exc:
                    raise ValueError(str(exc)) from None
                if s.name in seen:
                    raise ValueError(
                        f"searcher {s.name!r} is listed twice: a bench has one row per searcher "
                        "(run a second bench, or set out:, for other parameters)"
                    )
                seen.add(s.name)
        return v

    @model_validator(mode="after")
    def _check(self) -> BenchConfig:
        names = [t.task.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: each task once (got {names})")
        return self

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else BENCH_ROOT / self.name

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.out_dir / 'bench.db'}"

    def searcher_specs(self) -> list[SearcherSpec]:
        """The compared searchers; ``manual`` is the bench's own baseline job, so it is not listed twice."""
        from miner.search import searchers

        if self.searchers == "all":
            return [SearcherSpec(name=n) for n in searchers.names() if n != "manual"]
        return [s for s in self.searchers if s.name != "manual"]


def parse_bench_config(data: Any) -> BenchConfig:
    if isinstance(data, BenchConfig):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"bench config must be a mapping of keys to values, got {type(data).__name__}")
    try:
        return BenchConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_error(exc).replace("config error", "bench config error", 1)) from None


def load_bench_config(path: str | Path) -> BenchConfig:
    """Read and validate a bench config file (a run config's YAML rules, ``miner.config``)."""
    return parse_bench_config(read_yaml(path, "bench config file"))
