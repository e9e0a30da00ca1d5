"""The runner: expands a config into jobs and owns evaluation.

Jobs are task x model x searcher x seed x k. For each job the runner builds the data
(the searcher never sees the test split), a scorer with its own cost counter, and the
``evaluate`` callable that searchers propose prompts to. ``evaluate`` deduplicates,
checks the budget *before* spending (the scorer plans the forward passes a prompt would
need), scores on train and dev, and writes one leaderboard row per new prompt. After the
search, the best prompts by dev score (ties broken by dev log-likelihood, then train)
get their held-out test score; a prompt the searcher proposed with ``extra={"pick": True}``
(the optuna searcher's ensemble) is the job's pick instead, and is tested first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import platform
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from miner import selection
from miner._version import code_version
from miner.artifacts import artifacts_for_storage
from miner.config import BudgetSpec, EnsembleSpec, RunConfig, SelectionSpec, parse_config
from miner.errors import BudgetExhausted, ConfigError, MinerError
from miner.leaderboard import (
    HEARTBEAT_S,
    EvaluationRecord,
    Leaderboard,
    is_sqlite_file,
    library_versions,
    mask_secrets,
    normalize_url,
    safe_url,
)
from miner.models import Backend, load_backend
from miner.prompts import Prompt, PromptEnsemble
from miner.scoring import Cost, CostCounter, Scorer, ScoreResult
from miner.search import Evaluation, SearchContext, Searcher, SplitScore, searchers
from miner.tasks import TaskData, load_task

logger = logging.getLogger(__name__)
# One line per phase of a run (loading, each job's search, its test scoring), for people watching:
# the CLI prints this logger's INFO records; library users see them with logging configured.
phase = logging.getLogger("miner.status")


def provenance() -> dict[str, Any]:
    return {
        "code_version": code_version(),
        "versions": library_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "host": socket.gethostname(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": [mask_secrets(a) for a in sys.argv],  # a --storage URL may hold a password
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


class Budget:
    """A job's budget: the searcher's read-only view (``BudgetView``) and the runner's enforcement.

    ``evaluate`` checks a prompt's planned passes before scoring it (so no row is cut short), and the
    job's cost counter asks ``guard`` before every model call and backward pass, so any work a searcher
    makes on its own is refused the same way, with :class:`BudgetExhausted`, when it would overrun.
    """

    def __init__(self, spec: BudgetSpec, counter: CostCounter) -> None:
        self.spec = spec
        self.counter = counter
        self.start = time.perf_counter()
        self.evaluations = 0  # the searcher's (what it sees as its own; resumed rows included)
        self.baseline_evaluations = 0  # the config's hand-written prompts the runner scored for the guard
        self.previous_passes = 0  # spent by an earlier, resumed attempt at the same job
        self.previous_backward = 0
        # Evaluations held back from the searcher for the pick (the ensemble), released after the search;
        # once released, work that needs no forward pass (scores the scorer has cached) is never refused.
        self.reserved = 0
        self.released = False
        counter.guard = self.guard

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def forward_equivalents(self) -> float:
        """Forward passes spent, backward passes charged at ``backward_cost`` each (resumed work included)."""
        bc = self.spec.backward_cost
        fwd = self.counter.total.forward_passes + self.previous_passes
        return fwd + bc * (self.counter.total.backward_passes + self.previous_backward)

    @property
    def forward_passes_left(self) -> float:
        m = self.spec.max_forward_passes
        return float("inf") if m is None else m - self.forward_equivalents

    @property
    def backward_passes_left(self) -> float:
        m = getattr(self.spec, "max_backward_passes", None)
        return float("inf") if m is None else m - self.counter.total.backward_passes - self.previous_backward

    @property
    def seconds_left(self) -> float:
        m = self.spec.max_seconds
        return float("inf") if m is None else m - self.elapsed

    @property
    def evaluations_left(self) -> float:
        m = self.spec.max_evaluations
        return float("inf") if m is None else m - self.evaluations - self.baseline_evaluations - self.reserved

    def can_afford(self, forward_passes: int = 0, backward_passes: int = 0, evaluations: int = 0) -> bool:
        return (
            forward_passes + self.spec.backward_cost * backward_passes <= self.forward_passes_left
            and backward_passes <= self.backward_passes_left
            and evaluations <= self.evaluations_left
            and self.seconds_left > 0
        )

    def guard(self, forward_passes: int, backward_passes: int) -> None:
        """The counter's check before a model call: refuse what the budget cannot pay for."""
        s = self.spec
        if forward_passes + s.backward_cost * backward_passes > self.forward_passes_left:
            raise BudgetExhausted(f"max_forward_passes={s.max_forward_passes} would be exceeded")
        if backward_passes > self.backward_passes_left:
            raise BudgetExhausted(
                f"max_backward_passes={getattr(s, 'max_backward_passes', None)} would be exceeded"
            )
        if self.seconds_left <= 0:
            raise BudgetExhausted(f"max_seconds={s.max_seconds} reached")

    def check(self, planned_passes: int) -> None:
        """``evaluate``'s check before scoring a prompt (its planned passes on train and dev)."""
        s = self.spec
        if s.max_evaluations is not None and self.evaluations_left < 1:
            raise BudgetExhausted(f"max_evaluations={s.max_evaluations} reached")
        if self.released and planned_passes == 0:
            return  # the reserved pick work on cached scores: no model call, nothing to refuse
        self.guard(planned_passes, 0)

    def release(self) -> None:
        """After the search: the reserved evaluations become the pick's (the ensemble's)."""
        self.reserved = 0
        self.released = True

    def exhausted(self) -> bool:
        return not self.can_afford(forward_passes=1, evaluations=1)


def _stored_preds(extra: dict, name: str) -> tuple[int, ...] | None:
    v = extra.get(name)
    return tuple(int(x) for x in v) if isinstance(v, list) else None


def _split_score(res: ScoreResult, metric: str) -> SplitScore | None:
    if res.gold is None or len(res.gold) == 0:
        return None
    assert res.loglik is not None  # the scorer sets loglik whenever the examples have gold labels
    preds = tuple(int(x) for x in res.preds)
    return SplitScore(res.metrics[metric], res.metrics, float(res.loglik), len(res.gold), preds)


@dataclass
class Job:
    task: TaskData
    model: str
    searcher_name: str
    seed: int
    k: int | None

    @property
    def label(self) -> str:
        k = "full" if self.k is None else f"k={self.k}"
        return f"{self.task.name} | {self.model} | {self.searcher_name} | seed={self.seed} | {k}"


