"""Shared-prefix key/value reuse (miner/scoring/_prefix.py): demonstrations run once per split, and
an example's prompt runs once for all its candidate words, with the scores of whole sequences."""

import numpy as np
import pytest

from miner.prompts import Prompt
from miner.scoring import Scorer
from miner.tasks import Example
from miner.testing.tiny import tiny_causal, tiny_masked

LABELS = ("negative", "positive")
TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "bad.",
    "an utterly charming and hilarious film that reminded me of why i love movies",
    "it's a mess.",
    "the plot is nothing but boilerplate clichés from start to finish",
    "fine",
]
EXAMPLES = [Example({"sentence": t}, i % 2) for i, t in enumerate(TEXTS)]
DEMOS = "".join(
    f"Review: {t}\nSentiment: {w}\n\n"
    for t, w in [
        ("loved it, a delight from start to end, and the cast is wonderful", "great"),
        ("boring and far too long for its own good, with a script that goes nowhere", "terrible"),
    ]
)
SINGLE = {"negative": ["terrible"], "positive": ["great"]}
MULTI = {"negative": ["terrible", "not good at all"], "positive": ["great", "wonderful film"]}


@pytest.fixture(scope="module")
def causal():
    return tiny_causal()


def _pair(be, **kw):
    """A scorer with prefix reuse and one without it, otherwise the same."""
    return Scorer(be, progress=False, **kw), Scorer(be, progress=False, prefix_cache_mb=0, **kw)


@pytest.fixture(params=["left", "right"])
def padding_side(request, causal):
    """The tokenizer's own padding side must not matter: the backend pads itself."""
    tok = causal.tokenizer
    before = tok.padding_side
    tok.padding_side = request.param
    yield request.param
    tok.padding_side = before


@pytest.mark.parametrize(
    "tpl", ["Review: {sentence}\nSentiment: {answer}", "Review: {sentence}\nSentiment: {answer}."]
)
@pytest.mark.parametrize("verb", [SINGLE, MULTI])
@pytest.mark.parametrize("calibrate", [False, True])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_demonstrations_score_as_whole_sequences(causal, padding_side, tpl, verb, calibrate, batch_size):
    p = Prompt.create(DEMOS + tpl, verb, LABELS, calibrate=calibrate)
    on, off = _pair(causal, batch_size=batch_size)
    planned = on.plan(p, EXAMPLES)
    a, b = on.score(p, EXAMPLES), off.score(p, EXAMPLES)
    np.testing.assert_allclose(a.raw, b.raw, atol=1e-5)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
    assert a.cost.forward_passes == planned
    assert a.cost.tokens < b.cost.tokens / 2  # the demonstrations ran once, not once per request


