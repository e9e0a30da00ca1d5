"""The ``optuna`` searcher: conformance, cached verbalizer search, resume after kill -9, two workers."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

import miner.search.optuna_search  # noqa: F401  (registers the searcher)
from miner.cli import main
from miner.config import BudgetSpec
from miner.errors import ConfigError
from miner.leaderboard import Leaderboard
from miner.prompts import Prompt
from miner.runner import run_searcher
from miner.scoring import Scorer
from miner.search._labelwords import Pool, candidate_pool, decoded_vocab, search_verbalizers, word_mask
from miner.search.optuna_search import OptunaSearcher
from miner.testing.conformance import SearcherConformance
from miner.testing.tiny import tiny_causal


class TestOptunaConformance(SearcherConformance):
    @pytest.fixture
    def searcher(self):
        return OptunaSearcher(n_trials=4, pool_sizes=[3], max_words=2, n_startup_trials=2)


class TestOptunaEnsembleConformance(SearcherConformance):
    @pytest.fixture
    def searcher(self):
        return OptunaSearcher(n_trials=4, pool_sizes=[3], max_words=2, n_startup_trials=2, ensemble_top=2)


@pytest.fixture(scope="module")
def causal():
    return tiny_causal()


@pytest.fixture(scope="module")
def data():
    from miner.tasks import TaskSpec, load_task

    return load_task(TaskSpec(source="builtin", name="rotten_tomatoes", max_test=8), 4, 13)


def test_inner_search_matches_the_scorer(causal, data):
    """The tensor-op verbalizer scores equal the scorer's, and the exhaustive search finds the best."""
    labels = data.label_names
    template = "{sentence} It was {answer}"
    probe = Prompt.create(template, {lab: ["a"] for lab in labels}, labels)
    scorer = Scorer(causal, progress=False)
    D = scorer.distributions(probe, data.train)
    Dcf = scorer.distributions(probe, [{"sentence": t} for t in scorer.content_free])
    gold = torch.as_tensor([e.label for e in data.train])
    space = scorer.compile(probe).space_to_word
    vocab = decoded_vocab(causal)
    mask = word_mask(causal, r"^[a-z]{3,}$", space)
    rt = lambda w: (lambda ids: ids[0] if len(ids) == 1 else None)(causal.tokenize(" " + w))  # noqa: E731
    pool = candidate_pool(D, gold, 2, mask, 3, 50, rt, vocab)
    assert all(len(ws) == 3 for ws in pool.words) and not set(pool.words[0]) & set(pool.words[1])
    assert all(mask[c] for cs in pool.columns for c in cs)
    for calibrate in (False, True):
        passes = scorer.counter.total.forward_passes
        res = search_verbalizers(D, gold, pool, 1, Wcf=Dcf if calibrate else None)
        assert scorer.counter.total.forward_passes == passes  # no model call
        assert res.examined == 9
        brute = []
        for i in range(3):
            for j in range(3):
                p = Prompt.create(
                    template,
                    {labels[0]: [pool.words[0][i]], labels[1]: [pool.words[1][j]]},
                    labels,
                    calibrate=calibrate,
                )
                r = scorer.score(p, data.train)
                brute.append((r.metrics["accuracy"], r.loglik, (i, j)))
        best = max(brute, key=lambda b: (round(b[0], 9), b[1]))
        assert tuple(c[0] for c in res.choice) == best[2]
        assert res.metric == pytest.approx(best[0]) and res.loglik == pytest.approx(best[1], abs=1e-4)
        # Multi-word verbalizers: the same arithmetic (log of summed probabilities) as the scorer.
        res2 = search_verbalizers(D, gold, pool, 2, Wcf=Dcf if calibrate else None)
        assert res2.examined == 9
        words = {lab: [pool.words[c][j] for j in res2.choice[c]] for c, lab in enumerate(labels)}
        r = scorer.score(Prompt.create(template, words, labels, calibrate=calibrate), data.train)
        assert r.metrics["accuracy"] == pytest.approx(res2.metric) and r.loglik == pytest.approx(
            res2.loglik, abs=1e-4
        )


