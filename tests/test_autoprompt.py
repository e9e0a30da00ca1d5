"""The ``autoprompt`` searcher: conformance, gradient/candidate machinery, CLI end to end (tiny models)."""

import numpy as np
import pytest
import torch
import yaml

from miner.config import BudgetSpec
from miner.errors import ConfigError
from miner.prompts import Prompt, parse_template
from miner.runner import Budget, run_searcher
from miner.scoring import Cost, Scorer, TriggerScorer, gradient_prompt, soft_template, trigger_gradient
from miner.search import Evaluation, SearchContext
from miner.search._base import SplitScore
from miner.search._hotflip import (
    allowed_tokens,
    candidate_objectives,
    hotflip_topk,
    objective_from_raw,
    objective_gradient,
    objective_loss,
    round_trips,
    sample_candidates,
)
from miner.search.autoprompt import AutoPromptSearcher
from miner.testing.conformance import SearcherConformance

SMALL = dict(steps=3, batch_size=4, n_candidates=4, top_k=8, eval_every=1)
VERB = {"negative": ["terrible"], "positive": ["great"]}


@pytest.fixture(scope="module")
def causal():
    from miner.testing.tiny import tiny_causal

    return tiny_causal()


@pytest.fixture(scope="module")
def data():
    from miner.tasks import TaskSpec, load_task

    return load_task(TaskSpec(source="builtin", name="rotten_tomatoes", max_test=16), 4, 13)


class TestAutoPrompt(SearcherConformance):
    budget = BudgetSpec(max_evaluations=6, max_forward_passes=40)

    @pytest.fixture
    def searcher(self):
        return AutoPromptSearcher(**SMALL)


# Text before the triggers (the KV-cache path): contiguous triggers, and split triggers with a
# multi-token label word.
KV_TEMPLATES = [
    ("{sentence} {trigger:3} It was {answer}", VERB),
    (
        "Review: {sentence}\n{trigger:2}Sentiment:{trigger} {answer}",
        {"negative": ["terrible", "not good at all"], "positive": ["great"]},
    ),
]


def _prompt(tpl, n, verb=VERB, labels=("negative", "positive")):
    return Prompt.create(tpl, verb, labels, triggers=(262,) * n)


def test_soft_template_rewrites_triggers_only():
    tpl = parse_template("a {{x}} {sentence} {trigger:3} b {answer}.")
    assert soft_template(tpl) == "a {{x}} {sentence} {soft}{soft}{soft} b {answer}."
    assert parse_template(soft_template(tpl)).n_soft == 3


@pytest.mark.parametrize("tpl,verb", KV_TEMPLATES)
def test_kv_cache_path_equals_pooled_scoring(causal, data, tpl, verb):
    """Candidates scored with the shared text KV cache give the scorer's own numbers, in fewer passes."""
    n = parse_template(tpl).n_triggers
    p = _prompt(tpl, n, verb)
    kv = TriggerScorer(Scorer(causal, progress=False), p)
    pooled = TriggerScorer(Scorer(causal, progress=False), p, kv_cache=False)
    assert kv.kv_path and not pooled.kv_path
    rng = np.random.default_rng(0)
    cands = [tuple(int(x) for x in rng.integers(300, 5000, n)) for _ in range(5)]
    # single swaps of the first candidate at every position: rows that start at a later trigger
    cands += [
        cands[0][:j] + (int(t),) + cands[0][j + 1 :] for j in range(n) for t in rng.integers(300, 5000, 2)
    ]
    ex = list(data.train)
    planned, bound = kv.plan(cands, ex), kv.plan(len(cands), ex)
    a, b = candidate_objectives(kv, cands, ex, "vocab"), candidate_objectives(pooled, cands, ex, "vocab")
    np.testing.assert_allclose(a, b, atol=1e-4)
    # the planner is exact for the KV path given the candidates, else an upper bound; an upper
    # bound for the pooled one
    assert kv.scorer.counter.total.forward_passes == planned <= bound
    assert pooled.scorer.counter.total.forward_passes <= pooled.plan(len(cands), ex)
    # a second call finds the texts in the scorer's stem cache: the same scores, fewer tokens
    c = kv.scorer.counter
    before, replanned = c.snapshot(), kv.plan(cands, ex)
    np.testing.assert_allclose(candidate_objectives(kv, cands, ex, "vocab"), a, atol=1e-5)
    again = c.snapshot() - before
    assert again.forward_passes == replanned and again.tokens < c.total.tokens - again.tokens
    assert kv.scorer.stems.hits > 0
    # and the objective is the summed gold label log-prob the scorer reports
    raw = Scorer(causal, progress=False).score(p.with_(triggers=cands[0]), ex).raw
    gold = np.array([e.label for e in ex])
    assert a[0] == pytest.approx(raw[np.arange(len(ex)), gold].sum(), abs=1e-4)


