"""The ``mining`` searcher and the corpus readers: hand-checked patterns and supports, ranking, contexts,
slot preservation, streaming, offline corpora and bad input (one line, nothing on the leaderboard)."""

from __future__ import annotations

import bz2
import gzip
import json

import pytest

from miner.config import BudgetSpec
from miner.corpora import (
    Corpus,
    CorpusError,
    PhraseMatcher,
    join_tokens,
    normalize,
    path_corpus,
    resolve,
    split_sentences,
    strip_wiki,
    tokenize,
    wordnet_gloss,
)
from miner.errors import ConfigError, MinerError
from miner.prompts import Prompt
from miner.runner import run_searcher
from miner.scoring import Scorer
from miner.search import SearchContext, parameters, searchers
from miner.search.mining import MiningSearcher, Pattern, mine_contexts, mine_relations, rewrite_object_first
from miner.tasks import Example, TaskData
from miner.testing.conformance import SearcherConformance
from miner.testing.tiny import tiny_causal, tiny_masked


class TestMiningConformance(SearcherConformance):
    @pytest.fixture
    def searcher(self):
        return MiningSearcher(corpora=["task"], max_prompts=4, auto_words=2, min_support=1)


# ------------------------------------------------------------------------------------- fixtures

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("India", "New Delhi"),
]

SENTENCES = [
    "The capital of France is Paris.",
    "Everyone knows that the capital of Japan is Tokyo!",
    "Paris is the capital of France.",
    "Berlin is the capital of Germany, and it is large.",
    "Rome is the capital of Italy. Rome is old.",
    "In Rome, the capital of Italy, people eat pasta.",
    "A Parisian in France is not Paris.",  # "Parisian" is not "Paris": only "France ... Paris" counts
    "New Delhi is the capital of India.",
    "Japan is an island nation.",  # one entity only: no pattern
]


def _corpus(lines, name="toy"):
    return Corpus.from_iterable(name, list(lines))


def fact_task(pairs=CAPITALS, dev=None) -> TaskData:
    objects = tuple(dict.fromkeys(o for _, o in pairs))
    train = tuple(Example({"subject": s}, objects.index(o)) for s, o in pairs)
    dev_pairs = dev if dev is not None else pairs[:3]
    dev_ex = tuple(Example({"subject": s}, objects.index(o)) for s, o in dev_pairs)
    return TaskData("capital", ("subject",), objects, "accuracy", train, dev_ex, (), None, 13)


@pytest.fixture(scope="module")
def causal():
    return tiny_causal()


@pytest.fixture(scope="module")
def masked():
    return tiny_masked()


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "facts.txt"
    path.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    return path


def _context(backend, task, prompts=()):
    return SearchContext(
        task=task, backend=backend, scorer=Scorer(backend, progress=False), seed=13, prompts=prompts
    )


# ------------------------------------------------------------------------------ pattern extraction


def test_middle_and_window_patterns_are_the_hand_checked_ones():
    patterns, stats = mine_relations(CAPITALS, [_corpus(SENTENCES)], max_middle=5, window=3, min_support=1)
    got = {p.template: (p.kind, p.support, p.occurrences) for p in patterns}
    # subject first: France/Paris and Japan/Tokyo, each with the 3-word window "the capital of"
    assert got["{subject} is {answer}"] == ("middle", 2, 2)
    assert got["The capital of {subject} is {answer}"] == ("window", 2, 2)
    # object first: Paris/France, Berlin/Germany, Rome/Italy, New Delhi/India (a two-word object)
    assert got["{answer} is the capital of {subject}"] == ("middle", 4, 4)
    assert got["{answer}, the capital of {subject}"][1] == 1 or "In {answer}, the capital of {subject}" in got
    # "A Parisian in France is not Paris." gives France ... Paris with 3 middle words, nothing from "Parisian"
    assert got["{subject} is not {answer}"] == ("middle", 1, 1)
    assert "{answer} in {subject}" not in got  # "Parisian in France" would give it if Parisian matched Paris
    # shorter windows seen with exactly the same pairs as a longer one are subsumed by it (closed patterns)
    assert "Capital of {subject} is {answer}" not in got and "Of {subject} is {answer}" not in got
    assert stats.sentences == 10 and stats.matched == 8  # "Rome is old." is its own sentence


