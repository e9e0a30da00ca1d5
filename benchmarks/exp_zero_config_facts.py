"""Fact relations with no hand-written prompt: what do `mining` and `paraphrase` add to the defaults?

The relations are the built-in ones (``miner.tasks.fact_relations()``) restricted to objects that are one
SmolLM2 token (``single_token: true``), so that every one of them runs in about a minute per seed on 2 CPU
cores. Each is run with a config that names only the task, the model and the searchers (no ``prompts:``,
no corpus, no word list): the runner gives every job the task's default prompts as its hand-written ones
(docs/defaults.md), the ``manual`` job picks among them, ``mining`` mines patterns from its default corpora
(the gensim wheel's Wikipedia extract and Lee corpus) and ``paraphrase``
edits the best rows by words (its ``edit`` operator). Every job has the same budget (60 forward passes) and
sees 8 training + 8 dev pairs; the rest of the relation's pairs are its test. Per relation and seed the
script reports each job's guarded pick's test P@1 (the runner's pick, made on train + dev) and the paired
difference to the manual job's pick on the same test pairs.

    python benchmarks/exp_zero_config_facts.py            # -> results/facts/zero_config_relations.{json,md}

Relations with fewer than two single-token objects or too few pairs for k = 8 (``country_subregion``,
``currency``) fail their config's check with a one-line error; the script lists them as skipped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _record import command_line, write_report, write_result
from exp_lpaqa_capital import summarize_job

from miner.config import parse_config
from miner.errors import MinerError
from miner.leaderboard import Leaderboard, LeaderboardRow
from miner.models import load_backend
from miner.runner import job_key, run
from miner.tasks import fact_relations

RESULTS = Path(__file__).resolve().parent.parent / "results" / "facts"
SEARCHERS = (  # (the job's label in the report, its searcher entry in the config), in config order
    ("manual", {"name": "manual"}),
    ("mining", {"name": "mining", "params": {"min_support": 1, "max_prompts": 4}}),
    ("paraphrase:edit", {"name": "paraphrase", "params": {"operator": "edit"}}),
)
JOBS = tuple(label for label, _ in SEARCHERS)


def payload(relation: str, seeds: list[int], k: int, budget: int, storage: str) -> dict[str, Any]:
    return {
        "name": f"zero_config_{relation}",
        "task": {"source": "facts", "name": relation, "single_token": True},
        "model": "smollm2",
        "searchers": [entry for _, entry in SEARCHERS],
        "seeds": seeds,
        "k": k,
        "budget": {"max_forward_passes": budget},
        "storage": storage,
        "progress": False,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--relations", nargs="*", default=list(fact_relations()), help="default: every built-in one"
    )
    ap.add_argument("--seeds", nargs="*", type=int, default=[13, 21, 42])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--budget", type=int, default=60, help="forward passes per job")
    ap.add_argument("--out", type=Path, default=RESULTS / "zero_config_relations")
    args = ap.parse_args(argv)

    backend = load_backend("smollm2")
    per_relation: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/lb.db"
        for rel in args.relations:
            t = time.perf_counter()
            config = payload(rel, args.seeds, args.k, args.budget, storage)
            try:
                run(config, backend=backend, progress=False)
            except MinerError as exc:
                skipped[rel] = str(exc)
                print(f"{rel}: skipped: {exc}")
                continue
            seconds = time.perf_counter() - t
            with Leaderboard(storage, create=False) as lb:
                rows = lb.rows(task=rel, order="dev")
            # a job is told by its key (a job that proposed nothing has only the baseline rows)
            cfg = parse_config(config)
            label = {job_key(cfg, i, s, args.k): (job, s) for i, job in enumerate(JOBS) for s in args.seeds}
            by_job: dict[str, list[LeaderboardRow]] = {}
            for r in rows:
                by_job.setdefault(str((r.extra or {}).get("job_key")), []).append(r)
            seeds: dict[str, dict[str, Any]] = {}
            for key, job_rows in by_job.items():
                job, seed = label[key]
                seeds.setdefault(str(seed), {})[job] = summarize_job(job_rows)
            per_relation[rel] = {"seconds": round(seconds, 1), "seeds": seeds}
            print(f"{rel}: {seconds:.0f} s")

    table = []
    for rel, d in per_relation.items():
        row: dict[str, Any] = {"relation": rel, "seconds": d["seconds"]}
        manual = [d["seeds"][s]["manual"]["pick"]["p_at_1"] for s in sorted(d["seeds"])]
        row["manual"] = statistics.mean(manual)
        for job in JOBS[1:]:
            got = [d["seeds"][s].get(job, {}).get("pick") for s in sorted(d["seeds"])]
            if any(g is None for g in got):
                continue
            p1 = [g["p_at_1"] for g in got]
            row[job] = statistics.mean(p1)
            row[job + ":delta"] = statistics.mean(a - b for a, b in zip(p1, manual, strict=True))
            row[job + ":templates"] = [g["template"] for g in got]
            row[job + ":candidates"] = [d["seeds"][s][job]["candidates"] for s in sorted(d["seeds"])]
        row["manual:templates"] = [d["seeds"][s]["manual"]["pick"]["template"] for s in sorted(d["seeds"])]
        table.append(row)

    record = write_result(
        args.out.with_suffix(".json"),
        command=command_line(),
        config={
            "relations": args.relations,
            "seeds": args.seeds,
            "k": args.k,
            "budget": args.budget,
            "searchers": [entry for _, entry in SEARCHERS],
        },
        figures={"table": table, "per_relation": per_relation, "skipped": skipped},
    )
    lines = [
        "# Fact relations with no hand-written prompt: the defaults, `mining` and `paraphrase` (edit)",
        "",
        f"Command: `{command_line()}`. Every built-in relation restricted to single-token objects; a config",
        "with only the task, the model and the searchers (no prompts, corpora or word lists); seeds "
        f"{', '.join(map(str, args.seeds))}; {args.k} training + {args.k} dev pairs, the rest test; "
        f"{args.budget} forward passes per job.",
        "Test P@1 of each job's guarded pick (made on train + dev), mean over seeds, in points; Δ: mean paired",
        "difference to the manual job's pick (the best default prompt) on the same test pairs.",
        "",
        "| relation | manual (best default) | mining | Δ | paraphrase (edit) | Δ | proposals per seed: mining; edit "
        "| seconds |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]

    def pts(x: float | None, signed: bool = False) -> str:
        return "–" if x is None else (f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}")

    for r in table:
        lines.append(
            f"| {r['relation']} | {pts(r['manual'])} | {pts(r.get('mining'))} | {pts(r.get('mining:delta'), True)} "
            f"| {pts(r.get('paraphrase:edit'))} | {pts(r.get('paraphrase:edit:delta'), True)} "
            f"| {'/'.join(map(str, r.get('mining:candidates', [])))}; "
            f"{'/'.join(map(str, r.get('paraphrase:edit:candidates', [])))} | {r['seconds']:.0f} |"
        )
    if table:
        for job, label in (("mining", "mining"), ("paraphrase:edit", "paraphrase")):
            ds = [r[job + ":delta"] for r in table if job + ":delta" in r]
            wins = sum(d > 0 for d in ds)
            losses = sum(d < 0 for d in ds)
            lines.append("")
            lines.append(
                f"{label}: mean Δ {100 * statistics.mean(ds):+.1f} points over {len(ds)} relations "
                f"({wins} up, {losses} down, {len(ds) - wins - losses} level)."
            )
    lines += ["", "Picks per seed (template of each job's pick; ⏎ is a line break):", ""]

    def tpl(ts: list[str]) -> str:
        return ", ".join("`" + t.replace("\n", "⏎") + "`" for t in ts)

    for r in table:
        lines.append(
            f"- **{r['relation']}**: manual {tpl(r['manual:templates'])}; mining {tpl(r.get('mining:templates', []))}; "
            f"paraphrase {tpl(r.get('paraphrase:edit:templates', []))}"
        )
    if skipped:
        lines += ["", "Skipped (their config's one-line error):", ""]
        lines += [f"- {rel}: {msg}" for rel, msg in skipped.items()]
    write_report(args.out.with_suffix(".md"), lines, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
