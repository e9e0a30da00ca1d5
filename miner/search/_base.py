"""The searcher contract.

A searcher is a small dataclass whose fields are its hyperparameters, with one method,
``search(context, evaluate)``, the same for all. It only *proposes* prompts: the runner
owns ``evaluate`` (deduplication, scoring on train/dev, budget, leaderboard rows), as
scikit-learn's ``BaseSearchCV`` owns ``evaluate_candidates``. Run state lives in local
variables of ``search``, never on ``self``, so one searcher object can run many jobs.

Capabilities are declared on the class, so the core never special-cases a searcher by name.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import pydantic
from pydantic import ConfigDict

from miner.artifacts import ArtifactStore
from miner.errors import ConfigError
from miner.models import Backend
from miner.prompts import Prompt, PromptEnsemble
from miner.scoring import Cost, Scorer
from miner.tasks import TaskData


@dataclass(frozen=True)
class Capabilities:
    needs_gradients: bool = False  # uses backward passes through the (frozen) model
    model_kinds: frozenset[str] = frozenset({"causal", "masked"})  # model families it supports
    prompt_kind: str = "discrete"  # "discrete" or "soft"
    needs_seed_prompts: bool = False  # starts from the config's hand-written prompts


@dataclass(frozen=True)
class SplitScore:
    """A prompt's score on one split."""

    score: float  # the task metric
    metrics: dict[str, float]
    loglik: float  # mean log-prob of the gold label (smooth tie-breaker)
    n: int
    # per-example predicted label indices, in the split's order: the runner's selection (the guard's paired
    # test, pooled and k-fold ranking) reads them; kept in the row's extra so that --resume has them
    preds: tuple[int, ...] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate`` returns for one proposed prompt."""

    prompt: Prompt | PromptEnsemble
    train: SplitScore | None
    dev: SplitScore | None
    cost: Cost
    row_id: int | None = None  # leaderboard row (None for a duplicate)
    duplicate: bool = False  # already evaluated in this job: no new cost, no new row
    baseline: bool = False  # a hand-written prompt of the config the runner scored for the guard
    fold: int | None = None  # selection kfold: the fold whose search proposed it (its dev is that fold)

    @property
    def rank_key(self) -> tuple[float, float, float]:
        """Higher is better: dev metric, then dev log-likelihood, then train metric."""
        dev, train = self.dev, self.train
        return rank_key(
            dev.score if dev else None, dev.loglik if dev else None, train.score if train else None
        )


def rank_key(dev: float | None, dev_loglik: float | None, train: float | None) -> tuple[float, float, float]:
    """How the runner ranks prompts, higher first: dev metric, dev log-likelihood, train metric (missing: last)."""
    neg = float("-inf")
    return (
        neg if dev is None else dev,
        neg if dev_loglik is None else dev_loglik,
        neg if train is None else train,
    )


class Evaluate(Protocol):
    def __call__(
        self, prompts: Sequence[Prompt | PromptEnsemble], *, extra: dict[str, Any] | None = None
    ) -> list[Evaluation]:
        """Score prompts (train and dev), record them, and return their evaluations.

        Raises :class:`miner.errors.BudgetExhausted` when the next prompt would exceed the
        job's budget; earlier prompts of the same call are recorded. ``extra`` goes into the
        rows; ``extra={"pick": True}`` declares the prompt the job's pick (its best for test
        scoring and export) instead of the best by dev.
        """


class BudgetView(Protocol):
    """What a searcher may know of its job's budget (read-only; the runner enforces it).

    Every model call and backward pass is charged to the job's cost counter and refused with
    :class:`~miner.errors.BudgetExhausted` when the budget cannot pay for it, and ``evaluate`` refuses
    a prompt whose scoring would overrun, so a searcher never has to stop itself to stay within it.
    It plans with ``can_afford`` only to avoid starting work it could not finish (a step, a trial).
    """

    @property
    def forward_passes_left(self) -> float: ...  # inf when unlimited

    @property
    def backward_passes_left(self) -> float: ...

    @property
    def seconds_left(self) -> float: ...

    @property
    def evaluations_left(self) -> float: ...

    @property
    def evaluations(self) -> int: ...  # prompts evaluated so far in this job (resumed ones included)

    def can_afford(self, forward_passes: int = 0, backward_passes: int = 0, evaluations: int = 0) -> bool: ...


@dataclass
class SearchContext:
    """Everything a searcher may look at. There is no test split here, by construction."""

    task: TaskData  # test=()
    backend: Backend
    scorer: Scorer  # charges the job's cost counter; use it for any model call
    seed: int
    prompts: tuple[Prompt, ...] = ()  # the config's hand-written prompts
    budget: BudgetView | None = None  # None outside the runner (e.g. in a searcher's own unit test)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("miner.search"))
    progress: bool = True
    artifacts: ArtifactStore | None = None  # tensors that do not belong in a row (soft prompts)
    storage_url: str | None = (
        None  # the leaderboard's database URL (searchers may keep state there, e.g. an Optuna study)
    )
    job_key: str = ""  # stable identity of this job (same config -> same key), for resumable searcher state
    started_at: float | None = (
        None  # time.time() when the run that launched this job started (before loading)
    )

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.task.label_names)

    @property
    def text_fields(self) -> tuple[str, ...]:
        return tuple(self.task.text_fields)


class Searcher:
    """Base class of all searchers. Subclasses are dataclasses of hyperparameters."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    # Parameters that only add work after the search proper (they change no earlier row), left out of
    # the job key so that turning one on for a finished job and resuming it reuses that job's rows.
    post_search_params: ClassVar[tuple[str, ...]] = ()
    # Whether the searcher fits its prompts on the training split (trains triggers or soft tokens, fits label
    # words): its train scores are then optimistic, and the runner's ``selection: auto`` ranks its candidates on
    # held-out data only (docs/selection.md). None: inferred, True for gradient and soft-prompt searchers.
    fits_on_train: ClassVar[bool | None] = None
    # Validated by pydantic at the config edge: an unknown parameter is an error. Declare each parameter
    # once, as ``name: Annotated[type, pydantic.Field(ge=..., description=...)] = default``: the registry
    # validates a config's params against it, __post_init__ a direct construction, and
    # ``miner searchers NAME`` shows the description.
    __pydantic_config__ = ConfigDict(extra="forbid")

    def __post_init__(self) -> None:
        # Typed as plain ``type``: mypy misreads type[Searcher] as unhashable for functools.cache.
        cls: type = type(self)
        for name, adapter in _field_adapters(cls).items():
            try:
                adapter.validate_python(getattr(self, name), strict=False)
            except pydantic.ValidationError as exc:
                raise ConfigError(
                    f"{self.name}.{name}: {exc.errors()[0]['msg']} (got {getattr(self, name)!r})"
                ) from None

    @classmethod
    def fits_train(cls) -> bool:
        """``fits_on_train`` when declared, else whether the searcher trains with gradients or soft prompts."""
        if cls.fits_on_train is not None:
            return cls.fits_on_train
        return cls.capabilities.needs_gradients or cls.capabilities.prompt_kind == "soft"

    def ensemble_request(self) -> int:
        """Members of the runner's ensemble this searcher's own parameters ask for (0: none; see optuna's
        ``ensemble_top``). The config's ``ensemble.top`` takes precedence when set."""
        return 0

    def brings_prompts(self) -> bool:
        """Whether the searcher's own parameters hold prompts (so a config needs none of its own)."""
        return False

    def validate(self, context: SearchContext) -> None:
        """Check the parameters against one job (its task, model and seed prompts) before any job runs.

        The runner calls it for every job before it writes the first leaderboard row, so that a bad
        parameter is an error up front rather than after other jobs' rows. Raise a ``MinerError``
        naming the parameter. It must not run the model (the tokenizer and ``context.scorer.compile``
        are fine) and, like ``search``, keeps no state on ``self``.
        """

    def search(self, context: SearchContext, evaluate: Evaluate) -> None:
        raise NotImplementedError


@functools.cache
def _field_adapters(cls: type) -> dict[str, pydantic.TypeAdapter]:
    """One validator per dataclass field of a searcher, built from its (Annotated) type."""
    import dataclasses
    import typing

    if not dataclasses.is_dataclass(cls):
        return {}
    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: pydantic.TypeAdapter(hints[f.name]) for f in dataclasses.fields(cls) if f.name in hints}
