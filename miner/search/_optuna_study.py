"""The Optuna side of the ``optuna`` searcher: samplers, pruners, and a study shared by workers.

The study lives in the leaderboard's own database (Optuna's standard RDB schema, so
``optuna-dashboard sqlite:///miner.db`` shows it), named after the job key, so that

- ``miner run --resume`` after a crash continues the same study: trials left RUNNING by a
  dead process are failed and their parameters re-run by a worker of the study;
- several worker processes running the same job share one study (each asks its own trials;
  the study's trial count, not each worker's, decides when the job is done).

Only Optuna's public API is used. A worker's trial is kept alive by Optuna's heartbeat
(:meth:`RDBStorage.record_heartbeat`, written by a thread of the worker every
``heartbeat_interval`` seconds, whatever the length of a step); a trial whose heartbeat is older
than the grace period is failed by :func:`optuna.storages.fail_stale_trials` and re-enqueued
with its parameters by :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`. Optuna never
fails a trial that has no heartbeat at all, which is what a worker killed between ``ask()`` and
its first heartbeat leaves; so a worker records itself on its trial (user attribute
``worker``) only after that heartbeat, and a RUNNING trial without that record is failed and
retried the same way once the grace period has passed since it started. (Optuna writes
heartbeats itself only inside ``optimize()``; the searcher's loop is ``ask()``/``tell()``.)

The loop (``_optuna_run.run_study``) counts running trials towards ``n_trials`` and, before it
stops, waits for other workers' running trials: each is finished by its worker or turns stale
and is re-run, so a resume after a kill re-runs the killed trial once and no trial is left
RUNNING. No process ids or file locks are involved: a worker in another container or on
another host is judged by its heartbeats alone.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.exceptions import DuplicatedStudyError, ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from miner._io import process_gone
from miner.errors import ConfigError

logger = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "cmaes", "nsga2")
PRUNERS = ("median", "successive_halving", "none")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
OWNER = "worker"  # trial user attribute: the worker running it, written after its first heartbeat
MAX_RETRY = 2  # a trial that kills its worker every time (out of memory) is given up after this many retries
_HOST = socket.gethostname()


def make_sampler(name: str, seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # multivariate + group: the template parts and verbalizer settings are modelled jointly,
        # and conditional parameters (full template vs assembled parts) get their own groups.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, n_startup_trials=n_startup
            )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES models the integer-coded choices; anything it cannot (conditional) falls back to TPE.
        fallback = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup)
        return optuna.samplers.CmaEsSampler(
            seed=seed,
            n_startup_trials=n_startup,
            independent_sampler=fallback,
            warn_independent_sampling=False,
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, n_startup))
    raise ConfigError(f"optuna searcher: unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")


def make_pruner(name: str, n_startup: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup, n_warmup_steps=0)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"optuna searcher: unknown pruner {name!r}; known: {', '.join(PRUNERS)}")


def heartbeat_settings(grace_s: float) -> tuple[int, int]:
    """(heartbeat_interval, grace_period) in whole seconds, as RDBStorage takes them."""
    grace = max(3, math.ceil(grace_s))
    # Several beats per grace period, so that a late write (a busy SQLite lock) does not make a live
    # trial stale; SQLite dates them in whole seconds, so a live trial may look up to interval + 1 s old.
    return max(1, grace // 4), grace


with warnings.catch_warnings():
    warnings.simplefilter("ignore", ExperimentalWarning)
    _RETRY = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def _retry_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """The storage's stale-trial callback: log, then let Optuna re-enqueue the parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        given_up = len(RetryHeartbeatStaleTrialCallback.retry_history(trial)) >= MAX_RETRY
        _RETRY(study, trial)
    if given_up:
        logger.warning(
            "optuna: trial %d was left running by a dead worker %d times; not retried again",
            trial.number,
            MAX_RETRY + 1,
        )
    else:
        logger.info(
            "optuna: trial %d was left running by a dead worker; failed and re-enqueued", trial.number
        )