@pytest.mark.parametrize("tpl,verb", KV_TEMPLATES)
def test_kv_gradient_equals_the_full_sequence_gradient(causal, data, tpl, verb):
    """The text's KV cache without autograd + gradient rows: the same gradient and loss, fewer tokens."""
    n = parse_template(tpl).n_triggers
    p = _prompt(tpl, n, verb)
    ex = list(data.train)
    full_scorer, kv = Scorer(causal, progress=False), TriggerScorer(Scorer(causal, progress=False), p)
    trig = (300, 777, 1234)[:n]
    g_full, l_full = trigger_gradient(full_scorer, p.with_(triggers=trig), ex, objective_loss(ex, "vocab"))
    planned = kv.plan_gradient(ex)
    g_kv, l_kv = objective_gradient(kv, trig, ex, "vocab")
    assert l_kv == pytest.approx(l_full, abs=1e-5)
    torch.testing.assert_close(g_kv, g_full, atol=1e-5, rtol=1e-4)
    c = kv.scorer.counter.total
    assert c.forward_passes == planned and c.backward_passes == 1
    assert all(q.grad is None and not q.requires_grad for q in causal.model.parameters())
    # the texts are now in the stem cache: a second gradient runs only the trigger rows
    replanned = kv.plan_gradient(ex)
    assert replanned < planned
    g2, l2 = objective_gradient(kv, trig, ex, "vocab")
    torch.testing.assert_close(g2, g_kv, atol=1e-6, rtol=1e-5)
    assert c.forward_passes == planned + replanned and c.backward_passes == 2


def test_gradient_touches_triggers_only(causal, data):
    p = _prompt("{sentence} {trigger:3} {answer}", 3)
    scorer = Scorer(causal, progress=False)
    grad, loss = trigger_gradient(scorer, p, list(data.train), objective_loss(list(data.train), "vocab"))
    assert grad.shape == (3, causal.input_embeddings().shape[1]) and grad.abs().sum() > 0 and loss > 0
    assert all(q.grad is None and not q.requires_grad for q in causal.model.parameters())
    assert scorer.counter.total.backward_passes == 1 and scorer.counter.total.forward_passes == 1
    # first-order check: a small step against the gradient lowers the loss
    E = causal.input_embeddings()
    soft = E[list(p.triggers)].detach().clone()
    gold = torch.as_tensor([e.label for e in data.train])

    def loss_at(x):
        with torch.no_grad():
            raw = scorer.label_logprobs(gradient_prompt(p), list(data.train), soft_embeds=x)
        return float(-objective_from_raw(raw, gold, "vocab").mean())

    assert loss_at(soft - 1e-2 * grad / grad.norm()) < loss_at(soft)


def test_vocabulary_filter_and_candidates(causal, data):
    p = _prompt("{sentence} {trigger:3} {answer}", 3)
    allowed = allowed_tokens(causal, p)
    tok = causal.tokenizer
    for t in tok.all_special_ids + list(causal.tokenize(" great")) + list(causal.tokenize(" terrible")):
        assert not allowed[t]
    assert allowed[causal.tokenize(" movie")[0]]
    assert not allowed[causal.tokenize(" Movie")[0]]  # capitalised words are off by default
    assert allowed_tokens(causal, p, allow_capitalized=True)[causal.tokenize(" Movie")[0]]
    assert not allowed[causal.tokenize("!")[0]]  # words only
    grad = torch.randn(3, causal.input_embeddings().shape[1])
    topk = hotflip_topk(grad, causal.input_embeddings(), allowed, 16)
    assert topk.shape == (3, 16) and bool(allowed[topk].all())
    expected = (-(grad @ causal.input_embeddings().T)).masked_fill(~allowed, -float("inf")).argmax(-1)
    assert torch.equal(topk[:, 0], expected)
    cands = sample_candidates(p.triggers, topk, 12, np.random.default_rng(0), causal)
    assert len(cands) == len(set(cands)) == 12 and p.triggers not in cands
    assert all(sum(a != b for a, b in zip(c, p.triggers)) == 1 for c in cands)
    assert {next(i for i, (a, b) in enumerate(zip(c, p.triggers)) if a != b) for c in cands} == {
        0,
        1,
        2,
    }  # spread
    assert all(round_trips(causal, c) for c in cands)


def test_batched_vocabulary_round_trip_equals_one_token_at_a_time(causal):
    """The vocabulary filter tokenizes all decoded tokens in one batch: the same as one call per token."""
    from miner.search._hotflip import _token_info

    texts, ok = _token_info(causal)
    assert len(texts) == causal.vocab_size and 0 < int(ok.sum()) < len(ok)
    ids = np.random.default_rng(0).choice(causal.vocab_size, 3000, replace=False).tolist()
    ids += [int(i) for i in causal.tokenizer.all_special_ids]
    for i in ids:
        assert texts[i] == causal.decode([i])
        assert bool(ok[i]) == (bool(texts[i]) and round_trips(causal, [i])), (i, texts[i])
    sample = [texts[i] for i in ids] + ["", " movie", "Hello world"]
    assert causal.tokenize_many(sample) == [causal.tokenize(t) for t in sample]


