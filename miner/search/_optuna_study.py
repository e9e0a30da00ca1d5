"""The Optuna side of the ``optuna`` searcher: samplers, pruners, and a resumable study.

The study lives in the leaderboard's own database (Optuna's standard RDB schema, so
``optuna-dashboard sqlite:///miner.db`` shows it), named after the job key, so that

- ``miner run --resume`` after a crash continues the same study: trials left RUNNING by a
  dead process are failed and their parameters re-enqueued (re-asked) by the next worker;
- several worker processes running the same job share one study (each asks its own trials;
  the study's trial count, not each worker's, decides when the job is done).

A RUNNING trial belongs to a dead process when its recorded host is this host and its pid
is gone (immediate, no timeout), or when its heartbeat is older than the grace period
(any host; heartbeats are written at every step of a trial).

A worker's new trial is created RUNNING with the worker already recorded on it, in one
storage write (``ask_marked``), so no kill can leave a fresh trial without an owner. Only a
re-enqueued trial (a retry, or one a user enqueued) is popped first and marked right after;
one left unmarked by a kill in between counts as dead after ``UNMARKED_GRACE_S``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import TrialState

from miner.errors import ConfigError

logger = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "cmaes", "nsga2")
PRUNERS = ("median", "successive_halving", "none")
_HOST = socket.gethostname()
_START = f"{time.time():.6f}"  # distinguishes this process from a later one reusing its pid
# A popped trial is marked within milliseconds; a SQLite writer may wait up to 120 s for the lock.
UNMARKED_GRACE_S = 150.0


def make_sampler(name: str, seed: int, n_startup: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # multivariate + group: the template parts and verbalizer settings are modelled jointly,
        # and conditional parameters (full template vs assembled parts) get their own groups.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=n_startup)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        # CMA-ES models the integer-coded choices; anything it cannot (conditional) falls back to TPE.
        fallback = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup)
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup, independent_sampler=fallback,
                                            warn_independent_sampling=False)
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


def make_storage(url: str | None) -> optuna.storages.BaseStorage:
    if url is None:
        return optuna.storages.InMemoryStorage()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several workers and the leaderboard write to one file: wait for the lock, don't fail.
        kwargs = {"connect_args": {"timeout": 120}}
    else:
        kwargs = {"pool_pre_ping": True}
    # Two workers opening a new database at once race to create Optuna's tables and version rows
    # ("table studies already exists" from the loser). On a SQLite file (one host) a file lock
    # serialises them; elsewhere the loser retries, since the winner's tables are fine.
    with _creation_lock(url):
        for attempt in range(8):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            except Exception as exc:  # sqlalchemy / optuna errors, wrapped differently across versions
                text = str(exc).lower()
                if attempt == 7 or not any(k in text for k in ("already exists", "locked", "unique", "integrity")):
                    raise
                logger.debug("optuna storage creation raced another worker (%s); retrying", exc)
                time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def _creation_lock(url: str):
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
    except Exception:
        parsed = None
    db = parsed.database if parsed is not None and parsed.get_backend_name() == "sqlite" else None
    if not db or db == ":memory:" or db.startswith("file:"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: rely on the retries
        yield
        return
    with open(f"{db}.optuna-lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def open_study(url: str | None, base_name: str, directions: list[str], sampler, pruner, n_trials: int,
               resumed: bool, started_at: float | None = None) -> optuna.Study:
    """Load or create the job's study.

    A study that already has ``n_trials`` finished trials is reused only when the runner is
    resuming (``resumed``: the job's rows were preloaded, so the finished trials count as done).
    A plain re-run of the same config gets a fresh study ``<name>-2``, ``-3``, ... as the runner
    gives it fresh leaderboard rows. A finished study is joined, not restarted, when trials of it
    were finished after ``started_at`` (when the run calling this started, before it loaded
    anything): this worker was launched beside the others and came late (it finds nothing to do).
    """
    storage = make_storage(url)
    name = base_name
    for attempt in range(2, 1000):
        study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
        if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in directions]:
            raise ConfigError(f"optuna study {name!r} exists with other objectives; set 'study_name' to start another")
        if resumed or _finished(study) < n_trials or _finished_since(study, started_at):
            return study
        name = f"{base_name}-{attempt}"
    raise ConfigError(f"optuna study {base_name!r}: too many finished re-runs in this database")


def _finished_since(study: optuna.Study, started_at: float | None) -> bool:
    """Did some worker finish a trial of ``study`` after ``started_at`` (when our run started)?"""
    if started_at is None:
        return False
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        # optuna (>= 5) returns datetime_complete as naive local time: .timestamp() reads it as such
        if t.datetime_complete is not None and t.datetime_complete.timestamp() >= started_at:
            return True
    return False


def _worker_id() -> str:
    return f"{_HOST}:{os.getpid()}:{_START}"


def ask_marked(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``, but a new trial carries its worker and heartbeat from its creation.

    Enqueued (WAITING) trials are taken first, as ``ask()`` does, and marked right after.
    """
    if hasattr(study, "_thread_local"):
        study._thread_local.cached_all_trials = None  # see other workers' trials, as ask() does
    trial_id = study._pop_waiting_trial_id()
    if trial_id is not None:
        trial = optuna.Trial(study, trial_id)
        mark_worker(study, trial)
        return trial
    now = datetime.now()
    template = optuna.trial.FrozenTrial(
        number=-1, state=TrialState.RUNNING, value=None, datetime_start=now, datetime_complete=None, params={},
        distributions={}, user_attrs={}, system_attrs={"miner_worker": _worker_id(), "miner_heartbeat": time.time()},
        intermediate_values={}, trial_id=-1,
    )
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return optuna.Trial(study, trial_id)


def mark_worker(study: optuna.Study, trial: optuna.Trial) -> None:
    study._storage.set_trial_system_attr(trial._trial_id, "miner_worker", _worker_id())
    heartbeat(study, trial)


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    study._storage.set_trial_system_attr(trial._trial_id, "miner_heartbeat", time.time())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_stale(t: optuna.trial.FrozenTrial, grace_s: float) -> bool:
    started = t.datetime_start.timestamp() if t.datetime_start else time.time()
    worker = t.system_attrs.get("miner_worker")
    if worker is None:  # popped from the queue, owner not recorded yet (or killed in between)
        return time.time() - started > min(grace_s, UNMARKED_GRACE_S)
    host, _, rest = worker.partition(":")
    pid_s, _, start = rest.partition(":")
    if host == _HOST and pid_s.isdigit():
        pid = int(pid_s)
        if pid == os.getpid():
            return start != _START  # our pid, but an earlier process that had it
        if not _pid_alive(pid):
            return True
    beat = t.system_attrs.get("miner_heartbeat", started)
    return time.time() - float(beat) > grace_s


def recover_stale(study: optuna.Study, grace_s: float) -> int:
    """Fail trials left RUNNING by dead workers and re-enqueue their parameters (re-ask)."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_stale(t, grace_s):
            continue
        try:
            ok = study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except RuntimeError:  # another worker finished or failed it first
            continue
        if ok:  # the state change is atomic: only the worker that made it re-enqueues
            n += 1
            if t.params:
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
            logger.info("optuna: trial %d was left running by a dead worker; failed and re-enqueued", t.number)
    return n


def finished_count(study: optuna.Study) -> int:
    return _finished(study)