def make_storage(url: str | None, grace_s: float | None = None) -> optuna.storages.BaseStorage:
    """Optuna's storage for ``url`` (in memory for None); with ``grace_s``, heartbeats are on."""
    return optuna.storages.InMemoryStorage() if url is None else _rdb_storage(url, grace_s)


def _rdb_storage(url: str, grace_s: float | None) -> optuna.storages.RDBStorage:
    kwargs: dict[str, Any]
    if url.startswith("sqlite"):
        # Several workers and the leaderboard write to one file: wait for the lock, don't fail.
        kwargs = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True}
    beats: dict[str, Any] = {}
    if grace_s is not None:
        interval, grace = heartbeat_settings(grace_s)
        beats = {
            "heartbeat_interval": interval,
            "grace_period": grace,
            "heartbeat_stale_trial_callback": _retry_stale,
        }
    # Two workers opening a new database at once race to create Optuna's tables and version rows
    # ("table studies already exists", a duplicate version row); the loser retries: the winner's
    # tables are complete once its transaction commits.
    for attempt in range(8):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, **beats)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            text = str(exc).lower()
            if attempt == 7 or not any(
                k in text for k in ("already exists", "locked", "unique", "integrity")
            ):
                raise
            logger.debug("optuna storage creation raced another worker (%s); retrying", exc)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


class _Heartbeat:
    """Records a trial's heartbeat every ``interval`` seconds until stopped (as ``optimize()`` does)."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: int) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"optuna-heartbeat-{trial_id}", daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except sqlalchemy.exc.SQLAlchemyError as exc:  # a busy database: the next beat may get through
                logger.debug("optuna: heartbeat of trial id %d not written: %s", self.trial_id, exc)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def _owned(t: optuna.trial.FrozenTrial) -> bool:
    """Has the trial's worker recorded its first heartbeat? (A retry inherits its original's attributes.)"""
    owner = t.user_attrs.get(OWNER)
    return isinstance(owner, dict) and owner.get("trial") == t.number


def known_dead(t: optuna.trial.FrozenTrial) -> bool:
    """A RUNNING trial whose worker is certainly gone: it never recorded itself, or it ran on this host
    under a pid that no longer exists. (Only used to decide whether to wait for its retry; the trial
    itself is failed by the heartbeat rule in ``recover``, whatever this says.)"""
    if not _owned(t):
        return True
    owner: dict[str, Any] = t.user_attrs[OWNER]  # _owned: a dict
    return process_gone(owner.get("host"), owner.get("pid"))


@dataclass
class SharedStudy:
    """The job's study and how this worker takes part in it."""

    study: optuna.Study
    storage: optuna.storages.RDBStorage | None  # None: in memory, private to this call (nothing to recover)
    study_id: int = -1  # in ``storage``
    created: bool = (
        True  # this worker created the study (else it joined one that others, or a killed run, started)
    )
    interval: int = 15  # seconds between heartbeats
    grace: int = 60  # seconds without one after which a trial is dead
    # A fresh sampler for each new trial, seeded by the number of trials finished or in flight when it
    # is asked: a trial's parameters then depend only on the study's history, so a run resumed after a
    # kill draws exactly what the uninterrupted run drew, and two workers asking side by side differ.
    sampler_for: Callable[[int], optuna.samplers.BaseSampler] | None = None

    @property
    def study_name(self) -> str:
        return self.study.study_name

    def counts(self) -> dict[TrialState, int]:
        out = dict.fromkeys(TrialState, 0)
        for t in self.study.get_trials(deepcopy=False):
            out[t.state] += 1
        return out

    def finished(self) -> int:
        c = self.counts()
        return c[TrialState.COMPLETE] + c[TrialState.PRUNED]

    def recover(self) -> None:
        """Fail the trials of dead workers; their parameters are re-enqueued (see the module docstring)."""
        if self.storage is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            optuna.storages.fail_stale_trials(self.study)  # heartbeat older than the grace period
        now = time.time()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # datetime_start is stored in UTC and read back in local time: .timestamp() is exact
            if _owned(t) or t.datetime_start is None or now - t.datetime_start.timestamp() <= self.grace:
                continue
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
            try:
                changed = self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:  # its worker (alive after all) or another one finished it first
                continue
            if changed:  # the state change is atomic: only the worker that made it re-enqueues
                _retry_stale(self.study, self.storage.get_trial(trial_id))

    def ask(self) -> tuple[optuna.Trial, _Heartbeat | None]:
        """``study.ask()`` (an enqueued trial first), then the heartbeat, then the owner record."""
        with warnings.catch_warnings():
            # Optuna warns that its own heartbeat thread runs only in optimize(); ours runs here.
            warnings.filterwarnings(
                "ignore", message="Heartbeat of storage is supposed to be used with Study.optimize"
            )
            if self.sampler_for is not None:
                c = self.counts()
                self.study.sampler = self.sampler_for(
                    c[TrialState.COMPLETE] + c[TrialState.PRUNED] + c[TrialState.RUNNING]
                )
            trial = self.study.ask()
        if self.storage is None:
            return trial, None
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        self.storage.record_heartbeat(trial_id)  # from here on a kill is found by fail_stale_trials
        trial.set_user_attr(OWNER, {"host": _HOST, "pid": os.getpid(), "trial": trial.number})
        return trial, _Heartbeat(self.storage, trial_id, self.interval)


