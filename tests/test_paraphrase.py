"""The ``paraphrase`` searcher: slot codec and rejection rules, word edits, WordNet parsing, generation
(charged like scoring, seeded), the evo and edit loops with a scripted generator, and bad input."""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import pytest
import torch

from miner.errors import ConfigError, ModelLoadError
from miner.leaderboard import Leaderboard
from miner.runner import run_searcher
from miner.scoring import CostCounter
from miner.search._wordnet import find_wordnet, parse_synset, synonyms
from miner.search.manual import ManualSearcher
from miner.search.paraphrase import (
    DEMOS,
    ParaphraseSearcher,
    answer_class,
    check_variant,
    decode,
    edit_template,
    encode,
    literal_words,
    parse_output,
    slot_counts,
)
from miner.testing.conformance import SearcherConformance, seed_prompts
from miner.testing.tiny import tiny_causal, tiny_masked

F = ("sentence",)


@pytest.fixture(scope="module")
def causal():
    return tiny_causal()


@pytest.fixture(scope="module")
def data():
    from miner.tasks import TaskSpec, load_task

    return load_task(TaskSpec(source="builtin", name="rotten_tomatoes", max_test=16), 4, 13)


# ------------------------------------------------------------------------------------------ slot codec
def test_encode_decode_round_trip():
    t = "Review: {sentence}\nSentiment: {answer}"
    shown = encode(t, F)
    assert shown == "Review: [X]\\nSentiment: [Y]"
    assert decode(shown, F) == t
    two = encode("{premise} Question: {hypothesis}? {answer}", ("premise", "hypothesis"))
    assert two == "[X1] Question: [X2]? [Y]"
    assert decode(two, ("premise", "hypothesis")) == "{premise} Question: {hypothesis}? {answer}"


def test_decode_accepts_other_brackets_and_escapes_stray_braces():
    assert decode("<x> was {Y}", F) == "{sentence} was {answer}"
    assert decode("{X} {curly} [Y]", F) == "{sentence} {{curly}} {answer}"
    assert decode("[X] [Z] [Y]", F) == "{sentence} [Z] {answer}"  # an unknown mark stays text


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("{sentence} All in all, it was {answer}", None),
        ("{sentence} It was", "lost_slot"),
        ("It was {answer}", "lost_slot"),
        ("{sentence} {sentence} It was {answer}", "duplicate_slot"),
        ("{sentence} It was {answer} {answer}", "duplicate_slot"),
        ("{sentence} {answer} was the verdict", "answer_position"),
        ("{answer}: {sentence}", "answer_position"),
        ("", "empty"),
        ("{sentence} " + "very " * 80 + "{answer}", "too_long"),
        ("{sentence} It was {answer} }", "unparseable"),
    ],
)
def test_check_variant(variant, reason):
    assert check_variant("{sentence} It was {answer}", variant) == reason


def test_answer_class_and_slot_counts():
    assert answer_class("{sentence} It was {answer}  ") == "end"
    assert answer_class(" {answer} : {sentence}") == "start"
    assert answer_class("{sentence} It was {answer}.") == "middle"
    assert slot_counts("{{answer}} {sentence} {answer}") == {"sentence": 1, "answer": 1}


def test_parse_output_styles():
    assert parse_output(' "[X] It felt [Y]"\nPrompt 1: junk', "completion") == "[X] It felt [Y]"
    assert (
        parse_output("Crossover Prompt: a\n2. <prompt>[X] So: [Y]</prompt> more", "evoprompt")
        == "[X] So: [Y]"
    )
    assert parse_output("2. <prompt>[X] So: [Y]\nmore", "evoprompt") == "[X] So: [Y]"
    assert parse_output("no tag here", "evoprompt") == ""


# ------------------------------------------------------------------------------------------ word edits
T = "Review: {sentence} Overall, the movie was {answer}"


def test_edits_keep_slots_and_are_seeded():
    syn = {"movie": ["film"], "overall": ["altogether"]}
    for op in ("delete", "swap", "synonym", "add"):
        runs = [
            [edit_template(T, op, np.random.default_rng(s), syn, ["great"]) for s in range(8)]
            for _ in range(2)
        ]
        assert runs[0] == runs[1], op  # same seed, same edits
        for out in runs[0]:
            assert out is not None and out != T or op == "swap"
            assert check_variant(T, out) is None, (op, out)


