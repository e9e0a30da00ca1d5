"""Verbalizer evaluations per second: cached answer distributions vs re-running the model.

A 2-class task (SST-2 16-shot training split, 32 examples), the template
``"Review: {sentence}\\nSentiment: {answer}"`` on the default model, and ``--words`` candidate
label words (the most likely real words at the answer slot, split evenly between the labels
by the LM-BFF contrast the searcher uses). Two ways to score verbalizers, timed in one process,
interleaved per repeat (C, M, C, M, ...), median reported:

- **C (cached)**: the ``optuna`` searcher's inner search: one ``Scorer.distributions`` call
  (cached: timed separately, once) then :func:`search_verbalizers` over *every* pairing of the
  candidates (words/2 squared verbalizers), accuracy and gold log-likelihood for each.
- **M (model)**: what brute force without the cache costs: ``Scorer.score`` of one verbalizer
  with a fresh scorer (so its requests are not cached), ``--model-verbalizers`` of them per repeat.

Writes ``optuna_bench_verbalizer.json`` and ``.md`` to ``--out``.
Usage: ``python benchmarks/bench_verbalizer.py [--words 1000] [--repeats 3] [--threads 2] [--out results/optuna/]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "Review: {sentence}\nSentiment: {answer}"
TARGET = 10_000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--words", type=int, default=1000, help="candidate label words in all (split between the 2 labels)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--model-verbalizers", type=int, default=2, help="verbalizers scored by the model per repeat"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "optuna")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from miner.models import load_backend
    from miner.prompts import Prompt
    from miner.scoring import Scorer
    from miner.search import candidate_pool, decoded_vocab, search_verbalizers, word_mask
    from miner.tasks import TaskSpec, load_task

    be = load_backend(args.model)
    data = load_task(TaskSpec(source="kshot", name="sst-2"), 16, args.seed)
    labels = data.label_names
    probe = Prompt.create(TEMPLATE, {lab: ["a"] for lab in labels}, labels)
    scorer = Scorer(be, progress=False)
    t0 = time.perf_counter()
    D = scorer.distributions(probe, data.train)
    dist_seconds = time.perf_counter() - t0
    gold = torch.as_tensor([e.label for e in data.train])
    space = scorer.compile(probe).space_to_word
    vocab = decoded_vocab(be)
    mask = word_mask(be, r"^[A-Za-z]{3,}$", space)

    def round_trip(w):
        ids = be.tokenize((" " if space else "") + w)
        return ids[0] if len(ids) == 1 else None

    per_label = args.words // 2
    pool = candidate_pool(D, gold, 2, mask, per_label, 20 * per_label, round_trip, vocab)
    n_words = sum(len(ws) for ws in pool.words)
    n_verbalizers = len(pool.words[0]) * len(pool.words[1])

    cached, model = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        res = search_verbalizers(D, gold, pool, 1, max_verbalizers=10**9)
        cached.append(res.examined / (time.perf_counter() - t))
        t = time.perf_counter()
        for j in range(args.model_verbalizers):
            words = {labels[c]: [pool.words[c][j]] for c in range(2)}
            Scorer(be, progress=False).score(Prompt.create(TEMPLATE, words, labels), data.train)
        model.append(args.model_verbalizers / (time.perf_counter() - t))
    c_med, m_med = statistics.median(cached), statistics.median(model)
    best = {labels[c]: [pool.words[c][j] for j in res.choice[c]] for c in range(2)}
    cpu = platform.processor()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    out = {
        "candidate_words": n_words,
        "verbalizers_per_search": n_verbalizers,
        "examples": len(data.train),
        "cached_evals_per_s": cached,
        "model_evals_per_s": model,
        "cached_median": c_med,
        "model_median": m_med,
        "speedup": c_med / m_med,
        "target": TARGET,
        "meets_target": c_med >= TARGET,
        "distributions_seconds_once": dist_seconds,
        "best_train_verbalizer": best,
        "best_train_accuracy": res.metric,
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "load_avg": os.getloadavg(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "optuna_bench_verbalizer.json").write_text(json.dumps(out, indent=2))
    m = out["machine"]
    md = [
        "# Verbalizer evaluations per second (optuna searcher)",
        "",
        f"2-class SST-2 16-shot training split ({len(data.train)} examples), `{TEMPLATE!r}`, {n_words} candidate words, "
        f"{n_verbalizers:,} single-word verbalizers per inner search. Median of {args.repeats} interleaved repeats.",
        "",
        "| method | verbalizer evaluations / s |",
        "| --- | --- |",
        f"| cached distributions (tensor ops, all pairings) | {c_med:,.0f} |",
        f"| re-running the model per verbalizer | {m_med:.3f} |",
        f"| speedup | {c_med / m_med:,.0f}x |",
        "",
        f"Target >= {TARGET:,}/s: {'met' if c_med >= TARGET else 'NOT met'}. The one-off forward passes for the "
        f"distributions took {dist_seconds:.1f} s (paid once per template, then cached by the scorer).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, load average {m['load_avg'][0]:.1f} (shared), torch {m['torch']} "
        f"with {m['torch_threads']} threads. {out['date']}. Command: `{out['command']}`.",
        "",
    ]
    (args.out / "optuna_bench_verbalizer.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
