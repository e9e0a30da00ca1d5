"""AutoPrompt experiments: test accuracy of the trigger search vs the manual prompt it starts from.

For each seed: ``run_searcher`` with the ``autoprompt`` searcher (train/dev only), then the
dev-best prompt is scored on the (seeded, ``--max-test``) test sample, next to the manual
prompt with the same verbalizer. The searcher's template is the manual prompt with its
words after the text turned into trigger slots and initialised to the manual words, so the
search starts *at* the manual prompt and the dev set decides whether a found trigger
replaces it. One test scorer is shared across seeds (the manual prompt is scored once).

Writes ``autoprompt_<name>.json`` (every run, cost, provenance) and ``autoprompt_<name>.md``
to ``--out``. Examples::

    python benchmarks/exp_autoprompt.py --task sst2 --seeds 13 21 42 87 100
    python benchmarks/exp_autoprompt.py --task rt --k 64 --seeds 13 21 42
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from _machine import cpu_model, git_commit  # sibling module: benchmarks/ is on sys.path when a script runs

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from miner.models import load_backend  # noqa: E402
from miner.prompts import Prompt  # noqa: E402
from miner.runner import run_searcher  # noqa: E402
from miner.scoring import Scorer  # noqa: E402
from miner.search.autoprompt import AutoPromptSearcher  # noqa: E402
from miner.tasks import TaskSpec, load_task  # noqa: E402

logger = logging.getLogger("autoprompt_experiments")

MANUAL = ("Review: {sentence}\nSentiment: {answer}", {"negative": ["negative"], "positive": ["positive"]})
TRIGGER_TEMPLATE = (
    "Review: {sentence}\n{trigger:3} {answer}"  # triggers start as "Sentiment:" = the manual prompt
)
TRIGGER_INIT = "Sentiment:"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=["sst2", "rt"], default="sst2")
    ap.add_argument("--k", type=int, default=16, help="shots per class")
    ap.add_argument("--seeds", type=int, nargs="+", default=[13, 21, 42, 87, 100])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--top-k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--eval-every", type=int, default=3)
    ap.add_argument("--objective", default="vocab")
    ap.add_argument(
        "--screen-dtype",
        default="model",
        choices=["auto", "model", "float32", "bfloat16"],
        help="autoprompt's screen_dtype (default model: as in the results recorded before it existed)",
    )
    ap.add_argument(
        "--template",
        default=TRIGGER_TEMPLATE,
        help="trigger template (default: the manual cue as 3 triggers)",
    )
    ap.add_argument("--init", default=TRIGGER_INIT, help="initial trigger text (default: the manual cue)")
    ap.add_argument(
        "--allow-capitalized", action="store_true", help="let capitalised words be trigger candidates"
    )
    ap.add_argument("--max-test", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "autoprompt")
    ap.add_argument("--name", default=None)
    return ap.parse_args(argv)


def task_spec(args) -> TaskSpec:
    if args.task == "sst2":
        return TaskSpec(source="kshot", name="sst-2", max_test=args.max_test)
    return TaskSpec(source="builtin", name="rotten_tomatoes", max_test=args.max_test)


def mean_std(xs):
    return (statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    name = args.name or f"{args.task}_k{args.k}"
    args.out.mkdir(parents=True, exist_ok=True)
    be = load_backend("smollm2")
    spec = task_spec(args)
    test_scorer = Scorer(be, progress=False)
    searcher = AutoPromptSearcher(
        template=args.template,
        init=args.init,
        allow_capitalized=args.allow_capitalized,
        steps=args.steps,
        batch_size=args.batch_size,
        top_k=args.top_k,
        n_candidates=args.candidates,
        eval_every=args.eval_every,
        patience=0,
        objective=args.objective,
        screen_dtype=args.screen_dtype,
    )
    runs, manual_test = [], None
    out_json = args.out / f"autoprompt_{name}.json"
    for seed in args.seeds:
        data = load_task(spec, args.k, seed)
        manual = Prompt.create(MANUAL[0], MANUAL[1], data.label_names)
        t0 = time.perf_counter()
        res = run_searcher(searcher, be, data, prompts=[manual], score_train=False)
        search_s = time.perf_counter() - t0
        best = res.best
        test = test_scorer.score(best.prompt, data.test).metrics["accuracy"]
        man = test_scorer.score(manual, data.test)
        man_dev = Scorer(be, progress=False).score(manual, data.dev).metrics["accuracy"]
        manual_test = man.metrics["accuracy"]
        run = {
            "seed": seed,
            "n_train": len(data.train),
            "n_dev": len(data.dev),
            "n_test": len(data.test),
            "best_prompt": best.prompt.to_dict(),
            "best_trigger_text": best.prompt.meta.get("trigger_text"),
            "best_dev": best.dev.score,
            "best_dev_loglik": best.dev.loglik,
            "test": test,
            "manual_dev": man_dev,
            "manual_test": manual_test,
            "evaluations": len(res.evaluations),
            "cost": res.cost.to_dict(),
            "search_seconds": search_s,
            "trajectory": [
                {"trigger": e.prompt.meta.get("trigger_text"), "dev": e.dev.score, "dev_loglik": e.dev.loglik}
                for e in res.evaluations
            ],
        }
        runs.append(run)
        logger.info(
            "seed %d: best %r dev %.3f test %.3f | manual dev %.3f test %.3f | %d passes %.0f s",
            seed,
            run["best_trigger_text"],
            best.dev.score,
            test,
            man_dev,
            manual_test,
            res.cost.forward_passes,
            search_s,
        )
        write(out_json, args, name, runs)
    write(out_json, args, name, runs)
    return 0


def write(out_json: Path, args, name: str, runs: list[dict]) -> None:
    tests = [r["test"] for r in runs]
    summary = {
        "searcher_test": mean_std(tests),
        "manual_test": mean_std([r["manual_test"] for r in runs]),
        "searcher_dev": mean_std([r["best_dev"] for r in runs]),
        "manual_dev": mean_std([r["manual_dev"] for r in runs]),
        "forward_passes": mean_std([r["cost"]["forward_passes"] for r in runs]),
        "backward_passes": mean_std([r["cost"]["backward_passes"] for r in runs]),
        "model_seconds": mean_std([r["cost"]["seconds"] for r in runs]),
        "search_seconds": mean_std([r["search_seconds"] for r in runs]),
        "kept_initial": sum(r["best_trigger_text"] == args.init for r in runs),
    }
    meta = {
        "command": "python " + " ".join("$" + repr(a) if "\n" in a else shlex.quote(a) for a in sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "torch_threads": torch.get_num_threads(),
        },
        "model": "smollm2 (SmolLM2-135M-Instruct)",
        "manual_prompt": MANUAL[0],
        "verbalizer": MANUAL[1],
        "trigger_template": args.template,
        "trigger_init": args.init,
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    out_json.write_text(json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=2))
    ms = lambda p: f"{100 * p[0]:.1f} ± {100 * p[1]:.1f}"  # noqa: E731
    lines = [
        f"# AutoPrompt on {name} ({len(runs)} seeds)",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}{'; commit ' + meta['commit'] if meta.get('commit') else ''}; CPU: {meta['machine']['cpu']}, "
        f"{meta['machine']['cores']} cores (shared, load {meta['machine']['loadavg'][0]:.1f}), torch threads {meta['machine']['torch_threads']}",
        "",
        f"Test sample: {runs[0]['n_test']} examples (seeded, same for both rows); train {runs[0]['n_train']}, dev {runs[0]['n_dev']} per seed.",
        "",
        "| prompt | dev acc | test acc | forward passes | backward passes | model s | search s |",
        "|---|---|---|---|---|---|---|",
        f"| manual `{MANUAL[0]!r}` | {ms(summary['manual_dev'])} | {ms(summary['manual_test'])} | 0 | 0 | 0 | 0 |",
        f"| autoprompt `{args.template!r}` (init {args.init!r}) | {ms(summary['searcher_dev'])} | {ms(summary['searcher_test'])} | "
        f"{summary['forward_passes'][0]:.0f} | {summary['backward_passes'][0]:.0f} | {summary['model_seconds'][0]:.0f} | {summary['search_seconds'][0]:.0f} |",
        "",
        f"The dev-best prompt kept the initial trigger {args.init!r} in {summary['kept_initial']} of {len(runs)} seeds.",
        "",
        "| seed | best trigger | dev | test | manual dev | manual test | passes | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['seed']} | `{r['best_trigger_text']!r}` | {100 * r['best_dev']:.1f} | {100 * r['test']:.1f} | "
            f"{100 * r['manual_dev']:.1f} | {100 * r['manual_test']:.1f} | {r['cost']['forward_passes']} | {r['search_seconds']:.0f} |"
        )
    out_json.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