def _done(study: optuna.Study, n_trials: int) -> bool:
    """The study has its trials and none is running or queued."""
    trials = study.get_trials(deepcopy=False)
    busy = any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    return not busy and sum(t.state in FINISHED for t in trials) >= n_trials


def open_study(
    url: str | None,
    base_name: str,
    directions: list[str],
    sampler,
    pruner,
    n_trials: int,
    resumed: bool,
    started_at: float | None = None,
    grace_s: float = 60.0,
    sampler_for: Callable[[int], optuna.samplers.BaseSampler] | None = None,
) -> SharedStudy:
    """Load or create the job's study.

    A study that is done (``n_trials`` finished trials, none running or queued) is reused only
    when the runner is resuming (``resumed``: the job's rows were preloaded, so the finished
    trials count as done). A plain re-run of the same config gets a fresh study ``<name>-2``,
    ``-3``, ... as the runner gives it fresh leaderboard rows. A done study is joined, not
    restarted, when trials of it were finished after ``started_at`` (when the run calling this
    started, before it loaded anything): this worker was launched beside the others and came late.

    Workers do not share a sampler's random state: ``SharedStudy.sampler_for`` seeds each new trial
    from the study's history instead (see there).
    """
    wanted = [optuna.study.StudyDirection[d.upper()] for d in directions]
    if url is None:
        study = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            study_name=base_name,
            directions=wanted,
            sampler=sampler,
            pruner=pruner,
        )
        return SharedStudy(study, None, sampler_for=sampler_for)
    storage = _rdb_storage(url, grace_s)
    interval, grace = heartbeat_settings(grace_s)
    for attempt in range(1, 1000):
        name = base_name if attempt == 1 else f"{base_name}-{attempt}"
        try:
            study = optuna.create_study(
                storage=storage, study_name=name, directions=wanted, sampler=sampler, pruner=pruner
            )
            created = True
        except DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
            created = False
        if list(study.directions) != wanted:
            raise ConfigError(
                f"optuna study {name!r} exists with other objectives; set 'study_name' to start another"
            )
        if created or resumed or not _done(study, n_trials) or _finished_since(study, started_at):
            return SharedStudy(
                study, storage, storage.get_study_id_from_name(name), created, interval, grace, sampler_for
            )
    raise ConfigError(f"optuna study {base_name!r}: too many finished re-runs in this database")


def _finished_since(study: optuna.Study, started_at: float | None) -> bool:
    """Did some worker finish a trial of ``study`` after ``started_at`` (when our run started)?"""
    if started_at is None:
        return False
    for t in study.get_trials(deepcopy=False, states=FINISHED):
        # datetime_complete is stored in UTC and read back in local time: .timestamp() is exact
        if t.datetime_complete is not None and t.datetime_complete.timestamp() >= started_at:
            return True
    return False


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))
