"""Zero-configuration defaults (issue 17 part 5): default prompts and the optuna searcher with only a task."""

from __future__ import annotations

import logging
import re

import pytest

from miner.errors import PromptError
from miner.prompts import Prompt
from miner.runner import run_searcher
from miner.scoring import Scorer
from miner.search._defaults import (
    GENERIC_INFIXES,
    GENERIC_PREFIXES,
    default_prompts,
    default_templates,
    label_words,
    template_parts,
)
from miner.search._optuna_space import build_space
from miner.search.optuna_search import OptunaSearcher
from miner.tasks import Example, TaskData
from miner.testing.tiny import tiny_causal, tiny_masked

# Words that would tune a default to sentiment tasks (the searchers also run on tasks we never see).
SENTIMENT = (
    "sentiment",
    "review",
    "movie",
    "film",
    "opinion",
    "positive",
    "negative",
    "great",
    "terrible",
    "good",
    "bad",
    "overall",
    "feel",
)
LOG = logging.getLogger("test")


@pytest.fixture(scope="module")
def causal():
    return tiny_causal()


def _task(fields, labels, n=2, name="t") -> TaskData:
    def rows(tag):
        return tuple(
            Example({f: f"{tag} {f} number {i} about item {c}" for f in fields}, c)
            for c in range(len(labels))
            for i in range(n)
        )

    return TaskData(name, tuple(fields), tuple(labels), "accuracy", rows("train"), rows("dev"), (), n, 13)


@pytest.mark.parametrize(
    "fields, labels",
    [
        (("sentence",), ("subjective", "objective")),
        (("text",), ("World", "Sports", "Business", "Sci/Tech")),
        (("question",), ("abbreviation", "entity", "description", "human", "location", "numeric")),
        (("premise", "hypothesis"), ("entailment", "not_entailment")),
        (("body_text",), ("very bad", "{odd}", "x_y_z", "ok")),
    ],
)
def test_default_prompts_fit_the_task(causal, fields, labels):
    data = _task(fields, labels)
    prompts = default_prompts(data, causal)
    assert len(prompts) >= 3
    plain = prompts[0]  # the zero-shot baseline: the text, then the answer, each label's own name
    assert plain.template == " ".join("{" + f + "}" for f in fields) + " {answer}"
    words = label_words(labels)
    assert plain.verbalizer.labels == labels
    assert [ws[0] for ws in plain.verbalizer.words] == [words[lab][0] for lab in labels]
    scorer = Scorer(causal, progress=False)
    for p in prompts:
        assert isinstance(p, Prompt) and p.verbalizer == plain.verbalizer
        assert set(p.parsed.fields) == set(fields)  # every text field shown, no other
        assert p.parsed.answer_at_end
        cp = scorer.compile(p)
        assert all(ids for ws in cp.word_ids for ids in ws)
        Prompt.from_dict(p.to_dict(), labels, distinct=True)  # round-trips as a user's prompt would
    assert len({p.key for p in prompts}) == len(prompts)
    if len(fields) > 1:
        assert any(all(f"{f.capitalize()}: {{{f}}}" in p.template for f in fields) for p in prompts)
    # Scoring runs (the words tokenize, the templates render every example).
    res = scorer.score(prompts[-1], data.dev)
    assert res.raw.shape == (len(data.dev), len(labels))


def test_label_names_become_running_text_and_stay_distinct():
    assert label_words(["Sci/Tech", "not_entailment", "  World "]) == {
        "Sci/Tech": ["Sci/Tech"],
        "not_entailment": ["not entailment"],
        "  World ": ["World"],
    }
    # Two names that would read the same keep their own spelling, so the labels stay apart.
    assert label_words(["a_b", "a b"]) == {"a_b": ["a_b"], "a b": ["a b"]}


def test_a_label_that_tokenizes_to_nothing_is_a_prompt_error(causal):
    with pytest.raises(PromptError, match=r"default prompt .* for task 't'"):
        default_prompts(_task(("text",), ("yes", " ")), causal)


