"""``miner.scoring.TriggerScorer``: many trigger candidates scored as ``Scorer.score`` scores each, in the passes planned."""

import numpy as np
import pytest
import torch

from miner.prompts import Prompt, parse_template
from miner.scoring import Scorer, TriggerScorer, trigger_gradient
from miner.tasks import Example
from miner.testing.tiny import tiny_causal, tiny_masked

LABELS = ("negative", "positive")
VERB = {"negative": ["terrible"], "positive": ["great"]}
MULTI = {"negative": ["terrible", "not good at all"], "positive": ["great"]}
EXAMPLES = [
    Example({"sentence": s}, y)
    for s, y in [
        ("a dull, lifeless film", 0),
        ("a warm and funny story", 1),
        ("the plot makes no sense", 0),
        ("one of the best films this year", 1),
        ("boring", 0),
        ("moving, tender and wise", 1),
    ]
]

# (template, verbalizer, path on a causal LM)
CAUSAL = [
    ("{sentence} {trigger:3} It was {answer}", VERB, "kv"),  # triggers after the text, answer at the end
    (
        "Review: {sentence}\n{trigger:2}Sentiment:{trigger} {answer}",
        MULTI,
        "kv",
    ),  # split triggers, a multi-token word
    (
        "{sentence} {trigger:2} It was {answer}.",
        VERB,
        "kv",
    ),  # text after the answer: every word a continuation
    ("{sentence} {answer} {trigger:2}", VERB, "pooled"),  # the answer before the triggers
]
MASKED = [
    ("{sentence} {trigger:3} It was {answer}.", VERB),
    ("{sentence} {trigger:2} It was {answer}.", MULTI),
]


@pytest.fixture(scope="module")
def causal():
    return tiny_causal()


@pytest.fixture(scope="module")
def masked():
    return tiny_masked()


def _candidates(n: int, seed: int = 0) -> list[tuple[int, ...]]:
    """The current trigger, a few random ones, and single swaps of the current one at every position."""
    rng = np.random.default_rng(seed)
    base = tuple(int(x) for x in rng.integers(300, 900, n))
    cands = [base] + [tuple(int(x) for x in rng.integers(300, 900, n)) for _ in range(3)]
    return cands + [base[:j] + (int(t),) + base[j + 1 :] for j in range(n) for t in rng.integers(300, 900, 2)]


def _check(backend, tpl, verb, stem_cache_mb, kv_cache=True):
    n = parse_template(tpl).n_triggers
    cands = _candidates(n)
    prompt = Prompt.create(tpl, verb, LABELS, triggers=cands[0])
    scorer = Scorer(backend, progress=False, stem_cache_mb=stem_cache_mb)
    ts = TriggerScorer(scorer, prompt, kv_cache=kv_cache)
    plain = Scorer(backend, progress=False, stem_cache_mb=0)
    expected = np.stack([plain.score(prompt.with_(triggers=c), EXAMPLES).raw for c in cands])
    counter = scorer.counter
    for _ in range(2):  # the second time the texts' keys and values may come from the stem cache
        planned, bound = ts.plan(cands, EXAMPLES), ts.plan(len(cands), EXAMPLES)
        before = counter.snapshot()
        raw = ts.score(cands, EXAMPLES)
        spent = counter.snapshot() - before
        assert raw.shape == (len(cands), len(EXAMPLES), 2)
        np.testing.assert_allclose(raw.numpy(), expected, atol=1e-5, rtol=0)
        assert spent.forward_passes == planned <= bound
    return ts, scorer


@pytest.mark.parametrize("stem_cache_mb", [1024, 0], ids=["stem-cache", "no-stem-cache"])
@pytest.mark.parametrize(
    "tpl,verb,path", CAUSAL, ids=["contiguous", "split-multi", "text-after-answer", "answer-first"]
)
def test_causal_candidates_score_as_the_scorer(causal, tpl, verb, path, stem_cache_mb):
    ts, scorer = _check(causal, tpl, verb, stem_cache_mb)
    assert ts.kv_path == (path == "kv")
    if path == "kv" and stem_cache_mb:
        assert scorer.stems.hits > 0  # the second call ran on the cached texts


@pytest.mark.parametrize("tpl,verb", [c[:2] for c in CAUSAL[:2]])
def test_causal_candidates_without_the_kv_path(causal, tpl, verb):
    ts, _ = _check(causal, tpl, verb, 1024, kv_cache=False)
    assert not ts.kv_path


@pytest.mark.parametrize("tpl,verb", MASKED)
def test_masked_candidates_score_as_the_scorer(masked, tpl, verb):
    ts, _ = _check(masked, tpl, verb, 1024)
    assert not ts.kv_path


@pytest.mark.parametrize("tpl,verb", [c[:2] for c in CAUSAL[:3]])
def test_kv_gradient_equals_the_whole_sequence_gradient(causal, tpl, verb):
    n = parse_template(tpl).n_triggers
    trig = (300, 777, 1234)[:n]
    prompt = Prompt.create(tpl, verb, LABELS, triggers=trig)
    gold = torch.as_tensor([e.label for e in EXAMPLES])

    def loss(raw):
        return -torch.log_softmax(raw, -1)[torch.arange(len(gold)), gold].mean()

    g_ref, l_ref = trigger_gradient(Scorer(causal, progress=False), prompt, EXAMPLES, loss)
    scorer = Scorer(causal, progress=False)
    ts = TriggerScorer(scorer, prompt)
    assert ts.kv_path
    for i in (1, 2):  # the second time from the stem cache, in fewer passes
        planned = ts.plan_gradient(EXAMPLES)
        before = scorer.counter.snapshot()
        g, value = ts.gradient(trig, EXAMPLES, loss)
        spent = scorer.counter.snapshot() - before
        assert value == pytest.approx(l_ref, abs=1e-5)
        torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-4)
        assert spent.forward_passes == planned and spent.backward_passes == 1
        assert i == 1 or planned == 1
    assert all(q.grad is None and not q.requires_grad for q in causal.model.parameters())


def test_plan_many_is_what_score_many_spends(causal):
    prompts = [
        Prompt.create("{sentence} It was {answer}", VERB, LABELS),
        Prompt.create("{sentence} It was {answer}", {"negative": ["bad"], "positive": ["great"]}, LABELS),
        Prompt.create("{sentence} All in all {answer}", MULTI, LABELS),
    ]
    scorer = Scorer(causal, progress=False, batch_size=4)
    planned = scorer.plan_many(prompts, EXAMPLES)
    assert planned < scorer.plan_many(prompts, EXAMPLES, distinct=True)  # the first two share requests
    assert planned == len(scorer.batches_for(prompts, EXAMPLES))
    before = scorer.counter.snapshot()
    results = scorer.score_many(prompts, EXAMPLES)
    assert (scorer.counter.snapshot() - before).forward_passes == planned
    assert scorer.plan_many(prompts, EXAMPLES) == 0  # all cached now
    np.testing.assert_allclose(
        results[2].raw, Scorer(causal, progress=False).score(prompts[2], EXAMPLES).raw, atol=1e-6
    )
    # one request per example and word, and the plan's entry per example, label and word
    reqs, plan = scorer.requests(prompts[2], EXAMPLES)
    assert len(reqs) == 3 * len(EXAMPLES) and [len(ws) for ws in plan[0]] == [2, 1]
