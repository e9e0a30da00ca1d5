"""Jobs in one process vs on joblib workers: wall time and identical leaderboard rows, in one run.

The same config (manual prompts on the built-in Rotten Tomatoes task, several seeds: one job per
seed) runs twice into two fresh SQLite files: once sequentially in this process with all cores
for torch, once with ``parallel.n_jobs`` workers (loky processes, cores / n_jobs torch threads
each; every worker loads the model itself, which is counted). The rows must be the same prompts
with the same scores. Writes ``results/scaling/parallel_jobs.{json,md}``.

Usage::

    python benchmarks/bench_parallel_jobs.py --seeds 1 2 3 4 --jobs 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def config(seeds: list[int], storage: str, n_jobs: int, max_test: int) -> dict:
    return {
        "task": {"source": "builtin", "name": "rotten_tomatoes", "max_test": max_test},
        "model": "smollm2",
        "prompts": [
            {
                "template": "{sentence} It was {answer}",
                "verbalizer": {"negative": "terrible", "positive": "great"},
            },
            {
                "template": "Review: {sentence}\nSentiment: {answer}",
                "verbalizer": {"negative": "negative", "positive": "positive"},
            },
        ],
        "searchers": [{"name": "manual", "params": {"with_calibration": True}}],
        "seeds": seeds,
        "k": 16,
        "test_top": 1,
        "storage": storage,
        "progress": False,
        "parallel": {"n_jobs": n_jobs},
    }


def rows(url: str) -> list[tuple]:
    from miner.leaderboard import Leaderboard

    return sorted(
        (r.seed, r.prompt_key, r.train_score, r.dev_score, r.test_score) for r in Leaderboard(url).rows()
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--max-test", type=int, default=200)
    args = ap.parse_args(argv)
    import miner

    cores = os.cpu_count() or 1
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, n in (("sequential", 1), ("parallel", args.jobs)):
            url = f"sqlite:///{Path(tmp) / (label + '.db')}"
            torch.set_num_threads(cores)  # the sequential run gets every core for torch
            t0 = time.perf_counter()
            miner.run(config(args.seeds, url, n, args.max_test))
            out[label] = {"seconds": time.perf_counter() - t0, "n_jobs": n, "rows": rows(url)}
            print(f"{label}: {out[label]['seconds']:.1f} s", flush=True)
    same = out["sequential"]["rows"] == out["parallel"]["rows"]
    res = {
        "seeds": args.seeds,
        "jobs": len(args.seeds),
        "n_jobs": args.jobs,
        "max_test": args.max_test,
        "sequential_s": out["sequential"]["seconds"],
        "parallel_s": out["parallel"]["seconds"],
        "speedup": out["sequential"]["seconds"] / out["parallel"]["seconds"],
        "same_rows": same,
        "n_rows": len(out["parallel"]["rows"]),
        "machine": {
            "cpu": cpu_model(),
            "cores": cores,
            "loadavg": os.getloadavg(),
            "torch": torch.__version__,
        },
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (REPO / "results/scaling/parallel_jobs.json").write_text(json.dumps(res, indent=2))
    m = res["machine"]
    md = f"""# Jobs sequentially vs on joblib workers

Command: `{res["command"]}`; {res["date"]}; {m["cpu"]}, {m["cores"]} cores (load average at the end {m["loadavg"][0]:.1f}), torch {m["torch"]}.

{res["jobs"]} jobs (manual searcher, 2 prompts x with/without calibration, Rotten Tomatoes 16-shot, seeds {res["seeds"]}, test sample {res["max_test"]}, default model), each side from a fresh SQLite file, in one process run one after the other.

| | wall time | |
|---|---|---|
| one process, jobs one after another, {m["cores"]} torch threads | {res["sequential_s"]:.1f} s | |
| {res["n_jobs"]} loky workers, {max(1, m["cores"] // res["n_jobs"])} torch thread(s) each (each loads the model) | {res["parallel_s"]:.1f} s | {res["speedup"]:.2f}x |

Leaderboard rows identical (same prompts, train/dev/test scores): **{"yes" if same else "NO"}** ({res["n_rows"]} rows each).
"""
    (REPO / "results/scaling/parallel_jobs.md").write_text(md)
    print(md)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
