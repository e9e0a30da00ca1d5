"""What each part of the pick does (issue 17): the guard, and the ranking rule, on the full bench.

Reads two finished bench folders, runs nothing and loads no model:

- ``--guarded``: configs/bench.yaml (every searcher at its defaults: its ranking rule, the guard);
- ``--unguarded-dev``: configs/bench_unguarded_dev.yaml (the searchers whose default rule is not dev,
  i.e. ``mining`` and ``paraphrase`` ranked by pooled train + dev, run again with ``selection: dev`` and
  ``pick: unguarded`` on the same tasks, prompts, seeds, splits, test sample and budget).

Per task and searcher it reports the test accuracy (mean ± std over seeds) of the guarded pick, the
unguarded pick under the searcher's default rule (the guarded bench records it beside every pick) and
the unguarded pick under ``dev`` (for dev-ranked searchers this is the same pick), and for the re-run
searchers the paired difference of the unguarded-dev pick to the best hand-written prompt by dev with
the bench's paired bootstrap 95% interval. It checks first that both folders scored the same test
sample: the hand-written reference of every task and seed must have the same per-example results.

    python benchmarks/exp_selection_ablation.py \
        --guarded results/bench/full --unguarded-dev results/bench/full_unguarded_dev \
        --out results/selection/ablation
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _record import command_line, write_result

from miner.benchmark import paired_bootstrap

REFERENCE = "manual (best by dev)"


def correct(job: dict[str, Any]) -> np.ndarray:
    c = job["correct"]
    if not isinstance(c, str):
        raise SystemExit(f"error: job {job['id']!r}: expected one 0/1 string of per-example results")
    return np.frombuffer(c.encode(), dtype=np.uint8).astype(np.float64) - ord("0")


def load_jobs(folder: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    jobs_dir = folder / "jobs"
    if not jobs_dir.is_dir():
        raise SystemExit(f"error: {folder} has no jobs/ folder: is it a bench folder?")
    out = {}
    for path in sorted(jobs_dir.glob("*.json")):
        job = json.loads(path.read_text())
        out[(job["task"], job["name"], int(job["seed"]))] = job
    if not out:
        raise SystemExit(f"error: {jobs_dir} holds no job records")
    return out


def ranking_rules(folder: Path) -> dict[tuple[str, str], str]:
    """The ranking rule of each (task, searcher) as the bench report's guard table gives it."""
    report = (folder / "report.md").read_text()
    rules = {}
    for line in report.split("## The guard and the budget", 1)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[2].isdigit():
            rules[(cells[0], cells[1])] = cells[3]
    return rules


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--guarded", type=Path, default=Path("results/bench/full"))
    ap.add_argument("--unguarded-dev", type=Path, default=Path("results/bench/full_unguarded_dev"))
    ap.add_argument("--out", type=Path, default=Path("results/selection/ablation"))
    args = ap.parse_args(argv)

    full, dev = load_jobs(args.guarded), load_jobs(args.unguarded_dev)
    rules = ranking_rules(args.guarded)
    tasks = list(dict.fromkeys(t for t, _ in rules))  # the report's order (the config's)
    searchers = sorted(_searchers(full))
    rerun = sorted({n for _, n, _ in dev if n != REFERENCE and not n.startswith("manual")})

    # Same test sample in both folders: the hand-written reference must agree example by example.
    for (task, name, seed), job in dev.items():
        if name == REFERENCE:
            other = full.get((task, name, seed))
            if other is None or other["correct"] != job["correct"]:
                raise SystemExit(
                    f"error: {task} seed {seed}: the two benches' hand-written reference differs"
                )

    rows: list[dict[str, Any]] = []
    for task in tasks:
        seeds = sorted(s for t, n, s in full if t == task and n == REFERENCE)
        ref = [full[(task, REFERENCE, s)] for s in seeds]
        ref_mean, ref_std = mean_std([j["test"] for j in ref])
        rows.append(
            {
                "task": task,
                "searcher": REFERENCE,
                "rule": "dev",
                "seeds": len(seeds),
                "guarded": [ref_mean, ref_std],
            }
        )
        for name in searchers:
            picks = [full[(task, name, s)] for s in seeds if (task, name, s) in full]
            if len(picks) != len(seeds):
                continue
            row: dict[str, Any] = {
                "task": task,
                "searcher": name,
                "rule": rules.get((task, name), "?"),
                "seeds": len(seeds),
                "guarded": mean_std([j["test"] for j in picks]),
                "unguarded_default_rule": mean_std([j["unguarded_test"] for j in picks]),
            }
            if row["rule"] == "dev":
                row["unguarded_dev"] = row["unguarded_default_rule"]
            elif name in rerun:
                dev_picks = [dev[(task, name, s)] for s in seeds]
                row["unguarded_dev"] = mean_std([j["test"] for j in dev_picks])
                d, lo, hi = paired_bootstrap([correct(j) for j in dev_picks], [correct(j) for j in ref])
                row["unguarded_dev_minus_manual"] = [d, lo, hi]
                d, lo, hi = paired_bootstrap([correct(j) for j in picks], [correct(j) for j in ref])
                row["guarded_minus_manual"] = [d, lo, hi]
            rows.append(row)

    def pct(ms: Any) -> str:
        return "–" if ms is None else f"{100 * ms[0]:.1f} ± {100 * ms[1]:.1f}"

    def interval(x: Any) -> str:
        return "" if x is None else f" ({100 * x[0]:+.1f} [{100 * x[1]:+.1f}, {100 * x[2]:+.1f}])"

    lines = [
        "# What the guard and the ranking rule each do (the full bench)",
        "",
        f"Command: `{command_line()}` (reads the two bench folders; no model). Test accuracy in points, mean ±",
        "std over 5 seeds, 16-shot, 200 test examples per task, 40 forward-pass equivalents per job, every",
        "searcher at its defaults. Guarded: the full bench's pick (`configs/bench.yaml`). Unguarded, default",
        "rule: the same job's pick without the guard (recorded beside it). Unguarded, dev: ranked by dev alone",
        "without the guard; for the dev-ranked searchers the same pick, for `mining` and `paraphrase` the",
        "re-run `configs/bench_unguarded_dev.yaml` (same tasks, prompts, seeds, splits, test sample, budget; its",
        "hand-written reference was checked to score every test example as the full bench's did). In brackets:",
        "the paired difference to the best hand-written prompt by dev with its paired bootstrap 95% interval.",
        "",
        "| task | searcher | default rule | guarded pick | unguarded, default rule | unguarded, dev |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        if r["searcher"] == REFERENCE:
            lines.append(f"| {r['task']} | {REFERENCE} | dev | {pct(r['guarded'])} | | |")
            continue
        lines.append(
            f"| {r['task']} | {r['searcher']} | {r['rule']} | {pct(r['guarded'])}{interval(r.get('guarded_minus_manual'))}"
            f" | {pct(r['unguarded_default_rule'])} | {pct(r.get('unguarded_dev'))}"
            f"{interval(r.get('unguarded_dev_minus_manual'))} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = write_result(
        args.out.with_suffix(".json"),
        command=command_line(),
        config={"guarded": str(args.guarded), "unguarded_dev": str(args.unguarded_dev)},
        figures={"rows": rows},
    )
    machine = record["machine"]
    lines += [
        "",
        f"Written {record['date']} on {machine['cpu']} ({machine['cores']} cores) at commit {record['commit']};",
        "the benches' own machines and dates are in their report.md files.",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _searchers(full: dict[tuple[str, str, int], dict[str, Any]]) -> set[str]:
    """The searcher rows of a bench (family discrete or continuous), not its baselines."""
    return {n for (_, n, _), j in full.items() if j.get("family") in ("discrete", "continuous")}


if __name__ == "__main__":
    sys.exit(main())
