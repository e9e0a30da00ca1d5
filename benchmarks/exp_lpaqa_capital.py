"""LPAQA's comparison on country -> capital (issue 15): manual, mined, paraphrased and ensembled prompts.

Reads the leaderboard of ``miner run configs/lpaqa_capital_1tok.yaml`` (it loads no model) and writes, per
seed and as mean ± std over seeds, the test P@1 and MRR of:

- the manual prompt ``The capital of {subject} is {answer}`` (the manual job's row);
- the best mined prompt: the ``mining`` job's proposal with the best dev P@1, then dev log-likelihood,
  then train P@1 (the leaderboard's dev order), and how many patterns were mined and their support;
- the best paraphrase of each ``paraphrase`` job (``edit``: WordNet and word edits; ``evo``: SmolLM2 as
  EvoPrompt's generator), by the same order, its seeds (the leaderboard rows it started from) excluded;
- each job's ensemble (``ensemble: {top: 5, weights: learned}``: LPAQA's optimized ensemble of the job's 5
  best candidates by the ranking rule; for the paraphrase jobs these are mined and paraphrased prompts);
- each job's pick (the runner's guarded pick).

    miner run configs/lpaqa_capital_1tok.yaml --storage sqlite:////tmp/lpaqa/lb.db --no-progress --limit 0
    python benchmarks/exp_lpaqa_capital.py --storage sqlite:////tmp/lpaqa/lb.db
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
from _record import command_line, write_report, write_result

from miner.leaderboard import Leaderboard, LeaderboardRow

TASK = "country_capital"
RESULTS = Path(__file__).resolve().parent.parent / "results" / "mining"


def metrics(row: LeaderboardRow | None) -> dict[str, Any] | None:
    if row is None or row.test_metrics is None:
        return None
    return {
        "template": row.prompt.get("template", "ensemble"),
        "dev": row.dev_score,
        "p_at_1": row.test_metrics["p_at_1"],
        "mrr": row.test_metrics["mrr"],
    }


def job_label(rows: list[LeaderboardRow]) -> str:
    """``manual``, ``mining``, ``paraphrase:edit`` or ``paraphrase:evo`` from a job's rows."""
    own = [r for r in rows if not (r.extra or {}).get("baseline")]  # baseline rows carry searcher manual
    searcher = own[0].searcher if own else "manual"
    if searcher != "paraphrase":
        return searcher
    ops = {str((r.extra or {}).get("operator", "")) for r in rows}
    if ops & {"crossover", "mutation", "paraphrase"}:
        return "paraphrase:evo"
    return "paraphrase:edit"