def job_key(cfg: RunConfig, searcher_index: int, seed: int, k: int | None) -> str:
    """Stable identity of a job: everything in the config that determines its results."""
    import hashlib
    import json

    searcher = cfg.searchers[searcher_index].model_dump(mode="json")
    try:
        exempt = searchers.get(searcher["name"]).post_search_params
    except ConfigError:  # an unknown searcher fails later, with its own error
        exempt = ()
    if exempt and isinstance(searcher.get("params"), dict):
        searcher["params"] = {k: v for k, v in searcher["params"].items() if k not in exempt}
    task = cfg.task.model_dump(mode="json")
    # where the data lives (a k-shot root, from the config or $MINER_FEWSHOT_ROOT) is not what a job is:
    # the same config resumes on another machine or checkout
    task["root"] = None  # (not popped: the keys of configs that never had a root stay as they were)
    try:
        cls = searchers.get(cfg.searchers[searcher_index].name)
        rule = effective_rule(cfg.selection.rule, cls, cfg.score_train)
    except ConfigError:
        rule = "dev"
    ident = {
        "task": task,
        "model": cfg.model.name,
        "searcher": searcher,
        "prompts": [p.model_dump(mode="json") for p in cfg.prompts],
        "seed": seed,
        "k": k,
        "score_train": cfg.score_train,
        "content_free": cfg.content_free,
    }
    if rule == "kfold":  # the search itself runs on folds; the other rules (and pick, ensemble) come after it
        ident["selection"] = {"rule": "kfold", "folds": cfg.selection.folds}
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


class JobEvaluator:
    """The ``evaluate`` callable handed to a searcher for one job (one fold of it, under ``selection: kfold``)."""

    def __init__(
        self,
        job: Job,
        scorer: Scorer,
        board: Leaderboard | None,
        run_id: str,
        budget: Budget,
        score_train: bool,
        key: str = "",
        fold: int | None = None,
        data: TaskData | None = None,
    ):
        self.key = key
        self.job = job
        self.data = data if data is not None else job.task  # the fold's train/dev under kfold
        self.fold = fold
        self.scorer = scorer
        self.board = board
        self.run_id = run_id
        self.budget = budget
        self.score_train = score_train
        self.seen: dict[str, Evaluation] = {}
        self.evaluations: list[Evaluation] = []
        self._last = scorer.counter.snapshot()
        self.best: Evaluation | None = None
        self.pick: Evaluation | None = None  # the searcher's declared pick (``extra={"pick": True}``), if any
        # the runner's ensembles, by (member keys, weights mode): a resumed job reuses its stored one
        self.ensembles: dict[tuple[tuple[str, ...], str], Evaluation] = {}
        self.tested: dict[
            int, StoredTestScore
        ] = {}  # row id -> test score stored by an earlier attempt (resume)

    def _consider(self, ev: Evaluation, pick: bool) -> None:
        """The searcher's best is its latest declared pick, else its best by dev (``rank_key``)."""
        if ev.baseline:
            return
        if pick:
            self.pick = self.best = ev
        elif self.pick is None and (self.best is None or ev.rank_key > self.best.rank_key):
            self.best = ev

    def _splits(self) -> list[tuple[str, Sequence[Any]]]:
        splits: list[tuple[str, Sequence[Any]]] = [("dev", self.data.dev)]
        if self.score_train:
            splits.insert(0, ("train", self.data.train))
        return splits

    def __call__(
        self, prompts: Sequence[Prompt | PromptEnsemble], *, extra: dict[str, Any] | None = None
    ) -> list[Evaluation]:
        return self._evaluate(prompts, extra=extra)

    def _evaluate(
        self,
        prompts: Sequence[Prompt | PromptEnsemble],
        *,
        extra: dict[str, Any] | None = None,
        baseline: bool = False,
    ) -> list[Evaluation]:
        out = []
        pick = bool((extra or {}).get("pick"))
        for prompt in prompts:
            if prompt.key in self.seen:
                prev = self.seen[prompt.key]
                if pick:
                    self._consider(prev, True)
                out.append(
                    Evaluation(
                        prompt,
                        prev.train,
                        prev.dev,
                        Cost(),
                        prev.row_id,
                        duplicate=True,
                        baseline=prev.baseline,
                        fold=prev.fold,
                    )
                )
                continue
            planned = sum(self.scorer.plan(prompt, data) for _, data in self._splits())
            self.budget.check(planned)
            results = {
                name: selection.score(self.scorer, prompt, data, desc=name) for name, data in self._splits()
            }
            metric = self.job.task.metric
            train = _split_score(results["train"], metric) if "train" in results else None
            dev = _split_score(results["dev"], metric)
            now = self.scorer.counter.snapshot()
            cost, self._last = now - self._last, now
            extra = dict(extra or {})
            if baseline:
                extra["baseline"] = True
            if self.fold is not None:
                extra["fold"] = self.fold
            row_id = self._record(prompt, train, dev, cost, extra)
            ev = Evaluation(prompt, train, dev, cost, row_id, baseline=baseline, fold=self.fold)
            if baseline:
                self.budget.baseline_evaluations += 1
            else:
                self.budget.evaluations += 1
            self.seen[prompt.key] = ev
            self.evaluations.append(ev)
            self._consider(ev, pick)
            self._remember_ensemble(ev, extra)
            out.append(ev)
        return out

    def _remember_ensemble(self, ev: Evaluation, extra: dict[str, Any]) -> None:
        info = extra.get("ensemble")
        if isinstance(ev.prompt, PromptEnsemble) and isinstance(info, dict) and "weights" in info:
            self.ensembles[(tuple(m.key for m in ev.prompt.members), str(info["weights"]))] = ev

    def score_baselines(self, prompts: Sequence[Prompt]) -> None:
        """Score the config's hand-written prompts (the guard's baselines), before the search."""
        for p in prompts:
            if p.key not in self.seen:
                self._evaluate([p], baseline=True)

    def _record(self, prompt, train, dev, cost: Cost, extra) -> int | None:
        if self.board is None:
            return None
        job = self.job
        rec = EvaluationRecord(
            run_id=self.run_id,
            task=job.task.name,
            model=job.model,
            # a baseline is a hand-written prompt: filed under ``manual`` (the job's key and extra["baseline"]
            # say which job scored it), so that a searcher's own rows stay its own (export --searcher)
            searcher="manual" if (extra or {}).get("baseline") else job.searcher_name,
            seed=job.seed,
            k=job.k,
            prompt_key=prompt.key,
            prompt=prompt.to_dict(),
            metric=job.task.metric,
            train_score=train.score if train else None,
            dev_score=dev.score if dev else None,
            dev_loglik=dev.loglik if dev else None,
            n_train=train.n if train else 0,
            n_dev=dev.n if dev else 0,
            forward_passes=cost.forward_passes,
            tokens=cost.tokens,
            seconds=cost.seconds,
            extra={
                **(extra or {}),
                "job_key": self.key,
                "cost": cost.to_dict(),
                "train_loglik": train.loglik if train else None,
                "train_metrics": train.metrics if train else None,
                "dev_metrics": dev.metrics if dev else None,
                # per-example predictions: the guard's paired test and pooled ranking after a --resume
                "train_preds": list(train.preds) if train and train.preds is not None else None,
                "dev_preds": list(dev.preds) if dev and dev.preds is not None else None,
            },
        )
        return self.board.add_evaluations([rec])[0]

    def resume_from(self, board: Leaderboard) -> int:
        """Load this job's rows from an earlier attempt (or, after the search, from the job's other
        workers): they count as evaluated, at no new cost."""
        job = self.job
        rows = board.rows(  # by job key, not searcher: the job's baselines are filed under "manual"
            task=job.task.name,
            model=job.model,
            seed=job.seed,
            k=job.k,
            order="time",
        )
        rows = [
            r
            for r in reversed(rows)
            if (r.extra or {}).get("job_key") == self.key and (r.extra or {}).get("fold") == self.fold
        ]
        n = 0
        for r in rows:
            prompt = Prompt.from_dict(r.prompt, job.task.label_names)
            if prompt.key in self.seen:
                continue
            n += 1
            ex = r.extra or {}

            train = (
                SplitScore(
                    r.train_score,
                    ex.get("train_metrics") or {},
                    cast(float, ex.get("train_loglik")),
                    r.n_train,
                    _stored_preds(ex, "train_preds"),
                )
                if r.train_score is not None
                else None
            )
            dev = (
                SplitScore(
                    r.dev_score,
                    ex.get("dev_metrics") or {},
                    cast(float, r.dev_loglik),
                    r.n_dev,
                    _stored_preds(ex, "dev_preds"),
                )
                if r.dev_score is not None
                else None
            )
            baseline = bool(ex.get("baseline"))
            ev = Evaluation(
                prompt,
                train,
                dev,
                Cost(forward_passes=r.forward_passes, tokens=r.tokens, seconds=r.seconds),
                r.id,
                baseline=baseline,
                fold=self.fold,
            )
            if r.test_score is not None:  # tested by the earlier attempt: not scored again
                self.tested[r.id] = StoredTestScore(
                    dict(r.test_metrics or {job.task.metric: r.test_score}), r.n_test or 0
                )
            self.seen[prompt.key] = ev
            self.evaluations.append(ev)
            if baseline:
                self.budget.baseline_evaluations += 1
            else:
                self.budget.evaluations += 1
            self.budget.previous_passes += r.forward_passes
            # a pick the runner recorded (the picks table) is not the searcher's declared pick
            declared = ex["declared_pick"] if "declared_pick" in ex else bool(ex.get("pick"))
            self._consider(ev, bool(declared))
            self._remember_ensemble(ev, ex)
        return n


