"""Kill -9 at random points of real runs, resume, and compare with an uninterrupted run.

Question: does ``miner run --resume`` after ``kill -9`` at any point (model loading, scoring, writing,
test scoring, a searcher's own state) end with exactly the rows an uninterrupted run writes, without
duplicates, and with every killed run marked interrupted?

For each of three searchers (manual with calibration, optuna, soft) on the tiny causal LM built from a
config (random weights, SmolLM2's tokenizer), the script first runs the config once without interruption
(the reference), then starts it again in a fresh database and kills the process at a uniformly random
moment of a reference run's wall time, resumes with ``--resume`` and kills again, ``--kills`` times, and
finally resumes to the end. It compares (seed, prompt key, train, dev and test score) of every row with
the reference, counts duplicate evaluations (same job and prompt) and duplicate test scores, and reads
every run's status. A kill that came after the process had already finished is not counted as a kill.

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
    "optuna": {"name": "optuna", "params": {"n_trials": 10, "pool_sizes": [2, 3], "max_words": 2,
                                            "n_startup_trials": 3, "train_shares": [0.5, 1.0]}},
    "soft": {"name": "soft", "params": {"n_tokens": 2, "steps": 12, "eval_every": 2, "batch_size": 4}},
}
PROMPTS = [
    {"template": "{sentence} It was {answer}", "verbalizer": {"negative": ["terrible"], "positive": ["great"]}},
    {"template": "Review: {sentence}\nSentiment: {answer}", "verbalizer": {"negative": "negative", "positive": "positive"}},
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
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


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
    return {"duplicate_evaluations": sum(n - 1 for n in evals.values()),
            "duplicate_test_scores": sum(n - 1 for n in tests.values()), "statuses": statuses}


def summary(db: Path) -> list[tuple]:
    return sorted((r[0], r[1], r[2], r[3], r[4]) for r in rows(db))


def one_searcher(name: str, model_dir: Path, work: Path, kills: int, rng: random.Random) -> dict:
    ref_db, db = work / f"{name}-ref.db", work / f"{name}.db"
    ref_cfg, cfg = work / f"{name}-ref.yaml", work / f"{name}.yaml"
    ref_cfg.write_text(yaml.safe_dump(config(model_dir, ref_db, name)))
    cfg.write_text(yaml.safe_dump(config(model_dir, db, name)))
    wall = run_to_end(["run", str(ref_cfg)])
    done_kills, attempts, moments = 0, 0, []
    while done_kills < kills:
        args = ["run", str(cfg)] + (["--resume"] if attempts else [])
        delay = rng.uniform(0.0, wall)
        proc = cli(args)
        try:
            proc.wait(timeout=delay)
            finished = True  # it finished before the kill: the next attempt resumes a finished run
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            finished = False
        attempts += 1
        if finished:
            if proc.returncode != 0:
                raise SystemExit(f"attempt {attempts} failed: {proc.stderr.read().decode()[-2000:]}")
            continue
        done_kills += 1
        moments.append(round(delay / wall, 3))
    run_to_end(["run", str(cfg), "--resume"])
    same = summary(db) == summary(ref_db)
    a = audit(db)
    interrupted = a["statuses"][:-1]
    return {
        "searcher": name, "reference_wall_s": round(wall, 1), "kills": done_kills, "attempts": attempts + 1,
        "kill_moments_fraction_of_wall": moments, "rows": len(rows(db)), "reference_rows": len(rows(ref_db)),
        "identical_rows": same, "duplicate_evaluations": a["duplicate_evaluations"],
        "duplicate_test_scores": a["duplicate_test_scores"],
        "killed_runs_marked_interrupted": sum(s == "interrupted" for s in interrupted),
        "killed_runs": done_kills, "other_statuses": sorted(set(interrupted) - {"interrupted"}),
        "last_status": a["statuses"][-1],
    }


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
    ok = all(r["identical_rows"] and not r["duplicate_evaluations"] and not r["duplicate_test_scores"]
             and r["killed_runs_marked_interrupted"] == r["killed_runs"] and r["last_status"] == "finished"
             for r in results)
    figures = {"kills": sum(r["kills"] for r in results), "all_identical_and_clean": ok,
               "seconds": round(total, 1), "per_searcher": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result(args.out.with_suffix(".json"), command=command_line(),
                 config={"kills_per_searcher": args.kills, "seed": args.seed, "searchers": SEARCHERS,
                         "model": "tiny causal LM (miner.testing.tiny, 2 layers, random weights)"},
                 figures=figures)
    lines = [f"# Kill -9 and resume ({figures['kills']} kills)", "",
             f"Command: `{command_line()}`; {total:.0f} s in all. Result: "
             + ("every searcher ended with the reference's rows, no duplicates, every killed run marked interrupted."
                if ok else "NOT all clean: see the table."), "",
             "| searcher | kills | identical rows | rows | duplicate evaluations | duplicate test scores | killed runs marked interrupted |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['searcher']} | {r['kills']} | {'yes' if r['identical_rows'] else 'no'} | {r['rows']} / {r['reference_rows']} "
                     f"| {r['duplicate_evaluations']} | {r['duplicate_test_scores']} | {r['killed_runs_marked_interrupted']} / {r['killed_runs']} |")
    lines += ["", "Kill moments (fraction of the reference run's wall time, process start included): "
              + "; ".join(f"{r['searcher']}: {r['kill_moments_fraction_of_wall']}" for r in results), ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    print(json.dumps({"ok": ok}))


if __name__ == "__main__":
    main()