def summarize_job(rows: list[LeaderboardRow]) -> dict[str, Any]:
    """The job's manual row, best own candidate by dev order, ensemble and pick (``rows`` in dev order)."""
    own = [
        r
        for r in rows
        if not (r.extra or {}).get("baseline")
        and "ensemble" not in (r.extra or {})
        and (r.extra or {}).get("operator") != "seed"
    ]
    ensemble = next((r for r in rows if "ensemble" in (r.extra or {})), None)
    pick = next((r for r in rows if (r.extra or {}).get("pick")), None)
    manual = next((r for r in rows if (r.extra or {}).get("baseline")), None)
    out: dict[str, Any] = {
        "best": metrics(own[0] if own else None),
        "ensemble": metrics(ensemble),
        "pick": metrics(pick),
        "manual": metrics(manual),
        "candidates": len(own),
    }
    if own and "mining" in (own[0].extra or {}):
        m = own[0].extra["mining"]
        out["mined"] = m.get("mined")
        out["support"] = sorted((int(r.extra["mining"].get("support", 0)) for r in own), reverse=True)
        out["best_support"] = m.get("support")
    if own and own[0].searcher == "paraphrase":
        rejected: dict[str, int] = {}
        for r in own:
            for reason, n in ((r.extra or {}).get("rejected_by_reason") or {}).items():  # counts so far
                rejected[reason] = max(rejected.get(reason, 0), int(n))
        out["rejected"] = rejected
        gen = [(r.extra or {}).get("generation_total") or {} for r in own]
        out["generation_forward_passes"] = max((int(g.get("forward_passes", 0)) for g in gen), default=0)
    out["forward_passes"] = int(sum(r.forward_passes for r in rows))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--storage", required=True, help="the run's leaderboard URL or SQLite file")
    ap.add_argument("--out", type=Path, default=RESULTS / "lpaqa_capital_1tok")
    args = ap.parse_args(argv)

    with Leaderboard(args.storage, create=False) as lb:
        rows = lb.rows(task=TASK, order="dev")
    if not rows:
        raise SystemExit(f"error: {args.storage} holds no {TASK} rows")
    by_job: dict[tuple[int, str], list[LeaderboardRow]] = {}
    for r in rows:
        by_job.setdefault((r.seed, str((r.extra or {}).get("job_key"))), []).append(r)
    seeds = sorted({s for s, _ in by_job})
    per_seed: dict[int, dict[str, Any]] = {s: {} for s in seeds}
    for (seed, _), job_rows in by_job.items():
        per_seed[seed][job_label(job_rows)] = summarize_job(job_rows)

    cells = [  # (label, job, field)
        ("manual", "manual", "pick"),
        ("best mined (by dev)", "mining", "best"),
        ("ensemble of mined (5, learned)", "mining", "ensemble"),
        ("best edit paraphrase (by dev)", "paraphrase:edit", "best"),
        ("ensemble, edit job (5, learned)", "paraphrase:edit", "ensemble"),
        ("best evo paraphrase (by dev)", "paraphrase:evo", "best"),
        ("ensemble, evo job (5, learned)", "paraphrase:evo", "ensemble"),
        ("guarded pick, mining job", "mining", "pick"),
        ("guarded pick, edit job", "paraphrase:edit", "pick"),
        ("guarded pick, evo job", "paraphrase:evo", "pick"),
    ]
    table: list[dict[str, Any]] = []
    manual_p1 = [per_seed[s]["manual"]["pick"]["p_at_1"] for s in seeds]
    for label, job, field in cells:
        got = [per_seed[s].get(job, {}).get(field) for s in seeds]
        if any(g is None for g in got):
            continue
        p1 = np.array([g["p_at_1"] for g in got])
        mrr = np.array([g["mrr"] for g in got])
        table.append(
            {
                "row": label,
                "p_at_1": [float(p1.mean()), float(p1.std(ddof=1))],
                "mrr": [float(mrr.mean()), float(mrr.std(ddof=1))],
                "vs_manual": float((p1 - np.array(manual_p1)).mean()),
                "per_seed": {str(s): g for s, g in zip(seeds, got, strict=True)},
            }
        )

    lines = [
        "# LPAQA on country → capital (single-token capitals): manual, mined, paraphrased, ensembled",
        "",
        f"Command: `miner run configs/lpaqa_capital_1tok.yaml --limit 0`, then `{command_line()}`.",
        f"Seeds {', '.join(map(str, seeds))}; each 16 training + 16 dev pairs, 20 test pairs; P@1 and MRR over",
        "the 50 single-token capitals (points; mean ± std over seeds; Δ: mean paired difference to the manual",
        "prompt's P@1 on the same test pairs; one pair = 5 points).",
        "",
        "| row | test P@1 | test MRR | Δ P@1 vs manual |",
        "|---|---:|---:|---:|",
    ]
    for t in table:
        lines.append(
            f"| {t['row']} | {100 * t['p_at_1'][0]:.1f} ± {100 * t['p_at_1'][1]:.1f} | "
            f"{100 * t['mrr'][0]:.1f} ± {100 * t['mrr'][1]:.1f} | {100 * t['vs_manual']:+.1f} |"
        )
    lines += ["", "Per seed (test P@1; the template of the best candidate by dev):", ""]
    lines.append(
        "| seed | manual | mined: patterns, best support | best mined | best edit | best evo | ens. evo job |"
    )
    lines.append("|---|---:|---|---|---|---|---:|")
    for s in seeds:
        d = per_seed[s]

        def cell(job: str, field: str = "best", d: dict[str, Any] = d) -> str:
            m = (d.get(job) or {}).get(field)
            return "–" if m is None else f"`{m['template']}` {100 * m['p_at_1']:.0f}"

        mining = d.get("mining") or {}
        ens = (d.get("paraphrase:evo") or {}).get("ensemble")
        ens_text = "–" if ens is None else f"{100 * ens['p_at_1']:.0f}"
        lines.append(
            f"| {s} | {100 * d['manual']['pick']['p_at_1']:.0f} | {mining.get('mined', '–')}, "
            f"{mining.get('support', [])[:8]} | {cell('mining')} | {cell('paraphrase:edit')} | "
            f"{cell('paraphrase:evo')} | {ens_text} |"
        )
    record = write_result(
        args.out.with_suffix(".json"),
        command=command_line(),
        config={"storage": "the run's leaderboard (local)", "config": "configs/lpaqa_capital_1tok.yaml"},
        figures={"table": table, "per_seed": {str(s): v for s, v in per_seed.items()}},
    )
    write_report(args.out.with_suffix(".md"), lines, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
