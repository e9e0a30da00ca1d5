"""Tests for miner.leaderboard.

The ``url`` fixture runs each storage test on a fresh SQLite file and, when
MINER_TEST_POSTGRES_URL is set (e.g. postgresql+psycopg://miner:miner@localhost/miner_test),
on PostgreSQL too. PostgreSQL keeps its tables between runs, so every test works
on its own task name / run ids and never counts rows it did not write.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import platform
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy import event as sa_event

from miner.errors import ConfigError, DataError, MinerError
from miner.leaderboard import (
    DEFAULT_COLUMNS,
    EvaluationRecord,
    Leaderboard,
    LeaderboardError,
    LeaderboardRow,
    format_table,
    library_versions,
)

PG_URL = os.environ.get("MINER_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path):
    if request.param == "sqlite":
        # A bare path whose parent folder does not exist yet: both must be handled.
        return str(tmp_path / "not" / "yet" / "board.db")
    if not PG_URL:
        pytest.skip("MINER_TEST_POSTGRES_URL not set")
    return PG_URL


@pytest.fixture
def board(url):
    lb = Leaderboard(url)
    yield lb
    lb.close()


def unique_task() -> str:
    return f"task-{uuid.uuid4().hex[:10]}"


def record(run_id: str, **overrides) -> EvaluationRecord:
    values = dict(
        run_id=run_id,
        task="sst2",
        model="tiny-gpt",
        searcher="random",
        seed=0,
        k=16,
        prompt_key=uuid.uuid4().hex,
        prompt={
            "template": "Review: {text}\nIt was {answer}.",
            "verbalizer": {"neg": ["terrible"], "pos": ["great"]},
        },
        metric="accuracy",
        train_score=0.5,
        dev_score=0.5,
        dev_loglik=-1.0,
        n_train=32,
        n_dev=32,
        forward_passes=64,
        tokens=2048,
        seconds=1.25,
    )
    values.update(overrides)
    return EvaluationRecord(**values)


# ------------------------------------------------------------------ round trip
def test_round_trip(url):
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    lb = Leaderboard(url)
    run_id = lb.start_run({"searchers": ["random"], "budget": 100}, {"git": "abc123", "command": "miner run"})
    assert len(run_id) == 32 and int(run_id, 16) >= 0

    task = unique_task()
    first = record(
        run_id,
        task=task,
        k=None,
        seed=np.int64(3),  # numpy scalars are normalised, not rejected
        dev_score=np.float32(0.75),
        prompt={
            "template": "{text} {answer}",
            "verbalizer": {"neg": ("bad",), "pos": ["good", "fine"]},
            "n": 2,
        },
        extra={
            "iteration": 4,
            "parents": [1, 2],
            "temperature": np.float64(0.5),
            "loss": float("nan"),
            "scores": np.array([0.25, float("inf")]),
        },
    )
    second = record(run_id, task=task, train_score=None, dev_score=None, dev_loglik=float("-inf"))
    ids = lb.add_evaluations([first, second])
    assert len(ids) == 2 and ids[0] < ids[1]
    reopen_url = lb.url
    password = sa.make_url(reopen_url).password
    if password:
        assert f":{password}@" not in lb.display_url + repr(lb) and ":***@" in lb.display_url
    lb.close()

    # Reopen through board.url (what the runner hands to the CLI): the data is in the database.
    lb = Leaderboard(reopen_url)
    rows = {r.id: r for r in lb.rows(run_id=run_id)}
    assert sorted(rows) == ids
    got = rows[ids[0]]
    assert isinstance(got, LeaderboardRow)
    identity = (got.run_id, got.task, got.model, got.searcher, got.seed, got.k)
    assert identity == (run_id, task, "tiny-gpt", "random", 3, None)
    # Tuples come back as lists: what is stored is exactly what JSON can hold.
    assert got.prompt == {
        "template": "{text} {answer}",
        "verbalizer": {"neg": ["bad"], "pos": ["good", "fine"]},
        "n": 2,
    }
    # Non-finite floats inside JSON become null (PostgreSQL's JSON cannot hold them).
    assert got.extra == {
        "iteration": 4,
        "parents": [1, 2],
        "temperature": 0.5,
        "loss": None,
        "scores": [0.25, None],
    }
    assert got.dev_score == pytest.approx(0.75) and got.train_score == 0.5 and got.dev_loglik == -1.0
    assert (got.n_train, got.n_dev, got.forward_passes, got.tokens, got.seconds) == (32, 32, 64, 2048, 1.25)
    assert got.metric == "accuracy" and got.prompt_key == first.prompt_key
    assert got.test_score is None and got.n_test is None and got.test_metrics is None
    assert got.versions["python"] == platform.python_version()
    assert {"miner", "torch", "transformers"} <= set(got.versions)
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == timedelta(0)
    assert before <= got.created_at <= datetime.now(timezone.utc) + timedelta(seconds=5)
    assert rows[ids[1]].dev_score is None and rows[ids[1]].dev_loglik == float("-inf")
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.dev_score = 1.0  # type: ignore[misc]

    run = next(r for r in lb.runs() if r.run_id == run_id)
    assert run.status == "running" and run.finished_at is None and run.n_evaluations == 2
    assert run.config == {"searchers": ["random"], "budget": 100}
    assert (
        run.provenance["git"] == "abc123"
        and run.provenance["versions"]["python"] == platform.python_version()
    )
    lb.finish_run(run_id, status="failed")
    run = next(r for r in lb.runs() if r.run_id == run_id)
    assert run.status == "failed" and run.finished_at is not None and run.finished_at >= run.created_at
    with pytest.raises(LeaderboardError, match="unknown run_id"):
        lb.finish_run("0" * 32)
    assert lb.add_evaluations([]) == []
    lb.close()
    with pytest.raises(LeaderboardError, match="closed"):
        lb.rows()


def test_record_and_row_fields_agree():
    record_fields = {f.name for f in dataclasses.fields(EvaluationRecord)}
    row_fields = {f.name for f in dataclasses.fields(LeaderboardRow)}
    assert record_fields <= row_fields
    assert row_fields - record_fields == {
        "id",
        "created_at",
        "versions",
        "test_score",
        "n_test",
        "test_metrics",
    }


# --------------------------------------------------------- ordering and tests
def _ordering_fixture(board):
    run_id = board.start_run({}, {})
    task = unique_task()
    spec = {  # name -> (dev, loglik, train)
        "A": (0.8, -1.0, 0.5),
        "B": (0.8, -0.5, 0.5),
        "C": (0.8, -0.5, 0.9),
        "D": (0.9, -3.0, 0.1),
        "E": (None, -0.1, 1.0),
        "F": (0.8, -0.5, 0.9),  # exact tie with C: the older id wins
        "G": (0.8, None, 1.0),
    }
    records = [
        record(run_id, task=task, prompt_key=name, dev_score=d, dev_loglik=ll, train_score=t)
        for name, (d, ll, t) in spec.items()
    ]
    ids = dict(zip(spec, board.add_evaluations(records)))
    return run_id, task, ids


def test_dev_order_and_tie_break(board):
    _, task, _ = _ordering_fixture(board)
    order = [r.prompt_key for r in board.rows(task=task)]
    # Missing dev / loglik sort last on both SQLite and PostgreSQL (PostgreSQL's DESC puts NULL first).
    assert order == ["D", "C", "F", "B", "A", "G", "E"]
    assert [r.prompt_key for r in board.rows(task=task, limit=3)] == ["D", "C", "F"]
    assert board.rows(task=task, limit=0) == []
    with pytest.raises(ConfigError, match="unknown leaderboard order 'best'"):
        board.rows(order="best")


def test_test_scores_latest_wins_and_test_order(board):
    _, task, ids = _ordering_fixture(board)
    board.add_test_score(ids["A"], 0.95, 200, {"accuracy": 0.95, "macro_f1": 0.9})
    board.add_test_score(ids["E"], 0.5, 200, {"accuracy": 0.5})
    board.add_test_score(ids["B"], 0.1, 100, {"accuracy": 0.1})
    board.add_test_score(ids["B"], 0.99, 300, {"accuracy": 0.99})  # append-only: the latest counts

    rows = {r.prompt_key: r for r in board.rows(task=task)}
    assert (rows["B"].test_score, rows["B"].n_test, rows["B"].test_metrics) == (0.99, 300, {"accuracy": 0.99})
    assert rows["A"].test_metrics == {"accuracy": 0.95, "macro_f1": 0.9}
    assert rows["C"].test_score is None
    # Several test scores must not duplicate the evaluation row in the join.
    assert len(board.rows(task=task)) == 7

    order = [r.prompt_key for r in board.rows(task=task, order="test")]
    assert order == ["B", "A", "E", "D", "C", "F", "G"]

    with pytest.raises(LeaderboardError, match="no evaluation with id"):
        board.add_test_score(10**9, 0.5, 10, {})
    with pytest.raises(DataError, match="test_score"):
        board.add_test_score(ids["A"], float("nan"), 10, {})


def test_time_order_is_newest_first(board):
    run_id = board.start_run({}, {})
    task = unique_task()
    first = board.add_evaluations([record(run_id, task=task, dev_score=0.9) for _ in range(3)])
    second = board.add_evaluations([record(run_id, task=task, dev_score=0.1) for _ in range(2)])
    assert [r.id for r in board.rows(task=task, order="time")] == sorted(first + second, reverse=True)


# ------------------------------------------------------------ best and filters
def test_best_and_filters(board):
    run_a = board.start_run({}, {})
    run_b = board.start_run({}, {})
    task = unique_task()
    grid = [  # (run, model, searcher, seed, k, dev)
        (run_a, "m1", "random", 0, 16, 0.60),
        (run_a, "m1", "random", 1, 16, 0.70),
        (run_a, "m1", "genetic", 0, 16, 0.80),
        (run_a, "m1", "genetic", 0, None, 0.65),
        (run_b, "m1", "random", 0, 4, 0.90),
        (run_b, "m2", "random", 0, 16, 0.99),
    ]
    ids = board.add_evaluations(
        [
            record(run, task=task, model=m, searcher=s, seed=seed, k=k, dev_score=dev, prompt_key=f"p{i}")
            for i, (run, m, s, seed, k, dev) in enumerate(grid)
        ]
    )

    assert board.best(task=task, model="m1").prompt_key == "p4"
    assert board.best(task=task, model="m2").id == ids[5]
    assert board.best(task=task, model="m1", k=16).prompt_key == "p2"
    assert board.best(task=task, model="m1", k=None).prompt_key == "p3"  # None = full data, not "any"
    assert board.best(task=task, model="m1", searcher="random", k=16).prompt_key == "p1"
    assert board.best(task=task, model="m1", searcher="random", seed=0, k=16).prompt_key == "p0"
    assert board.best(task=task, model="m1", run_id=run_a).prompt_key == "p2"
    assert board.best(task=task, model="m3") is None
    assert board.best(task=unique_task(), model="m1") is None

    def keys(**filters):
        return sorted(r.prompt_key for r in board.rows(task=task, **filters))

    assert keys() == [f"p{i}" for i in range(6)]
    assert keys(model="m1") == ["p0", "p1", "p2", "p3", "p4"]
    assert keys(searcher="genetic") == ["p2", "p3"]
    assert keys(seed=1) == ["p1"]
    assert keys(k=None) == ["p3"]
    assert keys(k=4) == ["p4"]
    assert keys(run_id=run_b) == ["p4", "p5"]
    assert keys(model="m1", searcher="random", k=16) == ["p0", "p1"]
    counts = {r.run_id: r.n_evaluations for r in board.runs()}
    assert counts[run_a] == 4 and counts[run_b] == 2


def test_best_prefers_a_jobs_declared_pick(board):
    """A job whose searcher marked a pick (an ensemble) is represented by it, even at a lower dev score."""
    run = board.start_run({}, {})
    task = unique_task()
    job_a, job_b = {"job_key": "a"}, {"job_key": "b"}
    board.add_evaluations(
        [
            record(run, task=task, dev_score=0.95, prompt_key="a-single", extra=job_a),
            record(run, task=task, dev_score=0.90, prompt_key="a-pick", extra={**job_a, "pick": True}),
            record(run, task=task, dev_score=0.85, prompt_key="b-single", extra=job_b, seed=1),
            record(run, task=task, dev_score=0.97, prompt_key="c-no-key", seed=2, searcher="other"),
        ]
    )
    assert board.best(task=task, model="tiny-gpt").prompt_key == "c-no-key"  # jobs compete by dev
    assert board.best(task=task, model="tiny-gpt", seed=0).prompt_key == "a-pick"  # not a-single (0.95)
    assert board.best(task=task, model="tiny-gpt", seed=1).prompt_key == "b-single"
    assert [r.prompt_key for r in board.rows(task=task, seed=0)] == [
        "a-single",
        "a-pick",
    ]  # rows keep dev order


# ---------------------------------------------------------------- transactions
def _count(board, run_id):
    return len(board.rows(run_id=run_id))


def test_invalid_record_in_batch_commits_nothing(board):
    run_id = board.start_run({}, {})
    batch = [record(run_id) for _ in range(5)]
    batch[2] = record(run_id, dev_score="high")
    with pytest.raises(DataError) as info:
        board.add_evaluations(batch)
    message = str(info.value)
    assert "\n" not in message and "#2" in message and "'dev_score'" in message
    assert _count(board, run_id) == 0

    for bad in (
        record(run_id, seed=True),
        record(run_id, k=-1),
        record(run_id, tokens=1.5),
        record(run_id, task=""),
        record(run_id, dev_score=float("nan")),
        record(run_id, prompt={"template": object()}),
        record(run_id, prompt="not a dict"),
    ):
        with pytest.raises(DataError):
            board.add_evaluations([record(run_id), bad])
    with pytest.raises(DataError, match="must be an EvaluationRecord"):
        board.add_evaluations([record(run_id), {"run_id": run_id}])
    # A record for a run that was never started fails the whole batch too.
    with pytest.raises(LeaderboardError, match="start_run"):
        board.add_evaluations([record(run_id), record("f" * 32)])
    assert _count(board, run_id) == 0
    board.add_evaluations(batch[:2])
    assert _count(board, run_id) == 2


def test_database_failure_mid_batch_rolls_back(tmp_path):
    """A row the database itself refuses (after earlier rows were inserted) undoes the batch."""
    path = tmp_path / "board.db"
    board = Leaderboard(str(path))
    run_id = board.start_run({}, {})
    with sqlite3.connect(path) as raw:
        raw.execute(
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON evaluations WHEN NEW.prompt_key = 'boom' "
            "BEGIN SELECT RAISE(ABORT, 'boom refused by trigger'); END"
        )
    # Big enough that the INSERT is split into several statements: the early ones succeed,
    # so only the surrounding transaction can undo them.
    batch = [record(run_id, prompt_key=f"ok{i}") for i in range(1500)]
    batch.append(record(run_id, prompt_key="boom"))
    inserts = []
    sa_event.listen(
        board._engine,
        "before_cursor_execute",
        lambda conn, cursor, stmt, *rest: inserts.append(stmt) if stmt.startswith("INSERT") else None,
    )
    with pytest.raises(LeaderboardError) as info:
        board.add_evaluations(batch)
    assert len(inserts) >= 2
    assert isinstance(info.value, MinerError)
    assert str(info.value) == "leaderboard write failed: boom refused by trigger"
    assert _count(board, run_id) == 0
    assert len(board.add_evaluations(batch[:3])) == 3
    board.close()


# ----------------------------------------------------------------- concurrency
ROWS_PER_WRITER = 200
ROWS_PER_TRANSACTION = 4


def _writer(url: str, barrier, label: str) -> None:
    # Runs in a spawned process: opens (maybe creates) the same database as its twin.
    barrier.wait(timeout=60)
    board = Leaderboard(url)
    run_id = board.start_run({"writer": label}, {})
    for start in range(0, ROWS_PER_WRITER, ROWS_PER_TRANSACTION):
        board.add_evaluations(
            [
                record(run_id, task=label, prompt_key=f"{label}-{start + i}", seed=start + i)
                for i in range(ROWS_PER_TRANSACTION)
            ]
        )
    board.finish_run(run_id)
    board.close()


@pytest.mark.process
def test_two_processes_write_concurrently(url):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    labels = [unique_task(), unique_task()]
    procs = [ctx.Process(target=_writer, args=(url, barrier, label)) for label in labels]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]

    board = Leaderboard(url)
    rows = [r for label in labels for r in board.rows(task=label)]
    assert len(rows) == 2 * ROWS_PER_WRITER
    assert len({r.id for r in rows}) == 2 * ROWS_PER_WRITER
    for label in labels:
        assert sorted(r.seed for r in board.rows(task=label)) == list(range(ROWS_PER_WRITER))
    finished = [r for r in board.runs() if r.config.get("writer") in labels]
    assert len(finished) == 2 and all(
        r.status == "finished" and r.n_evaluations == ROWS_PER_WRITER for r in finished
    )
    board.close()


def test_sqlite_uses_wal(tmp_path):
    path = tmp_path / "board.db"
    Leaderboard(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -------------------------------------------------------------------- bad URLs
def test_bad_urls_are_one_line_miner_errors(tmp_path):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    not_sqlite = tmp_path / "garbage.db"
    not_sqlite.write_bytes(b"this is not a sqlite database, just some bytes" * 100)
    bad = [
        "nosuchdialect://host/db",
        "postgresql+psycopg://user:s3cret@127.0.0.1:1/nodb",  # nothing listens on port 1
        "postgresql+psycopg://user:s3cret@localhost:notaport/db",  # unparseable, password still hidden
        str(a_file / "sub" / "board.db"),  # parent "folder" is a file
        str(not_sqlite),
        "",
    ]
    for url in bad:
        with pytest.raises(MinerError) as info:
            Leaderboard(url)
        message = str(info.value)
        assert isinstance(info.value, LeaderboardError)
        assert message.startswith("cannot open leaderboard "), message
        assert "\n" not in message and "s3cret" not in message, message
        assert "Traceback" not in message and "sqlalche.me" not in message, message


# ------------------------------------------------------------------ the table
def _row(**overrides) -> LeaderboardRow:
    values = dict(
        id=7,
        created_at=datetime.now(timezone.utc),
        run_id="r",
        task="sst2",
        model="tiny-gpt",
        searcher="genetic",
        seed=3,
        k=16,
        prompt_key="abc",
        prompt={
            "template": "Review: {text}\nIn summary, the movie was really quite {answer} and that is all.",
            "verbalizer": {"neg": ["terrible"], "pos": ["great"]},
        },
        metric="accuracy",
        train_score=0.9,
        dev_score=0.87345,
        dev_loglik=-0.3,
        n_train=32,
        n_dev=32,
        forward_passes=1234,
        tokens=99,
        seconds=12.345,
        extra={},
        versions={},
        test_score=None,
        n_test=None,
        test_metrics=None,
    )
    values.update(overrides)
    return LeaderboardRow(**values)


def test_format_table_cells_and_alignment():
    short = {"template": "{text} {answer}", "verbalizer": {"neg": ["bad", "awful"], "pos": "good"}}
    rows = [_row(), _row(id=12, k=None, dev_score=0.5, test_score=0.8125, searcher="random", prompt=short)]
    text = format_table(rows)
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].split() == [
        "id",
        "task",
        "model",
        "searcher",
        "seed",
        "k",
        "template",
        "verbalizer",
        "options",
        "train",
        "dev",
        "test",
        "fwd",
        "passes",
        "seconds",
    ]
    assert set(lines[1].replace(" ", "")) == {"-"}
    first, second = lines[2], lines[3]
    assert "Review: {text}⏎In summary" in first and "\n" not in first.split("Review")[1]
    template_cell = next(c for c in first.split("  ") if c.startswith("Review"))
    assert template_cell.endswith("…") and len(template_cell) <= 50
    assert "neg:terrible|pos:great" in first
    assert "neg:bad,awful|pos:good" in second
    assert "87.3" in first and "90.0" in first and "50.0" in second and "81.2" in second
    assert " full " in second and "1234" in first and "12.3" in first
    # Right-aligned numbers end in the same column; missing test score shows "-".
    assert first.index("87.3") + 4 == second.index("50.0") + 4
    assert first.rstrip().endswith("12.3") and lines[0].endswith("seconds")
    assert len(first.rstrip()) == len(lines[0])
    test_col_end = lines[0].index("test") + len("test")
    assert first[test_col_end - 1] == "-" and second[test_col_end - 4 : test_col_end] == "81.2"


def test_format_table_options_column():
    cal = {
        "template": "{t} {trigger:2} {answer}",
        "verbalizer": {"a": "x", "b": "y"},
        "calibrate": True,
        "triggers": [5, 6],
    }
    line = format_table([_row(prompt=cal)], columns=["id", "options"]).splitlines()[2]
    assert line.split() == ["7", "cal,2", "trig"]


def test_format_table_shows_an_ensemble_by_its_first_member():
    a = {"template": "{t} It was {answer}", "verbalizer": {"a": "x", "b": "y"}, "calibrate": True}
    b = {"template": "{t} Overall {answer}", "verbalizer": {"a": "u", "b": "v"}}
    line = format_table(
        [_row(prompt={"ensemble": [a, b]}, extra={"pick": True})],
        columns=["id", "template", "verbalizer", "options"],
    ).splitlines()[2]
    assert "{t} It was {answer}" in line and "a:x|b:y" in line and line.split()[-1] == "ens2,pick,cal"


def test_format_table_columns_and_edge_cases():
    text = format_table([_row(prompt={"other": 1})], columns=["id", "template", "verbalizer", "test"])
    assert text.splitlines()[0].split() == ["id", "template", "verbalizer", "test"]
    assert text.splitlines()[2].split() == ["7", "-", "-", "-"]
    assert format_table([]).splitlines()[0].split()[:2] == ["id", "task"]
    assert DEFAULT_COLUMNS[0] == "id" and "fwd passes" in DEFAULT_COLUMNS
    with pytest.raises(ConfigError, match="unknown leaderboard column 'bogus'"):
        format_table([_row()], columns=["id", "bogus"])


def test_library_versions_is_a_fresh_dict():
    versions = library_versions()
    versions["python"] = "tampered"
    assert library_versions()["python"] == platform.python_version()
