"""The runner's selection: ranking rules, the do-no-harm guard, the ensemble, and what they may read."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from miner import selection
from miner.prompts import Prompt, PromptEnsemble
from miner.runner import _Ranking, run_searcher
from miner.scoring import Cost, Scorer
from miner.search import Evaluation, Searcher, SplitScore
from miner.search.manual import ManualSearcher
from miner.testing.conformance import seed_prompts
from miner.testing.tiny import tiny_causal


@pytest.fixture(scope="module")
def causal():
    return tiny_causal()


@pytest.fixture(scope="module")
def data():
    from miner.tasks import TaskSpec, load_task

    return load_task(TaskSpec(source="builtin", name="rotten_tomatoes", max_test=8), 4, 13)


# -- the guard ---------------------------------------------------------------------------------------


def _vectors(n: int, base_right: int, cand_extra: int, seed: int = 0):
    """Predictions on ``n`` binary examples: the baseline right on ``base_right``, the candidate on those
    plus ``cand_extra`` more (a paired advantage of exactly ``cand_extra`` examples)."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 2, n)
    order = rng.permutation(n)
    base, cand = 1 - gold, 1 - gold
    base[order[:base_right]] = gold[order[:base_right]]
    cand[order[: base_right + cand_extra]] = gold[order[: base_right + cand_extra]]
    return cand, base, gold


def test_guard_keeps_the_manual_prompt_when_the_advantage_is_noise():
    cand, base, gold = _vectors(64, 40, 1)  # +1 example out of 64
    g = selection.paired_bootstrap(cand, base, gold, seed=3)
    assert g.advantage == pytest.approx(1 / 64) and g.discordant == (1, 0)
    assert not g.passed and g.lower <= 0


def test_guard_keeps_the_manual_prompt_when_wins_and_losses_cancel_out():
    gold = np.zeros(64, dtype=int)
    base = np.r_[np.zeros(40), np.ones(24)].astype(int)
    cand = base.copy()
    cand[40:50] = 0  # 10 wins
    cand[:8] = 1  # 8 losses: +2 of 64
    g = selection.paired_bootstrap(cand, base, gold, seed=0)
    assert g.discordant == (10, 8) and not g.passed


def test_guard_takes_the_candidate_when_the_advantage_is_real():
    cand, base, gold = _vectors(64, 40, 12)
    g = selection.paired_bootstrap(cand, base, gold, seed=3)
    assert g.passed and g.lower > 0.05
    assert "bound" in g.describe() and "> 0" in g.describe()


def test_guard_is_seeded():
    cand, base, gold = _vectors(64, 30, 4)
    a = selection.paired_bootstrap(cand, base, gold, seed=7)
    b = selection.paired_bootstrap(cand, base, gold, seed=7)
    assert a == b


# -- ranking -----------------------------------------------------------------------------------------


def _ev(train_preds, dev_preds, gold_train, gold_dev, *, baseline=False, name="t", fold=None):
    def split(preds, gold):
        preds, gold = np.asarray(preds), np.asarray(gold)
        acc = float(np.mean(preds == gold))
        return SplitScore(acc, {"accuracy": acc}, -0.5, len(gold), tuple(int(x) for x in preds))

    p = Prompt.create("{sentence} " + name + " {answer}", {"negative": "bad", "positive": "good"})
    train = split(train_preds, gold_train) if train_preds is not None else None
    return Evaluation(p, train, split(dev_preds, gold_dev), Cost(), baseline=baseline, fold=fold)


def test_pooled_ranks_by_the_bound_of_train_and_dev(data):
    gt = np.array([e.label for e in data.train])
    gd = np.array([e.label for e in data.dev])
    lucky = _ev(1 - gt, gd, gt, gd, name="lucky")  # dev 100%, train 0%
    steady = _ev(gt, np.where(np.arange(len(gd)) < 2, 1 - gd, gd), gt, gd, name="steady")  # 100% / 75%
    dev_rank = _Ranking(data, "dev", None, True)
    pooled = _Ranking(data, "pooled", None, True)
    assert dev_rank.key(lucky) > dev_rank.key(steady)
    assert pooled.key(steady) > pooled.key(lucky)
    n = len(gt) + len(gd)
    score = (len(gt) + len(gd) - 2) / n
    assert pooled.key(steady)[0] == pytest.approx(selection.wilson_lower(score, n))
    # the bound is lower for the same score on fewer examples
    assert selection.wilson_lower(0.9, 16) < selection.wilson_lower(0.9, 64) < 0.9


