"""Scorer invariants on tiny in-memory models with the default model's real tokenizer."""

import numpy as np
import pytest
import torch

from miner.errors import PromptError
from miner.prompts import Prompt
from miner.scoring import Scorer
from miner.tasks import Example
from miner.testing.tiny import tiny_causal, tiny_masked

LABELS = ("negative", "positive")
TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the plot is nothing but boilerplate clichés from start to finish, and the script assumes that not only would subtlety be lost on the target audience, but that it's also too stupid to realize that they've already seen this exact same movie a hundred times",
    "bad.",
    "an utterly charming and hilarious film that reminded me of why i love movies",
    "it's a mess.",
]
EXAMPLES = [Example({"sentence": t}, i % 2) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def causal():
    return tiny_causal()


@pytest.fixture(scope="module")
def masked():
    return tiny_masked()


TEMPLATES = [
    "{sentence} It was {answer}",  # next-token path
    "{sentence} It was {answer}.",  # answer mid-template: likelihood of the filled text
    "Review: {sentence}\nSentiment:{answer}",  # no space moved onto the word
]
VERBALIZERS = [
    {"negative": ["terrible"], "positive": ["great"]},
    {
        "negative": ["terrible", "not good at all"],
        "positive": ["great", "wonderful film"],
    },  # multi-token words
]


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("verbalizer", VERBALIZERS)
@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_batched_equals_one_at_a_time(kind, template, verbalizer, request):
    be = request.getfixturevalue(kind)
    p = Prompt.create(template, verbalizer, LABELS)
    batched = Scorer(be, batch_size=8, progress=False).score(p, EXAMPLES)
    single = Scorer(be, batch_size=1, progress=False).score(p, EXAMPLES)
    np.testing.assert_allclose(batched.raw, single.raw, atol=1e-4)
    assert batched.cost.forward_passes < single.cost.forward_passes


def test_scores_match_a_hand_written_loop(causal):
    """Next-token and teacher-forced multi-token scores equal direct computation without padding."""
    p = Prompt.create(
        "{sentence} It was {answer}", {"negative": ["not good at all"], "positive": ["great"]}, LABELS
    )
    res = Scorer(causal, progress=False).score(p, EXAMPLES)
    tok = causal.tokenizer
    for i, ex in enumerate(EXAMPLES):
        prefix = tok(ex.fields["sentence"] + " It was", add_special_tokens=False)["input_ids"]
        expected = []
        for word in (" not good at all", " great"):
            w = tok(word, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prefix + w])
            with torch.no_grad():
                lp = torch.log_softmax(causal.model(ids).logits[0].float(), -1)
            expected.append(sum(lp[len(prefix) - 1 + j, t].item() for j, t in enumerate(w)))
        np.testing.assert_allclose(res.raw[i], expected, atol=1e-4)


def test_multiple_words_sum_probabilities(causal):
    one = Scorer(causal, progress=False).score(
        Prompt.create("{sentence} It was {answer}", {"negative": "bad", "positive": "great"}, LABELS),
        EXAMPLES,
    )
    two = Scorer(causal, progress=False).score(
        Prompt.create(
            "{sentence} It was {answer}", {"negative": ["bad", "awful"], "positive": "great"}, LABELS
        ),
        EXAMPLES,
    )
    other = Scorer(causal, progress=False).score(
        Prompt.create("{sentence} It was {answer}", {"negative": "awful", "positive": "great"}, LABELS),
        EXAMPLES,
    )
    np.testing.assert_allclose(two.raw[:, 0], np.logaddexp(one.raw[:, 0], other.raw[:, 0]), atol=1e-5)


def test_cache_answers_a_new_verbalizer_without_forward_passes(causal):
    s = Scorer(causal, progress=False)
    a = s.score(
        Prompt.create("{sentence} It was {answer}", {"negative": "bad", "positive": "great"}, LABELS),
        EXAMPLES,
    )
    p2 = Prompt.create("{sentence} It was {answer}", {"negative": "awful", "positive": "good"}, LABELS)
    assert s.plan(p2, EXAMPLES) == 0
    b = s.score(p2, EXAMPLES)
    assert a.cost.forward_passes > 0 and b.cost.forward_passes == 0 and b.cost.cache_hits == len(EXAMPLES)
    fresh = Scorer(causal, progress=False).score(p2, EXAMPLES)
    np.testing.assert_allclose(b.raw, fresh.raw, atol=1e-6)


