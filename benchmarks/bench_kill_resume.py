"""Kill -9 at random points of real runs, resume, and compare with an uninterrupted run.

Question: does ``miner run --resume`` after ``kill -9`` at any point (model loading, scoring, writing,
test scoring, a searcher's own state) end with exactly the rows an uninterrupted run writes, without
duplicates, and with every killed run marked interrupted?

For each of three searchers (manual with calibration, optuna, soft) on the tiny causal LM built from a
config (random weights, SmolLM2's tokenizer), the script first runs the config once without interruption
(the reference), then ``--kills`` times: starts it in a fresh database, kills the process at a uniformly
random moment of its work (between the run's row and its "finished" status, as timed on the reference; a
kill that finds the run finished is drawn again), resumes with ``--resume`` to the end,
and compares (seed, prompt key, train, dev and test score) of every row with the reference, counts
duplicate evaluations (same job and prompt) and duplicate test scores, and reads both runs' statuses
(the killed one must be "interrupted").

    python benchmarks/bench_kill_resume.py                       # 7 kills per searcher, 21 in all
    python benchmarks/bench_kill_resume.py --kills 2 --out /tmp/k  # a quick look

Writes ``results/reliability/kill_resume.json`` (and ``.md``) in the layout of ``_record.write_result``.
About 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _record import command_line, write_result  # noqa: E402

SEARCHERS = {
    "manual": {"name": "manual", "params": {"with_calibration": True}},
    # a 3 s heartbeat grace (the least): a killed worker's trial is found dead 3 s after its last heartbeat
    "optuna": {
        "name": "optuna",
        "params": {
            "n_trials": 10,
            "pool_sizes": [2, 3],
            "max_words": 2,
            "n_startup_trials": 3,
            "train_shares": [0.5, 1.0],
            "heartbeat_grace_s": 3,
        },
    },
    "soft": {"name": "soft", "params": {"n_tokens": 2, "steps": 12, "eval_every": 2, "batch_size": 4}},
}
PROMPTS = [
    {
        "template": "{sentence} It was {answer}",
        "verbalizer": {"negative": ["terrible"], "positive": ["great"]},
    },
    {
        "template": "Review: {sentence}\nSentiment: {answer}",
        "verbalizer": {"negative": "negative", "positive": "positive"},
    },
]


def config(model_dir: Path, db: Path, searcher: str) -> dict:
    return {
        "task": {"source": "builtin", "name": "rotten_tomatoes", "max_test": 24},
        "model": {"name": str(model_dir)},
        "prompts": PROMPTS,
        "searchers": [SEARCHERS[searcher]],
        "seeds": [1, 2],
        "k": 4,
        "storage": f"sqlite:///{db}",
        "test_top": 2,
        "progress": False,
    }


def cli(args: list[str]) -> subprocess.Popen:
    code = "import sys; from miner.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def run_to_end(args: list[str]) -> float:
    start = time.perf_counter()
    proc = cli(args)
    if proc.wait() != 0:
        raise SystemExit(f"miner {' '.join(args)} failed: {proc.stderr.read().decode()[-2000:]}")
    return time.perf_counter() - start


def rows(db: Path) -> list[tuple]:
    """(seed, prompt key, train, dev, latest test) per evaluation, and the evaluation's job key."""
    with sqlite3.connect(db) as con:
        got = con.execute("""
            select e.seed, e.prompt_key, e.train_score, e.dev_score,
                   (select t.test_score from test_scores t where t.evaluation_id = e.id order by t.id desc limit 1),
                   json_extract(e.extra, '$.job_key')
            from evaluations e""").fetchall()
    return got


def audit(db: Path) -> dict:
    with sqlite3.connect(db) as con:
        tests = Counter(i for (i,) in con.execute("select evaluation_id from test_scores"))
        statuses = [s for (s,) in con.execute("select status from runs order by created_at")]
    evals = Counter((r[5], r[1]) for r in rows(db))
    return {
        "duplicate_evaluations": sum(n - 1 for n in evals.values()),
        "duplicate_test_scores": sum(n - 1 for n in tests.values()),
        "statuses": statuses,
    }


def summary(db: Path) -> list[tuple]:
    return sorted((r[0], r[1], r[2], r[3], r[4]) for r in rows(db))


