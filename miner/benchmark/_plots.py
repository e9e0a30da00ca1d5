"""The bench's pictures, from its job records (and summary rows): test accuracy by row, search
curves, and what the pick loses to the best tested candidate.

Each function draws on a ``Figure`` of its own (no pyplot, so a notebook's backend is left alone),
writes one PNG and returns its path; with nothing to draw it raises :class:`MinerError`, so the
report can leave the plot out. A row keeps its colour in every plot of a bench: searchers take
``tab10`` colours in name order, baselines fixed grey shades; discrete searchers are drawn solid and
continuous ones dashed (hatched bars in the gap plot).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from miner.errors import MinerError

REFERENCE = "manual (best by dev)"
ORACLE_LABEL = "(oracle)"
SEARCHER_FAMILIES = ("discrete", "continuous")
_BASELINE_GREYS = {
    "manual (best by dev)": "0.1",
    "manual (oracle by test)": "0.35",
    "zero-shot": "0.55",
    "demonstrations": "0.3",
    "linear probe": "0.45",
    "peft prompt tuning": "0.65",
}
_LINESTYLE = {"discrete": "-", "continuous": "--"}
DPI = 110


def _figure_class():
    """matplotlib's ``Figure`` and colormaps, without pyplot, with the install hint when it is missing.

    The same as ``miner.plot``'s private helper: the bench may not import another package's private
    names (tests/test_structure.py), and this is four lines.
    """
    try:
        from matplotlib import colormaps
        from matplotlib.figure import Figure
    except ImportError:
        raise MinerError(
            "plotting needs matplotlib, a dependency of miner that is missing here: pip install matplotlib"
        ) from None
    return Figure, colormaps


def _is_searcher(job: dict[str, Any]) -> bool:
    return job.get("family") in SEARCHER_FAMILIES


def _palette(jobs: Iterable[dict[str, Any]], colormaps) -> dict[str, Any]:
    """Row name -> colour, the same in every plot of one bench: searchers by name, baselines in grey."""
    jobs = list(jobs)
    searchers = sorted({j["name"] for j in jobs if _is_searcher(j)})
    cmap = colormaps["tab10" if len(searchers) <= 10 else "tab20"]
    out: dict[str, Any] = {s: cmap(i % cmap.N) for i, s in enumerate(searchers)}
    others = sorted({j["name"] for j in jobs if not _is_searcher(j)} - set(_BASELINE_GREYS))
    for i, name in enumerate(others):
        out[name] = str(round(0.2 + 0.5 * i / max(1, len(others)), 2))
    for name, grey in _BASELINE_GREYS.items():
        out.setdefault(name, grey)
    return out


def _first_seen(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _metric(jobs: Sequence[dict[str, Any]]) -> str:
    metrics = {j.get("metric") for j in jobs} - {None}
    return str(metrics.pop()) if len(metrics) == 1 else "metric"


def _save(fig, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=DPI)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise MinerError(f"cannot write plot {str(path)!r}: {reason}") from None
    return path


def plot_accuracy(
    jobs: list[dict[str, Any]], summary: list[dict[str, Any]], path: Path, *, reference: str = REFERENCE
) -> Path:
    """Test accuracy by row, one panel per task: per-seed points, mean ± std, the reference as a line."""
    Figure, colormaps = _figure_class()
    points: dict[tuple[str, str], list[float]] = defaultdict(list)
    for j in jobs:
        if j.get("test") is not None:
            points[(j["task"], j["name"])].append(100 * float(j["test"]))
    rows = [r for r in summary if r.get("mean") is not None or (r["task"], r["name"]) in points]
    if not rows:
        raise MinerError("no test results to plot: the bench has no finished job with a test score")
    colours = _palette([*jobs, *rows], colormaps)
    tasks = _first_seen(r["task"] for r in rows)
    by_task = {
        t: sorted((r for r in rows if r["task"] == t), key=lambda r: r.get("family") == "baseline")
        for t in tasks
    }

    def extent(t: str) -> tuple[float, float]:
        vals = [v for r in by_task[t] for v in points[(t, r["name"])]]
        for r in by_task[t]:
            if r.get("mean") is not None:
                m, s = 100 * r["mean"], 100 * (r.get("std") or 0.0)
                vals += [m - s, m + s]
        return min(vals), max(vals)

    ranges = [extent(t) for t in tasks]
    share = max(lo for lo, _ in ranges) <= min(hi for _, hi in ranges)  # the tasks' ranges overlap
    widths = [max(2.5, 0.55 * len(by_task[t]) + 1.0) for t in tasks]
    fig = Figure(figsize=(sum(widths) + 1.0, 5.4))
    axes = fig.subplots(1, len(tasks), sharey=share, squeeze=False, width_ratios=widths)[0]
    rng = np.random.default_rng(0)  # the same jitter on every redraw
    for ax, t in zip(axes, tasks, strict=True):
        labels = []
        for x, r in enumerate(by_task[t]):
            name, oracle = r["name"], bool(r.get("oracle"))
            ys = points[(t, name)]
            face = "none" if oracle else colours[name]
            ax.scatter(
                x + rng.uniform(-0.18, 0.18, len(ys)),
                ys,
                s=26,
                facecolors=face,
                edgecolors=colours[name],
                linewidths=1.2,
                alpha=0.85,
                zorder=2,
            )
            mean = r.get("mean")
            if mean is None and ys:
                mean, std = float(np.mean(ys)) / 100, float(np.std(ys, ddof=1) if len(ys) > 1 else 0) / 100
            else:
                std = r.get("std") or 0.0
            if mean is not None:
                bars = ax.errorbar(
                    x,
                    100 * mean,
                    yerr=100 * std,
                    fmt="D",
                    ms=6,
                    color="black",
                    mfc="white" if oracle else "black",
                    capsize=4,
                    lw=1.4,
                    zorder=3,
                )
                if r.get("family") == "continuous":
                    bars[2][0].set_linestyle("--")
            labels.append(name if not oracle or ORACLE_LABEL[1:-1] in name else f"{name} {ORACLE_LABEL}")
        ref = next((r for r in by_task[t] if r["name"] == reference and r.get("mean") is not None), None)
        if ref is not None:
            ax.axhline(100 * ref["mean"], ls="--", color="0.3", lw=1, zorder=1, label=f"{reference} (mean)")
            ax.legend(loc="lower left", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        seeds = max((int(r.get("n_seeds") or 0) for r in by_task[t]), default=0)
        ax.set_title(f"{t} ({seeds} seeds)" if seeds else t)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"test {_metric(jobs)} (%)")
    fig.suptitle(
        "test accuracy by row: points are seeds (hollow: oracle), black: mean ± std"
        + ("; dashed line: the reference" if reference else ""),
        fontsize=10,
    )
    return _save(fig, path)


def _step_values(curve: Sequence[Sequence[float]], grid: np.ndarray) -> np.ndarray:
    """A seed's value at each grid x: its last point at or before x; NaN before its first point."""
    pts = sorted((float(x), float(y)) for x, y in curve)
    xs = np.array([x for x, _ in pts])
    ys = np.array([y for _, y in pts])
    idx = np.searchsorted(xs, grid, side="right") - 1
    return np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan)