@dataclass(frozen=True)
class StoredTestScore:
    """A test score read back from storage (a resumed job's prompt that was tested before)."""

    metrics: dict[str, float]
    n: int


@dataclass
class PickDecision:
    """The runner's choice of a job's pick (docs/selection.md): which prompt, and why."""

    rule: str  # the ranking rule in force: dev, pooled or kfold
    mode: str  # guarded or unguarded
    pick: Evaluation | None  # the job's pick under ``mode``
    guarded: Evaluation | None
    unguarded: Evaluation | None  # the searcher's pick: its declared pick, else the ensemble, else its best
    manual: Evaluation | None  # the best hand-written prompt by the ranking rule
    reason: str
    fired: bool = False  # the guard kept the hand-written prompt over the searcher's pick
    guard: selection.GuardResult | None = None
    ensemble: Evaluation | None = None
    ensemble_note: str | None = None  # why there is no ensemble, when one was asked for
    ranked: list[Evaluation] = field(default_factory=list)  # every evaluation, best first by the rule

    def roles(self) -> dict[str, int | None]:
        return {
            "guarded": self.guarded.row_id if self.guarded else None,
            "unguarded": self.unguarded.row_id if self.unguarded else None,
            "manual": self.manual.row_id if self.manual else None,
        }

    def details(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "mode": self.mode,
            "rule": self.rule,
            "roles": self.roles(),
            "fired": self.fired,
            "guard": self.guard.to_dict() if self.guard else None,
            "ensemble": self.ensemble.row_id if self.ensemble else None,
            "ensemble_note": self.ensemble_note,
        }

    def line(self) -> str:
        """The job line's account of the pick."""
        note = f"; ensemble: {self.ensemble_note}" if self.ensemble_note else ""
        return f"pick: {self.reason}{note}"


def effective_rule(rule: str, searcher_cls: type, score_train: bool) -> str:
    """``selection.rule`` for one searcher: ``auto`` is the searcher's default (docs/selection.md)."""
    if rule != "auto":
        return rule
    if not score_train:
        return "dev"
    fits = searcher_cls.fits_train() if hasattr(searcher_cls, "fits_train") else False
    return selection.AUTO_RULE["fits" if fits else "no_fit"]


class _Ranking:
    """Ranking examples and scores of a job's evaluations under one rule (no model call).

    The pool is train + dev in that order (pool index = position); under kfold a fold's
    candidates are ranked on its held-out fold, the hand-written prompts on the whole pool.
    """

    def __init__(self, data: TaskData, rule: str, folds: list[Any] | None, score_train: bool) -> None:
        self.rule, self.folds, self.score_train = rule, folds, score_train
        self.n_train, self.n_dev = len(data.train), len(data.dev)
        self.gold = np.array([e.label for e in (*data.train, *data.dev)], dtype=int)
        self.metric, self.n_labels = data.metric, len(data.label_names)

    def pool_preds(self, ev: Evaluation) -> np.ndarray | None:
        """The evaluation's predictions on its ranking examples, as a pool-sized array (-1: not ranked on)."""
        out = np.full(len(self.gold), -1, dtype=int)
        if ev.fold is not None:
            if self.folds is None or ev.dev is None or ev.dev.preds is None:
                return None
            out[self.folds[ev.fold]] = ev.dev.preds
            return out
        if ev.dev is None or ev.dev.preds is None:
            return None
        out[self.n_train :] = ev.dev.preds
        if self.rule != "dev" and ev.train is not None and ev.train.preds is not None:
            out[: self.n_train] = ev.train.preds
        return out

    def key(self, ev: Evaluation) -> tuple[float, ...]:
        """Higher is better. dev: ``rank_key``; pooled/kfold: Wilson bound of the ranking score first."""
        if self.rule == "dev":
            return ev.rank_key
        neg = float("-inf")
        dev, train = ev.dev, ev.train
        if ev.fold is None and train is not None and dev is not None:  # pooled over train + dev
            n = train.n + dev.n
            preds = self.pool_preds(ev)
            if preds is not None and (preds >= 0).all():
                score = selection.metric_of(preds, self.gold, self.metric, self.n_labels)
            else:  # rows stored before predictions were kept: the size-weighted mean
                score = (train.score * train.n + dev.score * dev.n) / n
            loglik = (train.loglik * train.n + dev.loglik * dev.n) / n
        elif dev is not None:  # a fold's held-out score, or a prompt scored on dev only
            n, score, loglik = dev.n, dev.score, dev.loglik
        else:
            return (neg, neg, neg, neg)
        return (selection.wilson_lower(score, n), score, loglik, dev.score if dev else neg)

    def score(self, ev: Evaluation) -> tuple[float, int]:
        k = self.key(ev)
        if self.rule == "dev":
            return k[0], ev.dev.n if ev.dev else 0
        preds = self.pool_preds(ev)
        return k[1], int((preds >= 0).sum()) if preds is not None else 0

    def examples(self, data: TaskData) -> tuple[Any, ...]:
        """The ranking examples of a non-kfold rule (for the learned ensemble weights)."""
        return (*data.train, *data.dev) if self.rule == "pooled" and self.score_train else tuple(data.dev)