def test_default_prompts_on_a_masked_lm():
    prompts = default_prompts(_task(("text",), ("World", "Sports", "Business", "Sci/Tech")), tiny_masked())
    assert prompts[0].template == "{text} {answer}"


def test_the_generic_set_is_short_and_not_about_sentiment():
    assert 3 <= len(GENERIC_INFIXES) <= 10 and 1 <= len(GENERIC_PREFIXES) <= 5
    assert "" in GENERIC_PREFIXES
    for fragment in GENERIC_PREFIXES + GENERIC_INFIXES:
        words = set(re.findall(r"[a-z]+", fragment.lower()))
        assert not words & set(SENTIMENT), fragment
    # Nor is anything a neutral task's defaults are built from.
    neutral = ("text",), ("alpha", "beta", "gamma", "delta")
    prefixes, infixes = template_parts(*neutral)
    for text in [*prefixes, *infixes, *default_templates(*neutral)]:
        assert not set(re.findall(r"[a-z]+", text.lower())) & set(SENTIMENT), text


def test_template_parts_come_from_the_generic_set_and_the_task():
    prefixes, infixes = template_parts(("news_body",), ("World", "Sci/Tech"))
    assert prefixes == [*GENERIC_PREFIXES, "News body: "]
    assert infixes == [*GENERIC_INFIXES, "Options: World, Sci/Tech\nAnswer:"]
    # A label set too long to read out is not listed.
    _, many = template_parts(("text",), [f"c{i}" for i in range(30)])
    assert many == list(GENERIC_INFIXES)


def test_optuna_space_unset_parts_are_the_defaults_and_given_parts_stay():
    labels = ("world", "sports", "business", "tech")
    space = build_space(OptunaSearcher(), "causal", ("sentence",), (), LOG, label_names=labels)
    assert space.prefixes == tuple(template_parts(("sentence",), labels)[0])
    assert "Options: world, sports, business, tech\nAnswer:" in space.infixes
    assert "Sentence: " in space.prefixes and not space.full
    # Without label names given, the seed prompts' labels are the task's.
    seeds = default_prompts(_task(("sentence",), labels), tiny_causal())
    from_seeds = build_space(OptunaSearcher(), "causal", ("sentence",), seeds, LOG)
    assert from_seeds.infixes == space.infixes and set(from_seeds.full) == {p.template for p in seeds}
    given = build_space(OptunaSearcher(prefixes=[""], infixes=["Topic:"]), "causal", ("sentence",), (), LOG)
    assert given.prefixes == ("",) and given.infixes == ("Topic:",)
    only_templates = OptunaSearcher(infixes=[], templates=["{sentence} Topic: {answer}"])
    assert build_space(only_templates, "causal", ("sentence",), (), LOG).infixes == ()


def test_optuna_with_only_a_task_proposes_generic_templates_and_automatic_words(causal):
    labels = ("World", "Sports", "Business", "Sci/Tech")
    data = _task(("text",), labels, n=2, name="news")
    seeds = default_prompts(data, causal)
    s = OptunaSearcher(n_trials=3, n_startup_trials=3, sampler="random", train_shares=[1.0])
    assert not s.label_words and s.prefixes is None and s.infixes is None  # the defaults: nothing given
    res = run_searcher(s, causal, data, prompts=seeds)
    assert res.evaluations
    prefixes, infixes = template_parts(("text",), labels)
    lit = lambda t: re.escape(t.replace("{", "{{").replace("}", "}}"))  # noqa: E731
    assembled = re.compile(
        rf"^({'|'.join(map(lit, prefixes))})\{{text\}}[ \n]({'|'.join(map(lit, infixes))}) \{{answer\}}$"
    )
    seed_templates = {p.template for p in seeds}
    names = {w for ws in label_words(labels).values() for w in ws}
    automatic = set()
    for ev in res.evaluations:
        assert ev.prompt.template in seed_templates or assembled.match(ev.prompt.template), ev.prompt.template
        automatic |= {w for ws in ev.prompt.verbalizer.words for w in ws} - names
    assert automatic  # words found on train, not only the label names
    assert all(re.fullmatch(r"[A-Za-z]{3,}", w) for w in automatic)  # real words (the default word_pattern)