def _mean_curve(curves: Sequence[Sequence[Sequence[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Every seed step-interpolated onto the union of their x points and averaged, from the x where
    every seed has a value on (before that the mean would jump down as a weaker seed joins it, and a
    best-so-far curve only rises)."""
    grid = np.array(sorted({float(x) for c in curves for x, _ in c}))
    values = np.vstack([_step_values(c, grid) for c in curves])
    full = ~np.isnan(values).any(axis=0)
    return grid[full], values[:, full].mean(axis=0)


def plot_curves(
    jobs: list[dict[str, Any]],
    task: str,
    path: Path,
    *,
    baselines: tuple[str, ...] = (
        "manual (best by dev)",
        "zero-shot",
        "demonstrations",
        "linear probe",
        "peft prompt tuning",
    ),
) -> Path:
    """Best dev score so far against forward-pass equivalents for one task, baselines' test as lines."""
    Figure, colormaps = _figure_class()
    mine = [j for j in jobs if j.get("task") == task]
    if not mine:
        raise MinerError(f"no jobs of task {task!r} to plot")
    curves: dict[str, list[list[tuple[float, float]]]] = defaultdict(list)
    family: dict[str, str] = {}
    for j in mine:
        if _is_searcher(j):
            c = [p for p in (j.get("curve") or []) if p[0] is not None and p[1] is not None]
            if c:
                curves[j["name"]].append([(float(x), 100 * float(y)) for x, y in c])
                family[j["name"]] = j["family"]
    if not curves:
        raise MinerError(f"no search curve for task {task!r}: no searcher job has a scored prompt")
    colours = _palette(jobs, colormaps)
    fig = Figure(figsize=(10.5, 5.2))
    ax = fig.subplots()
    xs_all = [float(x) for cs in curves.values() for c in cs for x, _ in c]
    budgets = [float(j["budget"]) for j in mine if j.get("budget")]
    budget = max(budgets) if budgets else None
    positive = [x for x in xs_all if x > 0]
    hi = max([*xs_all, *([budget] if budget else [])])
    log = bool(positive) and hi / min(positive) >= 30
    floor = min(positive) if log else None
    order = sorted(curves, key=lambda n: (SEARCHER_FAMILIES.index(family[n]), n))
    for name in order:
        ls, colour = _LINESTYLE[family[name]], colours[name]
        for c in curves[name]:
            pts = sorted(c)
            ax.step(
                [max(float(x), floor) if floor else float(x) for x, _ in pts],
                [y for _, y in pts],
                where="post",
                color=colour,
                ls=ls,
                lw=0.9,
                alpha=0.3,
            )
        grid, mean = _mean_curve(curves[name])
        if floor:
            grid = np.maximum(grid, floor)
        n = len(curves[name])
        ax.step(
            grid,
            mean,
            where="post",
            color=colour,
            ls=ls,
            lw=2.4,
            label=f"{name} ({family[name]}, mean of {n} seed{'s' if n != 1 else ''})",
        )
    for b in baselines:
        tests = [100 * float(j["test"]) for j in mine if j["name"] == b and j.get("test") is not None]
        if tests:
            y, colour = float(np.mean(tests)), colours.get(b, "0.5")
            ax.axhline(y, color=colour, lw=1.3, alpha=0.9, label=f"{b} (test)")
            # greys are hard to tell apart in a legend: name each line at its left end too
            ax.annotate(
                f"{b} (test)",
                (0.005, y),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                color=colour,
                va="bottom",
            )
    if budget:
        ax.axvline(budget, ls=":", color="black", lw=1.2, label=f"budget: {budget:g} forward equivalents")
    if log:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(right=hi * 1.15)
    else:
        ax.set_xlim(0, hi * 1.03)
    ax.set_xlabel("forward-pass equivalents spent (cumulative" + (", log scale)" if log else ")"))
    ax.set_ylabel(f"{_metric(mine)} (%): searchers best dev so far; baselines test")
    ax.set_title(f"{task}: search curves (searchers: best dev so far; baselines: test)", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        fontsize=8,
        title="solid: discrete; dashed: continuous\nthin: one seed; thick: mean",
        title_fontsize=8,
    )
    return _save(fig, path)


def plot_gap(jobs: list[dict[str, Any]], path: Path) -> Path:
    """Per task and searcher, the mean of (best tested candidate's test - the pick's test) in points."""
    Figure, colormaps = _figure_class()
    gaps: dict[tuple[str, str], list[float]] = defaultdict(list)
    family: dict[str, str] = {}
    for j in jobs:
        if _is_searcher(j) and j.get("best_candidate_test") is not None and j.get("test") is not None:
            gaps[(j["task"], j["name"])].append(100 * (float(j["best_candidate_test"]) - float(j["test"])))
            family[j["name"]] = j["family"]
    if not gaps:
        raise MinerError("no pick-versus-oracle gap to plot: no searcher job knows its best candidate's test")
    colours = _palette(jobs, colormaps)
    tasks = _first_seen(t for t, _ in gaps)
    names = sorted(family)
    per_task = {t: [n for n in names if (t, n) in gaps] for t in tasks}
    slots = max(len(v) for v in per_task.values())
    width = 0.8 / slots
    fig = Figure(figsize=(max(6.5, 1.0 + len(tasks) * (0.45 * slots + 0.6) + 2.5), 5.0))
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    labelled: set[str] = set()
    for g, t in enumerate(tasks):
        here = per_task[t]
        for i, n in enumerate(here):
            x = g + (i - (len(here) - 1) / 2) * width
            ys = gaps[(t, n)]
            ax.bar(
                x,
                float(np.mean(ys)),
                width=width * 0.9,
                color=colours[n],
                alpha=0.75,
                hatch="//" if family[n] == "continuous" else None,
                edgecolor="black",
                lw=0.6,
                label=None if n in labelled else f"{n} ({family[n]})",
            )
            labelled.add(n)
            ax.scatter(x + rng.uniform(-0.2, 0.2, len(ys)) * width, ys, s=14, color="black", zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    values = [v for ys in gaps.values() for v in ys]
    lo, hi = min(0.0, *values), max(0.0, *values)
    pad = 0.06 * (hi - lo or 1.0)
    ax.set_ylim(lo - pad, hi + pad)  # dots at 0 stay visible
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_xlim(-0.6, len(tasks) - 0.4)
    ax.set_ylabel("test points lost by the pick (bars: mean; dots: seeds)")
    fig.suptitle(
        "how much selection on the ranking examples loses (best tested candidate by test - pick)", fontsize=10
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        fontsize=8,
        title="hatched: continuous",
        title_fontsize=8,
    )
    return _save(fig, path)
