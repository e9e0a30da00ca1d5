"""Choose ``selection: auto``'s rules (dev vs pooled) on validation data carved from training data, never test.

Data: the SST-2 16-shot splits of the shared few-shot data (seeds 13, 21, 42, 87, 100). V_s, the validation
set of seed s, is the sentences of the other seeds' train and dev splits that are not in seed s's own
(all from SST-2's training set; built and scored in ``results/optuna/optuna_validation_scores.json``).

- Searchers that fit on train: the 139 stored optuna trials of ``results/optuna/optuna_experiments_v2.db``
  (label words fitted on train), each with its train, dev and V accuracy (from that JSON).
- Searchers that do not fit on train: the six hand-written SST-2 prompts of ``configs/optuna_sst2.yaml``
  (raw and calibrated), scored here on each seed's train and dev with the default model (their V accuracy
  is in the JSON).

For each seed and rule, the rule's pick among the candidates (``miner.runner._Ranking`` keys, the product's
own code) and its V accuracy. Writes ``results/selection/defaults.{json,md}``. Test scores are never read.

Usage: ``MINER_FEWSHOT_ROOT=/work/shared/data/fewshot OMP_NUM_THREADS=1 nice -n 5 python results/selection/defaults_exp.py``
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
SEEDS = [13, 21, 42, 87, 100]
OUT = REPO / "results" / "selection"


def _split(score: float, n: int, loglik: float = 0.0):
    from miner.search import SplitScore

    return SplitScore(score, {"accuracy": score}, loglik, n)


def _pick(rank, cands):
    return max(cands, key=lambda c: rank.key(c[0]))


def main() -> None:
    torch.set_num_threads(1)
    from miner.config import load_config
    from miner.models import load_backend
    from miner.prompts import Prompt
    from miner.runner import _Ranking, build_prompts
    from miner.scoring import Cost, Scorer
    from miner.search import Evaluation
    from miner.tasks import load_task

    t0 = time.time()
    scores = json.loads((REPO / "results/optuna/optuna_validation_scores.json").read_text())
    cfg = load_config(REPO / "configs/optuna_sst2.yaml")
    backend = load_backend(cfg.model.name)
    manual_rows = {(x["seed"], x["template"], x["calibrate"]): x for x in scores if x["kind"] == "manual"}
    partial = OUT / "defaults_partial.json"  # per-seed rows kept across interruptions (removed at the end)
    per_seed: list = json.loads(partial.read_text()) if partial.exists() else []
    for seed in SEEDS:
        if any(r["seed"] == seed for r in per_seed):
            continue
        data = load_task(cfg.task, 16, seed).without_test()
        nt, nd = len(data.train), len(data.dev)
        ranks = {r: _Ranking(data, r, None, True) for r in ("dev", "pooled")}
        dummy = Prompt.create("{sentence} {answer}", {"negative": "bad", "positive": "good"})
        # fits on train: the optuna trials (train/dev/V stored)
        trials = []
        for x in scores:
            if x["kind"] == "trial" and x["seed"] == seed:
                ev = Evaluation(dummy, _split(x["train"], nt), _split(x["dev"], nd, x["dev_loglik"]), Cost())
                trials.append((ev, x["V"], f"trial {x['trial']}"))
        # does not fit on train: the hand-written prompts, scored here on train and dev
        scorer = Scorer(backend, progress=False, content_free=cfg.content_free)
        manual = []
        for p in build_prompts(cfg, data.label_names):
            for q in (p, p.with_(calibrate=not p.calibrate)):
                rt, rd = scorer.score(q, data.train), scorer.score(q, data.dev)
                ev = Evaluation(
                    q,
                    _split(rt.metrics["accuracy"], nt, float(rt.loglik)),
                    _split(rd.metrics["accuracy"], nd, float(rd.loglik)),
                    Cost(),
                )
                v = manual_rows[(seed, q.template, q.calibrate)]["V"]
                manual.append((ev, v, q.describe()))
        row = {"seed": seed, "n_train": nt, "n_dev": nd, "n_trials": len(trials)}
        for kind, cands in (("fits (optuna trials)", trials), ("no_fit (hand-written)", manual)):
            row[kind] = {}
            for r, rank in ranks.items():
                ev, v, name = _pick(rank, cands)
                row[kind][r] = {
                    "V": v,
                    "pick": name,
                    "train": ev.train.score,
                    "dev": ev.dev.score,
                }
            row[kind]["oracle_V"] = max(v for _, v, _ in cands)
            row[kind]["mean_V"] = statistics.mean(v for _, v, _ in cands)
            row[kind]["manual_scores"] = (
                [{"prompt": n, "train": e.train.score, "dev": e.dev.score, "V": v} for e, v, n in cands]
                if kind.startswith("no_fit")
                else None
            )
        per_seed.append(row)
        partial.write_text(json.dumps(per_seed))
        print(
            seed, {k: {r: row[k][r]["V"] for r in ("dev", "pooled")} for k in row if isinstance(row[k], dict)}
        )
    summary = {}
    for kind in ("fits (optuna trials)", "no_fit (hand-written)"):
        s = {}
        for r in ("dev", "pooled"):
            vs = [row[kind][r]["V"] for row in per_seed]
            s[r] = {"mean": statistics.mean(vs), "std": statistics.stdev(vs), "per_seed": vs}
        diff = [row[kind]["pooled"]["V"] - row[kind]["dev"]["V"] for row in per_seed]
        s["pooled_minus_dev"] = {
            "mean": statistics.mean(diff),
            "per_seed": diff,
            "wins": sum(d > 0 for d in diff),
            "losses": sum(d < 0 for d in diff),
        }
        s["oracle"] = statistics.mean(row[kind]["oracle_V"] for row in per_seed)
        summary[kind] = s
    meta = {
        "command": "MINER_FEWSHOT_ROOT=/work/shared/data/fewshot OMP_NUM_THREADS=1 nice -n 5 python results/selection/defaults_exp.py",
        "commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "torch_threads": 1,
        "seconds": time.time() - t0,
    }
    (OUT / "defaults.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "per_seed": per_seed}, indent=1)
    )
    partial.unlink()
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