def test_each_edit_does_what_it_says():
    rng = np.random.default_rng(0)
    words = literal_words(T)
    deleted = edit_template(T, "delete", rng, {}, [])
    assert len(literal_words(deleted)) == len(words) - 1 and "  " not in deleted
    swapped = edit_template(T, "swap", rng, {}, [])
    assert sorted(literal_words(swapped)) == sorted(words)
    syn = edit_template(T, "synonym", rng, {"movie": ["film"]}, [])
    assert syn == "Review: {sentence} Overall, the film was {answer}"
    cap = edit_template("Movie: {sentence} {answer}", "synonym", rng, {"movie": ["film"]}, [])
    assert cap == "Film: {sentence} {answer}"  # case and punctuation kept
    added = edit_template(T, "add", rng, {}, ["truly"])
    assert "truly " in added and len(literal_words(added)) == len(words) + 1
    assert edit_template("{sentence} {answer}", "delete", rng, {}, []) is None  # nothing to edit
    assert edit_template(T, "synonym", rng, {"the": ["it"]}, []) is None  # stopwords are never replaced


# ------------------------------------------------------------------------------------------ WordNet
WN_NOUN = """\
  1 This software and database is being provided to you, the LICENSEE, by
  2 Princeton University under the following license.
06613686 10 n 03 movie 0 film 0 moving_picture 0 002 @ 06613056 n 0000 + 01757547 v 0201 | a form of entertainment
00064151 04 n 03 blockbuster 0 megahit 0 smash_hit 0 001 @ 00064504 n 0000 | an unusually successful hit
04360501 06 n 0b film 1 w2 0 w3 0 w4 0 w5 0 w6 0 w7 0 w8 0 w9 0 w10 0 w11 0 000 | eleven words: a hex count
"""
WN_ADJ = """\
  1 header
01123148 00 a 02 good 0 goodish(a) 0 000 | having desirable qualities
"""


def test_wordnet_fixture_parsing(tmp_path):
    (tmp_path / "data.noun").write_text(WN_NOUN)
    (tmp_path / "data.adj").write_text(WN_ADJ)
    assert parse_synset("  1 This software") is None
    assert parse_synset(WN_NOUN.splitlines()[2]) == ["movie", "film", "moving picture"]
    assert len(parse_synset(WN_NOUN.splitlines()[4])) == 11  # "0b" is hexadecimal
    assert find_wordnet(tmp_path) == tmp_path
    assert find_wordnet(tmp_path / "nowhere") is None
    got = synonyms(["Movie", "good", "unknown", "film"], tmp_path, max_words=1)
    assert got["movie"] == ["film"]  # "moving picture" is two words, over max_words=1
    assert got["good"] == ["goodish"]  # the adjective marker "(a)" is dropped
    assert got["unknown"] == []
    assert got["film"][:2] == ["movie", "w2"]


def test_edit_without_wordnet_falls_back(tmp_path, data, caplog):
    be = tiny_masked()
    s = ParaphraseSearcher(operator="edit", edits=["synonym"], wordnet=str(tmp_path), iterations=1)
    with caplog.at_level(logging.WARNING, logger="miner.search.paraphrase"):
        res = run_searcher(s, be, data, prompts=seed_prompts(data.label_names), budget={"max_evaluations": 4})
    assert "WordNet not found" in caplog.text
    assert len(res.evaluations) >= 3  # the seeds and at least one delete/swap edit


# ------------------------------------------------------------------------------------------ generation
def test_generate_is_seeded_charged_and_leaves_the_global_rng(causal):
    counter = CostCounter()
    calls = {"n": 0}
    hook = causal.model.register_forward_pre_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    torch.manual_seed(5)
    state = torch.get_rng_state()
    try:
        a = causal.generate(
            ["hello", "a longer prompt here"], max_new_tokens=5, seed=3, charge=counter.forward
        )
    finally:
        hook.remove()
    assert torch.equal(torch.get_rng_state(), state)
    assert len(a) == 2 and all(isinstance(x, str) for x in a)
    assert counter.total.forward_passes == calls["n"] and 1 <= calls["n"] <= 5  # one pass per step
    assert counter.total.sequences == 2 * calls["n"]
    assert causal.generate(["hello", "a longer prompt here"], max_new_tokens=5, seed=3) == a
    assert causal.generate(["hello", "a longer prompt here"], max_new_tokens=5, seed=4) != a
    # a batch of one gives the same text as in a batch (left padding, position ids from the mask)
    assert (
        causal.generate(["hello"], max_new_tokens=5, seed=3, temperature=0)
        == causal.generate(["hello", "a longer prompt here"], max_new_tokens=5, seed=3, temperature=0)[:1]
    )


def test_generate_refused_by_the_budget_guard_before_the_pass(causal):
    from miner.errors import BudgetExhausted

    def guard(fwd, bwd):
        if counter.total.forward_passes + fwd > 2:
            raise BudgetExhausted("max_forward_passes=2 would be exceeded")

    counter = CostCounter(guard=guard)
    with pytest.raises(BudgetExhausted):
        causal.generate(["hello"], max_new_tokens=6, seed=0, temperature=0.9, charge=counter.forward)
    assert counter.total.forward_passes == 2


