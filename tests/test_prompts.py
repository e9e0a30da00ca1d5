import json

import pytest

from miner.errors import PromptError
from miner.prompts import Answer, Field, Literal, Prompt, Soft, Trigger, Verbalizer, parse_template

LABELS = ("negative", "positive")


def test_parse_segments():
    t = parse_template("{sentence} It was {answer}.")
    assert t.segments == (Field("sentence"), Literal(" It was "), Answer(), Literal("."))
    assert t.fields == ("sentence",)
    assert not t.answer_at_end
    assert parse_template("{sentence} It was {answer}  ").answer_at_end


def test_trigger_and_soft_counts_and_escapes():
    t = parse_template("{{x}} {trigger:3} {sentence} {soft:2} {answer}")
    assert t.n_triggers == 3 and t.n_soft == 2
    assert t.segments[0] == Literal("{x} ")
    assert [s for s in t.segments if isinstance(s, Trigger)] == [Trigger(0), Trigger(1), Trigger(2)]
    assert [s for s in t.segments if isinstance(s, Soft)] == [Soft(0), Soft(1)]


@pytest.mark.parametrize(
    "text, needle",
    [
        ("{sentence} It was", "no answer slot"),
        ("{answer} {answer} {sentence}", "exactly one"),
        ("{sentence.__class__} {answer}", "invalid slot"),
        ("{sentence!r} {answer}", "invalid slot"),
        ("{sentence {answer}", "invalid slot"),
        ("{sentence} {answer", "unclosed"),
        ("{sentence} } {answer}", "unmatched"),
        ("{sentence:2} {answer}", "take a count"),
        ("{trigger:0} {sentence} {answer}", "at least 1"),
        ("   ", "empty"),
    ],
)
def test_invalid_templates(text, needle):
    with pytest.raises(PromptError, match=needle) as info:
        parse_template(text)
    assert "\n" not in str(info.value)


def test_unknown_field():
    with pytest.raises(PromptError, match="unknown field {question}"):
        parse_template("{question} {answer}").check_fields(("sentence",))


@pytest.mark.parametrize(
    "mapping, needle",
    [
        ({}, "empty"),
        ({"negative": ["bad"]}, "no words for label 'positive'"),
        ({"negative": [], "positive": ["good"]}, "needs a list of words"),
        ({"negative": ["bad"], "positive": ["good"], "neutral": ["ok"]}, "unknown label"),
        ({"negative": [" "], "positive": ["good"]}, "empty word"),
        ({"negative": ["bad", "bad"], "positive": ["good"]}, "repeats"),
    ],
)
def test_invalid_verbalizers(mapping, needle):
    with pytest.raises(PromptError, match=needle):
        Verbalizer.from_mapping(mapping, LABELS)


def test_round_trip_and_key():
    p = Prompt.create(
        "{sentence} It was {answer}", {"positive": "great", "negative": ["terrible", "bad"]}, LABELS
    )
    assert p.verbalizer.labels == LABELS  # task label order, not mapping order
    q = Prompt.from_dict(p.to_dict(), LABELS)
    assert q == p and q.key == p.key
    assert p.with_(calibrate=True).key != p.key
    assert (
        Prompt.create(
            "{sentence} It was {answer}", {"negative": ["terrible", "bad"], "positive": "great"}, LABELS
        ).key
        == p.key
    )


def test_trigger_count_must_match():
    with pytest.raises(PromptError, match="2 trigger slots but 1"):
        Prompt.create(
            "{trigger:2} {sentence} {answer}", {"negative": "a", "positive": "b"}, LABELS, triggers=(5,)
        )


def test_unknown_prompt_key():
    with pytest.raises(PromptError, match="unknown key"):
        Prompt.from_dict(
            {"template": "{sentence} {answer}", "verbalizer": {"negative": "a", "positive": "b"}, "evil": 1},
            LABELS,
        )


def test_prompt_ensemble_round_trips_and_validates():
    from miner.prompts import PromptEnsemble

    labels = ["negative", "positive"]
    a = Prompt.create("{sentence} It was {answer}", {"negative": "bad", "positive": "good"}, labels)
    b = Prompt.create(
        "Review: {sentence}\nSentiment: {answer}",
        {"negative": ["negative"], "positive": ["positive"]},
        labels,
        calibrate=True,
    )
    ens = PromptEnsemble((a, b), meta={"searcher": "optuna"})
    back = Prompt.from_dict(json.loads(json.dumps(ens.to_dict())), labels)
    assert isinstance(back, PromptEnsemble) and back == ens and back.key == ens.key
    assert back.members[1].calibrate and back.verbalizer.labels == tuple(labels)
    assert PromptEnsemble((b, a)).key != ens.key  # the order is part of the identity
    assert ens.key not in (a.key, b.key) and "ensemble of 2" in ens.describe()
    with pytest.raises(PromptError, match="at least 2"):
        PromptEnsemble((a,))
    with pytest.raises(PromptError, match="repeats"):
        PromptEnsemble((a, a))
    with pytest.raises(PromptError, match="disagree on the labels"):
        PromptEnsemble((a, Prompt.create("{sentence} {answer}", {"neg": "bad", "pos": "good"})))
    with pytest.raises(PromptError, match="unknown key"):
        Prompt.from_dict({"ensemble": [a.to_dict(), b.to_dict()], "calibrate": True}, labels)
    with pytest.raises(PromptError, match="do not nest"):
        Prompt.from_dict({"ensemble": [ens.to_dict(), a.to_dict()]}, labels)