def test_kfold_ranks_a_candidate_on_its_held_out_fold_only(causal, data):
    """By construction: what each fold's searcher was given as train never ranks its candidates."""
    seen: list[tuple[set[str], set[str]]] = []

    @dataclass
    class Recorder(Searcher):
        name: ClassVar[str] = "test-recorder"
        summary: ClassVar[str] = "records the examples it is given"
        fits_on_train: ClassVar[bool | None] = True

        def search(self, context, evaluate):
            seen.append(
                (
                    {e.fields["sentence"] for e in context.task.train},
                    {e.fields["sentence"] for e in context.task.dev},
                )
            )
            evaluate([seed_prompts(context.label_names)[len(seen) % 2]])

    res = run_searcher(
        Recorder(),
        causal,
        data,
        prompts=seed_prompts(data.label_names),
        selection={"rule": "kfold", "folds": 4},
    )
    pool = (*data.train, *data.dev)
    texts = [e.fields["sentence"] for e in pool]
    assert len(seen) == 4
    assert set().union(*(dev for _, dev in seen)) == set(texts)  # every labelled example held out once
    folds = selection.stratified_folds([e.label for e in pool], 4, data.seed)
    rank = _Ranking(data, "kfold", folds, True)
    fold_evs = [e for e in res.evaluations if e.fold is not None]
    assert sorted(e.fold for e in fold_evs) == [0, 1, 2, 3]
    for ev in fold_evs:
        train_texts, dev_texts = seen[ev.fold]
        assert not train_texts & dev_texts
        ranked_on = {texts[i] for i in np.flatnonzero(rank.pool_preds(ev) >= 0)}
        assert ranked_on == dev_texts and not ranked_on & train_texts
    assert res.decision is not None and res.decision.rule == "kfold"


class _NoTest(tuple):
    """A test split that fails the moment anything looks at it."""

    def _fail(self, *a, **k):
        raise AssertionError("selection read the test split")

    __len__ = __iter__ = __getitem__ = __bool__ = __contains__ = _fail  # type: ignore[assignment]


def test_selection_never_reads_test(causal, data):
    guarded = dataclasses.replace(data, test=_NoTest())
    res = run_searcher(
        ManualSearcher(with_calibration=True),
        causal,
        guarded,
        prompts=seed_prompts(data.label_names),
        selection={"rule": "pooled"},
        ensemble={"top": 3, "weights": "learned"},
    )
    assert res.decision is not None and res.decision.ensemble is not None and res.best is not None


# -- the ensemble ------------------------------------------------------------------------------------


def test_learned_weights_reproduce_the_maximum_likelihood_mixture():
    # 3 examples where member A gives the gold label 0.8 (B 0.2), 1 where it is the other way round:
    # the log-likelihood 3 log(0.2 + 0.6 w) + log(0.8 - 0.6 w) peaks at w = (0.8*3 - 0.2) / (0.6*4).
    a = np.log(np.array([[0.2, 0.8]] * 3 + [[0.8, 0.2]]))
    b = np.log(np.array([[0.8, 0.2]] * 3 + [[0.2, 0.8]]))
    gold = np.array([1, 1, 1, 1])
    w = selection.learn_weights([a, b], gold, steps=500)
    assert w.sum() == pytest.approx(1.0)
    assert w[0] == pytest.approx((0.8 * 3 - 0.2) / (0.6 * 4), abs=2e-3)
    # symmetric members get equal weights
    w2 = selection.learn_weights([a, a[::-1].copy()], np.array([1, 0, 1, 1]), steps=10)
    assert len(w2) == 2


def test_weighted_ensemble_round_trips_and_scores_by_its_weights(causal, data):
    from miner._exportfile import build_prompt

    a, b = seed_prompts(data.label_names)[:2]
    ens = PromptEnsemble((a, b), weights=(0.75, 0.25))
    back = Prompt.from_dict(ens.to_dict(), data.label_names)
    assert back == ens and back.key == ens.key != PromptEnsemble((a, b)).key
    from pathlib import Path

    assert build_prompt(ens.to_dict(), data.label_names, data.text_fields, Path("x.json")) == ens
    scorer = Scorer(causal, progress=False)
    ra, rb = scorer.score(a, data.dev), scorer.score(b, data.dev)
    before = scorer.counter.snapshot().forward_passes
    got = selection.score(scorer, ens, data.dev)
    assert scorer.counter.snapshot().forward_passes == before  # members cached: no new pass
    want = np.log(0.75 * np.exp(ra.scores) + 0.25 * np.exp(rb.scores))
    np.testing.assert_allclose(got.scores, want, atol=1e-5)
    # the scorer itself applies the weights (export, predict and the bench call it directly)
    direct = scorer.score(ens, data.dev)
    np.testing.assert_allclose(direct.scores, want, atol=1e-5)
    assert direct.metrics == got.metrics
    assert not np.allclose(direct.scores, scorer.score(PromptEnsemble((a, b)), data.dev).scores, atol=1e-4)
    uniform = scorer.score(PromptEnsemble((a, b)), data.dev)
    np.testing.assert_allclose(
        selection.score(scorer, PromptEnsemble((a, b), weights=(0.5, 0.5)), data.dev).scores,
        uniform.scores,
        atol=1e-5,
    )
    with pytest.raises(Exception, match="sum to 1"):
        PromptEnsemble((a, b), weights=(0.5, 0.6))


