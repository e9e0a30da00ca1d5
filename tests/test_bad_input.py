"""The bad-input suite: each case is a CLI call that must fail cleanly.

Clean means (the ``clean_failure`` fixture in conftest.py): exit 2, one ``error:`` line on stderr that
names the problem, no traceback, no new leaderboard rows and no new or changed files. The config, data,
template and export cases live beside this file in ``test_bad_input_config.py`` and
``test_bad_input_export.py``; this module holds the runner's and the command line's own cases.
A new bad input is one more line in a table.
"""

from __future__ import annotations

import pytest
from conftest import write_config

from miner.cli import main

SOFT = {"name": "soft", "params": {"n_tokens": 2, "steps": 2, "eval_every": 1, "batch_size": 4}}

# (name, config changes) that must fail in the up-front check, whatever job they would have reached
RUN_CASES = [
    (
        "unknown field in the second prompt",
        {
            "prompts": [
                {
                    "template": "{sentence} It was {answer}",
                    "verbalizer": {"negative": "bad", "positive": "good"},
                },
                {
                    "template": "{review} It was {answer}",
                    "verbalizer": {"negative": "bad", "positive": "good"},
                },
            ]
        },
        "prompts[1]",
    ),
    (
        "bad parameter of the second searcher (found only against the task)",
        {
            "searchers": [
                {"name": "manual"},
                {"name": "autoprompt", "params": {"template": "{sentence} {answer}"}},
            ]
        },
        "searchers[1]",
    ),
    (
        "unknown field in a manual searcher's own second prompt",
        {
            "searchers": [
                {
                    "name": "manual",
                    "params": {
                        "prompts": [
                            {
                                "template": "{sentence} {answer}",
                                "verbalizer": {"negative": ["bad"], "positive": ["good"]},
                            },
                            {
                                "template": "{nope} {answer}",
                                "verbalizer": {"negative": ["bad"], "positive": ["good"]},
                            },
                        ]
                    },
                }
            ]
        },
        "manual.prompts[1]",
    ),
    (
        "out-of-vocabulary trigger id in a manual searcher's prompt",
        {
            "searchers": [
                {
                    "name": "manual",
                    "params": {
                        "prompts": [
                            {
                                "template": "{sentence} {trigger:1} {answer}",
                                "verbalizer": {"negative": ["bad"], "positive": ["good"]},
                                "triggers": [99999999],
                            }
                        ]
                    },
                }
            ]
        },
        "manual.prompts[0]",
    ),
    (
        "two labels with the same words in a manual searcher's prompt",
        {
            "searchers": [
                {
                    "name": "manual",
                    "params": {
                        "prompts": [
                            {
                                "template": "{sentence} {answer}",
                                "verbalizer": {"negative": ["good"], "positive": ["good"]},
                            }
                        ]
                    },
                }
            ]
        },
        "manual.prompts[0]",
    ),
    (
        "artifacts folder that cannot be written",
        {"artifacts": "/proc/miner-artifacts", "searchers": [SOFT]},
        "artifacts",
    ),
    ("artifacts path that is a file", {"artifacts": "FILE", "searchers": [SOFT]}, "not a folder"),
]


@pytest.mark.parametrize("name, change, needle", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_run_rejects_before_the_first_row(tmp_path, make_config, clean_failure, name, change, needle):
    (tmp_path / "a-file").write_text("x")
    change = {k: (str(tmp_path / "a-file") if v == "FILE" else v) for k, v in change.items()}
    path, cfg = make_config(**change)
    clean_failure(["run", path], needle=needle, watch=tmp_path, db=tmp_path / "lb.db")
    assert not (tmp_path / "lb.db").exists()


def test_a_bad_flag_fails_before_any_work(tmp_path, make_config, clean_failure):
    path, _ = make_config()
    clean_failure(["run", path, "--limit", "-1"], needle="--limit", watch=tmp_path)
    clean_failure(["run", path, "--jobs", "0"], needle="--jobs", watch=tmp_path)
    clean_failure(["run", path, "--no-such-flag"], needle="unrecognized", watch=tmp_path)
    assert not (tmp_path / "lb.db").exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["leaderboard", "--seed", "99999999999999999999"], "--seed"),
        (["leaderboard", "--seed", "-1"], "--seed"),
        (["leaderboard", "--k", "-3"], "k must be in"),
        (["leaderboard", "--limit", "-1"], "--limit"),
        (["leaderboard", "--run", "zz"], "not a hex run id"),
        (["leaderboard", "--run", "ab"], "no run with id"),
    ],
)
def test_leaderboard_flags_are_range_checked(one_run, clean_failure, argv, needle):
    folder, storage = one_run
    clean_failure(argv + ["--storage", storage], needle=needle, watch=folder, db=folder / "lb.db")