def test_patterns_are_ranked_by_distinct_pairs_not_occurrences():
    lines = ["Paris lies in France."] * 5 + ["Paris, capital of France.", "Tokyo, capital of Japan."]
    patterns, _ = mine_relations(CAPITALS, [_corpus(lines)], window=0, min_support=1)
    assert [(p.template, p.support, p.occurrences) for p in patterns] == [
        ("{answer}, capital of {subject}", 2, 2),
        ("{answer} lies in {subject}", 1, 5),
    ]
    patterns, _ = mine_relations(CAPITALS, [_corpus(lines)], window=0, min_support=2)
    assert [p.template for p in patterns] == ["{answer}, capital of {subject}"]


def test_matching_is_whole_word_case_insensitive_and_multi_word():
    m = PhraseMatcher(["New Delhi", "Delhi", "India", "Guinea-Bissau"])
    low = [t.lower() for t in tokenize("NEW DELHI and delhi, not Delhian; india's GUINEA-BISSAU")]
    assert [(p, low[a:b]) for a, b, p in m.find(low)] == [
        ("New Delhi", ["new", "delhi"]),
        ("Delhi", ["delhi"]),
        ("Guinea-Bissau", ["guinea-bissau"]),
    ]  # "india's" is one token: not the word "India"
    patterns, _ = mine_relations([("India", "New Delhi")], [_corpus(["new delhi lies in INDIA"])], window=0)
    assert patterns[0].template == "{answer} lies in {subject}" and patterns[0].examples == (
        "india -> new delhi",
    )


def test_templates_escape_literal_braces_and_capitalise_a_leading_word():
    patterns, _ = mine_relations([("France", "Paris")], [_corpus(["so France {y} Paris"])], window=1)
    by_kind = {p.kind: p.template for p in patterns}
    assert by_kind == {"middle": "{subject} {{y}} {answer}", "window": "So {subject} {{y}} {answer}"}
    parsed = Prompt.create(by_kind["window"], {"Paris": ["Paris"]}).parsed
    assert (
        parsed.fields == ("subject",)
        and parsed.render({"subject": "France"}, "Paris") == "So France {y} Paris"
    )


def test_classification_contexts_and_their_support():
    words = {"great": 1, "terrible": 0}
    labelled = Corpus(
        "task",
        lambda progress: iter(
            [
                ("A long movie. The film is great.", 1),
                ("Honestly the film is great", 1),
                ("Sadly, the film is terrible.", 1),  # the word's label (0) is not the sentence's: -1
            ]
        ),
        labelled=True,
    )
    patterns, stats = mine_contexts(words, [labelled], fields=["sentence"], cue_lengths=[2, 3])
    got = {p.template: (p.support, p.detail["sentences"], p.detail["word_labels"]) for p in patterns}
    assert got["{sentence} The film is {answer}"] == (1.0, 3, {1: 2, 0: 1})
    assert got["{sentence} Film is {answer}"] == (1.0, 3, {1: 2, 0: 1})
    assert stats.sentences == 4 and stats.matched == 3
    plain, _ = mine_contexts(words, [labelled], fields=["sentence"], cue_lengths=[3], agreement=False)
    assert [(p.template, p.support) for p in plain] == [("{sentence} The film is {answer}", 3.0)]
    two, _ = mine_contexts(
        words,
        [_corpus(["so the film is great"])],
        fields=["premise", "hypothesis"],
        cue_lengths=[2],
        balanced=False,
    )
    assert two[0].template == "{premise} {hypothesis} Film is {answer}"