def test_coordinate_ascent_beyond_the_cap():
    torch.manual_seed(0)
    W = torch.randn(20, 30).log_softmax(-1)
    gold = torch.arange(20) % 3
    pool = Pool(
        [[str(i) for i in range(10 * c, 10 * c + 10)] for c in range(3)],
        [list(range(10 * c, 10 * c + 10)) for c in range(3)],
    )
    full = search_verbalizers(W, gold, pool, 1)
    assert full.examined == 1000
    approx = search_verbalizers(W, gold, pool, 1, max_verbalizers=100)
    assert approx.examined < 1000 and approx.metric <= full.metric + 1e-9


def test_verbalizer_trials_spend_no_forward_passes(causal, data):
    """One template: only the first trial pays passes; the rest are tensor ops plus cached scoring."""
    s = OptunaSearcher(
        n_trials=5,
        templates=["Review: {sentence}\nSentiment: {answer}"],
        infixes=[],
        use_seed_templates=False,
        calibration=[False],
        pool_sizes=[2, 4, 8],
        max_words=2,
        n_startup_trials=5,
        pruner="none",
    )
    res = run_searcher(s, causal, data, budget=BudgetSpec(max_forward_passes=40))
    assert len(res.evaluations) >= 2
    first, rest = res.evaluations[0], res.evaluations[1:]
    assert first.cost.forward_passes > 0
    assert all(e.cost.forward_passes == 0 for e in rest)
    assert res.cost.forward_passes == first.cost.forward_passes


def test_demonstrations_from_train_are_left_out_of_word_fitting(causal, data, monkeypatch):
    import miner.search._optuna_run as run_mod

    fitted_rows = []
    real = run_mod.candidate_pool
    monkeypatch.setattr(
        run_mod, "candidate_pool", lambda D, *a, **k: fitted_rows.append(D.shape[0]) or real(D, *a, **k)
    )
    s = OptunaSearcher(
        n_trials=3,
        templates=["Review: {sentence}\nSentiment: {answer}"],
        infixes=[],
        use_seed_templates=False,
        label_words={"negative": ["bad"], "positive": ["good"]},
        demonstrations=[1],
        demo_sets=2,
        calibration=[False],
        pool_sizes=[2],
        n_startup_trials=3,
        pruner="none",
        train_shares=[1.0],
    )
    res = run_searcher(s, causal, data, budget=BudgetSpec(max_forward_passes=60))
    assert res.evaluations
    train_text = {e.fields["sentence"].strip(): e.label for e in data.train}
    for ev in res.evaluations:
        template = ev.prompt.template
        assert template.endswith("Review: {sentence}\nSentiment: {answer}")
        shown = [t for t in train_text if f"Review: {t}\nSentiment: " in template]
        assert sorted(train_text[t] for t in shown) == [0, 1]  # one demonstration per label, from train
        for t in shown:  # rendered with the label's first user word
            assert f"Review: {t}\nSentiment: {('bad', 'good')[train_text[t]]}\n\n" in template
    assert set(fitted_rows) == {len(data.train) - 2}  # the two shown examples fit no label words
    with pytest.raises(ConfigError, match="demonstrations"):
        run_searcher(OptunaSearcher(demonstrations=[-1]), causal, data)


def test_multi_token_user_words_and_records(tmp_path, causal, data):
    board = Leaderboard(f"sqlite:///{tmp_path / 'lb.db'}")
    s = OptunaSearcher(
        n_trials=3,
        infixes=["It was"],
        prefixes=[""],
        separators=[" "],
        use_seed_templates=False,
        label_words={"negative": ["unwatchable"], "positive": ["masterpiece"]},
        pool_sizes=[2],
        calibration=[True],
        n_startup_trials=3,
    )
    assert len(causal.tokenize(" unwatchable")) > 1  # a multi-token word
    res = run_searcher(
        s, causal, data, board=board, run_id=board.start_run({}, {}), budget=BudgetSpec(max_forward_passes=40)
    )
    rows = board.rows()
    assert len(rows) == len(res.evaluations) >= 1
    ex = rows[0].extra["optuna"]
    assert ex["verbalizers_examined"] >= 1 and "unwatchable" in ex["pool"]["negative"]
    # run_searcher has no job key: the study stays in memory, the database holds only the leaderboard.
    assert optuna.get_all_study_names(f"sqlite:///{tmp_path / 'lb.db'}") == []


