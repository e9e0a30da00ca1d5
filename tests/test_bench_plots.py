"""The bench's plots on fake job records: each writes a PNG of the expected size with something drawn,
curves cope with seeds on different x points and with an empty curve, and nothing to plot is a
one-line MinerError."""

from __future__ import annotations

import numpy as np
import pytest

from miner.benchmark._plots import DPI, _mean_curve, plot_accuracy, plot_curves, plot_gap
from miner.errors import MinerError

TASKS = ("sst-2", "subj")
SEARCHERS = {"optuna": "discrete", "autoprompt": "discrete", "soft": "continuous"}
BASELINES = ("manual (best by dev)", "manual (oracle by test)", "zero-shot", "linear probe")
SEEDS = (13, 21, 42)


def _job(task, name, family, seed, test, **extra):
    return {
        "id": f"{task}|{name}|{seed}|16",
        "task": task,
        "name": name,
        "family": family,
        "oracle": name == "manual (oracle by test)",
        "seed": seed,
        "k": 16,
        "metric": "accuracy",
        "test": test,
        "budget": 240,
        "best_candidate_test": None,
        "curve": [],
        **extra,
    }


@pytest.fixture(scope="module")
def jobs():
    rng = np.random.default_rng(1)
    out = []
    for t in TASKS:
        for s, seed in enumerate(SEEDS):
            for i, (name, fam) in enumerate(SEARCHERS.items()):
                test = 0.6 + 0.05 * i + 0.02 * s
                xs = np.cumsum(rng.integers(2, 9, 20 + 3 * s)).astype(float)  # different x per seed
                ys = np.maximum.accumulate(rng.uniform(0.4, 0.9, xs.size))
                curve = [[float(x), float(y)] for x, y in zip(xs, ys, strict=True)]
                if t == "subj" and name == "autoprompt" and seed == 42:
                    curve = []  # a job that never scored a prompt
                out.append(_job(t, name, fam, seed, test, curve=curve, best_candidate_test=test + 0.01 * s))
            for b, name in enumerate(BASELINES):
                out.append(_job(t, name, "baseline", seed, 0.55 + 0.03 * b + 0.01 * s, budget=None))
    return out


@pytest.fixture(scope="module")
def summary(jobs):
    rows = []
    for t in TASKS:
        for name in [*SEARCHERS, *BASELINES]:
            tests = [j["test"] for j in jobs if j["task"] == t and j["name"] == name]
            rows.append(
                {
                    "task": t,
                    "name": name,
                    "family": SEARCHERS.get(name, "baseline"),
                    "oracle": name == "manual (oracle by test)",
                    "n_seeds": len(tests),
                    "mean": float(np.mean(tests)),
                    "std": float(np.std(tests, ddof=1)),
                }
            )
    return rows


def _check_png(path, size_inches):
    from matplotlib.image import imread

    assert path.exists() and path.stat().st_size > 0
    img = imread(str(path))
    w, h = size_inches
    assert img.shape[:2] == (round(h * DPI), round(w * DPI))
    assert img.reshape(-1, img.shape[-1]).std(axis=0).max() > 0.01  # something is drawn


def test_accuracy_plot(tmp_path, jobs, summary):
    p = plot_accuracy(jobs, summary, tmp_path / "accuracy.png")
    assert p == tmp_path / "accuracy.png"
    rows = len(SEARCHERS) + len(BASELINES)
    _check_png(p, (2 * (0.55 * rows + 1.0) + 1.0, 5.4))


def test_accuracy_plot_without_summary_means(tmp_path, jobs, summary):
    # a summary row without a mean (e.g. no paired stats yet) takes its mean from the points
    rows = [{**r, "mean": None, "std": None} if r["name"] == "soft" else r for r in summary]
    assert plot_accuracy(jobs, rows, tmp_path / "a.png").stat().st_size > 0


def test_curves_plot(tmp_path, jobs):
    for t in TASKS:
        p = plot_curves(jobs, t, tmp_path / f"curves_{t}.png")
        _check_png(p, (10.5, 5.2))


def test_curves_of_only_empty_curves_and_unknown_task(tmp_path, jobs):
    empty = [{**j, "curve": []} for j in jobs]
    with pytest.raises(MinerError, match="no search curve"):
        plot_curves(empty, "sst-2", tmp_path / "c.png")
    with pytest.raises(MinerError, match="no jobs of task 'nope'"):
        plot_curves(jobs, "nope", tmp_path / "c.png")


def test_mean_curve_steps_seeds_onto_one_grid():
    # seed a has points at 2 and 6, seed b at 3 and 4: the mean starts where both have a value (3),
    # each holding its last point at or before x
    grid, mean = _mean_curve([[(2, 50.0), (6, 70.0)], [(4, 80.0), (3, 60.0)]])
    assert grid.tolist() == [3, 4, 6]
    assert mean.tolist() == [55.0, 65.0, 75.0]
    grid, mean = _mean_curve([[(5, 40.0)]])
    assert grid.tolist() == [5] and mean.tolist() == [40.0]


def test_gap_plot(tmp_path, jobs):
    p = plot_gap(jobs, tmp_path / "gap.png")
    _check_png(p, (max(6.5, 1.0 + len(TASKS) * (0.45 * len(SEARCHERS) + 0.6) + 2.5), 5.0))


def test_nothing_to_plot_is_one_line_miner_error(tmp_path):
    for call in (
        lambda: plot_accuracy([], [], tmp_path / "a.png"),
        lambda: plot_curves([], "sst-2", tmp_path / "c.png"),
        lambda: plot_gap([], tmp_path / "g.png"),
        lambda: plot_gap([_job("sst-2", "optuna", "discrete", 13, 0.7)], tmp_path / "g.png"),  # no best known
    ):
        with pytest.raises(MinerError) as exc:
            call()
        assert "\n" not in str(exc.value)
    assert not list(tmp_path.iterdir())


def test_unwritable_path_is_miner_error(tmp_path, jobs):
    with pytest.raises(MinerError, match="cannot write plot"):
        plot_gap(jobs, tmp_path / "missing" / "gap.png")
