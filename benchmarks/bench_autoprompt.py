"""``autoprompt`` vs a faithful reference mode of the original AutoPrompt loop, one process.

Reference mode (the loop of ucinlp/autoprompt's ``create_trigger.py``, re-implemented on
our backend so both use the same model, data and prompt encoding):

- gradient of the loss w.r.t. the trigger embeddings with the model *unfrozen* (backward
  also fills every parameter's ``.grad``, as the original never freezes the model);
- ONE random trigger position per step, its top ``--candidates`` HotFlip tokens;
- the current trigger and every candidate scored on a fresh batch, one forward pass per
  candidate, by *accuracy*; a candidate replaces the trigger only if strictly better;
- a full dev pass after every accepted swap; the best trigger by dev accuracy is kept.

``autoprompt`` (this package): gradient w.r.t. the trigger embeddings only (frozen model),
GCG-style candidates across all positions, all candidates in a few batched passes with the
text's KV cache reused, acceptance on the summed gold log-prob, dev every ``eval_every`` steps.

Identical settings on both sides: template, trigger length, initial trigger, candidates per
step, batch size, seed, data (``autoprompt``'s number of iterations is set by its time cap,
see 2.). Measured:

1. **time per iteration**: one iteration of each from the same trigger, interleaved
   (ref, ours, ref, ours, ...) ``--repeats`` times, median;
2. **time to objective**: a full run of the reference (``--iters`` iterations); its final
   (best) dev accuracy is the target, and that trigger's dev log-likelihood a second target.
   ``autoprompt`` then runs until it has reached both targets or has used the reference's
   whole wall time (``--ours-seconds`` to change the cap), so the wall time *it* needs is
   measured rather than cut off at the reference's iteration count. For each side and each
   target, the wall time of the first dev evaluation that reached it.

Writes ``autoprompt_bench.json`` / ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
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
sys.path.insert(0, str(REPO / "benchmarks"))

from miner.config import BudgetSpec  # noqa: E402
from miner.errors import BudgetExhausted  # noqa: E402
from miner.models import load_backend  # noqa: E402
from miner.prompts import Prompt  # noqa: E402
from miner.runner import Budget, Job, JobEvaluator  # noqa: E402
from miner.scoring import Scorer  # noqa: E402
from miner.search import SearchContext  # noqa: E402
from miner.search.autoprompt import AutoPromptSearcher  # noqa: E402
from miner.tasks import TaskSpec, load_task  # noqa: E402

logger = logging.getLogger("bench_autoprompt")
TEMPLATE = "{sentence} {trigger:3} {answer}"
VERBALIZER = {"negative": ["terrible"], "positive": ["great"]}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument(
        "--task",
        choices=["sst2", "rt"],
        default="sst2",
        help="sst2: SST-2 16-shot (dev 32); rt: built-in Rotten Tomatoes, --k per class (dev 2k)",
    )
    ap.add_argument("--k", type=int, default=16, help="examples per class (rt; SST-2's splits are 16-shot)")
    ap.add_argument("--name", default="autoprompt_bench", help="output file stem under --out")
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--candidates", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--init", default=" the")
    ap.add_argument(
        "--objective",
        choices=["vocab", "label"],
        default=None,
        help="autoprompt's objective (default: the searcher's default); the reference always accepts on accuracy",
    )
    ap.add_argument(
        "--screen-dtype",
        default=None,
        choices=["auto", "model", "float32", "bfloat16"],
        help="autoprompt's screen_dtype (default: the searcher's default, auto)",
    )
    ap.add_argument(
        "--also-screen",
        default=None,
        choices=["model", "float32", "bfloat16"],
        help="also run autoprompt with this screen_dtype against the same reference run (its contribution)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--ours-seconds",
        type=float,
        default=None,
        help="cap on autoprompt's run (default: the reference's whole run time)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "autoprompt")
    ap.add_argument(
        "--render-only", action="store_true", help="rewrite the .md from an existing JSON in --out"
    )
    ap.add_argument("--note", action="append", help="with --summary: a paragraph to add under the table")
    ap.add_argument(
        "--summary",
        nargs="+",
        metavar="NAME",
        help="only write --name's .md: one table over these result stems in --out (several seeds/tasks)",
    )
    return ap.parse_args(argv)


from _autoprompt_ref import OursStep, Reference, batches  # noqa: E402


# ----------------------------------------------------------------------------- full runs
def run_reference(be, prompt, allowed, data, args):
    ref = Reference(be, prompt, allowed, args.candidates, args.seed)
    stream = batches(list(data.train), args.batch_size, args.seed)
    t0 = time.perf_counter()
    trig = prompt.triggers
    acc, ll = ref.dev(trig, data.dev)
    traj = [
        {"t": time.perf_counter() - t0, "iter": 0, "dev": acc, "dev_loglik": ll, "trigger": be.decode(trig)}
    ]
    best = (acc, ll)
    iter_times = []
    for it in range(1, args.iters + 1):
        s = time.perf_counter()
        trig, accepted = ref.step(trig, next(stream), next(stream))
        if accepted:  # dev pass after every accepted swap
            acc, ll = ref.dev(trig, data.dev)
            best = max(best, (acc, ll))
            traj.append(
                {
                    "t": time.perf_counter() - t0,
                    "iter": it,
                    "dev": acc,
                    "dev_loglik": ll,
                    "trigger": be.decode(trig),
                }
            )
        iter_times.append(time.perf_counter() - s)
        logger.info(
            "ref iter %d: %s accepted=%s best dev %.3f (%.1f s)",
            it,
            be.decode(trig),
            accepted,
            best[0],
            iter_times[-1],
        )
    return {
        "trajectory": traj,
        "best_dev": best[0],
        "best_dev_loglik": best[1],
        "seconds": time.perf_counter() - t0,
        "iteration_seconds": iter_times,
        "cost": ref.scorer.counter.total.to_dict(),
    }


# ----------------------------------------------------------------------------- ours
class _TargetsReached(Exception):
    pass


def run_ours(be, searcher: AutoPromptSearcher, data, manual, seed, *, max_seconds=None, targets=None):
    """Run the searcher; stop once both ``targets`` (dev accuracy, dev log-likelihood) were reached."""
    scorer = Scorer(be, progress=False)
    budget = Budget(BudgetSpec(max_seconds=max_seconds), scorer.counter)
    job = Job(data, be.name, searcher.name, seed, data.k)
    ev = JobEvaluator(job, scorer, None, "", budget, score_train=False)
    traj = []
    t0 = time.perf_counter()
    eval_s = [0.0]

    def evaluate(prompts, *, extra=None):
        s = time.perf_counter()
        out = ev(prompts, extra=extra)
        eval_s[0] += time.perf_counter() - s
        for e in out:
            traj.append(
                {
                    "t": time.perf_counter() - t0,
                    "iter": (extra or {}).get("step"),
                    "dev": e.dev.score,
                    "dev_loglik": e.dev.loglik,
                    "trigger": e.prompt.meta.get("trigger_text"),
                }
            )
            logger.info(
                "ours step %s: %r dev %.3f",
                (extra or {}).get("step"),
                e.prompt.meta.get("trigger_text"),
                e.dev.score,
            )
        if (
            targets
            and time_to(traj, targets[0]) is not None
            and time_to(traj, targets[1], "dev_loglik") is not None
        ):
            raise _TargetsReached
        return out

    ctx = SearchContext(
        task=data.without_test(),
        backend=be,
        scorer=scorer,
        seed=seed,
        prompts=(manual,),
        budget=budget,
        progress=False,
    )
    stopped = "steps or budget"
    try:
        searcher.search(ctx, evaluate)
    except _TargetsReached:
        stopped = "both targets reached"
    except BudgetExhausted:  # the time cap hit inside the last dev evaluation
        stopped = "time cap"
    best = max(ev.evaluations, key=lambda e: e.rank_key)
    total = time.perf_counter() - t0
    return {
        "trajectory": traj,
        "best_dev": best.dev.score,
        "best_dev_loglik": best.dev.loglik,
        "seconds": total,
        "dev_eval_seconds": eval_s[0],
        "cost": scorer.counter.total.to_dict(),
        "stopped": stopped,
        "max_seconds": max_seconds,
        "dev_evaluations": len(traj),
        "iterations": max((p["iter"] or 0) for p in traj),
    }


def per_iteration(ref_t, ours_t, ref_run, ours_run, iters):
    """Interleaved single-iteration timings when measured (--repeats), else from the full runs."""
    if not ref_t:
        ref_t = ref_run["iteration_seconds"]
        ours_t = [
            (ours_run["seconds"] - ours_run["dev_eval_seconds"]) / max(1, ours_run.get("iterations", iters))
        ]
        source = "full runs (reference: median iteration incl. its dev passes; autoprompt: mean iteration excl. dev evaluations)"
    else:
        source = "interleaved single iterations from the same trigger and batches"
    return {
        "reference_s": ref_t,
        "ours_s": ours_t,
        "reference_median_s": statistics.median(ref_t),
        "ours_median_s": statistics.median(ours_t),
        "speedup": statistics.median(ref_t) / statistics.median(ours_t),
        "source": source,
    }


def full_run_rate(run, iterations):
    """Mean wall time per iteration of a whole run, its dev evaluations and setup included (the
    same statistic for both sides); None for a run of no iterations."""
    return run["seconds"] / iterations if iterations else None


def full_run_rates(r, ours_run=None):
    """(reference, autoprompt) seconds per iteration over their whole runs, and the ratio."""
    ours_run = ours_run or r["ours_run"]
    ref = full_run_rate(r["reference_run"], r["settings"]["iterations"])
    ours = full_run_rate(ours_run, ours_run.get("iterations"))
    return ref, ours, (ref / ours if ref and ours else None)


def time_to(traj, target, key="dev"):
    """Wall time of the first dev evaluation whose ``key`` reached ``target``."""
    for p in traj:
        if p[key] is not None and p[key] >= target - 1e-9:
            return p["t"]
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.summary:
        runs = [(n, json.loads((args.out / f"{n}.json").read_text())) for n in args.summary]
        text = summary(runs)
        machines = sorted(
            {
                f"{r['machine']['cpu']}, {r['machine']['cores']} cores, torch {r['machine']['torch']}, "
                f"{r['machine']['torch_threads']} thread(s)"
                for _, r in runs
            }
        )
        dates = sorted(r["date"] for _, r in runs)
        text += f"\nMachine: {'; '.join(machines)}. Runs from {dates[0]} to {dates[-1]}.\n"
        text += "".join(f"\n{n}\n" for n in args.note or ())
        (args.out / f"{args.name}.md").write_text(text)
        print(text)
        return 0
    if args.render_only:
        r = json.loads((args.out / f"{args.name}.json").read_text())
        (args.out / f"{args.name}.md").write_text(render(r))
        return 0
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    be = load_backend("smollm2")
    if args.task == "sst2":
        data = load_task(
            TaskSpec(source="kshot", root=str(REPO.parent / "shared" / "data" / "fewshot"), name="sst-2"),
            16,
            args.seed,
        )
        task_label = "sst-2 16-shot"
    else:
        data = load_task(TaskSpec(source="builtin", name="rotten_tomatoes", max_test=1), args.k, args.seed)
        task_label = f"Rotten Tomatoes {args.k} per class (train {len(data.train)}, dev {len(data.dev)})"
    searcher = AutoPromptSearcher(
        template=TEMPLATE,
        init=args.init,
        steps=args.iters,
        batch_size=args.batch_size,
        n_candidates=args.candidates,
        top_k=args.candidates,
        patience=0,
        **({"objective": args.objective} if args.objective else {}),
        **({"screen_dtype": args.screen_dtype} if args.screen_dtype else {}),
    )
    manual = Prompt.create("{sentence} It was {answer}", VERBALIZER, data.label_names)
    prompt = searcher.initial_prompt(
        SearchContext(task=data.without_test(), backend=be, scorer=None, seed=args.seed, prompts=(manual,))
    )
    allowed = searcher.allowed_tokens(be, prompt)
    load = [os.getloadavg()]

    # 1. time per iteration, interleaved, from the same trigger and batches
    ref_t, ours_t = [], []
    ref = Reference(be, prompt, allowed, args.candidates, args.seed)
    screen = searcher.screen_backend(be)
    ours = OursStep(
        be,
        prompt,
        allowed,
        objective=searcher.objective,
        top_k=searcher.top_k,
        n_candidates=searcher.n_candidates,
        seed=args.seed,
        screen=screen,
    )
    alt = dataclasses.replace(searcher, screen_dtype=args.also_screen) if args.also_screen else None
    alt_step = alt_t = None
    if alt is not None:
        alt_step, alt_t = (
            OursStep(
                be,
                prompt,
                allowed,
                objective=alt.objective,
                top_k=alt.top_k,
                n_candidates=alt.n_candidates,
                seed=args.seed,
                screen=alt.screen_backend(be),
            ),
            [],
        )
    stream = batches(list(data.train), args.batch_size, args.seed)
    for r in range(args.repeats):
        gb, cb = next(stream), next(stream)
        s = time.perf_counter()
        ref.step(prompt.triggers, gb, cb)
        ref_t.append(time.perf_counter() - s)
        s = time.perf_counter()
        ours.step(prompt.triggers, gb, cb)
        ours_t.append(time.perf_counter() - s)
        if alt_step is not None:
            s = time.perf_counter()
            alt_step.step(prompt.triggers, gb, cb)
            alt_t.append(time.perf_counter() - s)
        logger.info(
            "repeat %d: ref %.2f s, ours %.2f s%s",
            r,
            ref_t[-1],
            ours_t[-1],
            f", ours ({args.also_screen}) {alt_t[-1]:.2f} s" if alt_t else "",
        )
    load.append(os.getloadavg())
    del ours, alt_step
    be.clear_caches()  # each full run below makes (and is charged) its own model copy

    # 2. time to the reference's final dev objective, full runs
    ref_run = run_reference(be, prompt, allowed, data, args)
    load.append(os.getloadavg())
    target, target_ll = ref_run["best_dev"], ref_run["best_dev_loglik"]
    cap = args.ours_seconds or ref_run["seconds"]
    searcher.steps = 10**6  # stop on the targets or the time cap, not on the reference's iteration count
    ours_run = run_ours(be, searcher, data, manual, args.seed, max_seconds=cap, targets=(target, target_ll))
    load.append(os.getloadavg())
    be.clear_caches()
    alt_result = None
    if alt is not None:
        alt.steps = 10**6
        alt_run = run_ours(be, alt, data, manual, args.seed, max_seconds=cap, targets=(target, target_ll))
        load.append(os.getloadavg())
        a_acc, a_ll = (
            time_to(alt_run["trajectory"], target),
            time_to(alt_run["trajectory"], target_ll, "dev_loglik"),
        )
        alt_result = {
            "screen_dtype": args.also_screen,
            "run": alt_run,
            "time_per_iteration": per_iteration(ref_t, alt_t, ref_run, alt_run, args.iters),
            "ours_s": a_acc,
            "ours_loglik_s": a_ll,
        }
    t_ref, t_ours = time_to(ref_run["trajectory"], target), time_to(ours_run["trajectory"], target)
    l_ref = time_to(ref_run["trajectory"], target_ll, "dev_loglik")
    l_ours = time_to(ours_run["trajectory"], target_ll, "dev_loglik")

    result = {
        "settings": {
            "template": TEMPLATE,
            "verbalizer": VERBALIZER,
            "init": args.init,
            "trigger_length": 3,
            "candidates_per_step": args.candidates,
            "batch_size": args.batch_size,
            "iterations": args.iters,
            "seed": args.seed,
            "task": task_label,
            "model": "smollm2",
            "ours": {**vars(searcher), "steps": "until both targets or the time cap"},
            "ours_screen_dtype": str(screen.dtype).replace("torch.", ""),
            "model_dtype": str(be.dtype).replace("torch.", ""),
        },
        "time_per_iteration": per_iteration(ref_t, ours_t, ref_run, ours_run, args.iters),
        "time_to_objective": {
            "target_dev_accuracy": target,
            "reference_s": t_ref,
            "ours_s": t_ours,
            "speedup": (t_ref / t_ours) if t_ref and t_ours else None,
            "target_dev_loglik": target_ll,
            "reference_loglik_s": l_ref,
            "ours_loglik_s": l_ours,
            "loglik_speedup": (l_ref / l_ours) if l_ref and l_ours else None,
            "ours_cap_s": cap,
            "ours_cap_is_reference_run": args.ours_seconds is None,
            "ours_best_dev": ours_run["best_dev"],
            "reference_best_dev": ref_run["best_dev"],
            "ours_best_dev_loglik": ours_run["best_dev_loglik"],
            "reference_best_dev_loglik": ref_run["best_dev_loglik"],
        },
        "reference_run": ref_run,
        "ours_run": ours_run,
        "alt": alt_result,
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "loadavg": load,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2, default=str))
    (args.out / f"{args.name}.md").write_text(render(result))
    print(render(result))
    return 0


def render(r) -> str:
    tpi, tto, m = r["time_per_iteration"], r["time_to_objective"], r["machine"]
    f = lambda x: "not reached" if x is None else f"{x:.1f} s"  # noqa: E731
    s = r["settings"]
    return (
        "\n".join(
            [
                "# autoprompt vs the reference AutoPrompt loop (CPU)",
                "",
                *([f"Note: {r['notes']}", ""] if r.get("notes") else []),
                f"Command: `{r['command']}`  ",
                f"Date: {r['date']}{'; commit ' + r['commit'] if r.get('commit') else ''}; CPU: {m['cpu']}, {m['cores']} cores shared with other jobs "
                f"(load average during the run: {', '.join(f'{l[0]:.1f}' for l in m['loadavg'])}); torch {m['torch']}, {m['torch_threads']} thread(s).",
                "",
                f"Settings (both): {s['task']} seed {s['seed']}, template `{s['template']}`, {s['trigger_length']} triggers initialised to "
                f"{s['init']!r}, {s['candidates_per_step']} candidates per step, batch {s['batch_size']}, model {s['model']}; "
                f"autoprompt's objective `{s['ours'].get('objective', 'vocab')}`, dev every {s['ours'].get('eval_every')} iterations"
                + (
                    f"; model in {s['model_dtype']} (the reference and every dev evaluation), autoprompt's gradient and candidate "
                    f"re-scoring in {s['ours_screen_dtype']} (`screen_dtype: {s['ours'].get('screen_dtype')}`)"
                    if "ours_screen_dtype" in s
                    else ""
                )
                + ".",
                "",
                "| | reference loop | autoprompt | ratio |",
                "|---|---|---|---|",
                f"| time per iteration ({tpi.get('source', 'interleaved')}) | {tpi['reference_median_s']:.2f} s | {tpi['ours_median_s']:.2f} s | {tpi['speedup']:.1f}x |",
                *(
                    [
                        f"| time per iteration over the whole runs (mean; dev evaluations and setup included on both sides) | "
                        f"{fr[0]:.2f} s | {fr[1]:.2f} s | {fr[2]:.1f}x |"
                    ]
                    if (fr := full_run_rates(r))[2]
                    else []
                ),
                f"| time to the reference's final dev accuracy ({100 * tto['target_dev_accuracy']:.1f}) | {f(tto['reference_s'])} | {f(tto['ours_s'])} | "
                + (f"{tto['speedup']:.1f}x |" if tto["speedup"] else "- |"),
                *(
                    [
                        f"| time to that trigger's dev log-likelihood ({tto['target_dev_loglik']:.4f}) | {f(tto['reference_loglik_s'])} | "
                        f"{f(tto['ours_loglik_s'])} | "
                        + (f"{tto['loglik_speedup']:.1f}x |" if tto.get("loglik_speedup") else "- |")
                    ]
                    if "target_dev_loglik" in tto
                    else []
                ),
                f"| iterations run | {s['iterations']} | {r['ours_run'].get('iterations', s['iterations'])} | |",
                f"| best dev accuracy | {100 * tto['reference_best_dev']:.1f} | {100 * tto['ours_best_dev']:.1f} | |",
                f"| best-dev prompt's dev log-likelihood | {tto['reference_best_dev_loglik']:.4f} | {tto['ours_best_dev_loglik']:.4f} | |",
                f"| whole run (s) | {r['reference_run']['seconds']:.0f} | {r['ours_run']['seconds']:.0f} | |",
                f"| forward / backward passes | {r['reference_run']['cost']['forward_passes']} / {r['reference_run']['cost']['backward_passes']} | "
                f"{r['ours_run']['cost']['forward_passes']} / {r['ours_run']['cost']['backward_passes']} | |",
                "",
                *(
                    [
                        f"autoprompt ran until it had reached both targets or used {tto['ours_cap_s']:.0f} s"
                        f"{' (the reference' + chr(39) + 's whole run)' if tto.get('ours_cap_is_reference_run') else ''}; "
                        f"it stopped on: {r['ours_run']['stopped']}. A target counts as reached at the first dev evaluation "
                        "(every `eval_every` iterations for autoprompt, after every accepted swap for the reference) that scored at least it.",
                        "",
                    ]
                    if "ours_cap_s" in tto
                    else []
                ),
                *_alt_rows(r),
                _note(r),
                "",
                "Trajectories (wall time from the start of each run, dev accuracy of every dev evaluation):",
                "",
                "- reference: "
                + ", ".join(
                    f"{p['t']:.0f} s {100 * p['dev']:.1f} `{p['trigger']}`"
                    for p in r["reference_run"]["trajectory"]
                ),
                "- autoprompt: "
                + ", ".join(
                    f"{p['t']:.0f} s {100 * p['dev']:.1f} `{p['trigger']}`"
                    for p in r["ours_run"]["trajectory"]
                ),
                "",
            ]
        )
        + "\n"
    )


def summary(runs) -> str:
    """One row per benchmark run: per-iteration ratio and time to each of the reference's targets,
    for autoprompt as configured and (``--also-screen``) in the model's own dtype; medians last."""
    f = lambda x: "not reached" if x is None else f"{x:.0f} s"  # noqa: E731
    ratio = lambda a, b: a / b if a and b else None  # noqa: E731
    x = lambda r: "-" if r is None else f"**{r:.1f}x**"  # noqa: E731
    lines = [
        "# autoprompt vs the reference AutoPrompt loop: all runs (CPU)",
        "",
        "Each row is one `bench_autoprompt.py` run (its own .md has the command, machine, load and trajectories). "
        "Targets: the reference's final (best) dev accuracy after its iterations, and that trigger's dev "
        "log-likelihood; autoprompt runs until it has reached both or used the reference's whole wall time. "
        "Per iteration: interleaved single iterations from the same trigger and batches; 'over whole runs': "
        "the mean wall time per iteration of each side's whole run. Screening: the dtype of autoprompt's gradient and candidate passes "
        "(dev evaluations and the reference run in the model's float32). The last two columns: the same reference "
        "run against autoprompt screening in float32 (`--also-screen model`), where recorded.",
        "",
        "| run | task, seed | objective, screening | per iteration ref / ours | ratio | over whole runs | dev acc target "
        "| ref reached at | ours reached at | ratio | dev loglik target | ref reached at | ours reached at | ratio "
        "| float32 screening: acc ratio | loglik ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    cols: dict[str, list[float]] = {k: [] for k in ("it", "full", "acc", "ll", "alt_acc", "alt_ll")}

    def keep(key, value):
        if value is not None:
            cols[key].append(value)
        return value

    def tt(key, ref, ours):
        """Time-to-target ratio; a target autoprompt did not reach counts as 0x in the median."""
        if ref and ours is None:
            cols[key].append(0.0)
            return "not reached"
        return x(keep(key, ratio(ref, ours)))

    for name, r in runs:
        t, o, st = r["time_per_iteration"], r["time_to_objective"], r["settings"]
        alt = r.get("alt") or {}
        screen = st.get("ours_screen_dtype", "float32")
        lines.append(
            f"| `{name}` | {st['task']}, {st['seed']} | {st['ours'].get('objective', 'vocab')}, {screen} | "
            f"{t['reference_median_s']:.1f} / {t['ours_median_s']:.1f} s | {keep('it', t['speedup']):.1f}x | "
            + (f"{keep('full', full):.1f}x" if (full := full_run_rates(r)[2]) else "-")
            + " | "
            f"{100 * o['target_dev_accuracy']:.1f} | {f(o['reference_s'])} | {f(o['ours_s'])} | "
            f"{tt('acc', o['reference_s'], o['ours_s'])} | {o.get('target_dev_loglik', float('nan')):.4f} | "
            f"{f(o.get('reference_loglik_s'))} | {f(o.get('ours_loglik_s'))} | "
            f"{tt('ll', o.get('reference_loglik_s'), o.get('ours_loglik_s'))} | "
            + (
                f"{tt('alt_acc', o['reference_s'], alt.get('ours_s'))} | "
                f"{tt('alt_ll', o.get('reference_loglik_s'), alt.get('ours_loglik_s'))} |"
                if alt
                else "- | - |"
            )
        )
    med = lambda k: f"**{statistics.median(cols[k]):.1f}x**" if cols[k] else "-"  # noqa: E731
    lines.append(
        f"| median ({len(runs)} runs) | | | | {med('it')} | {med('full')} | | | | {med('acc')} | | | | {med('ll')} "
        f"| {med('alt_acc')} | {med('alt_ll')} |"
    )
    lines += [
        "",
        "A target autoprompt did not reach within the reference's whole run time counts as 0x in its median "
        "(no run is left out). Per iteration over the whole runs: mean wall time per iteration, dev evaluations "
        "and setup included on both sides.",
    ]
    return "\n".join(lines) + "\n"


def _alt_rows(r) -> list[str]:
    """The same reference run against autoprompt with another screen_dtype (--also-screen)."""
    a = r.get("alt")
    if not a:
        return []
    tto, tpi, run = r["time_to_objective"], a["time_per_iteration"], a["run"]
    f = lambda x: "not reached" if x is None else f"{x:.1f} s"  # noqa: E731
    x = lambda ref, ours: f"{ref / ours:.1f}x" if ref and ours else "-"  # noqa: E731
    return [
        f"The same reference run against autoprompt with `screen_dtype: {a['screen_dtype']}` (gradient and candidates "
        "in the model's own dtype), run after it in the same process:",
        "",
        "| | reference loop | autoprompt | ratio |",
        "|---|---|---|---|",
        f"| time per iteration (interleaved) | {tpi['reference_median_s']:.2f} s | {tpi['ours_median_s']:.2f} s | {tpi['speedup']:.1f}x |",
        *(
            [
                f"| time per iteration over the whole runs (mean, dev included) | {fr[0]:.2f} s | {fr[1]:.2f} s | {fr[2]:.1f}x |"
            ]
            if (fr := full_run_rates(r, run))[2]
            else []
        ),
        f"| time to the reference's final dev accuracy ({100 * tto['target_dev_accuracy']:.1f}) | {f(tto['reference_s'])} | "
        f"{f(a['ours_s'])} | {x(tto['reference_s'], a['ours_s'])} |",
        f"| time to that trigger's dev log-likelihood ({tto['target_dev_loglik']:.4f}) | {f(tto['reference_loglik_s'])} | "
        f"{f(a['ours_loglik_s'])} | {x(tto['reference_loglik_s'], a['ours_loglik_s'])} |",
        f"| iterations run / best dev accuracy | {r['settings']['iterations']} / {100 * tto['reference_best_dev']:.1f} | "
        f"{run.get('iterations')} / {100 * run['best_dev']:.1f} | |",
        "",
        "- autoprompt ("
        + a["screen_dtype"]
        + "): "
        + ", ".join(f"{p['t']:.0f} s {100 * p['dev']:.1f} `{p['trigger']}`" for p in run["trajectory"]),
        "",
    ]


def _note(r) -> str:
    ref, ours = r["reference_run"]["trajectory"], r["ours_run"]["trajectory"]
    if max(p["dev"] for p in ref) <= ref[0]["dev"]:
        return (
            f"The reference did not improve the initial trigger's dev accuracy in {r['settings']['iterations']} iterations "
            f"(strict accuracy on a batch of {r['settings']['batch_size']} ties; {len(ref) - 1} swap(s) accepted), so its "
            "final dev objective is the initial trigger's, which both sides "
            "reach at their first dev evaluation: the time-to-objective ratio then only compares those first evaluations. "
            f"autoprompt's best dev accuracy in its run ({r['ours_run'].get('iterations', r['settings']['iterations'])} "
            f"iterations): {100 * r['ours_run']['best_dev']:.1f} "
            f"(reached at {next(p['t'] for p in ours if p['dev'] >= r['ours_run']['best_dev']):.0f} s)."
        )
    return ""


if __name__ == "__main__":
    raise SystemExit(main())
