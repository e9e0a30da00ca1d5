"""Does the guarded pick hold against the best hand-written prompt? (issue 17)

Runs one selection config (``configs/selection_*.yaml``: a task, good hand-written prompts raw and
calibrated, a searcher at its defaults, 5 seeds) in this process and records, per job, the test
predictions of five picks on the same test sample:

- ``guarded``: the job's pick (the run's ``selection`` and ``pick: guarded``);
- ``unguarded``: the searcher's own pick under the same ranking rule;
- ``manual``: the best hand-written prompt under the same rule;
- ``dev_unguarded`` / ``dev_manual``: the same two chosen by dev alone (``selection: dev``), from the same
  rows (no new search; a pick the run did not test is scored on test here, once).

Nothing here reads test before the picks are made: they come from the leaderboard rows (train and dev).
``--report`` merges the per-task files into ``results/selection/grid.{md,json}`` with means over seeds,
the paired difference guarded - manual with a paired bootstrap 95% interval over seeds and test examples,
wins/ties/losses and how often the guard fired.

    python benchmarks/exp_selection_grid.py configs/selection_sst2.yaml configs/selection_mr.yaml
    python benchmarks/exp_selection_grid.py --report results/selection/grid_*.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from _machine import cpu_model, git_commit

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "selection"


def _machine() -> str:
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def _entry(ev, res, data, metric, backend, extra_tests):
    if ev is None:
        return None
    tr = res.test.get(ev.row_id) if ev.row_id is not None else None
    if tr is None or getattr(tr, "preds", None) is None:
        if ev.prompt.key not in extra_tests:
            from miner.runner import score_prompt

            extra_tests[ev.prompt.key] = score_prompt(ev.prompt, data.test, backend)
        tr = extra_tests[ev.prompt.key]
    correct = (np.asarray(tr.preds) == np.asarray(tr.gold)).astype(int)
    return {
        "prompt": ev.prompt.to_dict(),
        "key": ev.prompt.key,
        "baseline": bool(getattr(ev, "baseline", False)),
        "train": ev.train.score if ev.train else None,
        "dev": ev.dev.score if ev.dev else None,
        "test": float(tr.metrics[metric]),
        "correct": "".join(map(str, correct.tolist())),
    }


def run_config(path: str, backend, seeds: list[int] | None = None, resume: bool = False) -> Path:
    import miner.runner as runner
    from miner.config import load_config

    cfg = load_config(path)
    if seeds:
        cfg = cfg.model_copy(update={"seeds": seeds})
    t0 = time.time()
    load0 = os.getloadavg()[0]
    result = runner.run(cfg, backend=backend, progress=False, resume=resume)
    # the jobs' TaskData carry no test split (the runner hands it out only after the pick): the same
    # seeded splits, test included, come from prepare()
    full = {(d.k, d.seed): d for d in runner.prepare(cfg, backend=backend).datasets.values()}
    jobs = []
    for res in result.jobs:
        data = full[(res.job.k, res.job.seed)]
        metric = data.metric
        extra_tests: dict[str, object] = {}
        evs = res.evaluations
        cands = [e for e in evs if not getattr(e, "baseline", False)] or evs
        bases = [e for e in evs if getattr(e, "baseline", False)]
        picks = dict(res.picks)
        picks["dev_unguarded"] = max(cands, key=lambda e: e.rank_key) if cands else None
        picks["dev_manual"] = max(bases, key=lambda e: e.rank_key) if bases else None
        d = res.decision
        jobs.append(
            {
                "seed": res.job.seed,
                "searcher": res.job.searcher_name,
                "rule": getattr(d, "rule", None),
                "reason": getattr(d, "reason", None),
                "guard_fired": bool(
                    d is not None
                    and d.guarded is not None
                    and d.unguarded is not None
                    and d.guarded.prompt.key != d.unguarded.prompt.key
                ),
                "n_test": len(data.test),
                "n_evaluations": len(evs),
                "forward_passes": res.cost.forward_passes,
                "seconds": res.seconds,
                "picks": {
                    role: _entry(ev, res, data, metric, backend, extra_tests) for role, ev in picks.items()
                },
                "extra_test_scorings": len(extra_tests),
            }
        )
    out = {
        "question": "does the guarded pick hold against the best hand-written prompt?",
        "command": f"python benchmarks/exp_selection_grid.py {path}"
        + (f" --seeds {' '.join(map(str, seeds))}" if seeds else "")
        + (" --resume" if resume else ""),
        "commit": git_commit() or "unknown",
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load": {"start": load0, "end": os.getloadavg()[0]},
        "threads": __import__("torch").get_num_threads(),
        "config": path,
        "task": cfg.task.name,
        "metric": result.jobs[0].job.task.metric if result.jobs else None,
        "seconds": time.time() - t0,
        "jobs": jobs,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    dest = OUT / f"grid_{Path(path).stem.removeprefix('selection_')}.json"
    dest.write_text(json.dumps(out, indent=1))
    print(f"{path}: {len(jobs)} job(s) in {out['seconds']:.0f} s -> {dest}", flush=True)
    return dest


def _vec(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), dtype=np.uint8) - ord("0")


def paired_interval(
    a: list[str], b: list[str], reps: int = 4000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean over seeds of acc(a) - acc(b), with a 95% bootstrap interval resampling seeds, then examples."""
    rng = np.random.default_rng(seed)
    diffs = [(_vec(x).astype(float) - _vec(y)) for x, y in zip(a, b)]
    point = float(np.mean([d.mean() for d in diffs]))
    boots = np.empty(reps)
    for r in range(reps):
        picks = rng.integers(0, len(diffs), len(diffs))
        boots[r] = np.mean([diffs[i][rng.integers(0, len(diffs[i]), len(diffs[i]))].mean() for i in picks])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return 100 * point, 100 * float(lo), 100 * float(hi)


