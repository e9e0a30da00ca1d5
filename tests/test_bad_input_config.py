"""Bad input in configs, data files and templates: caught before any work, as one-line errors, in bounded memory.

CLI-level cases use the ``clean_failure`` fixture (exit 2, one stderr line naming the problem, no
leaderboard rows, no new files); library-level cases check the error type and message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
import torch
import yaml

from miner.config import load_config, parse_config
from miner.errors import ConfigError, DataError, PromptError
from miner.prompts import Prompt, Verbalizer, parse_template
from miner.tasks import TaskSpec, load_task

MAX_SLOTS = 4096  # miner.prompts._template.MAX_SLOTS
VERB = {"negative": "terrible", "positive": "great"}


@pytest.fixture
def run_fails(tmp_path, make_config, clean_failure):
    """Write a config (top-level keys replaced by ``over``) and assert that ``miner run`` fails cleanly."""

    def check(needle: str, text: str | None = None, **over) -> str:
        path, _ = make_config(**over)
        if text is not None:
            path.write_text(text)
        return clean_failure(
            ["run", path, "--no-progress"], needle=needle, watch=tmp_path, db=tmp_path / "lb.db"
        )

    return check


def _dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


# --------------------------------------------------------------------------- YAML


def test_yaml_alias_refused(run_fails, make_config):
    _, cfg = make_config()
    text = _dump(cfg).replace(
        "with_calibration: true", "with_calibration: true\n    a: &a [x, x, x]\n    b: [*a, *a, *a]"
    )
    assert "*a" in text
    line = run_fails("alias *a is not allowed", text=text)
    assert "line" in line


def test_yaml_alias_bomb_is_refused_in_bounded_memory(tmp_path):
    lines = [
        "searchers:",
        "  - name: manual",
        "    params:",
        '      l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
    ]
    lines += [f"      l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"bomb\.yaml.*line 5.*alias \*l0 is not allowed"):
            load_config(path)
        assert tracemalloc.get_traced_memory()[1] < 20 * 2**20
    finally:
        tracemalloc.stop()


def test_yaml_duplicate_key(run_fails, make_config):
    _, cfg = make_config()
    text = _dump(cfg) + "seeds: [7]\n"
    line = run_fails("duplicate key 'seeds'", text=text)
    assert "first given at line" in line and "at line" in line


def test_yaml_duplicate_nested_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task:\n  source: builtin\n  max_test: 5\n  max_test: 6\n")
    with pytest.raises(
        ConfigError, match=r"line 4, column 3: duplicate key 'max_test' \(first given at line 3\)"
    ):
        load_config(path)


def test_yaml_too_large(run_fails, make_config):
    _, cfg = make_config()
    text = _dump(cfg) + ("# padding\n" * (2**20 // 10 + 1))
    run_fails("larger than the 1 MB limit", text=text)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("seeds: " + "[" * 100_000 + "\n", "nested deeper than 64 levels"),
        ("seeds: [" + "9" * 5000 + "]\n", "integer of 5000 characters is too long"),
    ],
    ids=["deep", "long-int"],
)
def test_yaml_deep_or_endless(tmp_path, text, needle):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle) as info:
        load_config(path)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_config_path_that_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"c\.yaml' is a FIFO \(named pipe\), not a regular file"):
        load_config(fifo)
    with pytest.raises(ConfigError, match="is a directory, not a regular file"):
        load_config(tmp_path)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "over, needle",
    [
        ({"budget": {"max_seconds": float("nan")}}, "budget.max_seconds"),
        ({"budget": {"max_seconds": float("inf")}}, "budget.max_seconds"),
        ({"task": {"source": "builtin", "dev_fraction": float("inf")}}, "task.dev_fraction"),
        (
            {
                "searchers": [
                    {"name": "manual", "params": {"with_calibration": True, "x": [1.0, float("-inf")]}}
                ]
            },
            "params.x[1] must be a finite number",
        ),
        ({"k": True}, "k[0]"),
        ({"k": [4.0]}, "k[0]"),
        ({"k": ["4"]}, "k[0]"),
        ({"k": []}, "k: give at least one value"),
        ({"seeds": [99999999999999999999999]}, "seeds[0]: a seed must be an integer in 0..4294967295"),
        ({"seeds": [-1]}, "seeds[0]"),
        ({"seeds": [True]}, "seeds[0]"),
        ({"seeds": []}, "seeds: give at least one value"),
        ({"task": {"source": "builtin", "split_seed": -1}}, "task.split_seed: a seed must be"),
        ({"task": {"source": "builtin", "max_test": True}}, "task.max_test"),
        ({"model": {"name": "x", "batch_size": True}}, "model.batch_size"),
        ({"content_free": []}, "content_free"),
        ({"content_free": ["N/A", 3]}, "content_free[1]"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_numbers_and_lists_checked_at_parse_time(run_fails, over, needle):
    run_fails(needle, **over)


def test_big_seed_never_reaches_the_runs_table(run_fails, tmp_path):
    # Used to fail in torch.manual_seed after the runs row was written.
    run_fails("seeds[1]", seeds=[1, 2**32])
    assert not (tmp_path / "lb.db").exists()
    assert parse_config({"seeds": [0, 2**32 - 1], "k": [None, 0, 16]}).seeds == [0, 2**32 - 1]


# --------------------------------------------------------------------------- device


@pytest.mark.parametrize("device", ["bogus", "cuda:x", "cpu:0", "CUDA", ""])
def test_device_form_checked_at_parse_time(run_fails, tiny_model_dir, device):
    run_fails("model.device", model={"name": str(tiny_model_dir), "device": device})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_unavailable_device_is_one_line(run_fails, tiny_model_dir):
    line = run_fails(
        "'cuda:7' is not available: this machine has cpu",
        model={"name": str(tiny_model_dir), "device": "cuda:7"},
    )
    assert line.endswith("this machine has cpu") or "mps" in line


def test_pick_device_names_the_devices_there_are(monkeypatch):
    from miner.models import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"'cuda:7' is not available: this machine has cpu, cuda:0\.\.1"):
        pick_device("cuda:7")
    assert pick_device("cuda:1") == torch.device("cuda:1")
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="is not one of auto, cpu, cuda, cuda:N or mps"):
        pick_device("bogus")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"this machine has cpu, cuda:0($|, mps)"):
        pick_device("cuda:1")


# --------------------------------------------------------------------------- prompts in the config


@pytest.mark.parametrize(
    "prompt, needle",
    [
        (
            {"template": "{sentence} {trigger} {answer}", "verbalizer": VERB, "triggers": ["abc"]},
            "prompts[0].triggers[0]",
        ),
        (
            {"template": "{sentence} {trigger} {answer}", "verbalizer": VERB, "triggers": [True]},
            "prompts[0].triggers[0]",
        ),
        (
            {"template": "{sentence} {trigger} {answer}", "verbalizer": VERB, "triggers": [-1]},
            "prompts[0].triggers[0]",
        ),
        (
            {"template": "{sentence} {trigger} {answer}", "verbalizer": VERB, "triggers": [99999999]},
            "trigger token id 99999999 is outside the vocabulary",
        ),
        ({"template": "Just say {answer}", "verbalizer": VERB}, "has no text field slot"),
        (
            {
                "template": "{sentence} It was {answer}",
                "verbalizer": {"negative": "great", "positive": " great"},
            },
            "labels 'negative' and 'positive' the same words",
        ),
        (
            {"template": "{sentence} {trigger:300000000} {answer}", "verbalizer": VERB},
            "more than 4096 trigger and soft slots",
        ),
    ],
    ids=[
        "trigger-str",
        "trigger-bool",
        "trigger-negative",
        "trigger-oov",
        "no-field",
        "same-words",
        "huge-slot",
    ],
)
def test_bad_prompt_in_config(run_fails, prompt, needle):
    run_fails(needle, prompts=[prompt])


def test_integer_label_keys_in_a_config_verbalizer_are_label_names():
    cfg = parse_config(
        {"prompts": [{"template": "{sentence} {answer}", "verbalizer": {0: "bad", 1: ["good"]}}]}
    )
    assert cfg.prompts[0].verbalizer == {"0": "bad", "1": ["good"]}


def test_prompt_from_dict_types():
    base = {"template": "{sentence} {trigger} {answer}", "verbalizer": VERB}
    for bad, needle in [
        ({"triggers": ["abc"]}, "trigger token 'abc' is not a token id"),
        ({"triggers": [1.5]}, "trigger token 1.5 is not a token id"),
        ({"triggers": [-3]}, "trigger token -3 is not a token id"),
        ({"triggers": 7}, "must be a list of token ids"),
        ({"triggers": [1], "calibrate": "no"}, "'calibrate' must be true or false"),
        ({"triggers": [1], "meta": [1]}, "'meta' must be a mapping"),
    ]:
        with pytest.raises(PromptError, match=needle):
            Prompt.from_dict({**base, **bad})
    with pytest.raises(PromptError, match="needs a list of words"):
        Prompt.from_dict({"template": "{sentence} {answer}", "verbalizer": {"negative": 5, "positive": "x"}})
    with pytest.raises(PromptError, match="is not a string"):
        Prompt.from_dict({"template": "{sentence} {answer}", "verbalizer": {0: "bad", 1: "good"}})


def test_verbalizer_distinct_words():
    with pytest.raises(PromptError, match=r"labels 'a' and 'c' the same words \['x', 'y'\]"):
        Verbalizer.from_mapping({"a": ["x", "y"], "b": "z", "c": ["y", "x"]})
    with pytest.raises(PromptError, match="labels 'a' and 'b'"):
        Prompt.create("{sentence} {answer}", {"a": "x", "b": "x"}, distinct=True)
    with pytest.raises(PromptError, match="labels 'a' and 'b'"):
        Prompt.from_dict(
            {"template": "{sentence} {answer}", "verbalizer": {"a": "x", "b": "x"}}, distinct=True
        )
    # a word shared by two labels' lists is fine; so are searchers' probes built with distinct=False
    Verbalizer.from_mapping({"a": ["x", "y"], "b": ["x", "z"]})
    assert Prompt.create("{sentence} {answer}", {"a": "x", "b": "x"}).verbalizer.words == (("x",), ("x",))


def test_check_fields_names_the_problem():
    with pytest.raises(
        PromptError, match=r"has no text field slot: use one of the task's text fields \{sentence\}"
    ):
        parse_template("Say {answer}").check_fields(("sentence",))
    with pytest.raises(PromptError, match=r"text fields \(none\)"):
        parse_template("Say {answer}").check_fields(())


# --------------------------------------------------------------------------- templates and the model


@pytest.mark.parametrize("slot", ["trigger", "soft"])
@pytest.mark.parametrize("count", ["300000000", "4097", "9" * 5000])
def test_huge_slot_counts_refused_in_bounded_memory(slot, count):
    tracemalloc.start()
    try:
        with pytest.raises(PromptError, match=f"more than {MAX_SLOTS} trigger and soft slots"):
            parse_template(f"{{sentence}} {{{slot}:{count}}} {{answer}}")
        with pytest.raises(PromptError, match=f"more than {MAX_SLOTS}"):
            parse_template(
                "{sentence} {trigger:4000} {soft:97} {answer}"
            )  # the bound is on both kinds together
        assert tracemalloc.get_traced_memory()[1] < 20 * 2**20
    finally:
        tracemalloc.stop()
    assert parse_template(f"{{sentence}} {{{slot}:{MAX_SLOTS}}} {{answer}}")  # the bound itself is fine


@pytest.fixture(scope="module")
def masked():
    from miner.testing.tiny import tiny_masked

    return tiny_masked()


@pytest.fixture(scope="module")
def causal():
    from miner.testing.tiny import tiny_causal

    return tiny_causal()


def test_template_longer_than_the_model_is_a_compile_error(masked, causal):
    from miner.scoring import Scorer, compile_prompt
    from miner.tasks import Example

    long = Prompt.create("word " * 600 + "{sentence} It was {answer}", VERB)
    for be in (masked, causal):
        with pytest.raises(PromptError, match=r"takes 6\d\d tokens before any text .* at most 51\d"):
            compile_prompt(long, be)
        with pytest.raises(PromptError, match="at most"):
            Scorer(be, progress=False).score(long, [Example({"sentence": "fine"}, 1)])
    many = Prompt.create("{sentence} {trigger:600} {answer}", VERB, triggers=(5,) * 600)
    with pytest.raises(
        PromptError, match="600 trigger and soft slots; model 'tiny-causal' takes at most 512 tokens"
    ):
        compile_prompt(many, causal)


def test_trigger_ids_checked_against_the_vocabulary(causal):
    from miner.scoring import compile_prompt

    for t in (causal.vocab_size, 99999999):
        with pytest.raises(PromptError, match=f"trigger token id {t} is outside the vocabulary"):
            compile_prompt(Prompt.create("{sentence} {trigger} {answer}", VERB, triggers=(t,)), causal)
    with pytest.raises(PromptError, match="trigger token -1 is not a token id"):
        Prompt.create("{sentence} {trigger} {answer}", VERB, triggers=(-1,))


def test_long_examples_in_many_fields_are_cut_to_fit(masked):
    from miner.scoring import Scorer
    from miner.tasks import Example

    fields = [f"f{i}" for i in range(6)]
    prompt = Prompt.create(" ".join("{" + f + "}" for f in fields) + " It was {answer}", VERB)
    examples = [
        Example({f: "many words here " * 60 for f in fields}, 1),
        Example({f: "short" for f in fields}, 0),
    ]
    res = Scorer(masked, progress=False).score(prompt, examples)
    assert set(res.metrics) >= {"accuracy"}


# --------------------------------------------------------------------------- data files


def _rows(n: int = 20) -> str:
    return "".join(f"text {i},{['neg', 'pos'][i % 2]}\n" for i in range(n))


def test_blank_text_in_a_data_file(run_fails, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("sentence,label\n" + _rows() + "   ,pos\n")
    line = run_fails(
        "blank text in column 'sentence' at line 22", task={"source": "files", "train": str(train)}
    )
    assert "train.csv" in line


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_blank_text_in_test_data(tmp_path, suffix):
    train = tmp_path / "train.csv"
    train.write_text("sentence,label\n" + _rows())
    test = tmp_path / f"test{suffix}"
    test.write_text(
        "sentence\tlabel\nfine\tneg\n \tpos\n"
        if suffix == ".tsv"
        else '{"sentence": "fine", "label": "neg"}\n{"sentence": "\\t", "label": "pos"}\n'
    )
    with pytest.raises(DataError, match=rf"test\{suffix} has a blank text in column 'sentence' at line [23]"):
        load_task(TaskSpec(source="files", train=str(train), test=str(test)), 2, 0)


def test_data_path_to_dev_zero(run_fails, tmp_path):
    link = tmp_path / "train.csv"
    link.symlink_to("/dev/zero")
    started = time.perf_counter()
    line = run_fails(
        "is a character device, not a regular file", task={"source": "files", "train": str(link)}
    )
    assert "train.csv" in line and time.perf_counter() - started < 10


def _unblock_later(fifo: Path, after_s: float, stop: threading.Event) -> threading.Thread:
    """Feed the FIFO a small valid file after a while, so that code that waits on it ends (and fails the test)."""

    def feed() -> None:
        deadline = time.monotonic() + after_s + 20
        if stop.wait(after_s):
            return
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # no reader yet
                time.sleep(0.1)
                continue
            os.write(fd, ("sentence,label\n" + _rows()).encode())
            os.close(fd)
            return

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_data_path_to_a_fifo(tmp_path):
    fifo = tmp_path / "train.csv"
    os.mkfifo(fifo)
    stop = threading.Event()
    thread = _unblock_later(fifo, 3.0, stop)
    started = time.perf_counter()
    try:
        with pytest.raises(DataError, match=r"train\.csv is a FIFO \(named pipe\), not a regular file"):
            load_task(TaskSpec(source="files", train=str(fifo)), 2, 0)
        assert time.perf_counter() - started < 3.0
    finally:
        stop.set()
        thread.join(timeout=5)


def test_data_file_over_the_size_limit(run_fails, tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("sentence,label\n" + _rows(80_000))  # ~1.2 MB
    assert train.stat().st_size > 2**20
    run_fails(
        "larger than the 1 MB limit (raise task.max_file_mb)",
        task={"source": "files", "train": str(train), "max_file_mb": 1},
    )
    assert load_task(TaskSpec(source="files", train=str(train), max_file_mb=2), 2, 0).train


def test_bounded_read_stops_at_the_limit_even_if_the_file_grows(tmp_path, monkeypatch):
    from miner.tasks._files import read_bytes_bounded

    path = tmp_path / "growing.csv"
    path.write_bytes(b"x" * (8 * 2**20))
    real_stat = os.stat

    def stale_stat(p, *a, **kw):  # the size seen before the file grew
        st = real_stat(p, *a, **kw)
        return (
            os.stat_result(
                (
                    st.st_mode,
                    st.st_ino,
                    st.st_dev,
                    st.st_nlink,
                    st.st_uid,
                    st.st_gid,
                    10,
                    st.st_atime,
                    st.st_mtime,
                    st.st_ctime,
                )
            )
            if Path(p) == path
            else st
        )

    monkeypatch.setattr(os, "stat", stale_stat)
    tracemalloc.start()
    try:
        with pytest.raises(
            DataError, match=r"growing\.csv is larger than the 1 MB limit \(raise task\.max_file_mb\)"
        ):
            read_bytes_bounded(path, str(path), 2**20, setting="task.max_file_mb")
        assert tracemalloc.get_traced_memory()[1] < 4 * 2**20
    finally:
        tracemalloc.stop()
    monkeypatch.setattr(os, "stat", real_stat)
    assert read_bytes_bounded(path, "x", 8 * 2**20) == b"x" * (8 * 2**20)
    with pytest.raises(DataError, match="x: file not found"):
        read_bytes_bounded(tmp_path / "absent", "x", 10)
    with pytest.raises(DataError, match="is a directory, not a regular file"):
        read_bytes_bounded(tmp_path, "x", 10)


def test_max_file_mb_is_a_positive_int():
    with pytest.raises(ConfigError, match="task.max_file_mb"):
        parse_config({"task": {"max_file_mb": 0}})
    with pytest.raises(ConfigError, match="task.max_file_mb"):
        parse_config({"task": {"max_file_mb": True}})
    # it never changes results: left out of dumps (and so job keys) at its default, kept when set
    assert "max_file_mb" not in parse_config({}).model_dump(mode="json")["task"]
    dumped = parse_config({"task": {"max_file_mb": 2048}}).model_dump(mode="json")
    assert parse_config(dumped).task.max_file_mb == 2048


def test_unreadable_json_is_a_data_error(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"sentence": "x", "label": ' + "1" * 5000 + "}\n")
    with pytest.raises(DataError, match=r"train\.jsonl line 1: unreadable JSON \(Exceeds the limit"):
        load_task(TaskSpec(source="files", train=str(path)), None, 0)


# --------------------------------------------------------------------------- labels


def test_numeric_label_names_take_no_index_reading(tmp_path):
    path = tmp_path / "stars.csv"
    path.write_text("sentence,label\n" + "".join(f"t{i},{i % 2 + 1}\n" for i in range(20)) + "odd,3\n")
    with pytest.raises(DataError) as info:
        load_task(TaskSpec(source="files", train=str(path), label_names=["1", "2"]), None, 0)
    msg = str(info.value)
    assert "label value '3'" in msg and "['1', '2']" in msg and "index" not in msg
    path.write_text("sentence,label\n" + "".join(f"t{i},{i % 2 + 1}\n" for i in range(20)) + "zero,0\n")
    with pytest.raises(
        DataError, match=r"label value '0' .* not one of the label names \['1', '2'\]; at line 22"
    ):
        load_task(TaskSpec(source="files", train=str(path), label_names=["1", "2"]), None, 0)
    # word names keep the index reading, and say so
    path.write_text("sentence,label\na,neg\nb,pos\nc,5\n")
    with pytest.raises(DataError, match=r"label value '5' .* \['neg', 'pos'\] \(or an index 0\.\.1\)"):
        load_task(TaskSpec(source="files", train=str(path), label_names=["neg", "pos"]), None, 0)


def _kshot_tree(root: Path, task: str, labels: list[str]) -> None:
    body = "sentence\tlabel\n" + "".join(f"t{i}\t{labels[i % len(labels)]}\n" for i in range(12))
    (root / task / "16-42").mkdir(parents=True)
    for rel in ("16-42/train.tsv", "16-42/dev.tsv", "test.tsv"):
        (root / task / rel).write_text(body)


def test_mixed_words_and_integers_name_the_fix(tmp_path):
    _kshot_tree(tmp_path, "mixed", ["0", "1", "neutral"])
    with pytest.raises(DataError) as info:
        load_task(TaskSpec(source="kshot", root=str(tmp_path), name="mixed"), 16, 42)
    msg = str(info.value)
    assert "mixes label names ['neutral'] with integers [0, 1]" in msg and "set task.label_names" in msg
    assert "single label" not in msg


def test_unknown_kshot_task_with_integer_labels_warns(tmp_path, caplog):
    _kshot_tree(tmp_path, "sst-5-copy", ["0", "1", "2"])
    with caplog.at_level(logging.WARNING, logger="miner.tasks"):
        data = load_task(TaskSpec(source="kshot", root=str(tmp_path), name="sst-5-copy"), 16, 42)
    assert data.label_names == ("0", "1", "2")
    assert any(
        "set task.label_names" in r.getMessage() and "sst-5-copy" in r.getMessage() for r in caplog.records
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="miner.tasks"):
        load_task(
            TaskSpec(source="kshot", root=str(tmp_path), name="sst-5-copy", label_names=["a", "b", "c"]),
            16,
            42,
        )
    assert not caplog.records


# --------------------------------------------------------------------------- k-shot root


def test_kshot_root_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MINER_FEWSHOT_ROOT", raising=False)
    with pytest.raises(
        ConfigError,
        match=r"few-shot data not found: .*set \$MINER_FEWSHOT_ROOT to the folder holding sst-2/, mr/",
    ):
        load_task(TaskSpec(source="kshot", name="sst-2"), 16, 42)
    monkeypatch.setenv("MINER_FEWSHOT_ROOT", str(tmp_path / "absent"))
    with pytest.raises(
        DataError,
        match=r"few-shot data not found at .*absent \(from \$MINER_FEWSHOT_ROOT\): set \$MINER_FEWSHOT_ROOT",
    ):
        load_task(TaskSpec(source="kshot", name="sst-2"), 16, 42)
    with pytest.raises(DataError, match=r"few-shot data not found at .*elsewhere \(from task\.root\)"):
        load_task(TaskSpec(source="kshot", name="sst-2", root=str(tmp_path / "elsewhere")), 16, 42)
    _kshot_tree(tmp_path / "data", "sst-2", ["0", "1"])
    monkeypatch.setenv("MINER_FEWSHOT_ROOT", str(tmp_path / "data"))
    assert len(load_task(TaskSpec(source="kshot", name="sst-2"), 16, 42).train) == 12


def test_kshot_config_without_data_fails_cleanly(run_fails, monkeypatch):
    monkeypatch.delenv("MINER_FEWSHOT_ROOT", raising=False)
    run_fails(
        "set $MINER_FEWSHOT_ROOT to the folder holding sst-2/",
        task={"source": "kshot", "name": "sst-2"},
        k=16,
    )
