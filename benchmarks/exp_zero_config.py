"""Zero-configuration runs (issue 17 part 5): a config with only a task, a model and a searcher.

For each config given (``configs/zero_config_subj.yaml``, ``configs/zero_config_agnews.yaml``:
no ``prompts:``, no cue phrases, no label words) this script

1. checks that ``miner.runner.prepare`` gives the config's jobs the task's default prompts
   (``miner.search.default_prompts``) as their hand-written prompts (the runner hook of
   docs/defaults.md; the script stops when the runner does not have it);
2. runs the config with ``miner.runner.run`` (what ``miner run`` does; a temporary leaderboard): the
   searcher (``optuna`` at its defaults, the config's ``n_trials`` and budget) sees train/dev only, and
   the runner test-scores each job's pick;
3. scores on the SAME test sample the zero-shot baseline ``{<text field>} {answer}`` with each label's
   own name as its word (the first default prompt) and the best default prompt by dev (what the
   ``manual`` searcher picks among the defaults);
4. writes ``results/selection/zero_config.json`` (the shared layout, every number) and ``.md``.

Usage (one process, a shared machine)::

    OMP_NUM_THREADS=1 MINER_FEWSHOT_ROOT=/work/shared/data/fewshot nice -n 5 \\
        python benchmarks/exp_zero_config.py configs/zero_config_subj.yaml configs/zero_config_agnews.yaml
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _record import command_line, write_result  # sibling module: benchmarks/ is on sys.path

from miner.config import load_config
from miner.models import load_backend
from miner.runner import prepare, run, run_searcher, score_prompt
from miner.search import default_prompts, searchers
from miner.tasks import load_task

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("exp_zero_config")


def _acc(prompt, examples, backend) -> float:
    return float(score_prompt(prompt, examples, backend, progress=False).metrics["accuracy"])


def _mean_std(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def run_config(path: Path, backend, storage: str) -> dict:
    cfg = load_config(path)
    assert not cfg.prompts, f"{path} has prompts: a zero-config run has none"
    k = cfg.k[0]
    # The runner hook: a config without prompts gets the task's default prompts as its hand-written ones.
    prep = prepare(path, backend=backend, dry_run=True, keep_backend=True)
    first = next(iter(prep.datasets.values()))
    defaults = default_prompts(first, backend)
    if [p.key for p in prep.prompts] != [p.key for p in defaults]:
        raise SystemExit("miner.runner.prepare does not use default_prompts for a config without prompts")
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    result = run(path, storage=storage, backend=backend, progress=False)
    search_s = time.perf_counter() - t0
    manual = searchers.build("manual", {}, "manual")
    tested: dict[str, float] = {}  # prompt key -> test accuracy (the defaults use no training data)
    rows = []
    for job in result.jobs:
        data = load_task(cfg.task, k, job.job.seed)
        pick = job.best
        assert pick is not None and pick.row_id in job.test
        man = run_searcher(manual, backend, data, prompts=defaults)
        best_default = max(man.evaluations, key=lambda e: e.rank_key)
        for p in (defaults[0], best_default.prompt):
            if p.key not in tested:
                tested[p.key] = _acc(p, data.test, backend)
        rows.append(
            {
                "seed": job.job.seed,
                "n_test": len(data.test),
                "baseline": {
                    "prompt": defaults[0].to_dict(),
                    "dev": next(e.dev.score for e in man.evaluations if e.prompt.key == defaults[0].key),
                    "test": tested[defaults[0].key],
                },
                "best_default_by_dev": {
                    "prompt": best_default.prompt.to_dict(),
                    "dev": best_default.dev.score,
                    "test": tested[best_default.prompt.key],
                },
                "pick": {
                    "prompt": pick.prompt.to_dict(),
                    "describe": pick.prompt.describe(),
                    "dev": pick.dev.score if pick.dev else None,
                    "train": pick.train.score if pick.train else None,
                    "test": job.test[pick.row_id].metrics["accuracy"],
                },
                "evaluations": len(job.evaluations),
                "forward_passes": job.cost.forward_passes,
                "stopped_by_budget": job.stopped_by_budget,
                "job_seconds": round(job.seconds, 1),
            }
        )
        r = rows[-1]
        log.info(
            "%s seed %d: baseline %.4f, best default %.4f, pick %.4f (dev %.3f) %s",
            cfg.task.name,
            r["seed"],
            r["baseline"]["test"],
            r["best_default_by_dev"]["test"],
            r["pick"]["test"],
            r["pick"]["dev"],
            r["pick"]["describe"],
        )
    base = [r["baseline"]["test"] for r in rows]
    best = [r["best_default_by_dev"]["test"] for r in rows]
    picks = [r["pick"]["test"] for r in rows]
    diffs = [p - b for p, b in zip(picks, base)]
    return {
        "config": str(path),
        "task": cfg.task.name,
        "searcher": {"name": cfg.searchers[0].name, "params": dict(cfg.searchers[0].params)},
        "budget": cfg.budget.model_dump(mode="json"),
        "k": k,
        "seeds": list(cfg.seeds),
        "default_prompts": [p.to_dict() for p in defaults],
        "rows": rows,
        "run_seconds": round(search_s, 1),
        "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "mean": {
            "baseline": _mean_std(base),
            "best_default_by_dev": _mean_std(best),
            "pick": _mean_std(picks),
            "pick_minus_baseline": _mean_std(diffs),
            "seeds_pick_above_baseline": sum(d > 0 for d in diffs),
        },
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _markdown(record: dict) -> str:
    fig = record["figures"]
    out = [
        "# Zero-configuration optuna: only a task, a model and a searcher (issue 17 part 5)",
        "",
        f"- Command: `{record['command']}`",
        f"- Commit: {record['commit']}; date {record['date']}",
        f"- Machine: {record['machine'].get('cpu')} ({record['machine'].get('cores')} cores, "
        f"torch threads {record['machine'].get('torch_threads')}), shared with other engineers' work: "
        f"1-minute load average {fig['load_range'][0]:.2f}-{fig['load_range'][1]:.2f} at the starts of the "
        f"runs and at their ends, {record['load']} when written",
        "- Model: SmolLM2-135M-Instruct (float32, CPU). Data: the shared LM-BFF 16-shot splits "
        "(train 16/class, dev 16/class), test: the config's `max_test` sample, the same for every row.",
        "- The configs have no `prompts:` and no searcher word lists: `optuna` at its defaults (template "
        "parts from the built-in generic set plus the task's field and label names, label words found on "
        "the cached answer distributions of train, seeded with the label names through the default "
        "prompts), `n_trials` and the budget the same for both tasks. The runner gives the jobs the task's "
        "default prompts as their hand-written prompts (the `miner run` hook, docs/defaults.md).",
        "- **baseline**: the zero-shot `{sentence} {answer}`, each label's name as its word. "
        "**best default**: the default prompt with the best dev score (what `manual` would pick among "
        "the defaults). **pick**: the optuna job's pick (best trial by dev). Test accuracy in %.",
        "",
        "Default prompts and template parts: [docs/defaults.md](../../docs/defaults.md).",
        "",
    ]
    for t in fig["tasks"]:
        m = t["mean"]
        out += [
            f"## {t['task']} ({t['config']}; k={t['k']}, searcher params {t['searcher']['params']}, "
            f"budget { ({k: v for k, v in t['budget'].items() if v is not None}) })",
            "",
            "| seed | baseline test | best default (dev) test | pick dev | pick test | pick − baseline | picked |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in t["rows"]:
            out.append(
                f"| {r['seed']} | {_pct(r['baseline']['test'])} | {_pct(r['best_default_by_dev']['test'])} | "
                f"{_pct(r['pick']['dev'])} | **{_pct(r['pick']['test'])}** | "
                f"{100 * (r['pick']['test'] - r['baseline']['test']):+.1f} | "
                f"{r['pick']['describe'].replace('|', '/').replace(chr(10), '⏎')} |"
            )
        out += [
            f"| **mean ± std** | {_pct(m['baseline'][0])} ± {_pct(m['baseline'][1])} | "
            f"{_pct(m['best_default_by_dev'][0])} ± {_pct(m['best_default_by_dev'][1])} | | "
            f"**{_pct(m['pick'][0])} ± {_pct(m['pick'][1])}** | "
            f"{100 * m['pick_minus_baseline'][0]:+.1f} ± {_pct(m['pick_minus_baseline'][1])} "
            f"({m['seeds_pick_above_baseline']}/{len(t['rows'])} seeds above) | |",
            "",
            "Seconds per job (search and the runner's test scoring of the pick): "
            + ", ".join(f"{r['job_seconds']:.0f}" for r in t["rows"])
            + "; forward passes of the search: "
            + ", ".join(str(r["forward_passes"]) for r in t["rows"])
            + ".",
            "",
        ]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "selection" / "zero_config.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    backend = load_backend("smollm2")
    with tempfile.TemporaryDirectory(prefix="zero-config-") as tmp:
        storage = f"sqlite:///{tmp}/lb.db"
        tasks = [run_config(p, backend, storage) for p in args.configs]
    loads = [x for t in tasks for x in t["load_1min"]]
    record = write_result(
        args.out,
        command=command_line(),
        config={"configs": [str(p) for p in args.configs], "model": "smollm2"},
        figures={"tasks": tasks, "load_range": [min(loads), max(loads)]},
    )
    args.out.with_suffix(".md").write_text(_markdown(record) + "\n", encoding="utf-8")
    log.info("wrote %s and %s", args.out, args.out.with_suffix(".md"))


if __name__ == "__main__":
    main()