def _run_row_appears(proc: subprocess.Popen, db: Path, runs_before: int, timeout: float = 300) -> bool:
    """Wait until the process has written its run's row (its startup is over) or has exited."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db) as con:
                    if con.execute("select count(*) from runs").fetchone()[0] > runs_before:
                        return True
            except sqlite3.Error:  # tables being created right now
                pass
        time.sleep(0.02)
    return proc.poll() is None


def _statuses(db: Path) -> list[str]:
    try:
        with sqlite3.connect(db) as con:
            return [st for (st,) in con.execute("select status from runs order by created_at")]
    except sqlite3.Error:
        return []


def _until_not_running(proc: subprocess.Popen, db: Path) -> None:
    while proc.poll() is None and _statuses(db)[-1:] == ["running"]:
        time.sleep(0.01)


def one_searcher(name: str, model_dir: Path, work: Path, kills: int, rng: random.Random) -> dict:
    """``kills`` experiments, each on a fresh database: start the run, kill it at a uniformly random moment
    of its work (between the run's row being written and the run being marked finished, as timed on the
    reference run), resume to the end, compare. A kill that found the run already finished is drawn again."""
    ref_db, ref_cfg = work / f"{name}-ref.db", work / f"{name}-ref.yaml"
    ref_cfg.write_text(yaml.safe_dump(config(model_dir, ref_db, name)))
    t0 = time.perf_counter()
    proc = cli(["run", str(ref_cfg)])
    _run_row_appears(proc, ref_db, 0)
    startup = time.perf_counter() - t0
    _until_not_running(proc, ref_db)
    busy = time.perf_counter() - t0 - startup  # the run's work: where kills land
    if proc.wait() != 0:
        raise SystemExit(f"reference run failed: {proc.stderr.read().decode()[-2000:]}")
    reference = summary(ref_db)
    out = {
        "searcher": name,
        "reference_startup_s": round(startup, 1),
        "reference_work_s": round(busy, 2),
        "kills": 0,
        "finished_before_the_kill": 0,
        "kill_moments_fraction_of_work": [],
        "identical_rows": True,
        "rows": len(reference),
        "duplicate_evaluations": 0,
        "duplicate_test_scores": 0,
        "killed_runs_marked_interrupted": 0,
        "other_statuses": [],
    }
    attempt = 0
    while out["kills"] < kills:
        attempt += 1  # a fresh database each time (a discarded one may leave -wal/-shm files behind)
        db, cfg = work / f"{name}-{attempt}.db", work / f"{name}-{attempt}.yaml"
        cfg.write_text(yaml.safe_dump(config(model_dir, db, name)))
        proc = cli(["run", str(cfg)])
        if not _run_row_appears(proc, db, 0):
            raise SystemExit(f"run exited during startup: {proc.stderr.read().decode()[-2000:]}")
        fraction = rng.random()
        time.sleep(fraction * busy)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if _statuses(db) != ["running"]:  # it had finished its work already: not a kill mid-run
            out["finished_before_the_kill"] += 1
            continue
        out["kills"] += 1
        out["kill_moments_fraction_of_work"].append(round(fraction, 3))
        run_to_end(["run", str(cfg), "--resume"])
        got = summary(db)
        a = audit(db)
        out["identical_rows"] &= got == reference
        out["duplicate_evaluations"] += a["duplicate_evaluations"]
        out["duplicate_test_scores"] += a["duplicate_test_scores"]
        out["killed_runs_marked_interrupted"] += a["statuses"] == ["interrupted", "finished"]
        out["other_statuses"] += [a["statuses"]] if a["statuses"] != ["interrupted", "finished"] else []
    out["killed_runs"] = out["kills"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=7, help="kills per searcher (default: %(default)s)")
    ap.add_argument("--searchers", default="manual,optuna,soft")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "reliability" / "kill_resume")
    args = ap.parse_args()

    from miner.testing.tiny import tiny_causal

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="miner-kill-") as tmp:
        work = Path(tmp)
        be = tiny_causal()
        be.model.save_pretrained(work / "model")
        be.tokenizer.save_pretrained(work / "model")
        started = time.perf_counter()
        results = [one_searcher(s, work / "model", work, args.kills, rng) for s in args.searchers.split(",")]
        total = time.perf_counter() - started
    ok = all(
        r["identical_rows"]
        and not r["duplicate_evaluations"]
        and not r["duplicate_test_scores"]
        and r["killed_runs_marked_interrupted"] == r["killed_runs"]
        for r in results
    )
    figures = {
        "kills": sum(r["kills"] for r in results),
        "all_identical_and_clean": ok,
        "seconds": round(total, 1),
        "per_searcher": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result(
        args.out.with_suffix(".json"),
        command=command_line(),
        config={
            "kills_per_searcher": args.kills,
            "seed": args.seed,
            "searchers": SEARCHERS,
            "model": "tiny causal LM (miner.testing.tiny, 2 layers, random weights)",
        },
        figures=figures,
    )
    lines = [
        f"# Kill -9 and resume ({figures['kills']} kills)",
        "",
        f"Command: `{command_line()}`; {total:.0f} s in all. Result: "
        + (
            "every searcher ended with the reference's rows, no duplicates, every killed run marked interrupted."
            if ok
            else "NOT all clean: see the table."
        ),
        "",
        "| searcher | kills | identical rows (all kills) | rows per run | duplicate evaluations | duplicate test scores | killed runs marked interrupted |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['searcher']} | {r['kills']} | {'yes' if r['identical_rows'] else 'no'} | {r['rows']} "
            f"| {r['duplicate_evaluations']} | {r['duplicate_test_scores']} | {r['killed_runs_marked_interrupted']} / {r['killed_runs']} |"
        )
    lines += [
        "",
        "Each kill is its own experiment on a fresh database: the run is killed at a uniformly random "
        "moment of its work (between its run row being written and its being marked finished, as timed on "
        "the reference run: "
        + ", ".join(f"{r['searcher']} {r['reference_work_s']} s" for r in results)
        + "), then `--resume` runs to the end and its rows are compared with the reference's. Kill moments "
        "(fraction of the working time): "
        + "; ".join(f"{r['searcher']}: {r['kill_moments_fraction_of_work']}" for r in results)
        + ". Draws that found the run finished already (not kills, drawn again): "
        + ", ".join(f"{r['searcher']} {r['finished_before_the_kill']}" for r in results)
        + ".",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({"ok": ok}))


if __name__ == "__main__":
    main()