def test_bad_parameters_are_config_errors(causal, data):
    with pytest.raises(ConfigError, match="sampler"):
        run_searcher(OptunaSearcher(sampler="grid"), causal, data)
    with pytest.raises(ConfigError, match=r"templates\[0\]"):
        run_searcher(OptunaSearcher(templates=["{answer} {sentence}"]), causal, data)
    with pytest.raises(ConfigError, match="train_shares"):
        run_searcher(OptunaSearcher(train_shares=[0.5]), causal, data)
    with pytest.raises(ConfigError, match="unknown label"):
        run_searcher(OptunaSearcher(label_words={"neutral": ["meh"]}), causal, data)


@pytest.mark.parametrize("sampler", ["random", "cmaes", "nsga2"])
def test_other_samplers(causal, data, sampler):
    s = OptunaSearcher(sampler=sampler, n_trials=3, n_startup_trials=1, pool_sizes=[2], max_words=1)
    res = run_searcher(s, causal, data, budget=BudgetSpec(max_forward_passes=30))
    assert 1 <= len(res.evaluations) <= 3


# ---------------------------------------------------------------- processes: kill -9, resume, workers


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, causal):
    d = tmp_path_factory.mktemp("tiny-model")
    causal.model.save_pretrained(d)
    causal.tokenizer.save_pretrained(d)
    return d


def _config(tmp_path, tiny_dir, n_trials):
    cfg = {
        "task": {"source": "builtin", "name": "rotten_tomatoes", "max_test": 8},
        "model": {"name": str(tiny_dir)},
        "searchers": [
            {
                "name": "optuna",
                "params": {
                    "n_trials": n_trials,
                    "pool_sizes": [2, 3],
                    "max_words": 2,
                    "n_startup_trials": 2,
                    "train_shares": [0.5, 1.0],
                    "heartbeat_grace_s": 4,
                },
            }
        ],  # a killed trial is re-run within seconds
        "seeds": [1],
        "k": 4,
        # no prompts: the task's default prompts are the baselines; these tests are about the study and
        # its ensemble, so the searcher's pick is the job's (the guard has its own tests: test_selection)
        "pick": "unguarded",
        "storage": f"sqlite:///{tmp_path / 'lb.db'}",
        "progress": False,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


def _worker(tmp_path, *args):
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        import miner.search.optuna_search  # registers the searcher before the CLI looks it up
        from miner.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(script), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _study(url):
    names = optuna.get_all_study_names(url)
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=url)


def _wait_for(url, n_complete, proc, timeout=400):  # generous: the CI machine may be loaded
    start = time.time()
    while time.time() - start < timeout:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            names = optuna.get_all_study_names(url)
            if names and len(_study(url).get_trials(states=(TrialState.COMPLETE,))) >= n_complete:
                return
        except Exception:  # the worker may be creating the tables right now
            pass
        time.sleep(0.05)
    raise AssertionError("the worker made no progress")


def _check_trials_against_rows(url, study):
    board = Leaderboard(url)
    every = board.rows()
    keys = [r.prompt_key for r in every]
    assert len(keys) == len(set(keys)), "a prompt was recorded twice"
    # the trials' rows: the hand-written baselines the runner scores first (here the task's default prompts) are not trials
    rows = {r.id: r for r in every if not (r.extra or {}).get("baseline")}
    done = study.get_trials(states=(TrialState.COMPLETE,))
    for t in done:  # no finished trial lost: each points at its leaderboard row
        row = rows[t.user_attrs["row_id"]]
        assert row.prompt_key == t.user_attrs["prompt_key"]
    return rows, done


@pytest.mark.process
def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path, tiny_dir):
    n_trials = 30  # on an idle machine the tiny model finished 7 trials between two polls
    path, cfg = _config(tmp_path, tiny_dir, n_trials)
    url = cfg["storage"]
    proc = _worker(tmp_path, "run", str(path), "--no-progress")
    try:
        _wait_for(url, 2, proc)
        os.kill(proc.pid, signal.SIGKILL)  # at any moment, also between ask() and the trial's first heartbeat
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    before = {t.number: t for t in _study(url).get_trials(states=(TrialState.COMPLETE,))}
    rows_before = {r.id: r.prompt_key for r in Leaderboard(url).rows() if not (r.extra or {}).get("baseline")}
    assert 2 <= len(before) < n_trials

    assert main(["run", str(path), "--resume", "--no-progress"]) == 0
    study = _study(url)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == n_trials  # continued the same study, to its target, no more
    # a trial the kill interrupted turned stale and was re-run by the resumed worker before it stopped
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    for number, t in before.items():  # the finished trials of the killed run are still there, unchanged
        assert study.trials[number].state == TrialState.COMPLETE and study.trials[number].value == t.value
    rows, done = _check_trials_against_rows(url, study)
    assert {t.user_attrs["prompt_key"] for t in done} == {r.prompt_key for r in rows.values()}
    # The killed run's rows are kept as they were, and the resumed run wrote only new prompts.
    assert all(rows[i].prompt_key == k for i, k in rows_before.items())


