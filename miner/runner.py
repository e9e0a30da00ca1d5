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

import torch
from tqdm.auto import tqdm

from miner._version import code_version
from miner.artifacts import artifacts_for_storage
from miner.config import BudgetSpec, RunConfig, parse_config
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
        self.evaluations = 0
        self.previous_passes = 0  # spent by an earlier, resumed attempt at the same job
        self.previous_backward = 0
        counter.guard = self.guard

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def forward_passes_left(self) -> float:
        m = self.spec.max_forward_passes
        return float("inf") if m is None else m - self.counter.total.forward_passes - self.previous_passes

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
        return float("inf") if m is None else m - self.evaluations

    def can_afford(self, forward_passes: int = 0, backward_passes: int = 0, evaluations: int = 0) -> bool:
        return (
            forward_passes <= self.forward_passes_left
            and backward_passes <= self.backward_passes_left
            and evaluations <= self.evaluations_left
            and self.seconds_left > 0
        )

    def guard(self, forward_passes: int, backward_passes: int) -> None:
        """The counter's check before a model call: refuse what the budget cannot pay for."""
        s = self.spec
        if forward_passes > self.forward_passes_left:
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
        if s.max_evaluations is not None and self.evaluations >= s.max_evaluations:
            raise BudgetExhausted(f"max_evaluations={s.max_evaluations} reached")
        self.guard(planned_passes, 0)

    def exhausted(self) -> bool:
        return not self.can_afford(forward_passes=1, evaluations=1)


def _split_score(res: ScoreResult, metric: str) -> SplitScore | None:
    if res.gold is None or len(res.gold) == 0:
        return None
    assert res.loglik is not None  # the scorer sets loglik whenever the examples have gold labels
    return SplitScore(res.metrics[metric], res.metrics, float(res.loglik), len(res.gold))


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
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


class JobEvaluator:
    """The ``evaluate`` callable handed to a searcher for one job."""

    def __init__(
        self,
        job: Job,
        scorer: Scorer,
        board: Leaderboard | None,
        run_id: str,
        budget: Budget,
        score_train: bool,
        key: str = "",
    ):
        self.key = key
        self.job = job
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
        self.tested: dict[
            int, StoredTestScore
        ] = {}  # row id -> test score stored by an earlier attempt (resume)

    def _consider(self, ev: Evaluation, pick: bool) -> None:
        """The job's best is the searcher's latest declared pick, else the best by dev (``rank_key``)."""
        if pick:
            self.pick = self.best = ev
        elif self.pick is None and (self.best is None or ev.rank_key > self.best.rank_key):
            self.best = ev

    def _splits(self) -> list[tuple[str, Sequence[Any]]]:
        splits: list[tuple[str, Sequence[Any]]] = [("dev", self.job.task.dev)]
        if self.score_train:
            splits.insert(0, ("train", self.job.task.train))
        return splits

    def __call__(
        self, prompts: Sequence[Prompt | PromptEnsemble], *, extra: dict[str, Any] | None = None
    ) -> list[Evaluation]:
        out = []
        pick = bool((extra or {}).get("pick"))
        for prompt in prompts:
            if prompt.key in self.seen:
                prev = self.seen[prompt.key]
                if pick:
                    self._consider(prev, True)
                out.append(Evaluation(prompt, prev.train, prev.dev, Cost(), prev.row_id, duplicate=True))
                continue
            planned = sum(self.scorer.plan(prompt, data) for _, data in self._splits())
            self.budget.check(planned)
            results = {name: self.scorer.score(prompt, data, desc=name) for name, data in self._splits()}
            metric = self.job.task.metric
            train = _split_score(results["train"], metric) if "train" in results else None
            dev = _split_score(results["dev"], metric)
            now = self.scorer.counter.snapshot()
            cost, self._last = now - self._last, now
            row_id = self._record(prompt, train, dev, cost, extra)
            ev = Evaluation(prompt, train, dev, cost, row_id)
            self.budget.evaluations += 1
            self.seen[prompt.key] = ev
            self.evaluations.append(ev)
            self._consider(ev, pick)
            out.append(ev)
        return out

    def _record(self, prompt, train, dev, cost: Cost, extra) -> int | None:
        if self.board is None:
            return None
        job = self.job
        rec = EvaluationRecord(
            run_id=self.run_id,
            task=job.task.name,
            model=job.model,
            searcher=job.searcher_name,
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
            },
        )
        return self.board.add_evaluations([rec])[0]

    def resume_from(self, board: Leaderboard) -> int:
        """Load this job's rows from an earlier attempt: they count as evaluated, at no new cost."""
        job = self.job
        rows = board.rows(
            task=job.task.name,
            model=job.model,
            searcher=job.searcher_name,
            seed=job.seed,
            k=job.k,
            order="time",
        )
        rows = [r for r in reversed(rows) if (r.extra or {}).get("job_key") == self.key]
        for r in rows:
            prompt = Prompt.from_dict(r.prompt, job.task.label_names)
            if prompt.key in self.seen:
                continue
            ex = r.extra or {}
            train = (
                SplitScore(
                    r.train_score,
                    ex.get("train_metrics") or {},
                    cast(float, ex.get("train_loglik")),
                    r.n_train,
                )
                if r.train_score is not None
                else None
            )
            dev = (
                SplitScore(r.dev_score, ex.get("dev_metrics") or {}, cast(float, r.dev_loglik), r.n_dev)
                if r.dev_score is not None
                else None
            )
            ev = Evaluation(
                prompt,
                train,
                dev,
                Cost(forward_passes=r.forward_passes, tokens=r.tokens, seconds=r.seconds),
                r.id,
            )
            if r.test_score is not None:  # tested by the earlier attempt: not scored again
                self.tested[r.id] = StoredTestScore(
                    dict(r.test_metrics or {job.task.metric: r.test_score}), r.n_test or 0
                )
            self.seen[prompt.key] = ev
            self.evaluations.append(ev)
            self.budget.evaluations += 1
            self.budget.previous_passes += r.forward_passes
            self._consider(ev, bool(ex.get("pick")))
        return len(rows)


