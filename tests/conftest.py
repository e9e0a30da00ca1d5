"""Shared pytest configuration and fixtures."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

# Tests never reach the network: the hub libraries read these when first imported, so set them first.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny causal LM saved to disk, so that it loads by local path like any model."""
    from miner.testing.tiny import tiny_causal

    be = tiny_causal()
    d = tmp_path_factory.mktemp("tiny-model")
    be.model.save_pretrained(d)
    be.tokenizer.save_pretrained(d)
    return d


def count_rows(db: Path) -> dict[str, int]:
    """Rows per table of a SQLite leaderboard file (empty when the file does not exist)."""
    if not db.exists():
        return {}
    out = {}
    with sqlite3.connect(db) as con:
        for (name,) in con.execute("select name from sqlite_master where type='table'"):
            out[name] = con.execute(f"select count(*) from {name}").fetchone()[0]
    return out


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def clean_failure(capsys):
    """Run the CLI and assert a clean failure: exit 2, one line on stderr naming the problem, no traceback,
    no new leaderboard rows and no new or changed files under ``watch`` (except ``allow``).

    Usage: ``clean_failure(["run", str(cfg)], needle="budget.max_seconds", watch=tmp_path, db=tmp_path / "lb.db")``.
    """
    from miner.cli import main

    def check(argv, *, needle: str, watch: Path, db: Path | None = None, allow: tuple[str, ...] = ()):
        capsys.readouterr()
        rows_before = count_rows(db) if db is not None else {}
        files_before = {k: v for k, v in _tree(watch).items() if not k.startswith(allow or ("\0",))}
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == 2, f"exit {rc}, stderr: {err!r}"
        assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
        assert lines[0].startswith("error: ") and "Traceback" not in err
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
        if db is not None:
            assert count_rows(db) == rows_before, "bad input wrote leaderboard rows"
        files_after = {k: v for k, v in _tree(watch).items() if not k.startswith(allow or ("\0",))}
        db_files = {db.name, db.name + "-wal", db.name + "-shm"} if db is not None and rows_before else set()
        changed = {
            k
            for k in files_before.keys() | files_after.keys()
            if files_before.get(k) != files_after.get(k) and k not in db_files
        }
        assert not changed, f"bad input created or changed files: {sorted(changed)}"
        return lines[0]

    return check


def write_config(directory: Path, model_dir: Path, name: str = "config.yaml", **over):
    """Write a small manual-run config on the tiny model into ``directory``; keyword arguments replace
    top-level keys. Returns ``(path, cfg)``; the storage is ``directory / "lb.db"``."""
    import yaml

    cfg = {
        "task": {"source": "builtin", "name": "rotten_tomatoes", "max_test": 40},
        "model": {"name": str(model_dir)},
        "prompts": [
            {
                "template": "{sentence} It was {answer}",
                "verbalizer": {"negative": ["terrible"], "positive": ["great"]},
            },
            {
                "template": "Review: {sentence}\nSentiment: {answer}",
                "verbalizer": {"negative": "negative", "positive": "positive"},
            },
        ],
        "searchers": [{"name": "manual", "params": {"with_calibration": True}}],
        "seeds": [1, 2],
        "k": 4,
        "storage": f"sqlite:///{directory / 'lb.db'}",
        "test_top": 2,
        "progress": False,
    }
    cfg.update(over)
    path = directory / name
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


@pytest.fixture
def make_config(tmp_path, tiny_model_dir):
    """``write_config`` into the test's ``tmp_path``: ``make_config(name="config.yaml", **over)``."""

    def make(name: str = "config.yaml", **over):
        return write_config(tmp_path, tiny_model_dir, name, **over)

    return make