@pytest.mark.process
def test_two_workers_share_one_study(tmp_path, tiny_dir):
    # Enough trials that the first worker cannot finish them all before the second has loaded
    # the model and joined (with 10 on the tiny model it sometimes did: the late worker then
    # sees a finished study and starts a fresh one, as a re-run would).
    n_trials = 40
    path, cfg = _config(tmp_path, tiny_dir, n_trials)
    url = cfg["storage"]
    procs = [_worker(tmp_path, "run", str(path), "--no-progress") for _ in range(2)]
    try:
        for p in procs:
            assert p.wait(timeout=500) == 0, p.stderr.read().decode()[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    study = _study(url)  # one study: the second worker joined the first's
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert (
        n_trials <= len(finished) <= n_trials + 1
    )  # both stop at the shared target (two asking at once may add one)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    workers = {t.user_attrs["worker"]["pid"] for t in complete}
    assert workers == {p.pid for p in procs}  # the trials of both are recorded
    rows = {r.id: r for r in Leaderboard(url).rows() if not (r.extra or {}).get("baseline")}
    for t in complete:
        assert rows[t.user_attrs["row_id"]].prompt_key == t.user_attrs["prompt_key"]


def _open(tmp_path, name="s", n_trials=5, started_at=None, resumed=False, seed=0):
    from miner.search._optuna_study import open_study

    return open_study(
        f"sqlite:///{tmp_path / 's.db'}",
        name,
        ["maximize"],
        optuna.samplers.RandomSampler(seed=seed),
        optuna.pruners.NopPruner(),
        n_trials,
        resumed,
        started_at,
        60,
        sampler_for=lambda offset: optuna.samplers.RandomSampler(seed=seed + offset),
    )


def test_the_searcher_uses_only_optunas_public_api():
    """No private attribute (``x._name`` other than on ``self``) and no import from a private module."""
    import ast
    from pathlib import Path

    import miner.search as pkg

    root = Path(pkg.__file__).parent
    found = []
    for path in [root / "optuna_search.py", *sorted(root.glob("_optuna_*.py"))]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                    found.append(f"{path.name}:{node.lineno}: .{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optuna"):
                names = [node.module, *(a.name for a in node.names)]
                found += [
                    f"{path.name}:{node.lineno}: {n}"
                    for n in names
                    if any(p.startswith("_") for p in n.split("."))
                ]
    assert not found


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the simulated killed worker asks directly
def test_an_enqueued_trial_is_taken_first_and_an_unowned_one_is_retried_once(tmp_path):
    from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry

    shared = _open(tmp_path)
    study = shared.study
    study.enqueue_trial({"x": 0.25})
    trial, beat = shared.ask()  # the queue first, as ask() does, then the heartbeat, then the owner record
    beat.stop()
    assert trial.suggest_float("x", 0, 1) == 0.25
    assert study.trials[trial.number].user_attrs["worker"] == {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "trial": trial.number,
    }
    study.tell(trial, 0.25)

    # A worker killed between ask() and its first heartbeat leaves a RUNNING trial that Optuna's
    # heartbeat check never fails (it has no heartbeat); it is failed once it is older than the grace.
    study.enqueue_trial({"x": 0.5})
    orphan = study.ask()  # pops it; nothing follows
    shared.recover()
    assert (
        study.trials[orphan.number].state == TrialState.RUNNING
    )  # young: its worker may be about to record itself
    shared.grace = 0.05
    time.sleep(0.1)
    shared.recover()
    shared.recover()  # a second look (or another worker's) does not retry it twice
    assert study.trials[orphan.number].state == TrialState.FAIL
    waiting = study.get_trials(states=(TrialState.WAITING,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        assert len(waiting) == 1 and Retry.retried_trial_number(waiting[0]) == orphan.number
    retry, beat = shared.ask()  # its parameters come back first, and it gets its own owner record
    beat.stop()
    assert retry.number == waiting[0].number and retry.suggest_float("x", 0, 1) == 0.5
    assert study.trials[retry.number].user_attrs["worker"]["trial"] == retry.number
    study.tell(retry, 0.5)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the simulated killed worker asks directly
def test_a_trial_that_keeps_killing_its_worker_is_given_up(tmp_path):
    from miner.search._optuna_study import MAX_RETRY

    shared = _open(tmp_path)
    shared.grace = 0.01
    study = shared.study
    study.enqueue_trial({"x": 0.5})
    for _ in range(MAX_RETRY + 1):  # each time its worker dies before the first heartbeat
        study.ask()
        time.sleep(0.02)
        shared.recover()
    assert [t.state for t in study.trials] == [TrialState.FAIL] * (MAX_RETRY + 1)


def test_a_late_worker_joins_a_study_finished_after_its_run_started_and_a_rerun_starts_afresh(tmp_path):
    launched = time.time()  # our run started (then it loaded its model: slow)
    other = _open(tmp_path, "a", 2)
    assert other.created
    first = []
    for _ in range(2):  # meanwhile another worker finishes study 'a'
        trial, beat = other.ask()
        beat.stop()
        first.append(trial.suggest_float("x", 0, 1))
        other.study.tell(trial, first[-1])
    joined = _open(tmp_path, "a", 2, launched)
    assert (
        joined.study_name == "a" and not joined.created
    )  # finished after our run started: launched beside it, we join
    assert _open(tmp_path, "a", 2, launched, resumed=True).study_name == "a"
    rerun = _open(tmp_path, "a", 2, time.time() + 1)
    assert (
        rerun.study_name == "a-2" and rerun.created
    )  # a run started after it finished is a re-run: a fresh study
    assert _open(tmp_path, "a", 2, None).study_name == "a-2"  # no start time known: as a re-run
    # The re-run repeats the first run's draws (the same seed); a worker joining a study draws its own.
    trial, beat = rerun.ask()
    beat.stop()
    assert trial.suggest_float("x", 0, 1) == first[0]
    trial, beat = joined.ask()
    beat.stop()
    assert trial.suggest_float("x", 0, 1) not in first


def test_a_worker_arriving_while_the_last_trials_are_in_flight_joins(tmp_path):
    other = _open(tmp_path, "a", 2)
    for v in (0.1, 0.2):
        trial, beat = other.ask()
        beat.stop()
        other.study.tell(trial, v)
    in_flight, beat = other.ask()  # a third trial (a retry, or two workers that asked at once) still running
    try:
        assert (
            _open(tmp_path, "a", 2, time.time() + 1).study_name == "a"
        )  # the study is not done: no re-run yet
    finally:
        beat.stop()
    other.study.tell(in_flight, 0.3)
    assert _open(tmp_path, "a", 2, time.time() + 1).study_name == "a-2"


def test_the_runner_gives_searchers_the_time_its_run_started(tmp_path, tiny_dir, monkeypatch):
    # The late-joiner rule needs the run's start, before the (slow) model load, not a module import time.
    import miner.runner as runner
    from miner.search import _optuna_study as st

    seen, loads = [], []
    real_open, real_load = st.open_study, runner.load_backend
    monkeypatch.setattr(st, "open_study", lambda *a, **k: seen.append(a[7]) or real_open(*a, **k))
    import miner.search._optuna_run as orun

    monkeypatch.setattr(orun, "open_study", st.open_study)
    monkeypatch.setattr(
        runner, "load_backend", lambda *a, **k: loads.append(time.time()) or real_load(*a, **k)
    )
    path, cfg = _config(tmp_path, tiny_dir, 2)
    before = time.time()
    assert main(["run", str(path), "--no-progress"]) == 0
    assert len(seen) == 1 and before <= seen[0] <= loads[0]


@pytest.mark.slow  # an end-to-end run of several seconds: outside the fast tier
def test_ensemble_of_the_top_trials_is_the_jobs_pick(tmp_path, tiny_dir):
    """ensemble_top: the study's best trials, averaged, are proposed last, tested, exported and resumed as the pick."""
    from miner.export import export_best, load_exported
    from miner.prompts import PromptEnsemble
    from miner.search._optuna_run import top_trials
    from miner.tasks import TaskSpec, load_task

    path, cfg = _config(tmp_path, tiny_dir, 6)
    cfg["searchers"][0]["params"].update(ensemble_top=3, pruner="none", train_shares=[1.0])
    path.write_text(yaml.safe_dump(cfg))
    url = cfg["storage"]
    assert main(["run", str(path), "--no-progress"]) == 0
    board = Leaderboard(url)
    rows = board.rows(order="time")
    ens_row = rows[0]
    assert "ensemble" in ens_row.prompt and ens_row.extra["pick"] is True
    study = _study(url)
    top = top_trials(study, 3)
    # the runner's ensemble (ensemble_top is an alias of ensemble.top): its members are the top trials' rows
    assert ens_row.extra["ensemble"]["members"] == [t.user_attrs["row_id"] for t in top]
    assert [m["template"] for m in ens_row.prompt["ensemble"]] == [
        t.user_attrs["prompt"]["template"] for t in top
    ]
    assert board.picks()[ens_row.extra["job_key"]]["evaluation_id"] == ens_row.id
    # the members are the best trials by (dev, dev log-likelihood, train)
    singles = sorted(
        (r for r in rows if "ensemble" not in r.prompt),
        reverse=True,
        key=lambda r: (r.dev_score, r.dev_loglik, r.train_score, -r.id),
    )
    assert [t.user_attrs["prompt_key"] for t in top] == [r.prompt_key for r in singles[:3]]
    # the pick gets the test score (test_top: 1), not the single trial with the best dev score; of the
    # single prompts only the best hand-written one (the guard's comparison, a baseline row) is tested too
    assert ens_row.test_score is not None
    assert all(r.test_score is None for r in singles if not (r.extra or {}).get("baseline"))
    assert sum(r.test_score is not None for r in singles) <= 1
    out = tmp_path / "best.json"
    ex = export_best(url, task="rotten_tomatoes", out=out)
    assert isinstance(ex.prompt, PromptEnsemble) and ex.leaderboard["row_id"] == ens_row.id
    back = load_exported(out)
    data = load_task(TaskSpec(source="builtin", name="rotten_tomatoes", max_test=8), 4, 1)
    from miner.models import load_backend

    res = Scorer(load_backend(str(tiny_dir)), progress=False).score(back.prompt, data.test)
    assert res.metrics["accuracy"] == pytest.approx(
        ens_row.test_score
    )  # the exported ensemble re-scores the same
    assert main(["predict", "--prompt", str(out), "--text", "A gem.", "--text", "A mess."]) == 0
    # resuming the finished job writes nothing new and keeps the ensemble as the pick
    assert main(["run", str(path), "--resume", "--no-progress"]) == 0
    assert len(Leaderboard(url).rows()) == len(rows)
    assert Leaderboard(url).best(task="rotten_tomatoes", model=str(tiny_dir)).id == ens_row.id


def test_ensemble_top_must_not_be_negative(causal, data):
    with pytest.raises(ConfigError, match="ensemble_top"):
        run_searcher(OptunaSearcher(ensemble_top=-1), causal, data)


@pytest.mark.slow  # an end-to-end run of several seconds: outside the fast tier
def test_turning_on_the_ensemble_for_a_finished_job_adds_only_the_ensemble(tmp_path, tiny_dir):
    """ensemble_top is not part of the job key: --resume finds the finished study and proposes just the ensemble."""
    path, cfg = _config(tmp_path, tiny_dir, 4)
    cfg["searchers"][0]["params"].update(pruner="none", train_shares=[1.0])
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--no-progress"]) == 0
    url = cfg["storage"]
    before = {r.id for r in Leaderboard(url).rows()}
    n_trials = len(_study(url).trials)
    cfg["searchers"][0]["params"]["ensemble_top"] = 2
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--resume", "--no-progress"]) == 0
    rows = Leaderboard(url).rows()
    new = [r for r in rows if r.id not in before]
    assert len(new) == 1 and "ensemble" in new[0].prompt and new[0].extra["pick"]
    assert len(_study(url).trials) == n_trials  # no new trial
    assert Leaderboard(url).best(task="rotten_tomatoes", model=str(tiny_dir)).id == new[0].id