ROLES = ("manual", "guarded", "unguarded", "dev_manual", "dev_unguarded")


def report(files: list[str]) -> None:
    runs = [json.loads(Path(f).read_text()) for f in files]
    rows, summary = [], []
    for run in runs:
        jobs = run["jobs"]
        line = {
            "task": run["task"],
            "searcher": jobs[0]["searcher"],
            "seeds": len(jobs),
            "rule": jobs[0]["rule"],
        }
        for role in ROLES:
            vals = [100 * j["picks"][role]["test"] for j in jobs if j["picks"].get(role)]
            line[role] = (float(np.mean(vals)), float(np.std(vals))) if vals else None
        for a, b, name in (
            ("guarded", "manual", "guarded_vs_manual"),
            ("unguarded", "manual", "unguarded_vs_manual"),
            ("dev_unguarded", "dev_manual", "dev_unguarded_vs_dev_manual"),
            ("guarded", "dev_manual", "guarded_vs_dev_manual"),
        ):
            pairs = [(j["picks"][a], j["picks"][b]) for j in jobs if j["picks"].get(a) and j["picks"].get(b)]
            if pairs:
                line[name] = paired_interval(
                    [p[0]["correct"] for p in pairs], [p[1]["correct"] for p in pairs]
                )
                wins = sum(p[0]["test"] > p[1]["test"] for p in pairs)
                ties = sum(p[0]["test"] == p[1]["test"] for p in pairs)
                line[name + "_wtl"] = (wins, ties, len(pairs) - wins - ties)
        line["guard_fired"] = sum(j["guard_fired"] for j in jobs)
        line["seconds"] = run["seconds"]
        line["forward_passes"] = sum(j["forward_passes"] for j in jobs)
        summary.append(line)
        for j in jobs:
            rows.append(
                {
                    "task": run["task"],
                    **{k: v for k, v in j.items() if k != "picks"},
                    **{f"{r}_test": (j["picks"][r] or {}).get("test") for r in ROLES},
                    **{
                        f"{r}_template": ((j["picks"][r] or {}).get("prompt") or {}).get("template")
                        for r in ROLES
                    },
                }
            )

    def ms(v):
        return "–" if v is None else f"{v[0]:.1f} ± {v[1]:.1f}"

    def iv(v):
        return "–" if v is None else f"{v[0]:+.1f} [{v[1]:+.1f}, {v[2]:+.1f}]"

    md = [
        "# Selection: the guarded pick against the best hand-written prompt (issue 17)",
        "",
        "Commands: "
        + "; ".join(f"`{r['command']}`" for r in runs)
        + f"; then `python benchmarks/exp_selection_grid.py --report {' '.join(files)}`.",
        f"Machine: {runs[0]['machine']}, {runs[0]['threads']} torch thread(s) per process; commits "
        + ", ".join(sorted({r["commit"] for r in runs}))
        + "; dates "
        + ", ".join(r["date"] for r in runs)
        + "; load average at start/end "
        + ", ".join(f"{r['load']['start']:.1f}/{r['load']['end']:.1f}" for r in runs)
        + " (the machine was shared with other work).",
        "",
        "Each task: SmolLM2-135M-Instruct, 16-shot (32 train + 32 dev), seeds 13 21 42 87 100 unless the seeds column says fewer, the same 400-example "
        "test sample for every pick, three hand-written prompts each raw and calibrated (`configs/selection_*.yaml`), "
        "the searcher at its documented defaults with a budget of 200 forward passes. Picks are made on train and dev "
        "only; test accuracy, mean ± std over seeds. `manual` = the best hand-written prompt by the run's ranking rule; "
        "`dev_*` = the same choices by dev alone (`selection: dev`, `pick: unguarded`). Differences: mean over seeds "
        "with a paired bootstrap 95% interval (seeds, then test examples).",
        "",
        "| task | searcher | seeds | rule | best manual | guarded pick | unguarded pick | dev: best manual | dev: searcher's pick | guarded − manual | w/t/l | guard kept manual |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        md.append(
            f"| {s['task']} | {s['searcher']} | {s['seeds']} | {s['rule']} | {ms(s['manual'])} | **{ms(s['guarded'])}** | {ms(s['unguarded'])} | "
            f"{ms(s['dev_manual'])} | {ms(s['dev_unguarded'])} | {iv(s.get('guarded_vs_manual'))} | "
            f"{'/'.join(map(str, s.get('guarded_vs_manual_wtl', ())))} | {s['guard_fired']}/{s['seeds']} |"
        )
    md += [
        "",
        "Unguarded − manual (same rule) and dev-only searcher's pick − dev-only manual:",
        "",
        "| task | unguarded − manual | dev: searcher − manual | guarded − dev-best manual |",
        "|---|---|---|---|",
    ]
    for s in summary:
        md.append(
            f"| {s['task']} | {iv(s.get('unguarded_vs_manual'))} | {iv(s.get('dev_unguarded_vs_dev_manual'))} | "
            f"{iv(s.get('guarded_vs_dev_manual'))} |"
        )
    md += [
        "",
        "Per job:",
        "",
        "| task | seed | guarded | unguarded | manual | dev: searcher | guard | guarded pick's template |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
        tmpl = (r["guarded_template"] or "(ensemble)").replace("\n", "⏎").replace("|", "\\|")
        md.append(
            f"| {r['task']} | {r['seed']} | {f(r['guarded_test'])} | {f(r['unguarded_test'])} | "
            f"{f(r['manual_test'])} | {f(r['dev_unguarded_test'])} | {'kept manual' if r['guard_fired'] else '–'} | `{tmpl}` |"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "grid.md").write_text("\n".join(md) + "\n")
    (OUT / "grid.json").write_text(json.dumps({"files": files, "summary": summary, "jobs": rows}, indent=1))
    print("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="*", help="selection configs to run, or with --report the result files")
    ap.add_argument("--report", action="store_true", help="merge result files into results/selection/grid.md")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, nargs="+", help="run only these of the config's seeds")
    ap.add_argument("--resume", action="store_true", help="reuse the jobs' rows already in the storage")
    args = ap.parse_args(argv)
    if args.report:
        report(args.configs)
        return 0
    import torch

    from miner.models import load_backend

    torch.set_num_threads(args.threads)
    backend = load_backend("smollm2")
    for path in args.configs:
        run_config(path, backend, args.seeds, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