def test_plan_predicts_forward_passes(causal, masked):
    for be in (causal, masked):
        for tpl in TEMPLATES:
            s = Scorer(be, batch_size=2, progress=False)
            p = Prompt.create(tpl, VERBALIZERS[1], LABELS, calibrate=True)
            planned = s.plan(p, EXAMPLES)
            assert s.score(p, EXAMPLES).cost.forward_passes == planned


def test_calibration_divides_by_content_free_probabilities(causal):
    s = Scorer(causal, progress=False)
    p = Prompt.create("{sentence} It was {answer}", {"negative": "bad", "positive": "great"}, LABELS)
    raw = s.score(p, EXAMPLES)
    cal = s.score(p.with_(calibrate=True), EXAMPLES)
    cf = s.score(p, [{"sentence": t} for t in ("N/A", "", "[MASK]")])
    p_cf = np.exp(cf.scores).mean(0)
    expected = raw.scores - np.log(p_cf)
    expected = expected - np.logaddexp.reduce(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(cal.scores, expected, atol=1e-5)


def test_metrics_and_loglik(causal):
    res = Scorer(causal, progress=False).score(
        Prompt.create("{sentence} It was {answer}", {"negative": "bad", "positive": "great"}, LABELS),
        EXAMPLES,
    )
    gold = np.array([e.label for e in EXAMPLES])
    assert res.metrics["accuracy"] == pytest.approx((res.preds == gold).mean())
    assert res.loglik == pytest.approx(res.scores[np.arange(len(gold)), gold].mean())
    assert np.allclose(np.exp(res.scores).sum(1), 1.0, atol=1e-5)


def test_word_that_tokenizes_to_nothing(causal, monkeypatch):
    # Byte-level BPE encodes everything; WordPiece-style tokenizers drop e.g. control characters.
    orig = causal.tokenize
    monkeypatch.setattr(causal, "tokenize", lambda t: () if "\x07" in t else orig(t))
    s = Scorer(causal, progress=False)
    with pytest.raises(PromptError, match="tokenizes to nothing"):
        s.compile(Prompt.create("{sentence}{answer}", {"negative": "bad", "positive": "\x07"}, LABELS))


def test_long_inputs_are_truncated_to_fit(causal):
    be = tiny_causal()
    be.max_length = 32
    p = Prompt.create("{sentence} It was {answer}.", {"negative": "bad", "positive": "great"}, LABELS)
    res = Scorer(be, progress=False).score(p, [Example({"sentence": "word " * 200}, 0)])
    assert np.isfinite(res.raw).all()


def test_triggers_and_soft_tokens(causal):
    great = causal.tokenize(" great")[0]
    p = Prompt.create(
        "{sentence} {trigger:2} It was {answer}",
        {"negative": "bad", "positive": "great"},
        LABELS,
        triggers=(great, great),
    )
    res = Scorer(causal, progress=False).score(p, EXAMPLES)
    assert np.isfinite(res.raw).all()
    soft_p = Prompt.create(
        "{soft:3} {sentence} It was {answer}", {"negative": "bad", "positive": "great"}, LABELS, soft="t"
    )
    soft = torch.zeros(3, causal.input_embeddings().shape[1], requires_grad=True)
    out = Scorer(causal, progress=False).label_logprobs(soft_p, EXAMPLES, soft_embeds=soft)
    out[:, 1].sum().backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0
    assert all(p.grad is None for p in causal.model.parameters())  # the model stays frozen


def test_lm_head_gets_a_contiguous_input_with_logits_to_keep(causal):
    """The head sees a contiguous tensor (a strided slice is ~17x slower on CPU), same logits."""
    seen = []
    head = causal.model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
    try:
        batch = causal.pad([[5, 6, 7, 8], [9, 10]])
        with torch.inference_mode():
            last = causal.forward(batch, logits_to_keep=1)
            full = causal.forward(batch)
    finally:
        handle.remove()
    assert seen and all(seen)
    torch.testing.assert_close(last[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)


def test_masked_head_computes_only_the_positions_asked_for(masked):
    """A masked LM's head runs on the asked positions only (a [B, K] gather, not [B, T]), with the same
    logits as the full pass read at those positions; a scorer on masks gives the same scores as before."""
    shapes = []
    head = masked.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, args, out: shapes.append(tuple(out.shape[:2])))
    ids = [[5, 6, 7, masked.mask_id, 8], [9, masked.mask_id, masked.mask_id]]
    positions = [[3], [1, 2]]
    try:
        batch = masked.pad(ids)
        with torch.inference_mode():
            at = masked.forward(batch, positions=positions)
            full = masked.forward(batch)
    finally:
        handle.remove()
    assert shapes == [(2, 2), (2, 5)]  # the head's own output: 2 x 2 positions, then the full 2 x 5
    assert at.shape == (2, 2, masked.vocab_size)
    torch.testing.assert_close(at[0, 0], full[0, 3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(at[1], full[1, 1:3], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="masked"):
        tiny_causal().forward(batch, positions=positions)


def test_masked_scores_equal_full_logits_read_at_the_masks(masked, monkeypatch):
    """Scores on the gathered path equal those of a head that computes every position (the hook's
    fallback, also taken for a head it cannot see into)."""
    from miner.models import _backend

    p = Prompt.create(
        "{sentence} It was {answer}.", {"negative": ["terrible", "not good"], "positive": ["great"]}, LABELS
    )
    fast = Scorer(masked, progress=False).score(p, EXAMPLES)
    monkeypatch.setattr(
        _backend, "_HEAD_ROWS", type("Never", (), {"want": None, "__setattr__": lambda *a: None})()
    )
    slow = Scorer(masked, progress=False).score(p, EXAMPLES)
    np.testing.assert_allclose(fast.raw, slow.raw, atol=1e-5)


def test_ensemble_averages_member_probabilities(causal, masked):
    from miner.prompts import PromptEnsemble

    for be in (causal, masked):
        members = (
            Prompt.create("{sentence} It was {answer}", {"negative": "bad", "positive": "great"}, LABELS),
            Prompt.create("Review: {sentence}\nSentiment:{answer}", VERBALIZERS[1], LABELS, calibrate=True),
            Prompt.create("{sentence} It was {answer}", {"negative": "awful", "positive": "good"}, LABELS),
        )
        ens = PromptEnsemble(members)
        s = Scorer(be, batch_size=2, progress=False)
        planned = s.plan(ens, EXAMPLES)
        res = s.score(ens, EXAMPLES)
        assert res.cost.forward_passes == planned > 0
        singles = [Scorer(be, progress=False).score(m, EXAMPLES) for m in members]
        mean = np.mean([np.exp(r.scores) for r in singles], axis=0)
        np.testing.assert_allclose(np.exp(res.scores), mean, atol=1e-5)
        gold = np.array([e.label for e in EXAMPLES])
        assert (res.preds == mean.argmax(1)).all()
        assert res.metrics["accuracy"] == pytest.approx((mean.argmax(1) == gold).mean())
        assert res.loglik == pytest.approx(np.log(mean[np.arange(len(gold)), gold]).mean(), abs=1e-5)
        # members already scored: the ensemble costs nothing more
        assert s.plan(ens, EXAMPLES) == 0 and s.score(ens, EXAMPLES).cost.forward_passes == 0
        with pytest.raises(PromptError, match="ensemble"):
            s.distributions(ens, EXAMPLES)


STEM_TEMPLATES = [
    "{sentence} {trigger:3} {answer}",  # next-token path
    "{sentence} {trigger:2} It was {answer}.",  # answer mid-template: likelihood of the filled text
    "Review: {sentence}\n{trigger}Sentiment:{trigger} {answer}",  # split triggers
]


@pytest.mark.parametrize("template", STEM_TEMPLATES)
@pytest.mark.parametrize("verbalizer", VERBALIZERS)
def test_stem_cache_reuses_the_text_before_the_triggers(causal, template, verbalizer):
    """A second trigger on the same examples runs only the tokens from the first trigger on, and
    scores as it would without the stem cache."""
    from miner.prompts import parse_template

    n = parse_template(template).n_triggers
    a, b = (
        Prompt.create(template, verbalizer, LABELS, triggers=(300,) * n),
        Prompt.create(template, verbalizer, LABELS, triggers=(777,) * n),
    )
    cached, plain = Scorer(causal, progress=False), Scorer(causal, progress=False, stem_cache_mb=0)
    assert plain.stems is None and len(cached.stems) == 0
    first = cached.score(a, EXAMPLES)
    assert len(cached.stems) == len(EXAMPLES)  # stored from the pass that ran anyway
    planned = cached.plan(b, EXAMPLES)
    second = cached.score(b, EXAMPLES)
    assert second.cost.forward_passes == planned
    assert cached.stems.hits > 0 and second.cost.tokens < first.cost.tokens / 2
    for p, got in ((a, first), (b, second)):
        ref = plain.score(p, EXAMPLES)
        np.testing.assert_allclose(got.raw, ref.raw, atol=1e-4)
        assert got.cost.forward_passes == ref.cost.forward_passes
    # without a trigger there is no stem: the same passes and tokens with and without the cache
    manual = Prompt.create("{sentence} It was {answer}", verbalizer, LABELS)
    assert (
        Scorer(causal, progress=False).score(manual, EXAMPLES).cost.tokens
        == plain.score(manual, EXAMPLES).cost.tokens
    )


def test_stem_cache_is_bounded_and_causal_only(causal, masked):
    p = Prompt.create("{sentence} {trigger:3} {answer}", VERBALIZERS[0], LABELS, triggers=(300,) * 3)
    assert Scorer(masked, progress=False).stems is None
    tiny = Scorer(causal, progress=False, stem_cache_mb=1)
    tiny.stems.max_bytes = 3 * 2**10  # room for a stem or two of the tiny model
    tiny.score(p, EXAMPLES)
    assert 0 < len(tiny.stems) < len(EXAMPLES) and tiny.stems.nbytes <= tiny.stems.max_bytes
    ref = Scorer(causal, progress=False, stem_cache_mb=0).score(p.with_(triggers=(5, 6, 7)), EXAMPLES)
    np.testing.assert_allclose(tiny.score(p.with_(triggers=(5, 6, 7)), EXAMPLES).raw, ref.raw, atol=1e-4)
    tiny.clear_cache()
    assert len(tiny.stems) == 0 and tiny.stems.nbytes == 0


def test_stems_stored_while_scoring_serve_a_gradient(causal):
    """Stems stored under inference mode are plain tensors: the trigger gradient can run on them."""
    from miner.scoring import TriggerScorer, trigger_gradient

    p = Prompt.create("{sentence} {trigger:3} {answer}", VERBALIZERS[0], LABELS, triggers=(300, 400, 500))
    scorer = Scorer(causal, progress=False)
    scorer.score(p, EXAMPLES)
    ts = TriggerScorer(scorer, p)
    assert ts.plan_gradient(EXAMPLES) == 1  # the trigger rows only
    gold = torch.as_tensor([e.label for e in EXAMPLES])

    def loss_fn(raw):
        return -torch.log_softmax(raw, -1)[torch.arange(len(gold)), gold].mean()

    g, loss = ts.gradient(p.triggers, EXAMPLES, loss_fn)
    g_ref, loss_ref = trigger_gradient(Scorer(causal, progress=False), p, EXAMPLES, loss_fn)
    assert loss == pytest.approx(loss_ref, abs=1e-5)
    torch.testing.assert_close(g, g_ref, atol=1e-5, rtol=1e-4)