def test_a_capitalised_label_word_inside_a_sentence_is_a_name():
    words = {"great": 1, "bad": 0}
    lines = [
        "Alexander the Great ruled.",
        "Great food, he said.",
        "He said: Great food.",
        "the plan was great",
    ]
    patterns, stats = mine_contexts(
        words, [_corpus(lines)], fields=["sentence"], cue_lengths=[2], balanced=False
    )
    # "the Great" (a name) gives nothing; a sentence-initial "Great" and one after punctuation are the word
    assert {p.template for p in patterns} == {"{sentence} Said: {answer}", "{sentence} Plan was {answer}"}
    assert stats.matched == 2  # a sentence-initial word has no cue before it
    loose, _ = mine_contexts(
        words, [_corpus(lines)], fields=["sentence"], cue_lengths=[2], match_case=False, balanced=False
    )
    assert "{sentence} Alexander the {answer}" in {p.template for p in loose}


def test_balanced_support_clips_each_label_at_the_runner_up():
    words = {"good": 1, "great": 1, "bad": 0, "against": 0}
    lines = ["it was a good day"] * 5 + ["it was a bad day"] * 2 + ["abortions are against the law"] * 6
    got = {
        p.template: p.support
        for p in mine_contexts(words, [_corpus(lines)], fields=["sentence"], cue_lengths=[2], min_support=1)[
            0
        ]
    }
    assert got == {"{sentence} Was a {answer}": 4.0}  # min(5, 2) + min(2, 2); "Abortions are": 0
    plain = mine_contexts(words, [_corpus(lines)], fields=["sentence"], cue_lengths=[2], balanced=False)[0]
    assert {p.template: p.support for p in plain} == {
        "{sentence} Abortions are {answer}": 6.0,
        "{sentence} Was a {answer}": 7.0,
    }


def test_default_corpora_are_the_general_ones_where_installed(causal, monkeypatch, caplog):
    import miner.search.mining as mining_mod
    from miner.corpora import CorpusError as CE

    ctx = _context(causal, fact_task())
    s = MiningSearcher()
    names = {mode: [c.name for c in s._corpora(ctx, mode)] for mode in ("relations", "classification")}
    try:
        resolve("wikipedia"), resolve("lee")
    except CorpusError:
        pytest.skip("the gensim wheel's corpora are not installed here")
    assert names == {"relations": ["wikipedia", "lee"], "classification": ["task", "wikipedia", "lee"]}

    def no_gensim(spec, task=None):
        if spec == "task":
            return resolve(spec, task)
        raise CE(f"corpus {spec!r} needs the gensim wheel's test data: pip install --no-deps gensim")

    monkeypatch.setattr(mining_mod, "resolve", no_gensim)
    with caplog.at_level("INFO", logger="miner"):
        assert [c.name for c in s._corpora(ctx, "classification")] == ["task"]
    assert "default corpus left out: corpus 'wikipedia' needs the gensim" in caplog.text
    with pytest.raises(CorpusError, match="pip install --no-deps gensim"):
        s._corpora(ctx, "relations")


# ------------------------------------------------------------------------------ the searcher


@pytest.fixture(scope="module")
def fact_run(causal, tmp_path_factory):
    """One mining run on the hand-made fact task and the toy corpus, recorded on a leaderboard."""
    from miner.leaderboard import Leaderboard

    d = tmp_path_factory.mktemp("facts")
    corpus = d / "facts.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    board = Leaderboard(f"sqlite:///{d / 'lb.db'}")
    run_id = board.start_run({}, {})
    s = MiningSearcher(corpora=[str(corpus)], min_support=1, max_prompts=3)
    res = run_searcher(s, causal, fact_task(), board=board, run_id=run_id)
    return res, board.rows(task="capital"), str(corpus)


