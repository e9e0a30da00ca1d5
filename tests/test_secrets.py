"""A storage password never reaches a table, an export, a log line or a printed line.

Needs a PostgreSQL server: ``.ci/run`` starts one and sets ``MINER_TEST_POSTGRES_URL`` with a
password found nowhere else, so that every record can be grepped for it.
"""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("MINER_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not PG_URL, reason="MINER_TEST_POSTGRES_URL not set")


@pytest.fixture
def _miner(capfd, monkeypatch):
    """The CLI in this process (a subprocess per command cost a torch import each): everything it
    writes to the standard streams, at the file-descriptor level (log handlers included)."""
    from miner.cli import main

    def run(*args, cwd):
        monkeypatch.chdir(cwd)
        capfd.readouterr()
        rc = main([str(a) for a in args])
        out, err = capfd.readouterr()
        assert rc == 0, err[-2000:]
        return out + err

    return run


def _database_text(url: str) -> str:
    """Every row of every table in the database, as text."""
    eng = sa.create_engine(url)
    parts = []
    with eng.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            parts += conn.execute(sa.text(f'select row_to_json(t)::text from "{table}" t')).scalars().all()
    eng.dispose()
    return "\n".join(parts)


def test_no_password_in_any_record(tmp_path, make_config, _miner):
    password = sa.make_url(PG_URL).password
    assert password and len(password) >= 8 and password not in "miner miner_test localhost postgresql psycopg"
    soft = {"name": "soft", "params": {"n_tokens": 2, "steps": 2, "eval_every": 1, "batch_size": 4}}
    optuna = {
        "name": "optuna",
        "params": {
            "n_trials": 3,
            "pool_sizes": [2],
            "max_words": 2,
            "n_startup_trials": 2,
            "train_shares": [1.0],
        },
    }
    path, cfg = make_config(
        seeds=[7],
        storage=PG_URL,
        artifacts=str(tmp_path / "art"),
        searchers=[{"name": "manual"}, optuna, soft],
    )
    printed = _miner("-vv", "run", str(path), cwd=tmp_path)
    printed += _miner("-vv", "run", str(path), "--resume", "--storage", PG_URL, cwd=tmp_path)
    printed += _miner("-vv", "leaderboard", "--storage", PG_URL, "--seed", "7", cwd=tmp_path)
    model = ["--model", cfg["model"]["name"]]  # the shared test database holds other tests' models too
    printed += _miner(
        "-vv",
        "export",
        "--storage",
        PG_URL,
        "--task",
        "rotten_tomatoes",
        "--seed",
        "7",
        *model,
        "-o",
        str(tmp_path / "best.json"),
        cwd=tmp_path,
    )
    printed += _miner(
        "-vv",
        "export",
        "--storage",
        PG_URL,
        "--task",
        "rotten_tomatoes",
        "--seed",
        "7",
        *model,
        "--searcher",
        "soft",
        "-o",
        str(tmp_path / "soft.json"),
        cwd=tmp_path,
    )
    printed += _miner(
        "-vv", "predict", "--prompt", str(tmp_path / "best.json"), "--text", "A gem.", cwd=tmp_path
    )
    assert "rotten_tomatoes" in printed and "***" in printed  # it did print the storage, masked
    assert password not in printed
    files = [
        p for p in tmp_path.rglob("*") if p.is_file() and p != path
    ]  # the user's config holds it, of course
    assert any(p.suffix == ".json" for p in files) and any(p.suffix == ".safetensors" for p in files)
    for p in files:
        assert password.encode() not in p.read_bytes(), p
    text = _database_text(PG_URL)
    assert "rotten_tomatoes" in text and password not in text