def _discrete(p: Prompt | PromptEnsemble) -> bool:
    return isinstance(p, Prompt) and p.soft is None and not p.parsed.n_soft


def _build_ensemble(
    evaluator: JobEvaluator, members: list[Evaluation], weights_mode: str, rank: _Ranking, data: TaskData
) -> tuple[Evaluation | None, str | None]:
    """The ensemble of ``members`` proposed through the job's evaluate path (scores cached: no new pass)."""
    prompts = tuple(cast(Prompt, m.prompt) for m in members)
    known = evaluator.ensembles.get((tuple(p.key for p in prompts), weights_mode))
    if known is not None:  # a resumed job: the ensemble of these members was built by the earlier attempt
        return known, None
    weights = None
    try:
        if weights_mode == "learned":
            examples = rank.examples(data)
            logps = [selection.score(evaluator.scorer, p, examples).scores for p in prompts]
            gold = np.array([e.label for e in examples], dtype=int)
            w = selection.learn_weights(logps, gold)
            weights = tuple(float(x) for x in w / w.sum())
        ens = PromptEnsemble(prompts, weights=weights)
        extra = {
            "ensemble": {
                "top": len(prompts),
                "weights": weights_mode,
                "members": [m.row_id for m in members],
                "rule": rank.rule,
            }
        }
        ev = evaluator([ens], extra=extra)[0]
    except BudgetExhausted as exc:
        return (
            None,
            f"not built, the budget cannot pay for it ({exc}): its members' scores were no longer cached",
        )
    return ev, None


def decide_pick(
    evaluator: JobEvaluator,
    evaluations: Sequence[Evaluation],
    data: TaskData,
    *,
    rule: str,
    mode: str,
    guard_level: float,
    ensemble_top: int,
    ensemble_weights: str,
    folds: list[Any] | None,
    score_train: bool,
) -> PickDecision:
    """Rank the job's evaluations, build the ensemble, and pick (guarded or not). Reads train and dev only."""
    rank = _Ranking(data, rule, folds, score_train)
    evs = list(evaluations)
    baselines = [e for e in evs if e.baseline]
    candidates = [e for e in evs if not e.baseline] or baselines  # manual: its candidates are the baselines
    ens_ev, note = None, None
    if ensemble_top >= 2:
        pool = [e for e in candidates if _discrete(e.prompt)]
        pool.sort(key=rank.key, reverse=True)
        if rule == "kfold":
            note = "not built under selection kfold (its members' scores are on different folds)"
        elif len(pool) < 2:
            note = f"not built: {len(pool)} discrete candidate(s), an ensemble needs 2"
        else:
            ens_ev, note = _build_ensemble(evaluator, pool[:ensemble_top], ensemble_weights, rank, data)
            if ens_ev is not None and all(e.prompt.key != ens_ev.prompt.key for e in evs):
                evs.append(ens_ev)
    ranked = sorted(evs, key=rank.key, reverse=True)
    declared = evaluator.pick
    unguarded: Evaluation | None
    if declared is not None:
        unguarded = declared
    elif ens_ev is not None:
        unguarded = ens_ev
    else:
        unguarded = max(candidates, key=rank.key) if candidates else None
    manual = max(baselines, key=rank.key) if baselines else None
    d = PickDecision(rule, mode, None, None, unguarded, manual, "", ensemble=ens_ev, ensemble_note=note)
    d.ranked = ranked
    if unguarded is None:
        d.guarded, d.reason = manual, "no candidate; the best hand-written prompt"
    elif manual is None:
        d.guarded, d.reason = (
            unguarded,
            "the searcher's pick, unguarded (the config has no hand-written prompts)",
        )
    elif unguarded.baseline or unguarded.prompt.key == manual.prompt.key:
        d.guarded, d.reason = unguarded, "the best hand-written prompt (it is the searcher's pick too)"
    else:
        a, b = rank.pool_preds(unguarded), rank.pool_preds(manual)
        if a is None or b is None:
            d.guarded = unguarded
            d.reason = "the searcher's pick, unguarded (no per-example predictions stored to compare)"
        else:
            both = (a >= 0) & (b >= 0)
            g = selection.paired_bootstrap(
                a[both],
                b[both],
                rank.gold[both],
                metric=data.metric,
                n_labels=len(data.label_names),
                level=guard_level,
                seed=data.seed,
            )
            d.guard = g
            if g.passed:
                d.guarded, d.reason = unguarded, f"the searcher's pick taken ({g.describe()})"
            else:
                d.guarded, d.fired = manual, True
                d.reason = f"manual prompt kept ({g.describe()})"
    if mode == "guarded":
        d.pick = d.guarded
    else:
        d.pick = d.unguarded or d.manual
        if d.fired:
            d.reason = f"the searcher's pick, unguarded (the guard would have kept the manual prompt: {d.guard.describe() if d.guard else ''})"
        elif d.pick is d.unguarded and d.pick is not None and not d.pick.baseline:
            d.reason = "the searcher's pick, unguarded" + (f" ({d.guard.describe()})" if d.guard else "")
    return d


@dataclass
class JobResult:
    job: Job
    evaluations: list[Evaluation]
    best: Evaluation | None
    test: dict[int, ScoreResult | StoredTestScore] = field(default_factory=dict)  # row id -> test result
    cost: Cost = field(default_factory=Cost)
    seconds: float = 0.0  # the search and the test scoring of the job's best prompts
    stopped_by_budget: str | None = None
    stored_tests: dict[int, StoredTestScore] = field(default_factory=dict)  # resumed rows tested before
    decision: PickDecision | None = None  # how ``best`` (the job's pick) was chosen

    def test_of(self, ev: Evaluation | None) -> float | None:
        if ev is None or ev.row_id not in self.test:
            return None
        return self.test[ev.row_id].metrics.get(self.job.task.metric)

    @property
    def best_test(self) -> float | None:
        return self.test_of(self.best)

    @property
    def picks(self) -> dict[str, Evaluation | None]:
        """The guarded pick, the unguarded pick and the best hand-written prompt (each tested)."""
        d = self.decision
        if d is None:
            return {"guarded": self.best, "unguarded": self.best, "manual": None}
        return {"guarded": d.guarded, "unguarded": d.unguarded, "manual": d.manual}


@dataclass
class RunResult:
    run_id: str
    storage: str  # the URL as given (it may hold a password: print ``display_storage``)
    jobs: list[JobResult]

    @property
    def display_storage(self) -> str:
        return safe_url(self.storage)


def build_searchers(cfg: RunConfig) -> list[Searcher]:
    return [searchers.build(s.name, s.params, f"searchers[{i}].params") for i, s in enumerate(cfg.searchers)]


def build_baselines(cfg: RunConfig, prompts: Sequence[Prompt]) -> list[Prompt]:
    """The hand-written prompts the guard compares a searcher's pick with (``pick: guarded``): the config's
    prompts, and their calibration-flipped twins when the config's manual searcher scores those. Scored in
    every job, whatever ``pick`` says, so that each job reports its best hand-written prompt too."""
    flip = any(s.name == "manual" and s.params.get("with_calibration") for s in cfg.searchers)
    if flip:
        return [v for p in prompts for v in (p, p.with_(calibrate=not p.calibrate))]
    return list(prompts)


