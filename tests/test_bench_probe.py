"""The bench's trained baselines: the linear probe and PEFT prompt tuning at a budget (tiny models)."""

from __future__ import annotations

import itertools

import pytest
import torch

from miner.benchmark._probe import (
    answer_features,
    linear_probe,
    peft_prompt_tuning,
    peft_steps,
    template_init_text,
)
from miner.errors import MinerError
from miner.prompts import Prompt
from miner.scoring import CostCounter, Scorer
from miner.tasks import Example

VERB = {"negative": ["terrible"], "positive": ["great"]}
LABELS = ("negative", "positive")


@pytest.fixture(scope="module")
def causal():
    from miner.testing.tiny import tiny_causal

    return tiny_causal()


@pytest.fixture(scope="module")
def masked():
    from miner.testing.tiny import tiny_masked

    return tiny_masked()


@pytest.fixture(scope="module")
def prompt():
    return Prompt.create("{sentence} It was {answer}", VERB, LABELS)


def _separable() -> list[Example]:
    """Two labels with no word in common (8 examples each): the answer-position features must tell
    them apart."""
    fruit = ["apple", "banana", "cherry", "melon"]
    space = ["rocket", "planet", "galaxy", "comet"]
    neg = [" ".join(w) for w in itertools.permutations(fruit, 2)][:8]
    pos = [" ".join(w) for w in itertools.permutations(space, 2)][:8]
    return [Example({"sentence": t}, 0) for t in neg] + [Example({"sentence": t}, 1) for t in pos]


def test_probe_fits_predicts_and_is_deterministic(causal, prompt, conformance_data):
    train = list(conformance_data.train) + list(conformance_data.dev)
    test = list(conformance_data.test)
    counter = CostCounter()
    a = linear_probe(causal, prompt, train, test, seed=3, batch_size=8, counter=counter)
    b = linear_probe(causal, prompt, train, test, seed=3, batch_size=8)
    assert 0.0 <= a.accuracy <= 1.0 and len(a.preds) == len(test) == len(a.gold)
    assert a.gold == tuple(e.label for e in test)
    assert a.preds == b.preds and a.C == b.C
    assert a.n_features == causal.input_embeddings().shape[1]
    assert a.n_folds == 4  # 8 examples per class
    assert a.forward_passes == 2 + 2 == counter.total.forward_passes  # 16 train, 16 test, batches of 8
    assert a.correct == "".join("1" if p == g else "0" for p, g in zip(a.preds, a.gold))


def test_probe_features_carry_signal(causal, prompt):
    data = _separable()
    for seed in (0, 1):
        res = linear_probe(causal, prompt, data, data, seed=seed)
        assert res.accuracy >= 0.9, res


@pytest.mark.parametrize("kind", ["causal", "masked"])
def test_probe_features_are_the_answer_position(kind, causal, masked, prompt, conformance_data):
    """The features are the hidden state the scorer reads: through the LM head they give its answer-slot
    distribution (causal: the last token before the answer; masked: the mask token)."""
    backend = causal if kind == "causal" else masked
    examples = list(conformance_data.test)[:5]
    x, passes = answer_features(backend, prompt, examples, batch_size=3)
    assert x.shape == (5, backend.input_embeddings().shape[1]) and passes == 2
    with torch.no_grad():
        h = torch.as_tensor(x, dtype=torch.float32)
        head = backend.model.cls if kind == "masked" else backend.model.get_output_embeddings()
        lp = torch.log_softmax(head(h), -1)
    ref = Scorer(backend, progress=False).distributions(prompt, examples)
    assert torch.allclose(lp, ref, atol=1e-4)
    res = linear_probe(backend, prompt, _separable(), examples, seed=0)
    assert len(res.preds) == 5


def test_probe_features_are_batch_invariant(causal, prompt, conformance_data):
    examples = list(conformance_data.test)[:6]
    one, _ = answer_features(causal, prompt, examples, batch_size=1)
    many, passes = answer_features(causal, prompt, examples, batch_size=4)
    assert passes == 2
    assert torch.allclose(torch.as_tensor(one), torch.as_tensor(many), atol=1e-4)