def test_fact_task_rows_keep_the_slots_and_the_answer_last_on_causal_lms(fact_run):
    res, _, _ = fact_run
    assert len(res.evaluations) == 3
    for ev in res.evaluations:
        tpl = ev.prompt.parsed
        assert tpl.fields == ("subject",) and tpl.answer_at_end
        assert tpl.text.count("{subject}") == 1
        assert ev.prompt.verbalizer.labels == fact_task().label_names
    templates = [ev.prompt.template for ev in res.evaluations]
    # support 4, object first, rewritten with the answer last; then the best subject-first pattern (support 2)
    assert templates[:2] == ["The capital of {subject} is {answer}", "{subject} is {answer}"]
    assert not any(t.startswith("{answer}") for t in templates)


def test_fact_task_extra_records_support_source_kind_and_rejections(fact_run):
    _, rows, corpus = fact_run
    extras = [r.extra["mining"] for r in rows]
    assert len(extras) == 3 and all(e["source"] == [corpus] for e in extras)
    assert {e["kind"] for e in extras} <= {"middle", "window"}
    top = next(e for e in extras if e["rank"] == 0)
    assert top["support"] == 4 and top["occurrences"] == 4 and top["kind"] == "middle"
    assert top["rewritten_from"] == "{answer} is the capital of {subject}"
    second = next(e for e in extras if e["rank"] == 1)
    assert (second["support"], second["kind"], "rewritten_from" in second) == (2, "middle", False)
    # the rewrite duplicates the "The capital of ..." window (support 2), which is then passed over
    assert top["rejected"] == {"rewritten": 1, "duplicate": 1}
    assert top["pairs"] == 5


def test_object_first_rewrites():
    def rewrite(template_words, kind="middle"):
        pattern = Pattern("x", kind, 1, 1, ("t",), answer_first=True, detail={"middle": template_words})
        out = rewrite_object_first(pattern)
        return out.template if out else None

    assert rewrite(["is", "the", "capital", "of"]) == "The capital of {subject} is {answer}"
    assert rewrite([",", "the", "capital", "of"]) == "The capital of {subject}: {answer}"
    assert rewrite([":", "capital", "of"]) == "Capital of {subject}: {answer}"
    assert rewrite(["("]) == "{subject}: {answer}"
    assert rewrite(["lies", "in"]) is None and rewrite(["is"]) is None
    assert rewrite([",", "the", "capital", "of"], kind="window") is None


def test_masked_lms_keep_object_first_patterns(masked, corpus_file):
    s = MiningSearcher(corpora=[str(corpus_file)], min_support=2, max_prompts=1)
    res = run_searcher(s, masked, fact_task(), budget=BudgetSpec(max_evaluations=10))
    templates = [ev.prompt.template for ev in res.evaluations]
    assert templates[0] == "{answer} is the capital of {subject}"  # support 4: first on a masked LM


def test_classification_with_no_hand_written_words(causal):
    from miner.tasks import TaskSpec, load_task

    data = load_task(TaskSpec(source="builtin", name="rotten_tomatoes", max_test=8), 4, 13)
    s = MiningSearcher(corpora=["task"], max_prompts=2, auto_words=3, min_support=1)
    res = run_searcher(s, causal, data, budget=BudgetSpec(max_evaluations=2))
    assert res.evaluations, "the probe template with its mined words is always proposed"
    first = res.evaluations[0].prompt
    assert first.template == "{sentence} It was {answer}" and len(first.verbalizer.words) == 2
    for ev in res.evaluations:
        assert ev.prompt.parsed.fields == ("sentence",) and ev.prompt.parsed.answer_at_end


