"""How far can prompt choice lift P@1 on country -> capital (single-token capitals) for this model?

Issue 15 asks for an ensemble of mined and paraphrased prompts 5 points P@1 above the manual prompt
``The capital of {subject} is {answer}``. This script bounds what any selection could reach. It scores, on
every one of the 52 pairs (training, dev and test of every seed together), each distinct template that the
searchers of ``configs/lpaqa_capital_1tok.yaml`` proposed (read from that run's leaderboard) and a fixed
list of ten wordings of the relation as people write it (LAMA/LPAQA-style paraphrases, none of them in a
shipped config), and reports:

- each template's P@1 on all 52 pairs, and the *union*: the share of pairs that at least one template
  gets right (an ensemble of these templates can hardly do better);
- per seed, on that seed's 20 test pairs: the manual prompt, the best of that seed's own candidates
  chosen *with the test labels* (an oracle no searcher has), and the union of that seed's candidates.

It reads test labels to state a ceiling; nothing in the searchers, the runner or the configs is set from
it. About a minute on 2 cores after the run.

    miner run configs/lpaqa_capital_1tok.yaml --storage sqlite:////tmp/lpaqa/lb.db --no-progress --limit 0
    python benchmarks/exp_capital_ceiling.py --storage sqlite:////tmp/lpaqa/lb.db
    -> results/mining/capital_ceiling.{json,md}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _record import command_line, write_report, write_result

from miner.leaderboard import Leaderboard
from miner.models import load_backend
from miner.prompts import Prompt
from miner.scoring import Scorer
from miner.tasks import TaskSpec, load_task

TASK = "country_capital"
MANUAL = "The capital of {subject} is {answer}"
SEEDS = (13, 21, 42, 87, 100)
K = 16
HUMAN = (  # the relation as people write it; a ceiling's pool only, not a searcher's
    MANUAL,
    "The capital city of {subject} is {answer}",
    "{subject}'s capital is {answer}",
    "{subject}'s capital city is {answer}",
    "The capital of {subject} is the city of {answer}",
    "{subject}, whose capital is {answer}",
    "The seat of government of {subject} is {answer}",
    "{subject} has its capital in {answer}",
    "The capital and largest city of {subject} is {answer}",
    "Capital of {subject}: {answer}",
)
RESULTS = Path(__file__).resolve().parent.parent / "results" / "mining"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--storage", required=True, help="the leaderboard of `miner run configs/lpaqa_capital_1tok.yaml`"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "capital_ceiling")
    args = ap.parse_args(argv)

    with Leaderboard(args.storage, create=False) as lb:
        rows = [r for r in lb.rows(task=TASK, order="dev") if "template" in r.prompt]
    if not rows:
        raise SystemExit(f"error: {args.storage} holds no {TASK} rows")
    own = {s: {r.prompt["template"] for r in rows if r.seed == s} for s in SEEDS}
    pool = sorted(set().union(*own.values()))

    backend = load_backend("smollm2")
    spec = TaskSpec(source="facts", name=TASK, single_token=True)
    tasks = {s: load_task(spec, K, s, tokenize=backend.tokenize) for s in SEEDS}
    first = tasks[SEEDS[0]]
    pairs = [*first.train, *first.dev, *first.test]
    index = {ex.fields["subject"]: i for i, ex in enumerate(pairs)}
    words = {c: [c] for c in first.label_names}
    scorer = Scorer(backend, progress=False)
    templates = pool + [h for h in HUMAN if h not in pool]
    right = {}
    for t in templates:
        r = scorer.score(Prompt.create(t, words, first.label_names), pairs)
        right[t] = np.asarray(r.preds) == np.asarray(r.gold)
    acc = {t: float(v.mean()) for t, v in right.items()}

    def union(ts: set[str] | list[str], idx: list[int] | None = None) -> float:
        m = np.stack([right[t] for t in ts])
        return float((m[:, idx] if idx is not None else m).any(axis=0).mean())

    per_seed = {}
    for s in SEEDS:
        idx = [index[ex.fields["subject"]] for ex in tasks[s].test]
        scores = {t: float(right[t][idx].mean()) for t in own[s]}
        best = max(scores, key=lambda t: (scores[t], t == MANUAL))
        per_seed[str(s)] = {
            "manual": float(right[MANUAL][idx].mean()),
            "oracle_best": scores[best],
            "oracle_template": best,
            "union": union(own[s], idx),
            "candidates": len(own[s]),
        }
    ranked = sorted(acc, key=lambda t: (-acc[t], t))
    figures = {
        "pairs": len(pairs),
        "candidates": len(first.label_names),
        "manual_all_pairs": acc[MANUAL],
        "searcher_pool": len(pool),
        "best_searcher_template": max(pool, key=lambda t: acc[t]),
        "best_searcher_all_pairs": max(acc[t] for t in pool),
        "best_human_all_pairs": max(acc[t] for t in HUMAN),
        "union_searcher_pool": union(pool),
        "union_all": union(templates),
        "missed_by_every_template": [
            pairs[i].fields["subject"] for i in np.where(~np.stack(list(right.values())).any(0))[0]
        ],
        "missed_by_manual": [pairs[i].fields["subject"] for i in np.where(~right[MANUAL])[0]],
        "accuracy": acc,
        "per_seed": per_seed,
    }
    record = write_result(
        args.out.with_suffix(".json"),
        command=command_line(),
        config={"run": "configs/lpaqa_capital_1tok.yaml", "seeds": list(SEEDS), "k": K, "human": list(HUMAN)},
        figures=figures,
    )
    mean = {
        key: 100 * float(np.mean([d[key] for d in per_seed.values()]))
        for key in ("manual", "oracle_best", "union")
    }
    lines = [
        "# How far can prompt choice lift country → capital for SmolLM2-135M? (a ceiling, test labels read)",
        "",
        f"Command: `miner run configs/lpaqa_capital_1tok.yaml --limit 0`, then `{command_line()}`.",
        f"The {len(pairs)} pairs whose capital is one SmolLM2 token ({len(first.label_names)} candidates), every",
        "pair scored (training, dev and test of every seed together). This reads test labels to bound what any",
        "selection could reach; nothing in the searchers, the runner or the configs is set from it.",
        "",
        f"**All {len(pairs)} pairs**: the manual prompt {100 * acc[MANUAL]:.1f} P@1; the best of the {len(pool)} templates",
        f"the searchers proposed over the 5 seeds {100 * figures['best_searcher_all_pairs']:.1f}; the best of ten",
        f"hand-written wordings {100 * figures['best_human_all_pairs']:.1f}; pairs that at least one template gets",
        f"right: {100 * figures['union_all']:.1f} (the searchers' templates alone: {100 * figures['union_searcher_pool']:.1f}).",
        f"Missed by the manual prompt: {', '.join(figures['missed_by_manual'])}; by every template:",
        f"{', '.join(figures['missed_by_every_template']) or 'none'}.",
        "",
        "| template | source | P@1, all pairs |",
        "|---|---|---:|",
    ]
    for t in ranked[:12]:
        src = (
            "searchers and hand-written"
            if t in pool and t in HUMAN
            else ("searchers" if t in pool else "hand-written")
        )
        lines.append(f"| `{t}` | {src} | {100 * acc[t]:.1f} |")
    lines += [
        "",
        "**Per seed, on its 20 test pairs** (one pair = 5 points): the best of the seed's own candidates picked",
        "with the test labels, and the share of test pairs that at least one of them gets right.",
        "",
        "| seed | candidates | manual | best candidate by test (oracle) | union of the candidates |",
        "|---|---:|---:|---|---:|",
    ]
    for s, d in per_seed.items():
        lines.append(
            f"| {s} | {d['candidates']} | {100 * d['manual']:.0f} | `{d['oracle_template']}` "
            f"{100 * d['oracle_best']:.0f} | {100 * d['union']:.0f} |"
        )
    lines.append(f"| mean | | {mean['manual']:.1f} | {mean['oracle_best']:.1f} | {mean['union']:.1f} |")
    write_report(args.out.with_suffix(".md"), lines, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
