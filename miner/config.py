"""Run configuration: pydantic models validated at the edge.

YAML is data only (``yaml.safe_load``: no tags, no code). An unknown key, a wrong type
or a missing field is a :class:`ConfigError` naming the key path, e.g.
``config error at task.label_column: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from miner.errors import ConfigError
from miner.tasks import TaskSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    name: str = "smollm2"  # default-model alias, local directory or hub id
    kind: Literal["auto", "causal", "masked"] = "auto"
    device: str = "auto"  # auto = CUDA, then MPS, then CPU
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto = bf16 on CUDA
    batch_size: PositiveInt = 32
    max_batch_tokens: PositiveInt = 8192
    max_length: PositiveInt | None = None
    # causal LMs: key/value cache of the text before a prompt's first trigger, kept per job (0 = off)
    stem_cache_mb: NonNegativeInt = 1024


class PromptSpec(_Strict):
    template: str
    verbalizer: dict[str, list[str] | str]
    calibrate: bool = False
    triggers: list[int] = Field(default_factory=list)


class SearcherSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class BudgetSpec(_Strict):
    """Per job (task x model x searcher x seed x k). Unset means unlimited."""

    max_evaluations: PositiveInt | None = None  # distinct prompts scored
    max_forward_passes: PositiveInt | None = None  # model calls, counted by the scorer
    max_seconds: PositiveFloat | None = None


class ParallelSpec(_Strict):
    """Where the jobs run. One process by default; with ``n_jobs`` > 1 they go to joblib workers.

    ``backend``: ``loky`` (processes on this machine), ``dask`` (a Dask cluster: ``scheduler`` is its
    address, or a local cluster of ``n_jobs`` workers when unset), or null for the backend active in
    the caller's ``joblib.parallel_config`` (loky when none is). Each worker loads the model once and
    writes to the shared ``storage``, which must therefore be a database file or server.
    """

    n_jobs: PositiveInt = 1
    backend: Literal["loky", "dask"] | None = None
    scheduler: str | None = None  # dask only: e.g. tcp://10.0.0.5:8786
    threads_per_job: PositiveInt | None = None  # torch threads per worker; default: cores / n_jobs


class RunConfig(_Strict):
    name: str | None = None
    task: TaskSpec = Field(default_factory=TaskSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    prompts: list[PromptSpec] = Field(default_factory=list)
    searchers: list[SearcherSpec] = Field(default_factory=lambda: [SearcherSpec(name="manual")])
    seeds: list[int] = Field(default_factory=lambda: [42])
    k: list[int | None] = Field(default_factory=lambda: [16])  # shots per class; null = full data; 0 = zero-shot
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    storage: str = "sqlite:///miner.db"
    artifacts: str | None = None  # soft-prompt tensors; default: beside a SQLite file, else ./miner-artifacts
    resume: bool = False  # reuse rows of identical jobs already in storage (continue a killed run)
    test_top: PositiveInt | Literal["all"] = 1  # how many of each job's best prompts get a test score
    score_train: bool = True
    content_free: list[str] = Field(default_factory=lambda: ["N/A", "", "[MASK]"])
    progress: bool = True
    parallel: ParallelSpec = Field(default_factory=ParallelSpec)

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

    @field_validator("searchers")
    @classmethod
    def _nonempty(cls, v: list[SearcherSpec]) -> list[SearcherSpec]:
        if not v:
            raise ValueError("at least one searcher is needed")
        return v


def _format_error(exc: pydantic.ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in err["loc"]).replace(".[", "[")
    if err["type"] == "extra_forbidden":
        return f"config error at {loc}: unknown key"
    if err["type"] == "missing":
        return f"config error at {loc}: missing required field"
    msg = err["msg"].removeprefix("Value error, ")
    return f"config error at {loc or 'top level'}: {msg}" + (f" (got {err['input']!r})" if err["type"] not in ("value_error",) and not isinstance(err.get("input"), (dict, list)) else "")


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
        raise ConfigError(_format_error(exc)) from None


def load_config(path: str | Path) -> RunConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {str(p)!r} is not valid YAML{where}: {problem}") from None
    return parse_config(data)