def test_search_finds_round_tripping_triggers_and_records_them(causal, data):
    res = run_searcher(
        AutoPromptSearcher(steps=4, batch_size=4, n_candidates=6, top_k=8, eval_every=1, patience=0),
        causal,
        data,
        budget={"max_forward_passes": 60},
    )
    assert len(res.evaluations) >= 2
    for ev in res.evaluations:
        assert round_trips(causal, ev.prompt.triggers)
        assert ev.prompt.meta["trigger_text"] == causal.decode(ev.prompt.triggers)
        assert ev.dev is not None
    assert res.cost.backward_passes >= 1 and res.cost.forward_passes <= 60
    assert res.evaluations[0].prompt.template == "{sentence} {trigger:5} {answer}"


def test_initial_trigger_options(causal, data):
    ctx = SearchContext(task=data.without_test(), backend=causal, scorer=None, seed=1)
    p = AutoPromptSearcher(
        template="{sentence} {trigger:3} {answer}", init="Sentiment:", verbalizer=VERB
    ).initial_prompt(ctx)
    assert p.triggers == causal.tokenize("Sentiment:") and p.verbalizer.words == (("terrible",), ("great",))
    r = AutoPromptSearcher(init="random").initial_prompt(ctx)
    assert len(set(r.triggers)) > 1 and r.verbalizer.words == (("negative",), ("positive",))
    with pytest.raises(ConfigError, match="init"):
        AutoPromptSearcher(template="{sentence} {trigger:2} {answer}", init="a b c d e").initial_prompt(ctx)
    with pytest.raises(ConfigError, match="trigger"):
        AutoPromptSearcher(template="{sentence} {answer}").initial_prompt(ctx)


