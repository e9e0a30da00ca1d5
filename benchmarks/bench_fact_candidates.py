"""Scoring a fact probe's hundreds of candidate objects: against one forward pass per candidate.

The country -> capital relation (``miner.tasks.relation_pairs("country_capital")``, from the
countryinfo wheel), its first ``--candidates`` objects (sorted) as the labels, each its own answer
word (the identity verbalizer fact tasks use), the prompt ``"The capital of {subject} is {answer}"``,
on the first ``--n`` subjects whose capital is a candidate. Many capitals are several tokens.
Three ways, timed in one process, interleaved per repeat (N, B, O, N, ...), a fresh scorer each:

- **N**: ``Scorer(batch_size=32)`` as shipped: single-token candidates from one next-token pass
  per subject; the multi-token ones run on top of the subject's prompt key/values, which run once
  (per-example prefix reuse), many subjects' candidates to a pass;
- **B**: the same without prefix reuse (``prefix_cache_mb=0``, the path before): every
  multi-token candidate runs its whole filled prompt, 32 to a pass;
- **O**: one forward pass per (subject, candidate): ``Scorer(batch_size=1, prefix_cache_mb=0)``
  on ``"The capital of {subject} is {answer}{end}"`` with ``end`` empty, which makes every
  candidate (single-token ones too) its own teacher-forced request of the same tokens, so its
  scores are the same numbers.

Writes ``fact_candidates.json`` and ``fact_candidates.md`` to ``--out``.
Usage: ``python benchmarks/bench_fact_candidates.py [--n 8] [--candidates 200] [--repeats 3] [--threads 1]``
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from _record import command_line, write_result  # sibling module: benchmarks/ is on sys.path

from miner.models import load_backend
from miner.prompts import Prompt
from miner.scoring import Scorer
from miner.tasks import relation_pairs

logger = logging.getLogger("bench_fact_candidates")

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "The capital of {subject} is {answer}"
ONE_EACH = "The capital of {subject} is {answer}{end}"  # an empty field after the answer: all teacher-forced
TARGET = 5.0
TOL = 1e-5


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="subjects scored")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--exact-subjects", type=int, default=1, help="subjects of the float64 N-vs-O check")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "scoring")
    return ap.parse_args(argv)


def build(n: int, n_candidates: int):
    pairs = relation_pairs("country_capital")
    objects = sorted({o for _, o in pairs})[:n_candidates]
    chosen = set(objects)
    subjects = [s for s, o in pairs if o in chosen][:n]
    words = {o: [o] for o in objects}
    return (
        Prompt.create(TEMPLATE, words, objects),
        Prompt.create(ONE_EACH, words, objects),
        subjects,
        {s: o for s, o in pairs},
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    backend = load_backend("smollm2")
    prompt, one_each, subjects, gold = build(args.n, args.candidates)
    rows = [{"subject": s} for s in subjects]
    rows_end = [{"subject": s, "end": ""} for s in subjects]
    lengths = [len(w) for ws in Scorer(backend, progress=False).compile(prompt).word_ids for w in ws]
    sides = {
        "N": lambda: (Scorer(backend, batch_size=args.batch_size, progress=False), prompt, rows),
        "B": lambda: (
            Scorer(backend, batch_size=args.batch_size, progress=False, prefix_cache_mb=0),
            prompt,
            rows,
        ),
        "O": lambda: (Scorer(backend, batch_size=1, progress=False, prefix_cache_mb=0), one_each, rows_end),
    }
    seconds: dict[str, list[float]] = {k: [] for k in sides}
    cpu: dict[str, list[float]] = {k: [] for k in sides}
    costs: dict[str, dict] = {}
    raws: dict[str, np.ndarray] = {}
    loads = []
    with torch.inference_mode():
        for rep in range(args.repeats):
            for side, make in sides.items():
                loads.append(round(os.getloadavg()[0], 2))
                scorer, p, exs = make()
                planned = scorer.plan(p, exs)
                w0, c0 = time.perf_counter(), time.process_time()
                res = scorer.score(p, exs)
                seconds[side].append(round(time.perf_counter() - w0, 3))
                cpu[side].append(round(time.process_time() - c0, 3))
                assert res.cost.forward_passes == planned, (side, res.cost.forward_passes, planned)
                costs[side] = {
                    **{
                        f: (round(x, 3) if isinstance(x, float) else x) for f, x in res.cost.to_dict().items()
                    },
                    "planned_passes": planned,
                }
                raws[side] = res.raw
                logger.info("repeat %d %s: %.1f s, %d passes", rep, side, seconds[side][-1], planned)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    labels = list(prompt.verbalizer.labels)
    p_at_1 = {
        k: float(np.mean([labels[int(i)] == gold[s] for s, i in zip(subjects, v.argmax(1))]))
        for k, v in raws.items()
    }
    figures = {
        "subjects": len(subjects),
        "candidates": len(labels),
        "single_token_candidates": sum(n == 1 for n in lengths),
        "multi_token_candidates": sum(n > 1 for n in lengths),
        "longest_candidate_tokens": max(lengths),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "median_seconds": med,
        "speedup_vs_one_pass_per_candidate": round(med["O"] / med["N"], 2),
        "speedup_vs_batched_whole_rows": round(med["B"] / med["N"], 2),
        "speedup_cpu_vs_one_pass_per_candidate": round(med_cpu["O"] / med_cpu["N"], 2),
        "speedup_cpu_vs_batched_whole_rows": round(med_cpu["B"] / med_cpu["N"], 2),
        "max_abs_diff_raw_N_vs_O": float(np.abs(raws["N"] - raws["O"]).max()),
        "max_abs_diff_raw_N_vs_B": float(np.abs(raws["N"] - raws["B"]).max()),
        "max_abs_diff_raw_B_vs_O": float(np.abs(raws["B"] - raws["O"]).max()),
        "p_at_1": p_at_1,
        "cost": costs,
    }
    # float64 (a copy of the model, Backend.as_dtype): with float32's rounding out of the way, N and O agree
    be64 = backend.as_dtype(torch.float64)
    k = args.exact_subjects
    with torch.inference_mode():
        n64 = Scorer(be64, batch_size=args.batch_size, progress=False).score(prompt, rows[:k])
        o64 = Scorer(be64, batch_size=1, progress=False, prefix_cache_mb=0).score(one_each, rows_end[:k])
    figures["float64"] = {"subjects": k, "max_abs_diff_raw_N_vs_O": float(np.abs(n64.raw - o64.raw).max())}
    figures["speed_met"] = bool(figures["speedup_vs_one_pass_per_candidate"] >= TARGET)
    figures["equal_met"] = bool(figures["max_abs_diff_raw_N_vs_O"] <= TOL)
    config = {
        "model": "smollm2",
        "relation": "country_capital",
        "template": TEMPLATE,
        "one_pass_per_candidate_template": ONE_EACH,
        "n": args.n,
        "candidates": args.candidates,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "threads": args.threads,
    }
    record = write_result(
        args.out / "fact_candidates.json", command=command_line(), config=config, figures=figures, load=loads
    )
    (args.out / "fact_candidates.md").write_text(render(record))
    return 0


def render(record: dict) -> str:
    cfg, f = record["config"], record["figures"]
    m = record["machine"]
    rows = []
    for side, what in (
        ("N", "prefix reuse (shipped)"),
        ("B", "batched whole rows (before)"),
        ("O", "one pass per candidate"),
    ):
        c = f["cost"][side]
        rows.append(
            f"| {side}: {what} | {f['median_seconds'][side]:.2f} | {c['forward_passes']} | {c['sequences']} | "
            f"{c['tokens']} | {f['p_at_1'][side]:.3f} |"
        )
    return "\n".join(
        [
            "# Fact probe: scoring hundreds of candidate objects",
            "",
            f"Command: `{record['command']}`  ",
            f"Commit: {record['commit']}; date {record['date']}; machine: {m['cpu']}, {m['cores']} cores, torch "
            f"{m['torch']} with {cfg['threads']} thread(s), transformers {m['transformers']}.  ",
            "1-minute load averages before each timed call are in the JSON (`load`); compare the ratios, "
            "measured in one process, interleaved.",
            "",
            f"Relation {cfg['relation']} (countryinfo), {f['candidates']} candidate objects "
            f"({f['single_token_candidates']} single-token, {f['multi_token_candidates']} multi-token, up to "
            f"{f['longest_candidate_tokens']} tokens), template `{cfg['template']}`, {f['subjects']} subjects, "
            f"model {cfg['model']} (float32, CPU), batch size {cfg['batch_size']}, {cfg['repeats']} repeats "
            "(median), a fresh scorer each.",
            "",
            "| way | median s | passes | sequences | tokens | P@1 |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"N is **{f['speedup_vs_one_pass_per_candidate']:.1f}x** faster than one pass per candidate "
            f"(CPU time {f['speedup_cpu_vs_one_pass_per_candidate']:.1f}x) and "
            f"{f['speedup_vs_batched_whole_rows']:.2f}x faster than the batched whole rows "
            f"(CPU {f['speedup_cpu_vs_batched_whole_rows']:.2f}x). Max abs difference of the raw scores: N vs O "
            f"{f['max_abs_diff_raw_N_vs_O']:.1e}, N vs B {f['max_abs_diff_raw_N_vs_B']:.1e}, B vs O "
            f"{f['max_abs_diff_raw_B_vs_O']:.1e} (B vs O is the old path against itself at other batch sizes: "
            f"float32 rounding; in float64, N vs O: {f['float64']['max_abs_diff_raw_N_vs_O']:.1e} on "
            f"{f['float64']['subjects']} subject(s), after the scorer's float32 output). Target >= "
            f"{TARGET}x: **{'met' if f['speed_met'] else 'not met'}**; equal to {TOL}: "
            f"**{'met' if f['equal_met'] else 'not met'}**. Planned passes equalled the counted ones (asserted).",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