def test_probe_errors(causal, prompt):
    data = _separable()
    one_neg = data[:1] + data[8:]
    with pytest.raises(MinerError, match="'negative' has 1 training example"):
        linear_probe(causal, prompt, one_neg, data, seed=0)
    with pytest.raises(MinerError, match="only one label"):
        linear_probe(causal, prompt, data[:8], data, seed=0)
    with pytest.raises(MinerError, match="no test examples"):
        linear_probe(causal, prompt, data, [], seed=0)
    soft = Prompt.create("{soft:2}{sentence} It was {answer}", VERB, LABELS, soft="soft:x")
    with pytest.raises(MinerError, match="soft tokens"):
        linear_probe(causal, soft, data, data, seed=0)


def test_peft_steps_follow_the_budget_and_leave_the_backend_untouched(causal, prompt, conformance_data):
    pytest.importorskip("peft")
    param = causal.input_embeddings()
    before = {name: p.detach().clone() for name, p in causal.model.named_parameters()}
    dev = list(conformance_data.dev)  # 8 examples: one dev batch of 8
    kw = dict(budget_forward_equivalents=30, backward_cost=2.0, seed=1, n_tokens=3, batch_size=8)
    res = peft_prompt_tuning(causal, prompt, conformance_data.train, dev, conformance_data.test, **kw)
    assert res.steps == peft_steps(30, 2.0, 1) == (30 - 1) // 3 == 9
    assert res.forward_passes == 10 and res.backward_passes == 9
    assert res.forward_equivalents == 9 * 3 + 1 <= 30
    assert len(res.preds) == len(conformance_data.test) and 0 <= res.accuracy <= 1
    assert res.dev_accuracy is not None and 0 <= res.dev_accuracy <= 1
    # the caller's model: same weights, still frozen, not wrapped
    for name, p in causal.model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert not p.requires_grad
    assert causal.input_embeddings() is param
    assert type(causal.model).__name__ == "LlamaForCausalLM"
    again = peft_prompt_tuning(causal, prompt, conformance_data.train, dev, conformance_data.test, **kw)
    assert again.preds == res.preds and again.dev_accuracy == res.dev_accuracy


def test_peft_errors(causal, masked, prompt, conformance_data):
    pytest.importorskip("peft")
    d = conformance_data
    with pytest.raises(MinerError, match="budget too small"):
        # one dev batch leaves 2 forward equivalents: less than one step of 3
        peft_prompt_tuning(
            causal, prompt, d.train, d.dev, d.test, budget_forward_equivalents=3, backward_cost=2.0, seed=0
        )
    with pytest.raises(MinerError, match="causal LMs only"):
        peft_prompt_tuning(
            masked, prompt, d.train, d.dev, d.test, budget_forward_equivalents=30, backward_cost=2.0, seed=0
        )


def test_template_init_text():
    assert template_init_text(Prompt.create("Review: {sentence}\nSentiment: {answer}", VERB, LABELS)) == (
        "Review: Sentiment:"
    )
    assert template_init_text(Prompt.create("{sentence}{answer}", VERB, LABELS)).startswith("Read the text")


def test_peft_answer_logits_match_peft_forward_and_its_lm_loss(causal):
    """The training loss reads only the answer positions through the head; it is PEFT's own causal-LM
    loss with labels on the answer token (right padding, virtual tokens first)."""
    pytest.importorskip("peft")
    import copy

    from peft import PromptTuningConfig, get_peft_model

    from miner.benchmark._probe import _answer_logits

    pm = get_peft_model(
        copy.deepcopy(causal.model), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
    )
    pm.eval()
    seqs = [tuple(causal.tokenize("a short one")), tuple(causal.tokenize("a somewhat longer text here"))]
    answer = [causal.tokenize(" great")[0], causal.tokenize(" terrible")[0]]
    with torch.no_grad():
        ours = _answer_logits(pm, causal, seqs, 2)
        loss = torch.nn.functional.cross_entropy(ours, torch.tensor(answer))
        width = max(len(s) for s in seqs) + 1
        ids = torch.tensor(
            [list(s) + [a] + [causal.pad_id] * (width - len(s) - 1) for s, a in zip(seqs, answer)]
        )
        mask = torch.tensor([[1] * (len(s) + 1) + [0] * (width - len(s) - 1) for s in seqs])
        labels = torch.tensor(
            [[-100] * len(s) + [a] + [-100] * (width - len(s) - 1) for s, a in zip(seqs, answer)]
        )
        out = pm(input_ids=ids, attention_mask=mask, labels=labels)
        for i, s in enumerate(seqs):
            assert torch.allclose(ours[i], out.logits[i, 2 + len(s) - 1].float(), atol=1e-4)
        assert abs(float(loss) - float(out.loss)) < 1e-4
