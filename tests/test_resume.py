"""Exactly-once resume: killed runs are marked, finished jobs are not scored again, concurrent resumes
of one config write each evaluation once (the database's job claims, not one process's memory)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from conftest import count_rows

from miner.cli import main
from miner.leaderboard import Leaderboard
from miner.leaderboard._schema import job_claims, run_heartbeats


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_resume_of_a_finished_run_scores_nothing_again(tmp_path, make_config, capsys):
    path, cfg = make_config()
    assert main(["run", str(path)]) == 0
    first = count_rows(tmp_path / "lb.db")
    assert first["evaluations"] == 8 and first["test_scores"] == 4
    board = Leaderboard(cfg["storage"])
    before = {r.id: r.test_score for r in board.rows()}
    assert main(["run", str(path), "--resume"]) == 0
    out = capsys.readouterr().out
    after = count_rows(tmp_path / "lb.db")
    assert after["evaluations"] == 8 and after["test_scores"] == 4  # no second test score for any row
    assert after["runs"] == 2 and after["job_claims"] == 0  # claims are released when a job ends
    assert {r.id: r.test_score for r in board.rows()} == before
    assert "test " in out and "test -" not in out  # the resumed jobs still report their (stored) test scores


def test_a_run_whose_process_died_is_marked_interrupted(tmp_path, make_config):
    path, cfg = make_config()
    board = Leaderboard(cfg["storage"])
    dead = board.start_run({}, {})
    gone = board.start_run({}, {})
    alive = board.start_run({}, {})
    old = board.start_run({}, {})  # from an older version: no heartbeat at all, started long ago
    board.beat(alive)
    now = datetime.now(timezone.utc)
    eng = sa.create_engine(cfg["storage"])
    with eng.begin() as conn:
        conn.execute(
            sa.insert(run_heartbeats),
            [
                {"run_id": dead, "host": socket.gethostname(), "pid": _dead_pid(), "beat_at": now},
                {"run_id": gone, "host": "another-host", "pid": 1, "beat_at": now - timedelta(minutes=5)},
            ],
        )
        conn.execute(
            sa.text("update runs set created_at = :t where run_id = :r"),
            {"t": now - timedelta(hours=1), "r": old},
        )
    assert sorted(board.mark_stale_runs()) == sorted([dead, gone, old])
    status = {r.run_id: r.status for r in board.runs()}
    assert status == {dead: "interrupted", gone: "interrupted", alive: "running", old: "interrupted"}
    assert main(["run", str(path)]) == 0  # a new run also leaves the live one alone
    assert {r.run_id: r.status for r in board.runs()}[alive] == "running"


def test_job_claims_are_exclusive_until_released_or_stale(tmp_path):
    board = Leaderboard(f"sqlite:///{tmp_path / 'lb.db'}")
    a, b = board.start_run({}, {}), board.start_run({}, {})
    assert board.claim_job("job1", a) is None
    assert board.claim_job("job1", a) is None  # re-claiming one's own claim is fine
    eng = sa.create_engine(board.url)
    with eng.begin() as conn:  # make the claim another live process's (our parent, on this host)
        conn.execute(sa.update(job_claims).values(pid=os.getppid()))
    holder = board.claim_job("job1", b)
    assert holder == {"run_id": a, "host": socket.gethostname(), "pid": os.getppid()}
    board.release_job("job1", b)  # someone else's claim is not released by b
    assert board.claim_job("job1", b) is not None
    with eng.begin() as conn:  # its holder died
        conn.execute(sa.update(job_claims).values(pid=_dead_pid()))
    assert board.claim_job("job1", b) is None
    with eng.begin() as conn:  # or went silent on another host
        conn.execute(
            sa.update(job_claims).values(
                run_id=a, host="elsewhere", beat_at=datetime.now(timezone.utc) - timedelta(minutes=5)
            )
        )
    assert board.claim_job("job1", b) is None
    board.release_job("job1", b)
    assert count_rows(tmp_path / "lb.db")["job_claims"] == 0


def _cli(*args) -> subprocess.Popen:
    code = "import sys; from miner.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _evaluations(url) -> list[tuple]:
    rows = Leaderboard(url).rows(order="time")
    return sorted(((r.extra or {}).get("job_key"), r.prompt_key) for r in rows)


@pytest.mark.process
def test_two_concurrent_resumes_write_each_evaluation_once(tmp_path, make_config):
    path, cfg = make_config(seeds=[1, 2, 3])
    procs = [_cli("run", str(path), "--resume", "--no-progress") for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    rows = _evaluations(cfg["storage"])
    assert len(rows) == len(set(rows)) == 3 * 4  # 3 jobs x 4 prompts, none twice
    assert count_rows(tmp_path / "lb.db")["test_scores"] == 3 * 2  # test_top 2, each once


OPTUNA = {
    "name": "optuna",
    "params": {
        "n_trials": 6,
        "pool_sizes": [2, 3],
        "max_words": 2,
        "n_startup_trials": 2,
        "train_shares": [0.5, 1.0],
        "heartbeat_grace_s": 3,
    },
}


@pytest.mark.process
@pytest.mark.parametrize("searcher", ["manual", "optuna"])
def test_kill_9_then_resume_gives_the_uninterrupted_rows(tmp_path, make_config, searcher):
    """Same prompts, same scores: an optuna trial's parameters depend only on the study's history."""
    over = {"seeds": [1, 2, 3]} if searcher == "manual" else {"seeds": [1, 2], "searchers": [OPTUNA]}
    ref_path, ref = make_config("ref.yaml", storage=f"sqlite:///{tmp_path / 'ref.db'}", **over)
    assert main(["run", str(ref_path), "--no-progress"]) == 0
    path, cfg = make_config(**over)
    proc = _cli("run", str(path), "--no-progress")
    deadline = time.time() + 300
    while time.time() < deadline and count_rows(tmp_path / "lb.db").get("evaluations", 0) < 3:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert main(["run", str(path), "--resume", "--no-progress"]) == 0

    def summary(url):
        return sorted(
            (r.seed, r.prompt_key, r.dev_score, r.train_score, r.test_score) for r in Leaderboard(url).rows()
        )

    assert summary(cfg["storage"]) == summary(ref["storage"])
    counts, ref_counts = count_rows(tmp_path / "lb.db"), count_rows(tmp_path / "ref.db")
    assert (
        counts["evaluations"] == ref_counts["evaluations"]
        and counts["test_scores"] == ref_counts["test_scores"]
    )
    assert sorted(r.status for r in Leaderboard(cfg["storage"]).runs()) == ["finished", "interrupted"]
