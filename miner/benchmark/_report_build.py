"""From a bench's job records to its report: the statistics, the tables, the plots and the files."""

from __future__ import annotations

import logging
from typing import Any

import yaml

from miner.benchmark._stats import REFERENCE, summarize

logger = logging.getLogger(__name__)


def _pts(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def _cell(row: dict[str, Any]) -> str:
    s = f"{_pts(row['mean'])} ± {_pts(row['std'])}"
    if row["diff_mean"] is not None:
        s += f" ({_pts(row['diff_mean'], True)} [{_pts(row['diff_lo'], True)}, {_pts(row['diff_hi'], True)}])"
    return s


def _num(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def label(row: dict[str, Any]) -> str:
    return row["name"] + (" (oracle)" if row["oracle"] and "oracle" not in row["name"] else "")


def main_table(summary: list[dict[str, Any]], tasks: list[str]) -> dict[str, Any]:
    """Tasks as columns, rows as rows: mean ± std (paired difference to the reference [95% interval])."""
    names: list[str] = []
    for r in summary:
        if r["name"] not in names:
            names.append(r["name"])
    by = {(r["task"], r["name"]): r for r in summary}
    rows = []
    for n in names:
        got = [by.get((t, n)) for t in tasks]
        present = [g for g in got if g is not None]
        fe = [g["forward_equivalents"] for g in present if g["forward_equivalents"] is not None]
        sec = [g["seconds"] for g in present if g["seconds"] is not None]
        rows.append(
            [
                label(present[0]),
                present[0]["family"],
                *[_cell(g) if g else "–" for g in got],
                _num(sum(fe) / len(fe)) if fe else "–",
                _num(sum(sec) / len(sec)) if sec else "–",
            ]
        )
    return {
        "title": "Test accuracy by task (mean ± std over seeds, in points)",
        "columns": ["row", "family", *tasks, "forward-pass equivalents / job", "seconds / job"],
        "rows": rows,
        "note": f"In brackets: the paired difference to {REFERENCE!r} of the same seed on the same test "
        "sample, with its paired bootstrap 95% interval over seeds and test examples. Cost: mean per job "
        "over tasks (search, hand-written prompts' scoring and, in seconds, the job's test scoring).",
    }


def task_table(summary: list[dict[str, Any]], task: str) -> dict[str, Any]:
    rows = []
    for r in summary:
        if r["task"] != task:
            continue
        wtl = "–" if r["wins"] is None else f"{r['wins']}/{r['ties']}/{r['losses']}"
        interval = (
            "–" if r["diff_lo"] is None else f"[{_pts(r['diff_lo'], True)}, {_pts(r['diff_hi'], True)}]"
        )
        rows.append(
            [
                label(r),
                r["family"],
                r["n_seeds"],
                f"{_pts(r['mean'])} ± {_pts(r['std'])}",
                _pts(r["diff_mean"], True),
                interval,
                wtl,
                _pts(r["gap_mean"], True) if r["gap_mean"] is not None else "–",
                _num(r["forward_passes"]),
                _num(r["backward_passes"]),
                _num(r["forward_equivalents"], 1),
                _num(r["seconds"], 1),
                _num(r["acc_per_100"], 1),
            ]
        )
    return {
        "title": f"{task}: every row",
        "columns": [
            "row",
            "family",
            "seeds",
            "test (mean ± std)",
            "Δ vs manual by dev",
            "95% interval",
            "wins/ties/losses",
            "pick-vs-best gap",
            "forward",
            "backward",
            "forward equiv.",
            "seconds",
            "points / 100 fwd",
        ],
        "rows": rows,
        "note": "Gap: the best test score among the job's tested candidates (its top ones by the ranking rule "
        "and its unguarded pick) minus its pick's: what selection on the ranking examples loses. Points per "
        "100 forward-pass equivalents: mean test accuracy over mean cost.",
    }


def pick_is_manual(job: dict[str, Any]) -> bool:
    """Whether a searcher job's pick is one of the task's hand-written prompts (records before the
    ``pick_is_manual`` field: read from the runner's pick reason)."""
    if "pick_is_manual" in job:
        return bool(job["pick_is_manual"])
    reason = str((job.get("pick") or {}).get("reason", ""))
    return reason.startswith(
        ("manual prompt kept", "the best hand-written prompt", "no candidate; the best hand")
    )


def manual_only_rows(jobs: list[dict[str, Any]], summary: list[dict[str, Any]]) -> list[str]:
    """Searcher rows whose every pick is a hand-written prompt yet whose mean differs from the reference:
    the difference comes from the ranking rule among the hand-written prompts, not from the search."""
    out = []
    for r in summary:
        mine = [
            j for j in jobs if j["task"] == r["task"] and j["name"] == r["name"] and j["family"] != "baseline"
        ]
        if mine and all(pick_is_manual(j) for j in mine) and r.get("diff_mean"):
            out.append(f"{r['name']} ({r['task']})")
    return out


def ranking_rules(selection_rule: str, names: list[str]) -> dict[str, str]:
    """The ranking rule each searcher's jobs ran under (``selection.rule``, ``auto`` resolved as the
    runner resolves it; a bench scores train, so ``auto`` is the searcher's own default)."""
    from miner.errors import MinerError
    from miner.runner import effective_rule
    from miner.search import searchers

    out = {}
    for n in names:
        try:
            out[n] = effective_rule(selection_rule, searchers.get(n), True)
        except MinerError:  # a record of a searcher that is no longer installed
            out[n] = "–"
    return out


def guard_table(jobs: list[dict[str, Any]], rules: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Per task and searcher: how often the guard kept the hand-written prompt and the budget ended the
    search, and the mean test score of the guarded pick beside the searcher's own (unguarded) pick:
    what ``pick: unguarded`` would have given on the same jobs. ``rules``: each searcher's ranking rule,
    shown in its own column (under ``dev`` the unguarded pick is the pick of ``pick: unguarded,
    selection: dev``)."""
    counts: dict[tuple[str, str], dict[str, Any]] = {}
    for j in jobs:
        if j["family"] == "baseline":
            continue
        c = counts.setdefault(
            (j["task"], j["name"]), {"n": 0, "fired": 0, "manual": 0, "budget": 0, "g": [], "u": []}
        )
        c["n"] += 1
        c["manual"] += pick_is_manual(j)
        c["fired"] += bool(j.get("guard_fired"))
        c["budget"] += bool(j.get("stopped_by_budget"))
        if j.get("unguarded_test") is not None:
            c["g"].append(j["test"])
            c["u"].append(j["unguarded_test"])
    if not counts:
        return None

    def mean(xs: list[float]) -> str:
        return _pts(sum(xs) / len(xs)) if xs else "–"

    def rule(name: str) -> str:  # a row of one k is named "<searcher> · k=<k>"
        return (rules or {}).get(name.split(" · k=")[0], "–")

    return {
        "title": "The guard and the budget",
        "columns": [
            "task",
            "searcher",
            "jobs",
            "ranking rule",
            "guard kept the hand-written prompt",
            "pick is a hand-written prompt",
            "stopped by the budget",
            "guarded pick: test",
            "unguarded pick: test",
        ],
        "rows": [
            [t, n, c["n"], rule(n), c["fired"], c["manual"], c["budget"], mean(c["g"]), mean(c["u"])]
            for (t, n), c in counts.items()
        ],
    }


def build_report(
    bench: Any, jobs: list[dict[str, Any]], wall: float | None
) -> tuple[list[dict[str, Any]], dict]:
    """Summary rows, plots and report files of ``bench`` (a :class:`miner.benchmark._run.Bench`);
    ``wall`` is this invocation's time (None: a report written from the records, running nothing)."""
    from miner._version import code_version
    from miner.benchmark._plots import plot_accuracy, plot_curves, plot_gap
    from miner.benchmark._report import write_report
    from miner.benchmark._util import machine, now, safe_name
    from miner.errors import MinerError

    out = bench.out
    summary = summarize(jobs)
    jobs_all = jobs
    if len({str(j["k"]) for j in jobs}) > 1:  # the rows of each k apart, named as the summary names them
        jobs = [{**j, "name": f"{j['name']} · k={j['k']}"} for j in jobs]
    tasks = [t.task.name for t in bench.cfg.tasks if any(j["task"] == t.task.name for j in jobs)]
    plots: list[dict[str, Any]] = []

    def plot(title: str, caption: str, fn, *args) -> None:
        try:
            path = fn(*args)
        except MinerError as exc:  # nothing to draw (e.g. no searcher row yet)
            logger.info("plot %r left out: %s", title, exc)
            return
        plots.append({"title": title, "path": path, "caption": caption})

    plot(
        "Test accuracy by row",
        "Points: seeds; bars: mean ± std; dashed line: the best hand-written prompt by dev.",
        plot_accuracy,
        jobs,
        summary,
        out / "accuracy.png",
    )
    for t in tasks:
        plot(
            f"Search curves: {t}",
            "Best dev score so far against forward-pass equivalents spent (searchers); baselines' test "
            "accuracy as horizontal lines.",
            plot_curves,
            jobs,
            t,
            out / f"curves_{safe_name(t)}.png",
        )
    plot(
        "Pick versus best tested candidate",
        "How much the pick loses to the best of the candidates that were tested.",
        plot_gap,
        jobs,
        out / "gap.png",
    )
    tables = [main_table(summary, tasks), *[task_table(summary, t) for t in tasks]]
    rules = ranking_rules(
        bench.cfg.selection.rule, sorted({j["name"] for j in jobs_all if j["family"] != "baseline"})
    )
    g = guard_table(jobs, rules)
    if g:
        tables.append(g)
    cm = bench.cost_model
    tables.append(
        {
            "title": "Cost model",
            "columns": [
                "model",
                "backward pass in forward passes",
                "source",
                "forward s",
                "forward+backward s",
            ],
            "rows": [
                [
                    bench.cfg.model.name,
                    f"{bench.backward_cost:.2f}",
                    cm.get("source", ""),
                    _num(cm.get("forward_seconds"), 3),
                    _num(cm.get("forward_backward_seconds"), 3),
                ]
            ],
        }
    )
    job_seconds = sum(j.get("seconds") or 0 for j in jobs)
    done, expected = bench.grid_done(jobs_all)
    duration = f"{job_seconds / 60:.1f} min of job time in all"
    if wall is not None:
        duration += f" (this invocation: {wall / 60:.1f} min wall)"
    meta = {
        "command": bench.command,
        "machine": machine(),
        "commit": code_version(),
        "date": now(),
        "jobs": f"{len(jobs)} records; {done} of the grid's {expected} manual and searcher jobs"
        + ("" if done >= expected else " (PARTIAL: the bench has not finished; --resume continues it)"),
        "duration": duration,
        "budget": f"{bench.cfg.budget.max_forward_passes} forward-pass equivalents per job "
        f"(a backward pass = {bench.backward_cost:.2f} forward passes)",
        "config": yaml.safe_dump(bench.cfg.model_dump(mode="json", exclude_unset=True), sort_keys=False),
    }
    notes = [
        "Every job ran on the same splits and the same test sample of its task; every prompt's test score "
        "was computed once per bench. Searchers saw train and dev only; 'manual (oracle by test)' is chosen "
        "by test and is an upper bound, not a method.",
        "The paired difference, its interval and wins/ties/losses count test examples right (accuracy), "
        "whatever the task's metric; the mean ± std columns are the task's metric.",
    ]
    if g:
        notes.append(
            "The guard table's 'unguarded pick' is the searcher's own pick on the same jobs, what `pick: "
            "unguarded` gives; for searchers ranked by dev it is also the pick of `pick: unguarded` with "
            "`selection: dev`. Ranking rules: dev = the dev examples alone; pooled = train and dev together, "
            "by a confidence bound; kfold = each candidate on the fold it was not fitted on (docs/selection.md)."
        )
    same = manual_only_rows(jobs, summary)
    if same:
        notes.append(
            "Every pick of "
            + ", ".join(same)
            + " was a hand-written prompt: the difference to the reference comes from the ranking rule among "
            "the hand-written prompts (the job's selection rule, e.g. train and dev pooled for searchers that do "
            "not fit on train; the reference ranks by dev alone), not from the search."
        )
    files = write_report(
        out,
        title=f"miner bench: {bench.cfg.name}",
        meta=meta,
        tables=tables,
        plots=plots,
        jobs=jobs_all,
        notes=notes,
    )
    import json

    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary, {**files, "summary": out / "summary.json"}