def test_without_rewrites_object_first_patterns_are_skipped_on_causal_lms(causal, corpus_file, caplog):
    s = MiningSearcher(corpora=[str(corpus_file)], min_support=2, max_prompts=5, rewrite_object_first=False)
    with caplog.at_level("INFO", logger="miner.search.mining"):
        res = run_searcher(s, causal, fact_task(CAPITALS[:3], dev=[]), budget=BudgetSpec(max_evaluations=5))
    templates = [ev.prompt.template for ev in res.evaluations]
    assert templates == ["{subject} is {answer}", "The capital of {subject} is {answer}"]
    # "{answer} is the capital of {subject}" (Paris/France, Berlin/Germany) is counted, not proposed
    assert "rejected {'answer_not_last': 1}" in caplog.text


def test_budget_stops_the_proposals(causal, corpus_file):
    s = MiningSearcher(corpora=[str(corpus_file)], min_support=1, max_prompts=20)
    res = run_searcher(s, causal, fact_task(CAPITALS[:3], dev=[]), budget=BudgetSpec(max_evaluations=1))
    assert len(res.evaluations) == 1 and res.stopped_by_budget is None  # stopped by can_afford, not an error


# ------------------------------------------------------------------------------ streaming


class _Line(str):
    """A line that counts how many of its kind are alive at once (a materialised corpus keeps them all)."""

    alive = 0
    most = 0

    def __new__(cls, text):
        cls.alive += 1
        cls.most = max(cls.most, cls.alive)
        return super().__new__(cls, text)

    def __del__(self):
        type(self).alive -= 1


def test_a_generator_corpus_is_read_once_and_never_materialised():
    n_lines = 100_000
    consumed = 0

    def lines():
        nonlocal consumed
        for i in range(n_lines):
            consumed += 1
            yield _Line("The capital of France is Paris." if i % 1000 == 0 else f"Filler line {i} here.")

    corpus = Corpus.from_iterable("gen", lines())
    patterns, stats = mine_relations([("France", "Paris")], [corpus], window=3)
    assert consumed == n_lines and stats.sentences == n_lines and stats.matched == 100
    assert {(p.template, p.occurrences) for p in patterns} == {
        ("{subject} is {answer}", 100),
        ("The capital of {subject} is {answer}", 100),
    }
    assert _Line.most <= 3, f"{_Line.most} lines alive at once: the corpus was held in memory"
    assert _Line.alive == 0
    assert list(corpus.texts()) == []  # the generator is spent: a second pass reads nothing