def test_masked_lm_cannot_generate():
    with pytest.raises(ConfigError, match="masked LM"):
        tiny_masked().generate(["hello"])


# ------------------------------------------------------------------------------------------ the searcher
class Scripted:
    """A generator that answers request i with ``outputs[i % len]`` and charges one pass per call."""

    def __init__(self, outputs):
        self.outputs, self.requests = list(outputs), []

    def generate(self, prompts, *, charge=None, **kw):
        start = len(self.requests)
        self.requests.extend(prompts)
        if charge is not None:
            with charge(len(prompts), 7 * len(prompts), 7 * len(prompts)):
                pass
        return [self.outputs[(start + i) % len(self.outputs)] for i in range(len(prompts))]


def scripted(outputs, **params):
    gen = Scripted(outputs)

    @dataclasses.dataclass
    class WithScript(ParaphraseSearcher):
        def load_generator(self, context):
            return gen

    return WithScript(**params), gen


def _rows(db):
    return Leaderboard(f"sqlite:///{db}").rows(order="time")[::-1]


def test_evo_with_a_scripted_generator_records_cost_and_parents(tmp_path, causal, data, caplog):
    s, gen = scripted(
        ["[X] All in all, it was [Y]\nnoise", "[X] It was", "Text: [X] Verdict: [Y]", "[Y] [X]", DEMOS[1][2]],
        population=3,
        generations=2,
    )
    board = Leaderboard(f"sqlite:///{tmp_path / 'lb.db'}")
    with caplog.at_level(logging.INFO, logger="miner.search.paraphrase"):
        run_searcher(
            s,
            causal,
            data,
            prompts=seed_prompts(data.label_names),
            board=board,
            run_id=board.start_run({}, {}),
        )
    rows = _rows(tmp_path / "lb.db")
    templates = [r.prompt["template"] for r in rows]
    # every variant is a rejection, an unchanged copy or a new row
    m = re.search(r"(\d+) variants made, (\d+) rejected .*?, (\d+) unchanged, (\d+) new prompts", caplog.text)
    assert m is not None
    made, rejected, unchanged, new = map(int, m.groups())
    assert made == rejected + unchanged + new and new == len(rows) - 2
    assert templates[:2] == [p.template for p in seed_prompts(data.label_names)]
    assert "{sentence} All in all, it was {answer}" in templates
    assert "Text: {sentence} Verdict: {answer}" in templates
    assert all(check_variant("{sentence} It was {answer}", t) is None for t in templates)
    assert "[X] It was [Y]" in gen.requests[0] and "Keep [X] and [Y]" in gen.requests[0]
    child = next(r for r in rows if r.extra.get("operator", "seed") != "seed")
    assert child.extra["generation"]["forward_passes"] == 1  # the fill-up round's one scripted call
    assert child.forward_passes >= 1 + 1  # the row's cost holds the generation and its scoring
    last = rows[-1].extra
    assert last["generation_total"]["forward_passes"] == 3  # fill-up + 2 generations, one call each
    assert last["rejected"] >= 1 and last["rejected_by_reason"].get("lost_slot", 0) >= 1
    assert last["rejected_by_reason"].get("copied_demo", 0) >= 1  # a demonstration's child is no variant
    assert all(r.dev_score is not None for r in rows)


def test_a_child_seen_in_an_earlier_round_is_unchanged_not_a_row(causal, data, caplog):
    s, _ = scripted(["[X] All in all, it was [Y]"], population=2, generations=1)
    with caplog.at_level(logging.INFO, logger="miner.search.paraphrase"):
        res = run_searcher(s, causal, data, prompts=seed_prompts(data.label_names)[:1])
    assert len(res.evaluations) == 2  # the seed and the fill-up child; round 1 repeats the child twice
    assert "3 variants made, 0 rejected (none), 2 unchanged, 1 new prompts evaluated" in caplog.text


def test_all_variants_losing_a_slot_is_a_counted_rejection(tmp_path, causal, data, caplog):
    s, _ = scripted(["[X] It was great", "It was [Y]"], population=3, generations=1)
    board = Leaderboard(f"sqlite:///{tmp_path / 'lb.db'}")
    with caplog.at_level(logging.INFO, logger="miner.search.paraphrase"):
        res = run_searcher(
            s,
            causal,
            data,
            prompts=seed_prompts(data.label_names),
            board=board,
            run_id=board.start_run({}, {}),
        )
    assert [e.prompt.template for e in res.evaluations] == [
        p.template for p in seed_prompts(data.label_names)
    ]
    rows = _rows(tmp_path / "lb.db")
    seeds = [p.template for p in seed_prompts(data.label_names)]
    assert [r.prompt["template"] for r in rows] == seeds  # nothing partial
    assert "all 1 variants of '{sentence} It was {answer}' rejected (lost_slot: 1)" in caplog.text
    assert "4 rejected (lost_slot: 4), 0 unchanged, 0 new prompts evaluated; 3 parents" in caplog.text