@dataclass
class _Looper(Searcher):
    """Proposes distinct prompts (one template, many verbalizers) until the budget says stop."""

    name: ClassVar[str] = "test-looper"
    summary: ClassVar[str] = "proposes until the budget ends it"

    def search(self, context, evaluate):
        words = [
            "bad",
            "good",
            "great",
            "awful",
            "fine",
            "poor",
            "nice",
            "dull",
            "fun",
            "sad",
            "grim",
            "neat",
        ]
        pairs = [(x, y) for x in words for y in words if x != y]
        for i in range(10_000):  # endless, for a budget to end: new templates once the words run out
            x, y = pairs[i % len(pairs)]
            template = (
                "{sentence} It was {answer}" if i < len(pairs) else f"{i}. {{sentence}} It was {{answer}}"
            )
            evaluate([Prompt.create(template, {"negative": x, "positive": y}, context.label_names)])


def test_the_ensemble_is_built_when_the_time_budget_ends_the_search(causal, data, monkeypatch):
    from miner.runner import Budget

    # The clock runs out after the searcher's 12th evaluation, however loaded the machine is.
    monkeypatch.setattr(Budget, "seconds_left", property(lambda self: 1.0 if self.evaluations < 12 else 0.0))
    res = run_searcher(
        _Looper(),
        causal,
        data,
        prompts=seed_prompts(data.label_names),
        budget={"max_seconds": 4.0},
        ensemble={"top": 3},
    )
    d = res.decision
    assert res.stopped_by_budget and "max_seconds" in res.stopped_by_budget
    assert d is not None and d.ensemble is not None, d.ensemble_note if d else None
    assert d.unguarded is d.ensemble and d.ensemble.cost.forward_passes == 0  # from cached scores
    assert len([e for e in res.evaluations if not e.baseline]) == 12 + 1  # the searcher's, and the ensemble
    assert len(d.ensemble.prompt.members) == 3
    assert d.guarded in (d.ensemble, d.manual)


def test_the_ensemble_is_reserved_under_max_evaluations(causal, data):
    res = run_searcher(
        _Looper(),
        causal,
        data,
        prompts=seed_prompts(data.label_names),
        budget={"max_evaluations": 6},
        ensemble={"top": 2},
    )
    assert len(res.evaluations) == 6  # baselines + the searcher's + the ensemble, within the budget
    assert res.decision is not None and res.decision.ensemble is not None


def test_without_hand_written_prompts_the_pick_is_unguarded_and_says_so(causal, data):
    res = run_searcher(_Looper(), causal, data, budget={"max_evaluations": 4})
    d = res.decision
    assert d is not None and d.manual is None and d.pick is d.unguarded is not None
    assert "no hand-written prompts" in d.reason


def test_resume_of_a_guarded_job_gives_the_same_pick(make_config, tmp_path):
    from miner.cli import main
    from miner.leaderboard import Leaderboard

    path, cfg = make_config(seeds=[1], ensemble={"top": 3, "weights": "learned"})
    assert main(["run", str(path), "--no-progress"]) == 0
    board = Leaderboard(cfg["storage"])
    rows = board.rows()
    picks = board.picks()
    assert len(picks) == 1
    (decision,) = picks.values()
    assert set(decision["roles"]) == {"guarded", "unguarded", "manual"}
    tested = {r.id for r in rows if r.test_score is not None}
    assert {i for i in decision["roles"].values() if i is not None} <= tested  # each role has a test score
    best = board.best(task="rotten_tomatoes", model=cfg["model"]["name"])
    assert best is not None and best.id == decision["evaluation_id"] and best.extra["pick_reason"]
    assert main(["run", str(path), "--resume", "--no-progress"]) == 0
    board2 = Leaderboard(cfg["storage"])
    assert len(board2.rows()) == len(rows) and board2.picks() == picks
    assert len({r.id for r in board2.rows() if r.test_score is not None}) == len(tested)


def test_config_takes_selection_pick_and_ensemble():
    from miner.config import parse_config
    from miner.errors import ConfigError

    cfg = parse_config(
        {
            "selection": {"rule": "kfold", "folds": 2},
            "pick": "unguarded",
            "ensemble": {"top": 5, "weights": "learned"},
        }
    )
    assert cfg.selection.folds == 2 and cfg.pick == "unguarded" and cfg.ensemble.weights == "learned"
    for bad in (
        {"ensemble": {"top": 1}},
        {"selection": {"rule": "test"}},
        {"pick": "best"},
        {"selection": {"folds": 1}},
    ):
        with pytest.raises(ConfigError):
            parse_config(bad)


def test_guard_timing_is_cheap():
    cand, base, gold = _vectors(64, 40, 3)
    t = time.perf_counter()
    selection.paired_bootstrap(cand, base, gold)
    assert time.perf_counter() - t < 0.5