def test_the_prefix_is_charged_once_with_its_tokens(causal):
    p = Prompt.create(DEMOS + "Review: {sentence}\nSentiment: {answer}", MULTI, LABELS)
    s = Scorer(causal, batch_size=4, progress=False)
    reqs = list(dict.fromkeys(s.requests(p, EXAMPLES)[0]))
    shared = {r.prefix for r in reqs}
    assert len(shared) == 1 and (n := shared.pop()) >= 32
    res = s.score(p, EXAMPLES)
    # a continuation's last token scores nothing and is not run (Scorer._run)
    tails = sum(len(r.ids) - n - (r.kind == "cont") for r in reqs)
    assert res.cost.tokens == n + tails
    assert res.cost.sequences == 1 + len(reqs)
    tail_passes = -(-sum(r.kind == "next" for r in reqs) // 4) + -(-sum(r.kind == "cont" for r in reqs) // 4)
    assert res.cost.forward_passes == 1 + tail_passes


def test_a_cached_prefix_is_not_run_or_charged_again(causal):
    tpl = DEMOS + "Review: {sentence}\nSentiment: {answer}"
    s = Scorer(causal, batch_size=4, progress=False)
    first = s.score(Prompt.create(tpl, SINGLE, LABELS), EXAMPLES)
    again = s.score(Prompt.create(tpl, SINGLE, LABELS), EXAMPLES)
    assert again.cost.forward_passes == 0 and again.cost.tokens == 0
    assert again.cost.cache_hits == len(EXAMPLES)
    # new words, the same demonstrations: only the new tails run
    other = Prompt.create(tpl, {"negative": ["awful film"], "positive": ["lovely film"]}, LABELS)
    planned = s.plan(other, EXAMPLES)
    res = s.score(other, EXAMPLES)
    reqs = list(dict.fromkeys(s.requests(other, EXAMPLES)[0]))
    n = reqs[0].prefix
    assert res.cost.forward_passes == planned == -(-len(reqs) // 4)
    assert res.cost.tokens == sum(len(r.ids) - n - (r.kind == "cont") for r in reqs)  # last token not run
    assert first.cost.forward_passes == 1 + -(-len(EXAMPLES) // 4)
    fresh = Scorer(causal, progress=False, prefix_cache_mb=0).score(other, EXAMPLES)
    np.testing.assert_allclose(res.raw, fresh.raw, atol=1e-5)


def test_a_template_without_a_shared_prefix_takes_the_old_path(causal):
    p = Prompt.create("{sentence} It was {answer}", MULTI, LABELS, calibrate=True)
    on, off = _pair(causal, batch_size=4)
    assert all(r.prefix == 0 for r in on.requests(p, EXAMPLES)[0])
    assert on.plan(p, EXAMPLES) == off.plan(p, EXAMPLES)
    a, b = on.score(p, EXAMPLES), off.score(p, EXAMPLES)
    assert a.cost.forward_passes == b.cost.forward_passes and a.cost.tokens == b.cost.tokens
    np.testing.assert_array_equal(a.raw, b.raw)


def test_masked_lms_keep_their_path():
    be = tiny_masked()
    s = Scorer(be, progress=False)
    assert s.prefixes is None
    p = Prompt.create(DEMOS + "Review: {sentence}\nSentiment: {answer}", SINGLE, LABELS)
    assert all(r.prefix == 0 for r in s.requests(p, EXAMPLES)[0])


def test_several_prompts_and_distributions(causal):
    """score_many pools two prompts with different demonstrations; distributions() reuses the prefix."""
    other = DEMOS.replace("wonderful", "superb")
    prompts = [
        Prompt.create(d + "Review: {sentence}\nSentiment: {answer}", v, LABELS)
        for d in (DEMOS, other)
        for v in (SINGLE, MULTI)
    ]
    on, off = _pair(causal, batch_size=3)
    planned = on.plan_many(prompts, EXAMPLES)
    a, b = on.score_many(prompts, EXAMPLES), off.score_many(prompts, EXAMPLES)
    assert a[0].cost.forward_passes == planned
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.raw, y.raw, atol=1e-5)
    d_on, d_off = _pair(causal, batch_size=3)
    np.testing.assert_allclose(
        d_on.distributions(prompts[0], EXAMPLES), d_off.distributions(prompts[0], EXAMPLES), atol=1e-5
    )
    assert d_on.counter.total.tokens < d_off.counter.total.tokens


# --------------------------------------------------------------------------- many candidates
CANDIDATES = [
    "Paris", "London", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Warsaw", "Athens",
    "Dublin", "Oslo", "Stockholm", "Helsinki", "Copenhagen", "Brussels", "Amsterdam", "Bern", "Budapest",
    "Bucharest", "Sofia", "Belgrade", "Zagreb", "Ljubljana", "Bratislava", "Tallinn", "Riga", "Vilnius",
    "Minsk", "Kyiv", "Chisinau", "Tirana", "Skopje", "Podgorica", "Sarajevo", "Valletta", "Nicosia",
    "Reykjavik", "Ankara", "Tbilisi", "Yerevan", "Baku", "Astana", "Tashkent", "Bishkek", "Dushanbe",
    "Ashgabat", "Kabul", "Islamabad", "New Delhi", "Kathmandu", "Thimphu", "Dhaka", "Colombo",
    "Buenos Aires", "Mexico City", "Kuala Lumpur", "Port Moresby",
]  # fmt: skip
SUBJECTS = [
    "France",
    "the United Kingdom",
    "Germany",
    "Spain",
    "Italy",
    "the Republic of Portugal",
    "Austria",
]


def test_many_candidates_equal_one_pass_per_candidate(causal):
    assert len(CANDIDATES) >= 50
    words = {c: [c] for c in CANDIDATES}
    p = Prompt.create("The capital city of {subject} is {answer}", words, CANDIDATES)
    lengths = {len(w) for ws in Scorer(causal, progress=False).compile(p).word_ids for w in ws}
    assert 1 in lengths and max(lengths) >= 3  # single- and multi-token candidates
    exs = [{"subject": s} for s in SUBJECTS]
    fast = Scorer(causal, batch_size=16, progress=False)
    planned = fast.plan(p, exs)
    got = fast.score(p, exs)
    # every (subject, candidate) sequence run whole, in wide batches (batched equals one at a time:
    # test_scoring.test_batched_equals_one_at_a_time); one pass per candidate is what it would plan
    whole = Scorer(causal, batch_size=64, progress=False, prefix_cache_mb=0).score(p, exs)
    np.testing.assert_allclose(got.raw, whole.raw, atol=1e-5)
    np.testing.assert_allclose(got.scores, whole.scores, atol=1e-5)
    assert got.cost.forward_passes == planned
    one_each = Scorer(causal, batch_size=1, progress=False, prefix_cache_mb=0).plan(p, exs)
    assert got.cost.forward_passes * 10 < one_each
    assert got.cost.tokens < whole.cost.tokens / 2  # each subject's prompt ran once, not per candidate


def test_many_candidates_in_small_chunks(causal):
    """A token bound small enough to cut the examples' prefixes into several chunks keeps plan and scores."""
    p = Prompt.create("The capital city of {subject} is {answer}.", {c: [c] for c in CANDIDATES}, CANDIDATES)
    exs = [{"subject": s} for s in SUBJECTS]
    small = Scorer(causal, batch_size=8, max_batch_tokens=24, progress=False)
    assert len({r.prefix for r in small.requests(p, exs)[0]}) > 1  # per-example prefixes
    planned = small.plan(p, exs)
    got = small.score(p, exs)
    assert got.cost.forward_passes == planned
    ref = Scorer(causal, batch_size=8, progress=False, prefix_cache_mb=0).score(p, exs)
    np.testing.assert_allclose(got.raw, ref.raw, atol=1e-5)


def test_planning_for_candidates_not_drawn_yet_counts_a_prefix_each(causal):
    """plan_many(distinct=True) over copies of one demonstration prompt counts what as many prompts
    with other demonstrations of the same length spend (each its own prefix pass)."""
    tpl = "Review: {sentence}\nSentiment: {answer}"
    variants = [
        Prompt.create(DEMOS.replace("great", w) + tpl, SINGLE, LABELS) for w in ("great", "good", "fine")
    ]
    s = Scorer(causal, batch_size=4, progress=False)
    prefixes = {r.ids[: r.prefix] for v in variants for r in s.requests(v, EXAMPLES)[0]}
    assert len(prefixes) == 3 and len({len(p) for p in prefixes}) == 1
    planned = s.plan_many([variants[0]] * 3, EXAMPLES, distinct=True)
    assert planned > s.plan_many([variants[0]] * 3, EXAMPLES)
    assert s.score_many(variants, EXAMPLES)[0].cost.forward_passes == planned


def test_gradient_passes_run_whole_sequences(causal):
    """label_logprobs (no cache, differentiable) ignores the prefix marks and plans what it runs."""
    p = Prompt.create(DEMOS + "Review: {sentence}\nSentiment: {answer}", MULTI, LABELS)
    s = Scorer(causal, batch_size=4, progress=False)
    assert any(r.prefix for r in s.requests(p, EXAMPLES)[0])
    before = s.counter.snapshot()
    planned = s.plan_label_logprobs(p, EXAMPLES)
    got = s.label_logprobs(p, EXAMPLES)
    assert (s.counter.snapshot() - before).forward_passes == planned
    np.testing.assert_allclose(got.detach().numpy(), s.score(p, EXAMPLES).raw, atol=1e-5)