def build_prompts(cfg: RunConfig, label_names: Sequence[str]) -> list[Prompt]:
    """The config's hand-written prompts (none for a config without any: see ``job_prompts``)."""
    from miner.errors import PromptError

    out = []
    for i, p in enumerate(cfg.prompts):
        try:
            out.append(
                Prompt.create(
                    p.template, p.verbalizer, label_names, calibrate=p.calibrate, triggers=tuple(p.triggers)
                )
            )
        except PromptError as exc:
            raise PromptError(f"prompts[{i}]: {exc}") from None
    return out


def job_prompts(cfg: RunConfig, data: TaskData, backend: Backend) -> list[Prompt]:
    """A job's hand-written prompts: the config's, or with no ``prompts:`` the task's defaults (docs/defaults.md)."""
    if cfg.prompts:
        return build_prompts(cfg, data.label_names)
    from miner.search import default_prompts

    return default_prompts(data, backend)


@dataclass
class Prepared:
    """A config checked as a whole, before anything is written: what ``run`` goes on to run."""

    cfg: RunConfig
    searchers: list[Searcher]
    datasets: dict[tuple[Any, int], TaskData]
    prompts: list[Prompt]
    backend: Backend | None  # None when the jobs run in workers (each loads its own)

    @property
    def n_jobs(self) -> int:
        return len(self.datasets) * len(self.searchers)


def _resolve_config(config, storage, resume, n_jobs) -> RunConfig:
    if isinstance(config, (str, Path)):
        from miner.config import load_config

        cfg = load_config(config)
    else:
        cfg = parse_config(config)
    if storage is not None:
        cfg = cfg.model_copy(update={"storage": storage})
    if resume is not None:
        cfg = cfg.model_copy(update={"resume": resume})
    if n_jobs is not None:
        if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs < 1:
            raise ConfigError(f"n_jobs must be a positive int, got {n_jobs!r}")
        cfg = cfg.model_copy(update={"parallel": cfg.parallel.model_copy(update={"n_jobs": n_jobs})})
    return cfg


def prepare(
    config: RunConfig | dict | str | Path,
    *,
    storage: str | None = None,
    backend: Backend | None = None,
    resume: bool | None = None,
    n_jobs: int | None = None,
    keep_backend: bool = False,
    dry_run: bool = False,
) -> Prepared:
    """Check the whole expanded config and load the model; write nothing (``miner validate`` is this).

    Every job's data is loaded, every prompt is checked against every job's text fields and compiled
    with the tokenizer (lengths against the model's positions, trigger ids in the vocabulary), and every
    searcher checks its parameters against every job (``Searcher.validate``), so that bad input is an
    error before the first leaderboard row, not after the first job. ``dry_run`` (``miner validate``)
    also leaves the artifact folder uncreated.
    """
    from miner.errors import PromptError

    cfg = _resolve_config(config, storage, resume, n_jobs)
    searcher_objs = build_searchers(cfg)
    # Data before the model (a missing file is an error in a second, not after a model load), except
    # where the task itself needs the tokenizer (a fact task's single-token objects).
    needs_tokenizer = bool(getattr(cfg.task, "single_token", False))
    if needs_tokenizer and backend is None:
        backend = _load_model(cfg)
    tokenize = backend.tokenize if needs_tokenizer and backend is not None else None
    datasets = {
        (k, seed): load_task(cfg.task, k, seed, tokenize=tokenize) for k in cfg.k for seed in cfg.seeds
    }
    first = next(iter(datasets.values()))
    prompts = build_prompts(cfg, first.label_names)
    for i, p in enumerate(prompts):
        for data in datasets.values():
            try:
                for m in getattr(p, "members", (p,)):
                    m.parsed.check_fields(data.text_fields)
            except PromptError as exc:
                raise PromptError(f"prompts[{i}]: {exc}") from None
    if cfg.parallel.n_jobs > 1:
        _check_parallel(cfg, backend is not None)
    _check_artifacts(cfg, searcher_objs, create=False)
    if backend is None:
        t0 = time.perf_counter()
        phase.info("loading model %s ...", cfg.model.name)
        backend = _load_model(cfg)
        phase.info(
            "loaded %s (%s LM, %s, %s) in %.1f s",
            cfg.model.name,
            backend.kind,
            backend.device,
            str(backend.dtype).replace("torch.", ""),
            time.perf_counter() - t0,
        )
    if not cfg.prompts:  # no hand-written prompts: the task's defaults are the job's baselines and seeds
        prompts = job_prompts(cfg, first, backend)
    for s in searcher_objs:
        if backend.kind not in s.capabilities.model_kinds:
            raise ConfigError(
                f"searcher {s.name!r} does not support {backend.kind} LMs (model {backend.name!r})"
            )
    probe = Scorer(backend, progress=False, content_free=cfg.content_free)
    for i, p in enumerate(prompts):
        try:
            probe.compile(p)
        except PromptError as exc:
            raise PromptError(f"prompts[{i}]: {exc}") from None
    for i, s in enumerate(searcher_objs):
        for data in datasets.values():
            ctx = SearchContext(
                task=data.without_test(),
                backend=backend,
                scorer=probe,
                seed=data.seed,
                prompts=tuple(prompts),
                progress=False,
            )
            try:
                s.validate(ctx)
            except MinerError as exc:
                raise type(exc)(f"searchers[{i}] ({s.name}): {exc}") from None
    if not dry_run:
        _check_artifacts(cfg, searcher_objs, create=True)  # last: it may create the (empty) folder
    in_workers = cfg.parallel.n_jobs > 1 and len(datasets) * len(searcher_objs) > 1
    if in_workers and not keep_backend:  # each worker loads its own copy: hold no spare one here (GPU memory)
        del probe
        backend = None
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return Prepared(cfg, searcher_objs, datasets, prompts, backend)


def _check_artifacts(cfg: RunConfig, searcher_objs: Sequence[Searcher], create: bool) -> None:
    """Soft searchers keep tensors in the artifact folder: it must be a writable folder.

    With ``create`` (``run``, after every other check) it is created and a file is written and removed
    in it, the only test that holds for root too; without (``miner validate``) only the nearest
    existing parent is looked at, so that checking writes nothing.
    """
    import os
    import tempfile

    if not any(s.capabilities.prompt_kind == "soft" for s in searcher_objs):
        return
    root = artifacts_for_storage(cfg.storage, cfg.artifacts).root.expanduser().absolute()
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(
            f"artifacts: {str(probe)!r} is not a folder (soft-prompt tensors are kept in {str(root)!r})"
        )
    problem = None if os.access(probe, os.W_OK | os.X_OK) else f"{str(probe)!r} is not writable"
    if create and problem is None:
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=root):
                pass
        except OSError as exc:
            problem = exc.strerror or type(exc).__name__
    if problem:
        raise ConfigError(
            f"artifacts: cannot write soft-prompt tensors to {str(root)!r} ({problem}); "
            "set 'artifacts:' to a writable folder"
        )