def test_files_gz_bz2_and_folders_stream_their_lines(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("One sentence here. Another one there.\n\nThird.", encoding="utf-8")
    with gzip.open(tmp_path / "d" / "sub" / "b.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("Gzip line.\n")
    with bz2.open(tmp_path / "d" / "c.txt.bz2", "wt", encoding="utf-8") as fh:
        fh.write("Bzip line.\n")
    (tmp_path / "d" / "ignored.csv").write_text("x,y\n")
    got = [s for s, _ in path_corpus(tmp_path / "d").sentences()]
    assert got == ["One sentence here.", "Another one there.", "Third.", "Bzip line.", "Gzip line."]
    long = tmp_path / "one_line.txt"  # text8-style: no newline, no punctuation
    long.write_text(" ".join(["word"] * 50_000), encoding="utf-8")
    pieces = [s for s, _ in path_corpus(long).sentences()]
    assert sum(len(p.split()) for p in pieces) == 50_000 and max(len(p.split()) for p in pieces) <= 64


def test_sentence_splitting_and_token_joining():
    assert list(split_sentences('He said "Stop." Then he left! Was it 3 p.m.? Yes')) == [
        'He said "Stop."',
        "Then he left!",
        "Was it 3 p.m.?",
        "Yes",
    ]
    assert join_tokens(tokenize("Paris ( France ) , the city")) == "Paris (France), the city"
    assert normalize("The  capital of {subject} , is") == normalize("the capital of {subject}, is")


def test_hf_dataset_column_from_local_files(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text(
        "\n".join(json.dumps({"text": t, "n": i}) for i, t in enumerate(["Alpha text.", "Beta text."]))
    )
    corpus = resolve({"hf": "json", "data_files": str(data), "column": "text"})
    assert [s for s, _ in corpus.sentences()] == ["Alpha text.", "Beta text."]
    bad_column = resolve({"hf": "json", "data_files": str(data), "column": "body"})
    with pytest.raises(CorpusError, match="no column 'body'"):
        bad_column.check()


def test_wordnet_gloss_lines():
    line = (
        "08932568 15 n 02 Paris 0 City_of_Light 0 005 @ 08524735 n 0000 | the capital and largest city of "
        'France; and international center of culture and commerce; "Paris is lovely in spring"  '
    )
    assert wordnet_gloss(line) == [
        "Paris: the capital and largest city of France; and international center of culture and commerce",
        "Paris is lovely in spring",
    ]
    assert wordnet_gloss("  1 This software and database is being provided") == []


def test_builtin_corpora_are_found_or_say_why(monkeypatch, tmp_path):
    try:
        lee = resolve("lee")
    except CorpusError as exc:
        assert "gensim" in str(exc)
    else:
        first = next(lee.sentences())
        assert first[0].startswith("Hundreds of people have been forced")
    monkeypatch.setenv("WNSEARCHDIR", str(tmp_path))
    with pytest.raises(CorpusError, match="wordnet-base"):
        resolve("wordnet")


def test_strip_wiki():
    text = "'''Paris''' is the [[capital city|capital]] of [[France]].{{cite|a={{b}}}}<ref>x</ref> [[File:x.png|thumb|y]]"
    assert " ".join(strip_wiki(text).split()) == "Paris is the capital of France."


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "corpus, needle",
    [
        ("no/such/corpus.txt", "does not exist"),
        ("EMPTY", "is empty"),
        ({"hf": "some-user/some-dataset"}, "would need the Hugging Face hub"),
    ],
)
def test_bad_corpora_fail_before_the_first_row(tmp_path, make_config, clean_failure, corpus, needle):
    if corpus == "EMPTY":
        empty = tmp_path / "empty.txt"
        empty.write_text("\n\n   \n")
        corpus = str(empty)
    path, _ = make_config(searchers=[{"name": "mining", "params": {"corpora": [corpus]}}])
    clean_failure(["run", path], needle=needle, watch=tmp_path, db=tmp_path / "lb.db", allow=("empty.txt",))


def test_a_fact_task_without_training_pairs_is_one_line(causal, corpus_file):
    empty = fact_task()
    import dataclasses

    empty = dataclasses.replace(empty, train=())
    with pytest.raises(ConfigError, match="no training pairs") as info:
        MiningSearcher(corpora=[str(corpus_file)]).validate(_context(causal, empty))
    assert "\n" not in str(info.value)


def test_bad_parameters_are_config_errors():
    with pytest.raises(ConfigError, match="mining.max_prompts"):
        MiningSearcher(max_prompts=0)
    with pytest.raises(ConfigError, match="mining.cue_lengths"):
        MiningSearcher(cue_lengths=[])


def test_every_parameter_is_described():
    cls = searchers.get("mining")
    assert cls is MiningSearcher
    assert not [p.name for p in parameters(cls) if not p.description]


def test_errors_are_miner_errors():
    assert issubclass(CorpusError, MinerError)


def test_the_ensemble_of_the_best_mined_prompts_costs_no_new_pass(causal, corpus_file):
    from miner.prompts import PromptEnsemble

    s = MiningSearcher(corpora=[str(corpus_file)], min_support=1, max_prompts=2, ensemble_top=2)
    res = run_searcher(s, causal, fact_task(CAPITALS[:3]), budget=BudgetSpec(max_evaluations=5))
    *singles, ens = res.evaluations
    assert len(singles) == 2 and isinstance(ens.prompt, PromptEnsemble)
    assert {m.key for m in ens.prompt.members} == {ev.prompt.key for ev in singles}
    assert ens.cost.forward_passes == 0  # its members' requests are cached