@pytest.fixture(scope="module")
def one_run(tmp_path_factory, tiny_model_dir):
    """A leaderboard with one finished run, shared by the read-only cases (each checks it is unchanged)."""
    folder = tmp_path_factory.mktemp("one-run")
    _, full = write_config(folder, tiny_model_dir)
    path, cfg = write_config(folder, tiny_model_dir, seeds=[1], test_top=1, prompts=full["prompts"][:1])
    assert main(["run", str(path)]) == 0
    return folder, cfg["storage"]


@pytest.mark.parametrize(
    "argv",
    [
        ["leaderboard"],
        ["export", "--task", "rotten_tomatoes", "-o", "OUT/best.json"],
        ["plot", "-o", "OUT/board.png"],
    ],
    ids=["leaderboard", "export", "plot"],
)
def test_readers_on_a_missing_database_create_nothing(tmp_path, clean_failure, argv):
    db = tmp_path / "nowhere" / "lb.db"
    argv = [a.replace("OUT", str(tmp_path)) for a in argv] + ["--storage", str(db)]
    clean_failure(argv, needle="no leaderboard", watch=tmp_path)
    assert not (tmp_path / "nowhere").exists()


def test_readers_on_a_database_that_is_not_a_leaderboard(tmp_path, clean_failure):
    import sqlite3

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as con:
        con.execute("create table notes (x text)")
    clean_failure(["leaderboard", "--storage", str(db)], needle="holds no leaderboard", watch=tmp_path)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import miner.cli as cli

    def boom(args):
        raise RuntimeError("something deep\nwent wrong")

    monkeypatch.setitem(cli.COMMANDS, "searchers", boom)
    assert main(["searchers"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unexpected RuntimeError: something deep went wrong" in err and "--debug" in err
    assert main(["--debug", "searchers"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_validate_checks_without_writing(tmp_path, make_config, capsys, clean_failure):
    path, cfg = make_config()
    assert main(["validate", str(path)]) == 0
    assert "ok: 2 job(s)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no database, no artifacts
    bad, _ = make_config("bad.yaml", searchers=[{"name": "autoprompt", "params": {"n_triggers": 0}}])
    clean_failure(["validate", bad], needle="n_triggers", watch=tmp_path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    """A real export of the tiny model to feed ``miner predict``."""
    import yaml

    d = tmp_path_factory.mktemp("export")
    cfg = {
        "task": {"source": "builtin", "name": "rotten_tomatoes", "max_test": 8},
        "model": {"name": str(tiny_model_dir)},
        "prompts": [
            {"template": "{sentence} It was {answer}", "verbalizer": {"negative": "bad", "positive": "good"}}
        ],
        "seeds": [1],
        "k": 2,
        "storage": f"sqlite:///{d / 'lb.db'}",
        "progress": False,
    }
    (d / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(d / "c.yaml")]) == 0
    assert (
        main(["export", "--storage", cfg["storage"], "--task", "rotten_tomatoes", "-o", str(d / "best.json")])
        == 0
    )
    return d / "best.json"


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "too-big", "missing", "dir"])
@pytest.mark.parametrize("suffix", [".txt", ".csv"])
def test_predict_input_must_be_a_bounded_regular_file(tmp_path, exported, clean_failure, kind, suffix):
    import os

    inp = tmp_path / f"in{suffix}"
    if kind == "fifo":
        os.mkfifo(inp)  # nobody writes: reading it would wait for ever
    elif kind == "dev-zero":
        inp.symlink_to("/dev/zero")  # endless
    elif kind == "too-big":
        inp.write_text("sentence\n" + "a fine film\n" * 200_000)  # 2.4 MB against a 1 MB limit
    elif kind == "dir":
        inp.mkdir()
    needle = {
        "fifo": "not a regular file",
        "dev-zero": "not a regular file",
        "too-big": "limit",
        "missing": "not found",
        "dir": "not a regular file",
    }[kind]
    clean_failure(
        ["predict", "--prompt", exported, "--input", inp, "--max-input-mb", "1"],
        needle=needle,
        watch=tmp_path,
    )
