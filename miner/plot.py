"""Leaderboard plots: how fast each searcher finds good prompts, and whether dev scores hold on test.

``plot_leaderboard`` draws two panels from the rows of a leaderboard database:

- **best dev score so far against forward passes spent**, one line per job (run, searcher,
  seed, k), coloured by searcher: which searcher gets good fastest in the cost unit that every
  searcher is charged in;
- **dev score against test score** for the rows that have a test score, with the diagonal:
  points far below it are prompts whose dev score was luck (32 dev examples tie and overfit).

Uses matplotlib (a dependency); it draws on a ``Figure`` of its own and saves
it to a file, without pyplot, so a notebook's plotting backend is left alone.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from miner.errors import ConfigError, MinerError


def _matplotlib():
    """``Figure`` and the colormaps, without pyplot: the caller's backend (e.g. Jupyter's) is left alone."""
    try:
        from matplotlib import colormaps
        from matplotlib.figure import Figure
    except ImportError:
        raise MinerError(
            "plotting needs matplotlib, a dependency of miner that is missing here: pip install matplotlib"
        ) from None
    return Figure, colormaps


def anytime_curves(rows) -> dict[tuple[Any, ...], list[tuple[int, float]]]:
    """Per job (run_id, searcher, seed, k): (cumulative forward passes, best dev score so far) in row order."""
    jobs: dict[tuple[Any, ...], list] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r.created_at, r.id)):
        jobs[(r.run_id, r.searcher, r.seed, r.k)].append(r)
    out = {}
    for key, rs in jobs.items():
        spent, best, curve = 0, float("-inf"), []
        for r in rs:
            spent += r.forward_passes
            if r.dev_score is not None and r.dev_score > best:
                best = r.dev_score
            if best > float("-inf"):
                curve.append((spent, best))
        if curve:
            out[key] = curve
    return out


def plot_leaderboard(
    storage: str,
    output: str | Path,
    *,
    task: str | None = None,
    model: str | None = None,
    searcher: str | None = None,
    seed: int | None = None,
    k: Any = ...,
    run_id: str | None = None,
    title: str | None = None,
) -> Path:
    """Draw the two panels for the matching rows into ``output`` (.png, .pdf or .svg) and return its path."""
    from miner.leaderboard import Leaderboard

    output = Path(output)
    if output.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ConfigError(f"plot output must end in .png, .pdf or .svg, got {str(output)!r}")
    if not output.parent.exists():
        raise ConfigError(f"plot output folder {str(output.parent)!r} does not exist")
    rows = Leaderboard(storage, create=False).rows(
        task=task, model=model, searcher=searcher, seed=seed, k=k, run_id=run_id, order="time"
    )
    if not rows:
        raise ConfigError("no leaderboard rows match these filters; nothing to plot")
    tasks = sorted({r.task for r in rows})
    models = sorted({r.model for r in rows})
    Figure, colormaps = _matplotlib()
    searchers = sorted({r.searcher for r in rows})
    colours = {s: colormaps["tab10"](i % 10) for i, s in enumerate(searchers)}

    fig = Figure(figsize=(12, 4.8))
    ax1, ax2 = fig.subplots(1, 2)
    seen: set[str] = set()
    for (_, name, _, _), curve in sorted(anytime_curves(rows).items(), key=lambda kv: str(kv[0])):
        xs = [max(1, x) for x, _ in curve]
        ys = [100 * y for _, y in curve]
        ax1.step(
            xs, ys, where="post", color=colours[name], alpha=0.8, lw=1.4, label=None if name in seen else name
        )
        ax1.plot(xs[-1:], ys[-1:], "o", color=colours[name], ms=4)
        seen.add(name)
    ax1.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax1.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax1.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax1.xaxis.set_minor_formatter(NullFormatter())
    ax1.set_xlabel("forward passes spent (cumulative, log scale)")
    ax1.set_ylabel(f"best dev {rows[0].metric} so far (%)")
    ax1.set_title("best dev score against cost, one line per job")
    ax1.grid(alpha=0.3)
    if seen:
        ax1.legend(loc="best", fontsize=8)

    # (searcher, dev, test) of the test-scored rows; the tuple keeps both scores known to be floats
    tested = [
        (r.searcher, r.dev_score, r.test_score)
        for r in rows
        if r.test_score is not None and r.dev_score is not None
    ]
    if tested:
        for name in searchers:
            pts = [(dev, test) for searcher, dev, test in tested if searcher == name]
            if pts:
                ax2.scatter(
                    [100 * dev for dev, _ in pts],
                    [100 * test for _, test in pts],
                    s=22,
                    color=colours[name],
                    label=name,
                    alpha=0.85,
                )
        lo = min(min(dev, test) for _, dev, test in tested) * 100 - 2
        hi = max(max(dev, test) for _, dev, test in tested) * 100 + 2
        ax2.plot([lo, hi], [lo, hi], "--", color="grey", lw=1)
        ax2.set_xlim(lo, hi)
        ax2.set_ylim(lo, hi)
        ax2.legend(loc="upper left", fontsize=8)
    else:
        ax2.text(
            0.5,
            0.5,
            "no test-scored rows\n(the runner scores the best rows on test: see test_top)",
            ha="center",
            va="center",
            transform=ax2.transAxes,
        )
    ax2.set_xlabel("dev score (%)")
    ax2.set_ylabel("test score (%)")
    ax2.set_title(f"dev against test ({len(tested)} test-scored rows)")
    ax2.grid(alpha=0.3)
    fig.suptitle(title or f"{', '.join(tasks)} / {', '.join(models)}: {len(rows)} leaderboard rows")
    fig.tight_layout()
    try:
        fig.savefig(output, dpi=120)
    except OSError as exc:
        raise MinerError(f"cannot write plot {str(output)!r}: {exc.strerror or exc}") from None
    return output