def recorded_config(cfg: RunConfig) -> dict[str, Any]:
    """The config as stored with a run: secrets (a storage password, a scheduler's) masked."""
    data = cfg.model_dump(mode="json")
    data["storage"] = safe_url(cfg.storage)
    if data["parallel"].get("scheduler"):
        data["parallel"]["scheduler"] = mask_secrets(data["parallel"]["scheduler"])
    return data


def run(
    config: RunConfig | dict | str | Path,
    *,
    storage: str | None = None,
    backend: Backend | None = None,
    progress: bool | None = None,
    resume: bool | None = None,
    n_jobs: int | None = None,
    score_test: bool = True,
) -> RunResult:
    """Run a mining job. Everything is validated (``prepare``) before the first leaderboard row is written.

    ``n_jobs`` overrides ``parallel.n_jobs``: the jobs then run on that many joblib workers. A run that
    fails inside a job is marked "failed" (its finished jobs' rows stay: each row is written whole, in
    one transaction); one whose process is killed is marked "interrupted" by the next run on the same
    storage. With ``resume`` a job that another live process is running is waited for, not run twice.
    ``score_test=False`` leaves the held-out test scoring to the caller (``miner bench`` scores each
    distinct prompt on its shared test sample once per bench, not once per job).
    """
    started_at = time.time()  # searchers tell work launched beside this run from earlier runs by it
    prep = prepare(config, storage=storage, backend=backend, resume=resume, n_jobs=n_jobs)
    cfg = prep.cfg
    show = cfg.progress if progress is None else progress

    board = Leaderboard(cfg.storage)
    artifacts = artifacts_for_storage(cfg.storage, cfg.artifacts)
    board.mark_stale_runs()
    run_id = board.start_run(recorded_config(cfg), provenance())
    results: list[JobResult] = []
    status = "failed"
    try:
        with _Heartbeat(lambda: board.beat(run_id)):
            jobs = [(d, i, s) for d in prep.datasets.values() for i, s in enumerate(prep.searchers)]
            phase.info("run %s: %d job(s) -> %s", run_id[:8], len(jobs), board.display_url)
            if prep.backend is None:
                results = _run_parallel(
                    cfg, [(d.k, d.seed, i) for d, i, _ in jobs], run_id, show, started_at, score_test
                )
            else:
                for data, i, searcher in tqdm(jobs, desc="jobs", disable=not show or len(jobs) < 2):
                    results.append(
                        _run_job(
                            cfg,
                            i,
                            data,
                            searcher,
                            prep.backend,
                            prep.prompts,
                            board,
                            run_id,
                            show,
                            artifacts,
                            started_at,
                            score_test,
                        )
                    )
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        board.finish_run(run_id, status)
    return RunResult(run_id, board.url, results)


class _Heartbeat:
    """Calls ``beat()`` now and then every ``interval`` seconds on a daemon thread while the block runs.

    A failed beat is logged and retried at the next tick: a heartbeat must never end a run.
    """

    def __init__(self, beat, interval: float = HEARTBEAT_S) -> None:
        self.beat, self.interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="miner-heartbeat", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                logger.debug("heartbeat failed: %s", exc)

    def __enter__(self) -> _Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _claim(board: Leaderboard, key: str, run_id: str, wait: bool, label: str) -> bool:
    """Claim a job for this run; with ``wait`` (``--resume``) wait while a live process holds it.

    Returns whether the claim is ours. Without ``wait`` a held job runs anyway, unclaimed: a plain
    re-run adds a new run's rows, as it always did.
    """
    told = False
    while True:
        holder = board.claim_job(key, run_id)
        if holder is None:
            return True
        if not wait:
            return False
        if not told:
            logger.warning(
                "%s: run %s (host %s, pid %s) is running this job; waiting for it to finish",
                label,
                holder["run_id"][:8],
                holder["host"],
                holder["pid"],
            )
            told = True
        time.sleep(1.0)


def _check_parallel(cfg: RunConfig, backend_given: bool) -> None:
    if backend_given:
        raise ConfigError(
            "parallel.n_jobs > 1 loads the model in each worker: leave out run(backend=...) "
            "or set parallel.n_jobs to 1"
        )
    url = normalize_url(cfg.storage)
    if url.get_backend_name() == "sqlite" and not is_sqlite_file(url):
        raise ConfigError(
            "parallel.n_jobs > 1 needs a shared storage (a SQLite file or a database server), "
            f"not {cfg.storage!r}"
        )
    if cfg.parallel.backend == "dask":
        try:
            import dask.distributed  # noqa: F401
        except ImportError:
            raise ConfigError(
                "parallel.backend 'dask' needs dask.distributed: pip install 'miner[dask]'"
            ) from None
    elif cfg.parallel.scheduler is not None:
        raise ConfigError(
            "parallel.scheduler is a Dask scheduler address: set parallel.backend to 'dask' too"
        )