@dataclass(frozen=True)
class StoredTestScore:
    """A test score read back from storage (a resumed job's prompt that was tested before)."""

    metrics: dict[str, float]
    n: int


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

    @property
    def best_test(self) -> float | None:
        if self.best is None or self.best.row_id not in self.test:
            return None
        return self.test[self.best.row_id].metrics.get(self.job.task.metric)


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


def build_prompts(cfg: RunConfig, label_names: Sequence[str]) -> list[Prompt]:
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
    datasets = {(k, seed): load_task(cfg.task, k, seed) for k in cfg.k for seed in cfg.seeds}
    first = next(iter(datasets.values()))
    prompts = build_prompts(cfg, first.label_names)
    for i, p in enumerate(prompts):
        for data in datasets.values():
            try:
                for m in getattr(p, "members", (p,)):
                    m.parsed.check_fields(data.text_fields)
            except PromptError as exc:
                raise PromptError(f"prompts[{i}]: {exc}") from None
    for s in searcher_objs:
        if s.capabilities.needs_seed_prompts and not prompts and not s.brings_prompts():
            raise ConfigError(
                f"searcher {s.name!r} needs hand-written prompts: add a 'prompts' list to the config"
            )
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
) -> RunResult:
    """Run a mining job. Everything is validated (``prepare``) before the first leaderboard row is written.

    ``n_jobs`` overrides ``parallel.n_jobs``: the jobs then run on that many joblib workers. A run that
    fails inside a job is marked "failed" (its finished jobs' rows stay: each row is written whole, in
    one transaction); one whose process is killed is marked "interrupted" by the next run on the same
    storage. With ``resume`` a job that another live process is running is waited for, not run twice.
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
                results = _run_parallel(cfg, [(d.k, d.seed, i) for d, i, _ in jobs], run_id, show, started_at)
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
    cfg: RunConfig, specs: list[tuple[Any, int, int]], run_id: str, show: bool, started_at: float
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
            delayed(_job_in_worker)(payload, k, seed, i, run_id, threads, started_at) for k, seed, i in specs
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
    payload: dict, k: Any, seed: int, index: int, run_id: str, threads: int, started_at: float
):
    torch.set_num_threads(threads)
    cfg = parse_config(payload)
    m = cfg.model
    key = (m.name, m.kind, m.device, m.dtype, m.max_length)
    with _WORKER_LOCK:
        if key not in _WORKER_BACKENDS:
            _WORKER_BACKENDS[key] = _load_model(cfg)
    data = load_task(cfg.task, k, seed)
    searcher = build_searchers(cfg)[index]
    prompts = build_prompts(cfg, data.label_names)
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
                cfg, data, searcher, backend, prompts, board, run_id, show, artifacts, key, started_at
            )
    finally:
        if claimed:
            board.release_job(key, run_id)
    result.seconds = time.perf_counter() - start  # the whole job, test scoring included
    return result


def _run_claimed_job(
    cfg, data, searcher, backend, prompts, board, run_id, show, artifacts, key, started_at
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
    )
    # Held-out test scores for the best prompts (not charged to the searcher's budget), each once:
    # a resumed job's prompts that were tested before keep their stored score.
    if data.test and result.evaluations:
        ranked = sorted(result.evaluations, key=lambda e: e.rank_key, reverse=True)
        if result.best is not None:  # a searcher's declared pick comes first, whatever its dev rank
            ranked = [result.best] + [e for e in ranked if e is not result.best]
        top = ranked if cfg.test_top == "all" else ranked[: cfg.test_top]
        test_scorer = Scorer(backend, **scorer_kw)
        todo = [ev for ev in top if ev.row_id not in result.stored_tests]
        if todo:
            phase.info(
                "%s: testing the best %d prompt(s) on %d held-out examples",
                result.job.label,
                len(todo),
                len(data.test),
            )
        for ev in top:
            assert ev.row_id is not None  # the job writes to a leaderboard, so each evaluation has its row
            if ev.row_id in result.stored_tests:
                result.test[ev.row_id] = result.stored_tests[ev.row_id]
                continue
            res = test_scorer.score(ev.prompt, data.test, desc=f"test {todo.index(ev) + 1}/{len(todo)}")
            result.test[ev.row_id] = res
            if ev.row_id is not None:
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
) -> JobResult:
    job = Job(data, model_name, searcher.name, data.seed, data.k)
    n_train = len(data.train) if score_train else 0
    phase.info(
        "%s: searching (each prompt scored on %s%d dev examples)",
        job.label,
        f"{n_train} train + " if n_train else "",
        len(data.dev),
    )
    b = Budget(budget, scorer.counter)
    evaluator = JobEvaluator(job, scorer, board, run_id, b, score_train, key)
    if resume and board is not None:
        n = evaluator.resume_from(board)
        if n:
            logger.info("%s: resumed %d evaluations from storage", job.label, n)
    ctx = SearchContext(
        task=data.without_test(),
        backend=backend,
        scorer=scorer,
        seed=data.seed,
        prompts=tuple(prompts),
        budget=b,
        logger=logging.getLogger(f"miner.search.{searcher.name}"),
        progress=progress,
        artifacts=artifacts,
        storage_url=board.url if board is not None else None,
        job_key=key,
        started_at=started_at if started_at is not None else time.time(),
    )
    torch.manual_seed(data.seed)
    stopped = None
    start = time.perf_counter()
    try:
        searcher.search(ctx, evaluator)
    except BudgetExhausted as exc:
        stopped = str(exc)
        logger.info("%s: budget exhausted (%s)", job.label, exc)
    res = JobResult(
        job,
        evaluator.evaluations,
        evaluator.best,
        cost=scorer.counter.snapshot(),
        stopped_by_budget=stopped,
        stored_tests=dict(evaluator.tested),
    )
    res.seconds = time.perf_counter() - start
    return res


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
) -> JobResult:
    """Run one searcher on one dataset without a config (notebooks, tests).

    With ``board=None`` nothing is written. The searcher receives ``data`` without its test split.
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
    )
