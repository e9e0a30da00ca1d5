"""The optuna searcher's shared study: the two coordination races, each reproduced.

1. A worker killed between ``ask()`` and recording itself on the trial (as the owner, with a
   heartbeat): on resume that trial is found stale and re-run exactly once.
2. A worker that joins a study late, while another worker's trial is still running: it is not a
   resume of a killed job, so it neither fails nor re-runs that trial, nor repeats its parameters.

The killed worker of (1) is simulated with Optuna's public API (a trial taken with ``ask()`` and
abandoned: nothing else of that worker is in the database); (2) needs two real processes.
"""

import os
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
import sqlalchemy
import yaml
from optuna.trial import TrialState

import miner.search.optuna_search  # noqa: F401  (registers the searcher)
from miner.cli import main
from miner.leaderboard import Leaderboard

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
GRACE = 4  # heartbeat_grace_s of these jobs, seconds


def _config(tmp_path, model_dir, n_trials, **params):
    cfg = {
        "task": {"source": "builtin", "name": "rotten_tomatoes", "max_test": 8},
        "model": {"name": str(model_dir)},
        "searchers": [
            {
                "name": "optuna",
                "params": {
                    "n_trials": n_trials,
                    "pool_sizes": [2, 3],
                    "max_words": 2,
                    "n_startup_trials": 2,
                    "pruner": "none",
                    "train_shares": [1.0],
                    "heartbeat_grace_s": GRACE,
                    **params,
                },
            }
        ],
        "seeds": [1],
        "k": 4,
        "storage": f"sqlite:///{tmp_path / 'lb.db'}",
        "progress": False,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def _baselines(tmp_path, path):
    """The hand-written baselines of the config's job (the task's default prompts: it has no prompts)."""
    from miner.runner import prepare

    return prepare(path, dry_run=True).prompts


def _trial_rows(url):
    """The study's rows: the hand-written baselines the runner scores first in every job are not trials."""
    return [r for r in Leaderboard(url).rows() if not (r.extra or {}).get("baseline")]


def _study(url):
    names = optuna.get_all_study_names(url)
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=url)


@pytest.mark.process  # a (simulated) killed worker against a resume, which waits out the grace period
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the simulated killed worker asks directly
def test_a_trial_asked_by_a_worker_killed_before_it_marked_the_trial_is_rerun_once_on_resume(
    tmp_path, tiny_model_dir
):
    n_trials = 5
    path, cfg = _config(tmp_path, tiny_model_dir, n_trials)
    url = cfg["storage"]
    # not part of the job key: the resume below continues this study (the runner's baselines, the task's
    # default prompts here, count in max_evaluations: two trials on top of them)
    cfg["budget"] = {"max_evaluations": 2 + len(_baselines(tmp_path, path))}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--no-progress"]) == 0
    study = _study(url)
    assert (
        2 <= len(study.get_trials(states=FINISHED)) < n_trials
    )  # (a trial with no candidate words is pruned)

    # The killed worker had taken a queued trial (a retry, or one a user enqueued) with ask() and
    # died before anything else: the trial is RUNNING with no owner and no heartbeat.
    params = dict(study.trials[0].params, pool_size=3 if study.trials[0].params["pool_size"] == 2 else 2)
    study.enqueue_trial(params)
    orphan = study.ask()
    assert study.trials[orphan.number].state == TrialState.RUNNING

    del cfg["budget"]
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--resume", "--no-progress"]) == 0
    study = _study(url)
    assert study.trials[orphan.number].state == TrialState.FAIL  # found stale, not left RUNNING
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    reruns = [
        t for t in study.trials if t.number != orphan.number and t.system_attrs.get("fixed_params") == params
    ]
    assert len(reruns) == 1 and reruns[0].state == TrialState.COMPLETE  # its parameters ran again, once
    assert reruns[0].params == params
    assert len(study.get_trials(states=FINISHED)) == n_trials  # the rerun is one of the study's n_trials
    rows = _trial_rows(url)
    assert len({r.prompt_key for r in rows}) == len(rows)


_SLOW_WORKER = """
    import os, sys, time
    import miner.search._optuna_run as run_mod
    import miner.search.optuna_search  # registers the searcher before the CLI looks it up
    from miner.cli import main

    real, calls = run_mod.search_verbalizers, []
    def slow(*a, **k):  # the first trial has a long step (a big model, or a big training set)
        if not calls:
            time.sleep(float(os.environ["SLOW_STEP_S"]))
        calls.append(1)
        return real(*a, **k)
    run_mod.search_verbalizers = slow
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.process
def test_a_late_worker_leaves_a_live_workers_trial_alone_and_repeats_none_of_its_trials(
    tmp_path, tiny_model_dir
):
    # A large space, so that two independent draws (the late worker's and the live one's) collide
    # with probability below 1e-3; with the live worker's sampler state they are equal.
    path, cfg = _config(tmp_path, tiny_model_dir, 3, punctuations=["", ".", "!"], pool_sizes=[2, 3, 4])
    url = cfg["storage"]
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_SLOW_WORKER))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "SLOW_STEP_S": str(GRACE + 3)}
    live = subprocess.Popen(
        [sys.executable, str(script), "run", str(path), "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        start = time.time()
        while True:  # until the live worker's first trial has run longer than the heartbeat grace
            assert live.poll() is None, live.stderr.read().decode()[-2000:]
            assert time.time() - start < 120, "the live worker started no trial"
            try:
                running = _study(url).get_trials(states=(TrialState.RUNNING,))
            except (
                AssertionError,
                KeyError,
                sqlalchemy.exc.SQLAlchemyError,
            ):  # no study yet, or tables being created
                running = []
            if running and time.time() - running[0].datetime_start.timestamp() > GRACE + 0.5:
                break
            time.sleep(0.1)
        first = running[0]
        assert main(["run", str(path), "--no-progress"]) == 0  # the late worker: its run starts now
        assert live.wait(timeout=120) == 0, live.stderr.read().decode()[-2000:]
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    study = _study(url)  # joined, not a fresh study
    assert (
        study.trials[first.number].state == TrialState.COMPLETE
    )  # the live trial was neither failed nor re-run
    assert not study.get_trials(states=(TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING))
    finished = study.get_trials(states=FINISHED)
    assert 3 <= len(finished) <= 4  # the study's target (two workers asking at the same instant may add one)
    live_params = study.trials[first.number].params
    assert all(t.params != live_params for t in study.trials if t.number != first.number)
    rows = _trial_rows(url)
    assert (
        len({r.prompt_key for r in rows}) == len(rows) == len(study.get_trials(states=(TrialState.COMPLETE,)))
    )
