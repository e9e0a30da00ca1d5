"""soft and blackbox next to the manual prompt: test accuracy (mean ± std over seeds) and cost.

Runs a config (configs/soft_*.yaml) one seed at a time through the runner (so every row
lands in the leaderboard) and rewrites results/soft/soft_<task>.json and .md after each seed,
so a cut-short run still leaves its finished seeds. Every method is tested on the same
seeded test subsample (the config's ``max_test``); the searchers never see test data.

    PYTHONPATH=. python benchmarks/exp_soft.py --config configs/soft_sst2.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from _machine import cpu_model  # sibling module: benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--seeds", type=int, nargs="*", help="override the config's seeds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results" / "soft"))
    ap.add_argument(
        "--storage", help="override the config's leaderboard (one per parallel process: SQLite locks)"
    )
    ap.add_argument(
        "--tag", default="", help="suffix of the output files (several processes, one per seed group)"
    )
    ap.add_argument(
        "--merge",
        nargs="*",
        help="combine the jobs of these JSON files into the untagged output, run nothing",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "urllib3", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.chdir(ROOT)  # the config's paths are relative to the repo root

    import miner.search.blackbox  # noqa: F401  (registers the searchers before the lead does)
    import miner.search.soft  # noqa: F401
    from miner.config import load_config
    from miner.leaderboard import Leaderboard
    from miner.models import load_backend
    from miner.runner import run

    cfg = load_config(args.config)
    seeds = args.seeds or cfg.seeds
    task_name = cfg.task.name.replace("-", "").replace("_", "")
    out_json = Path(args.out) / f"soft_{task_name}{'_' + args.tag if args.tag else ''}.json"
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if args.merge is not None:
        parts = [json.loads(Path(f).read_text()) for f in args.merge]
        jobs = sorted((j for p in parts for j in p["jobs"]), key=lambda j: (j["seed"], j["searcher"]))
        started = min(p["meta"]["started"] for p in parts)
        args.command_parts = [p["meta"]["command"] for p in parts]
        _write(out_json, cfg, args, jobs, started, cfg.model.name)
        return 0
    backend = load_backend(cfg.model.name)
    jobs: list[dict] = []
    for seed in seeds:
        t0 = time.perf_counter()
        res = run(
            cfg.model_copy(update={"seeds": [seed]}), storage=args.storage, backend=backend, progress=False
        )
        board = Leaderboard(res.storage)
        for jr in res.jobs:
            best = jr.best
            rows = {r.id: r for r in board.rows(run_id=res.run_id, searcher=jr.job.searcher_name, seed=seed)}
            row = rows.get(best.row_id) if best else None
            jobs.append(
                {
                    "task": jr.job.task.name,
                    "seed": seed,
                    "searcher": jr.job.searcher_name,
                    "test": jr.best_test,
                    "dev": best.dev.score if best and best.dev else None,
                    "n_test": len(jr.job.task.test),
                    "best_prompt": best.prompt.to_dict() if best else None,
                    "best_is": (
                        "soft"
                        if best and best.prompt.soft
                        else "projection"
                        if best and best.prompt.triggers
                        else "discrete"
                    ),
                    "best_extra": {
                        k: (row.extra or {}).get(k) for k in ("step", "generation", "nearest_text")
                    }
                    if row
                    else {},
                    "evaluations": len(jr.evaluations),
                    "forward_passes": jr.cost.forward_passes,
                    "backward_passes": jr.cost.backward_passes,
                    "model_seconds": round(jr.cost.seconds, 1),
                    "wall_seconds": round(jr.seconds, 1),
                    "stopped_by_budget": jr.stopped_by_budget,
                    "run_id": res.run_id,
                }
            )
            # The projection's own dev score (nearest discrete prompt of the best soft prompt).
            proj = [e for e in jr.evaluations if e.prompt.triggers]
            if proj:
                jobs[-1]["projection_dev"] = proj[-1].dev.score if proj[-1].dev else None
                jobs[-1]["projection_text"] = (
                    (rows.get(proj[-1].row_id).extra or {}).get("nearest_text")
                    if rows.get(proj[-1].row_id)
                    else None
                )
        board.close()
        logging.info("seed %d done in %.0f s", seed, time.perf_counter() - t0)
        _write(out_json, cfg, args, jobs, started, backend.name)
    return 0


def _write(out_json: Path, cfg, args, jobs, started, model: str) -> None:
    summary = {}
    for name in dict.fromkeys(j["searcher"] for j in jobs):
        js = [j for j in jobs if j["searcher"] == name and j["test"] is not None]
        tests = [100 * j["test"] for j in js]
        summary[name] = {
            "seeds": [j["seed"] for j in js],
            "test_mean": statistics.mean(tests) if tests else None,
            "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "forward_passes_mean": statistics.mean(j["forward_passes"] for j in js) if js else None,
            "backward_passes_mean": statistics.mean(j["backward_passes"] for j in js) if js else None,
            "wall_seconds_mean": statistics.mean(j["wall_seconds"] for j in js) if js else None,
        }
    meta = {
        "command": " ; ".join(
            getattr(args, "command_parts", None) or [" ".join([sys.executable] + sys.argv)]
        ),
        "config": args.config,
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "load_average": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": model,
        "test_examples": jobs[0]["n_test"] if jobs else None,
        "config_data": cfg.model_dump(mode="json"),
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(
        json.dumps({"meta": meta, "summary": summary, "jobs": jobs}, indent=2, default=str) + "\n"
    )
    lines = [
        f"# soft / blackbox vs manual: {cfg.task.name} (k={cfg.k[0]}, model {model})",
        "",
        f"Test accuracy on the same {meta['test_examples']}-example seeded test sample (max_test) for every method; "
        f"best prompt of each job by dev score. CPU: {meta['cpu']}, torch threads {meta['torch_threads']}, "
        f"load average {tuple(round(x, 1) for x in meta['load_average'])} at the end. Command: `{meta['command']}`. "
        f"Finished {meta['finished']}.",
        "",
        "| searcher | seeds | test acc (mean ± std) | forward passes | backward passes | wall s / job |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        if s["test_mean"] is None:
            continue
        lines.append(
            f"| {name} | {len(s['seeds'])} | {s['test_mean']:.1f} ± {s['test_std']:.1f} | {s['forward_passes_mean']:.0f} | "
            f"{s['backward_passes_mean']:.0f} | {s['wall_seconds_mean']:.0f} |"
        )
    lines += [
        "",
        "Per job:",
        "",
        "| searcher | seed | dev | test | best is | nearest discrete reading (dev) | fwd | bwd | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for j in jobs:
        pd = j.get("projection_dev")
        near = f"{j.get('projection_text')!r} ({100 * pd:.1f})" if pd is not None else "-"
        lines.append(
            f"| {j['searcher']} | {j['seed']} | {100 * (j['dev'] or 0):.1f} | {100 * (j['test'] or 0):.1f} | {j['best_is']} | "
            f"{near.replace('|', '/')} | {j['forward_passes']} | {j['backward_passes']} | {j['wall_seconds']} |".replace(
                "\n", "\\n"
            )
        )
    out_json.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