def test_leaderboard_rows_seed_the_search(tmp_path, causal, data):
    board = Leaderboard(f"sqlite:///{tmp_path / 'lb.db'}")
    mine = seed_prompts(data.label_names)[1].with_(template="Opinion: {sentence} Verdict: {answer}")
    run_searcher(ManualSearcher(), causal, data, prompts=[mine], board=board, run_id=board.start_run({}, {}))
    s = ParaphraseSearcher(operator="edit", iterations=0, leaderboard_top=1)
    res = run_searcher(
        s,
        causal,
        data,
        prompts=seed_prompts(data.label_names)[:1],
        board=board,
        run_id=board.start_run({}, {}),
    )
    assert [e.prompt.template for e in res.evaluations][-1] == mine.template


@pytest.mark.slow  # an end-to-end run of several seconds: outside the fast tier
def test_edit_loop_keeps_the_best_and_is_deterministic(data):
    be = tiny_masked()
    s = ParaphraseSearcher(operator="edit", iterations=2, num_candidates=2, patience=2)
    a = run_searcher(s, be, data, prompts=seed_prompts(data.label_names), budget={"max_evaluations": 5})
    b = run_searcher(s, be, data, prompts=seed_prompts(data.label_names), budget={"max_evaluations": 5})
    assert [e.prompt.template for e in a.evaluations] == [e.prompt.template for e in b.evaluations]
    assert len(a.evaluations) > 2
    for e in a.evaluations:
        assert check_variant("{sentence} It was {answer}", e.prompt.template) is None
    assert a.cost.forward_passes == sum(e.cost.forward_passes for e in a.evaluations)  # no generation


def test_evo_with_the_tiny_model_is_deterministic(causal, data):
    s = ParaphraseSearcher(population=3, generations=1, max_new_tokens=4)
    a = run_searcher(s, causal, data, prompts=seed_prompts(data.label_names))
    b = run_searcher(s, causal, data, prompts=seed_prompts(data.label_names))
    assert [e.prompt.key for e in a.evaluations] == [e.prompt.key for e in b.evaluations]
    assert a.cost.forward_passes == b.cost.forward_passes
    # the generator's steps are charged: more passes than the rows' scoring alone
    assert a.cost.forward_passes > sum(e.cost.forward_passes for e in a.evaluations) - 1


# ------------------------------------------------------------------------------------------ bad input
def test_generator_that_cannot_be_loaded_is_one_line(causal, data, tmp_path, monkeypatch):
    from miner.scoring import Scorer
    from miner.search import SearchContext

    ctx = SearchContext(
        data.without_test(), causal, Scorer(causal), 13, tuple(seed_prompts(data.label_names))
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="cannot be loaded offline") as exc:
        ParaphraseSearcher(generator="nobody/not-a-cached-model").validate(ctx)
    assert "\n" not in str(exc.value)
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError, match="paraphrase.generator") as exc:
        run_searcher(
            ParaphraseSearcher(generator=missing), causal, data, prompts=seed_prompts(data.label_names)
        )
    assert "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="masked LM"):
        ParaphraseSearcher(operator="evo").validate(dataclasses.replace(ctx, backend=tiny_masked()))


def test_cli_bad_generator_is_a_clean_failure(make_config, clean_failure, tmp_path):
    path, _ = make_config(
        searchers=[{"name": "paraphrase", "params": {"generator": str(tmp_path / "gone")}}], seeds=[1]
    )
    clean_failure(["run", path], needle="generator", watch=tmp_path, db=tmp_path / "lb.db")


def test_bad_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="population"):
        ParaphraseSearcher(population=0)
    with pytest.raises(ConfigError, match="edits"):
        ParaphraseSearcher(edits=["explode"])


# ------------------------------------------------------------------------------------------ conformance
class TestParaphraseEvo(SearcherConformance):
    @pytest.fixture
    def searcher(self):
        return ParaphraseSearcher(population=3, generations=1, max_new_tokens=6)

    @pytest.fixture
    def backend(self, conformance_backend, searcher):
        if conformance_backend.kind == "masked":
            pytest.skip("on a masked LM operator auto is the edit operator (TestParaphraseEdit)")
        return conformance_backend


class TestParaphraseEdit(SearcherConformance):
    @pytest.fixture
    def searcher(self):
        return ParaphraseSearcher(operator="edit", iterations=2, num_candidates=2)