def _run_parallel(
    cfg: RunConfig,
    specs: list[tuple[Any, int, int]],
    run_id: str,
    show: bool,
    started_at: float,
    score_test: bool = True,
) -> list[JobResult]:
    """Run the jobs on joblib workers (loky processes or a Dask cluster), results in job order."""
    import os

    from joblib import Parallel, delayed, parallel_config

    par = cfg.parallel
    n = min(par.n_jobs, len(specs))
    threads = par.threads_per_job or max(1, (os.cpu_count() or 1) // n)
    payload = cfg.model_dump(mode="json")
    url = normalize_url(cfg.storage)
    if url.get_backend_name() == "sqlite":  # workers may have another working directory: an absolute path
        # _check_parallel let only a SQLite file through, so the database is a path
        payload["storage"] = url.set(
            database=str(Path(cast(str, url.database)).expanduser().resolve())
        ).render_as_string(hide_password=False)
    with contextlib.ExitStack() as stack:
        backend = par.backend
        if backend == "dask":
            from dask.distributed import Client, LocalCluster

            if par.scheduler:
                client = stack.enter_context(Client(par.scheduler))
            else:
                cluster = stack.enter_context(
                    LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
                )
                client = stack.enter_context(Client(cluster))
            logger.info("parallel: %d jobs on Dask at %s", len(specs), client.scheduler.address)
        if backend is not None:
            stack.enter_context(parallel_config(backend=backend, n_jobs=n))
        calls = (
            delayed(_job_in_worker)(payload, k, seed, i, run_id, threads, started_at, score_test)
            for k, seed, i in specs
        )
        out = Parallel(n_jobs=n, return_as="generator_unordered")(calls)
        done = {}
        for index, result in tqdm(out, total=len(specs), desc=f"jobs ({n} workers)", disable=not show):
            done[index] = result
    return [done[(k, seed, i)] for k, seed, i in specs]


def _load_model(cfg: RunConfig) -> Backend:
    m = cfg.model
    return load_backend(m.name, kind=m.kind, device=m.device, dtype=m.dtype, max_length=m.max_length)


_WORKER_BACKENDS: dict[tuple[Any, ...], Backend] = {}  # one model per worker process, kept across its jobs
_WORKER_LOCK = threading.Lock()  # a Dask worker with several threads runs jobs side by side


def _job_in_worker(
    payload: dict,
    k: Any,
    seed: int,
    index: int,
    run_id: str,
    threads: int,
    started_at: float,
    score_test: bool = True,
):
    torch.set_num_threads(threads)
    cfg = parse_config(payload)
    m = cfg.model
    key = (m.name, m.kind, m.device, m.dtype, m.max_length)
    with _WORKER_LOCK:
        if key not in _WORKER_BACKENDS:
            _WORKER_BACKENDS[key] = _load_model(cfg)
    tokenize = _WORKER_BACKENDS[key].tokenize if getattr(cfg.task, "single_token", False) else None
    data = load_task(cfg.task, k, seed, tokenize=tokenize)
    searcher = build_searchers(cfg)[index]
    prompts = job_prompts(cfg, data, _WORKER_BACKENDS[key])
    board = Leaderboard(cfg.storage)
    artifacts = artifacts_for_storage(cfg.storage, cfg.artifacts)
    result = _run_job(
        cfg,
        index,
        data,
        searcher,
        _WORKER_BACKENDS[key],
        prompts,
        board,
        run_id,
        False,
        artifacts,
        started_at,
        score_test,
    )
    return (k, seed, index), result


def _run_job(
    cfg,
    index: int,
    data: TaskData,
    searcher: Searcher,
    backend: Backend,
    prompts,
    board,
    run_id,
    show,
    artifacts,
    started_at: float | None = None,
    score_test: bool = True,
) -> JobResult:
    m = cfg.model
    key = job_key(cfg, index, data.seed, data.k)
    label = Job(data, m.name, searcher.name, data.seed, data.k).label
    start = time.perf_counter()
    claimed = _claim(board, key, run_id, wait=cfg.resume, label=label)
    try:
        with contextlib.ExitStack() as stack:
            if claimed:
                stack.enter_context(_Heartbeat(lambda: board.beat_claim(key, run_id)))
            result = _run_claimed_job(
                cfg,
                data,
                searcher,
                backend,
                prompts,
                board,
                run_id,
                show,
                artifacts,
                key,
                started_at,
                score_test,
            )
    finally:
        if claimed:
            board.release_job(key, run_id)
    result.seconds = time.perf_counter() - start  # the whole job, test scoring included
    return result


def _run_claimed_job(
    cfg, data, searcher, backend, prompts, board, run_id, show, artifacts, key, started_at, score_test=True
) -> JobResult:
    m = cfg.model
    scorer_kw = dict(
        batch_size=m.batch_size,
        max_batch_tokens=m.max_batch_tokens,
        stem_cache_mb=m.stem_cache_mb,
        progress=show,
        content_free=cfg.content_free,
        soft_resolver=artifacts.get_tensor,
    )
    result = _search(
        searcher,
        backend,
        data,
        Scorer(backend, counter=CostCounter(), **scorer_kw),
        prompts=prompts,
        budget=cfg.budget,
        board=board,
        run_id=run_id,
        score_train=cfg.score_train,
        progress=show,
        model_name=m.name,
        artifacts=artifacts,
        key=key,
        resume=cfg.resume,
        started_at=started_at,
        baselines=build_baselines(cfg, prompts),
        select=cfg.selection,
        pick=cfg.pick,
        ensemble=cfg.ensemble,
    )
    # Held-out test scores (not charged to the searcher's budget), each distinct prompt once: the guarded
    # pick, the unguarded pick and the best hand-written prompt, then the best by the ranking rule up to
    # test_top. A resumed job's prompts that were tested before keep their stored score.
    if score_test and data.test and result.evaluations:
        d = result.decision
        ranked = (
            d.ranked if d is not None else sorted(result.evaluations, key=lambda e: e.rank_key, reverse=True)
        )
        first = [e for e in (result.best, *result.picks.values()) if e is not None]
        top: list[Evaluation] = []
        for ev in first:
            if all(ev.row_id != t.row_id for t in top):
                top.append(ev)
        want = max(len(ranked) if cfg.test_top == "all" else cfg.test_top, len(top))
        for ev in ranked:
            if len(top) >= want:
                break
            if all(ev.row_id != t.row_id for t in top):
                top.append(ev)
        test_scorer = Scorer(backend, **scorer_kw)
        todo = [ev for ev in top if ev.row_id not in result.stored_tests]
        if todo:
            phase.info(
                "%s: testing %d prompt(s) on %d held-out examples",
                result.job.label,
                len(todo),
                len(data.test),
            )
        for ev in top:
            assert ev.row_id is not None  # the job writes to a leaderboard, so each evaluation has its row
            if ev.row_id in result.stored_tests:
                result.test[ev.row_id] = result.stored_tests[ev.row_id]
                continue
            res = selection.score(
                test_scorer, ev.prompt, data.test, desc=f"test {todo.index(ev) + 1}/{len(todo)}"
            )
            result.test[ev.row_id] = res
            board.add_test_score(ev.row_id, res.metrics[data.metric], len(data.test), res.metrics)
    return result


def _search(
    searcher,
    backend,
    data,
    scorer,
    *,
    prompts,
    budget,
    board,
    run_id,
    score_train,
    progress,
    model_name,
    artifacts,
    key,
    resume,
    started_at: float | None = None,
    baselines: Sequence[Prompt] | None = None,
    select: SelectionSpec | None = None,
    pick: str = "guarded",
    ensemble: EnsembleSpec | None = None,
) -> JobResult:
    """One job: the hand-written baselines, the search (on k folds under ``selection: kfold``), the pick.

    Only ``data.without_test()`` is read here: the test split is the caller's, after the pick.
    """
    select = select or SelectionSpec()
    ensemble = ensemble or EnsembleSpec()
    data = data.without_test()
    job = Job(data, model_name, searcher.name, data.seed, data.k)
    rule = effective_rule(select.rule, type(searcher), score_train)
    if rule in ("pooled", "kfold") and not score_train:
        raise ConfigError(f"selection.rule {rule!r} ranks on train + dev: it needs score_train: true")
    top = ensemble.top or searcher.ensemble_request()
    if baselines is None:
        baselines = list(prompts)
    n_train = len(data.train) if score_train else 0
    phase.info(
        "%s: searching (each prompt scored on %s%d dev examples; ranking: %s)",
        job.label,
        f"{n_train} train + " if n_train else "",
        len(data.dev),
        rule,
    )
    b = Budget(budget, scorer.counter)
    if top >= 2 and rule != "kfold":
        b.reserved = 1  # the ensemble's evaluation; its scores come from the scorer's cache
    evaluator = JobEvaluator(job, scorer, board, run_id, b, score_train, key)
    if resume and board is not None:
        n = evaluator.resume_from(board)
        if n:
            logger.info("%s: resumed %d evaluations from storage", job.label, n)
    stopped = None
    start = time.perf_counter()
    try:
        # The baselines first: the guard's comparison is paid for before the search can spend the budget.
        evaluator.score_baselines(baselines)
    except BudgetExhausted as exc:
        stopped = str(exc)
        logger.warning("%s: the budget ran out scoring the hand-written prompts (%s)", job.label, exc)
    torch.manual_seed(data.seed)
    folds = None
    evaluators = [evaluator]
    if stopped is None:
        if rule == "kfold":
            folds, evaluators, stopped = _search_folds(
                searcher,
                backend,
                data,
                scorer,
                evaluator,
                select.folds,
                prompts,
                progress,
                artifacts,
                key,
                resume,
                started_at,
            )
        else:
            ctx = _context(
                searcher, backend, data, scorer, prompts, b, progress, artifacts, board, key, started_at
            )
            try:
                searcher.search(ctx, evaluator)
            except BudgetExhausted as exc:
                stopped = str(exc)
                logger.info("%s: budget exhausted (%s)", job.label, exc)
    if resume and board is not None and key and rule != "kfold":
        evaluator.resume_from(board)  # the rows of the job's other workers (a shared Optuna study)
    b.release()
    evaluations = [e for ev in evaluators for e in ev.evaluations]
    decision = None
    if evaluations:
        decision = decide_pick(
            evaluator,
            evaluations,
            data,
            rule=rule,
            mode=pick,
            guard_level=select.guard_level,
            ensemble_top=top,
            ensemble_weights=ensemble.weights,
            folds=folds,
            score_train=score_train,
        )
        evaluations = [e for ev in evaluators for e in ev.evaluations]  # the ensemble included
        _record_pick(board, run_id, key, decision)
        phase.info("%s: %s", job.label, decision.line())
    res = JobResult(
        job,
        evaluations,
        decision.pick if decision else None,
        cost=scorer.counter.snapshot(),
        stopped_by_budget=stopped,
        stored_tests={k: v for ev in evaluators for k, v in ev.tested.items()},
        decision=decision,
    )
    res.seconds = time.perf_counter() - start
    return res


def _context(searcher, backend, data, scorer, prompts, budget, progress, artifacts, board, key, started_at):
    return SearchContext(
        task=data.without_test(),
        backend=backend,
        scorer=scorer,
        seed=data.seed,
        prompts=tuple(prompts),
        budget=budget,
        logger=logging.getLogger(f"miner.search.{searcher.name}"),
        progress=progress,
        artifacts=artifacts,
        storage_url=board.url if board is not None else None,
        job_key=key,
        started_at=started_at if started_at is not None else time.time(),
    )


def _search_folds(
    searcher,
    backend,
    data,
    scorer,
    main: JobEvaluator,
    k,
    prompts,
    progress,
    artifacts,
    key,
    resume,
    started_at,
):
    """``selection: kfold``: the search runs once per fold of train + dev, on what is left of the budget
    split evenly; fold i's searcher is given train = the other folds and dev = fold i."""
    pool = (*data.train, *data.dev)
    folds = selection.stratified_folds([e.label for e in pool], k, data.seed)
    spent = main.budget
    spec = spent.spec
    share: dict[str, Any] = {}
    if spec.max_evaluations is not None:
        share["max_evaluations"] = max(1, int(spent.evaluations_left // k))
    if spec.max_forward_passes is not None:
        share["max_forward_passes"] = max(1, int(spent.forward_passes_left // k))
    if spec.max_seconds is not None:
        share["max_seconds"] = max(spent.seconds_left / k, 1e-3)
    fold_spec = BudgetSpec(**share)
    evaluators, stopped = [main], None
    for f, held in enumerate(folds):
        held_set = set(held.tolist())
        fold_data = dataclasses.replace(
            data,
            train=tuple(e for i, e in enumerate(pool) if i not in held_set),
            dev=tuple(pool[i] for i in held),
            test=(),
        )
        fb = Budget(fold_spec, scorer.counter)
        fb.previous_passes = -scorer.counter.total.forward_passes  # count only this fold's passes
        fb.previous_backward = -scorer.counter.total.backward_passes
        ev = JobEvaluator(
            main.job, scorer, main.board, main.run_id, fb, main.score_train, key, fold=f, data=fold_data
        )
        if resume and main.board is not None:
            ev.resume_from(main.board)
        fold_key = f"{key}-fold{f}" if key else ""
        ctx = _context(
            searcher,
            backend,
            fold_data,
            scorer,
            prompts,
            fb,
            progress,
            artifacts,
            main.board,
            fold_key,
            started_at,
        )
        phase.info(
            "%s: fold %d/%d (%d train, %d held out)",
            main.job.label,
            f + 1,
            k,
            len(fold_data.train),
            len(held),
        )
        try:
            searcher.search(ctx, ev)
        except BudgetExhausted as exc:
            stopped = str(exc)
            logger.info("%s: fold %d: budget exhausted (%s)", main.job.label, f, exc)
        evaluators.append(ev)
    main.budget.counter.guard = main.budget.guard
    return folds, evaluators, stopped


def _record_pick(board, run_id: str, key: str, d: PickDecision) -> None:
    """Store the decision, unless the job's latest stored one (a resumed job's) is the same."""
    if board is None or not key or d.pick is None or d.pick.row_id is None:
        return
    details = d.details()
    prev = board.picks([key]).get(key)
    if (
        prev is not None
        and prev.get("evaluation_id") == d.pick.row_id
        and prev.get("roles") == details["roles"]
    ):
        return
    board.add_pick(run_id, key, d.pick.row_id, details)


def score_prompt(prompt: Prompt, examples: Sequence[Any], backend: Backend, **scorer_kw: Any) -> ScoreResult:
    """Score one prompt on examples: the plain-Python way to re-check a leaderboard number."""
    return Scorer(backend, **scorer_kw).score(prompt, examples)


def run_searcher(
    searcher: Searcher,
    backend: Backend,
    data: TaskData,
    *,
    prompts: Sequence[Prompt] = (),
    budget: BudgetSpec | dict | None = None,
    board: Leaderboard | None = None,
    run_id: str = "",
    score_train: bool = True,
    progress: bool = False,
    model_name: str | None = None,
    artifacts: Any = None,
    baselines: Sequence[Prompt] | None = None,
    selection: SelectionSpec | dict | None = None,
    pick: str = "guarded",
    ensemble: EnsembleSpec | dict | None = None,
) -> JobResult:
    """Run one searcher on one dataset without a config (notebooks, tests).

    With ``board=None`` nothing is written. The searcher receives ``data`` without its test split, and
    so does the pick: ``baselines`` (default: ``prompts``) are the hand-written prompts the guard compares
    with; ``selection``, ``pick`` and ``ensemble`` are the config's keys of those names.
    """
    import tempfile

    from miner.artifacts import ArtifactStore

    spec = budget if isinstance(budget, BudgetSpec) else BudgetSpec(**(budget or {}))
    store = artifacts or ArtifactStore(tempfile.mkdtemp(prefix="miner-artifacts-"))
    scorer = Scorer(backend, progress=progress, counter=CostCounter(), soft_resolver=store.get_tensor)
    return _search(
        searcher,
        backend,
        data,
        scorer,
        prompts=prompts,
        budget=spec,
        board=board,
        run_id=run_id,
        score_train=score_train,
        progress=progress,
        model_name=model_name or backend.name,
        artifacts=store,
        key="",
        resume=False,
        baselines=baselines,
        select=selection if isinstance(selection, SelectionSpec) else SelectionSpec(**(selection or {})),
        pick=pick,
        ensemble=ensemble if isinstance(ensemble, EnsembleSpec) else EnsembleSpec(**(ensemble or {})),
    )