@pytest.mark.slow  # an end-to-end run of several seconds: outside the fast tier
@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_cli_run_export_rescore(tmp_path, kind):
    """`miner run` with searcher autoprompt writes its candidates; the exported best re-scores identically
    (causal LM: KV-cache path; masked LM: pooled candidates)."""
    from miner.testing.tiny import tiny_causal, tiny_masked

    model = tiny_causal() if kind == "causal" else tiny_masked()
    from miner.cli import main
    from miner.export import load_exported
    from miner.leaderboard import Leaderboard
    from miner.models import load_backend
    from miner.tasks import TaskSpec, load_task

    d = tmp_path / "tiny"
    model.model.save_pretrained(d)
    model.tokenizer.save_pretrained(d)
    db = f"sqlite:///{tmp_path / 'lb.db'}"
    cfg = {
        "task": {"source": "builtin", "name": "rotten_tomatoes", "max_test": 16},
        "model": {"name": str(d)},
        "prompts": [
            {
                "template": "{sentence} It was {answer}",
                "verbalizer": {"negative": "terrible", "positive": "great"},
            }
        ],
        "searchers": [
            {
                "name": "autoprompt",
                "params": {
                    **SMALL,
                    "template": "{sentence} {trigger:3} It was {answer}",
                    "objective": "vocab",
                },
            }
        ],  # moves in 3 steps on this tiny model
        "seeds": [3],
        "k": 4,
        "storage": db,
        "progress": False,
        "budget": {"max_forward_passes": 30},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 0
    rows = Leaderboard(db).rows(task="rotten_tomatoes", searcher="autoprompt")
    assert len(rows) >= 2 and all(r.prompt.get("triggers") for r in rows)
    out = tmp_path / "best.json"
    assert main(["export", "--storage", db, "--task", "rotten_tomatoes", "-o", str(out)]) == 0
    ex = load_exported(out)
    best = Leaderboard(db).best(task="rotten_tomatoes", model=str(d))
    data = load_task(TaskSpec(**cfg["task"]), 4, 3)
    reloaded = load_backend(str(d))
    assert reloaded.kind == kind
    res = Scorer(reloaded, progress=False).score(ex.prompt, data.dev)
    assert res.metrics["accuracy"] == best.dev_score and res.loglik == pytest.approx(
        best.dev_loglik, abs=1e-6
    )


def test_last_evaluation_is_labelled_with_the_steps_actually_run(causal, data):
    """Stopped by its budget long before ``steps``, the final dev evaluation names the step it stopped at."""
    seen = []
    searcher = AutoPromptSearcher(
        steps=10**6, batch_size=4, n_candidates=4, top_k=8, eval_every=10**6, patience=0, objective="vocab"
    )  # vocab: the trigger moves within this budget on the tiny model
    ctx = SearchContext(
        task=data.without_test(), backend=causal, scorer=Scorer(causal, progress=False), seed=3
    )
    ctx.budget = Budget(BudgetSpec(max_forward_passes=12), ctx.scorer.counter)

    def evaluate(prompts, *, extra=None):
        seen.append(extra["step"])
        return [_fake_eval(p, len(seen)) for p in prompts]

    searcher.search(ctx, evaluate)
    # initial trigger at step 0; the changed trigger once more at the step the budget stopped (not 10**6)
    assert len(seen) == 2 and seen[0] == 0 and 1 <= seen[1] < 12


def test_each_step_is_planned_with_the_budget_view(causal, data):
    """A step asks ``can_afford`` for its planned forward passes and its backward pass, and is not
    started when the answer is no."""
    calls = []

    class OneStep:  # a BudgetView that can pay for one step
        forward_passes_left = backward_passes_left = seconds_left = evaluations_left = float("inf")
        evaluations = 0

        def can_afford(self, forward_passes=0, backward_passes=0, evaluations=0):
            calls.append((forward_passes, backward_passes))
            return len(calls) == 1

    scorer = Scorer(causal, progress=False)
    ctx = SearchContext(task=data.without_test(), backend=causal, scorer=scorer, seed=3, budget=OneStep())
    searcher = AutoPromptSearcher(
        steps=5, batch_size=4, n_candidates=4, top_k=8, eval_every=100, patience=0, screen_dtype="model"
    )
    searcher.search(ctx, lambda prompts, *, extra=None: [_fake_eval(p, 1) for p in prompts])
    assert len(calls) == 2 and calls[0][1] == 1
    spent = scorer.counter.total  # the fake evaluate runs no model: this is the one step's work
    assert spent.backward_passes == 1 and 0 < spent.forward_passes <= calls[0][0]


def _fake_eval(prompt, i):
    return Evaluation(
        prompt=prompt, train=None, dev=SplitScore(0.5, {"accuracy": 0.5}, -float(i), 8), cost=Cost()
    )


def test_screen_dtype_picks_the_backend_for_gradient_and_candidates(causal, monkeypatch):
    import miner.models

    assert AutoPromptSearcher(screen_dtype="model").screen_backend(causal) is causal
    assert AutoPromptSearcher(screen_dtype="float32").screen_backend(causal) is causal  # already float32
    bf16 = AutoPromptSearcher(screen_dtype="bfloat16").screen_backend(causal)
    assert bf16.dtype == torch.bfloat16 and causal.dtype == torch.float32
    assert AutoPromptSearcher(screen_dtype="bfloat16").screen_backend(causal) is bf16  # one copy, kept
    monkeypatch.setattr(miner.models, "cpu_has_native_bf16", lambda: False)
    assert AutoPromptSearcher().screen_backend(causal) is causal
    monkeypatch.setattr(miner.models, "cpu_has_native_bf16", lambda: True)
    assert AutoPromptSearcher().screen_backend(causal) is bf16
    with pytest.raises(ConfigError, match="float16"):
        AutoPromptSearcher(screen_dtype="float16").screen_backend(causal)


@pytest.mark.parametrize("screen", ["model", "bfloat16"])
def test_dev_scores_come_from_the_model_as_loaded(causal, data, screen, tmp_path):
    """Whatever the screening dtype, every recorded dev score is the float32 model's; the search is
    reproducible, and bfloat16 screening charges its passes to the job."""
    kw = dict(
        steps=4,
        batch_size=4,
        n_candidates=6,
        top_k=8,
        eval_every=1,
        patience=0,
        objective="vocab",
        screen_dtype=screen,
    )
    from miner.leaderboard import Leaderboard

    board = Leaderboard(f"sqlite:///{tmp_path / 'lb.db'}")
    runs = [
        run_searcher(
            AutoPromptSearcher(**kw),
            causal,
            data,
            budget={"max_forward_passes": 80},
            board=b,
            run_id=board.start_run({}, {}) if b else "",
        )
        for b in (board, None)
    ]
    assert [e.prompt.triggers for e in runs[0].evaluations] == [
        e.prompt.triggers for e in runs[1].evaluations
    ]
    assert len(runs[0].evaluations) >= 2 and runs[0].cost.backward_passes >= 1
    plain = Scorer(causal, progress=False, stem_cache_mb=0)
    expect = "bfloat16" if screen == "bfloat16" else "float32"
    rows = board.rows(searcher="autoprompt")
    assert len(rows) == len(runs[0].evaluations) and all(r.extra["screen_dtype"] == expect for r in rows)
    for ev in runs[0].evaluations:
        res = plain.score(ev.prompt, data.dev)
        assert ev.dev.score == res.metrics["accuracy"] and ev.dev.loglik == pytest.approx(
            res.loglik, abs=1e-5
        )
