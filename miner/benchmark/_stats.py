"""The bench's statistics: per task and row (searcher or baseline), over seeds, against the reference.

The reference is the best hand-written prompt chosen by dev (``manual (best by dev)``) of the same
task, seed and k, on the same test sample. For each row:

- ``mean``/``std``: of its test metric over seeds (sample std, ddof=1; 0 with one seed);
- ``diff_mean``: the mean over seeds of (row - reference), and ``diff_lo``/``diff_hi`` its paired
  bootstrap 95% interval: each replicate resamples the seeds with replacement and, within each drawn
  seed, the test examples with replacement (the same examples for both sides), and averages the
  per-example differences;
- ``wins``/``ties``/``losses``: seeds where the row's test metric is above, equal to (the same number
  of test examples right) or below the reference's;
- ``gap_mean``: the mean of (best tested candidate's test - the pick's test), how much the pick
  loses to the best of the candidates that were tested;
- cost: mean forward passes, backward passes, forward-pass equivalents and seconds per job, and
  ``acc_per_100``: the mean test metric (in points) per 100 forward-pass equivalents.

All figures are fractions (0..1) except ``acc_per_100`` (points per 100 passes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

REFERENCE = "manual (best by dev)"


def correct_vector(job: dict[str, Any]) -> np.ndarray:
    """A job's per-test-example correctness: a '0101' string, or a list of fractions (averaged draws)."""
    c = job.get("correct")
    if c is None:
        raise ValueError(f"job {job.get('id')!r} has no per-example test results")
    if isinstance(c, str):
        return np.frombuffer(c.encode(), dtype=np.uint8).astype(np.float64) - ord("0")
    return np.asarray(c, dtype=np.float64)


def paired_bootstrap(
    a: Sequence[np.ndarray],
    b: Sequence[np.ndarray],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Mean over seeds of mean(a_s - b_s), and its bootstrap interval over seeds and test examples.

    ``a[s]`` and ``b[s]`` are per-example scores of seed ``s`` on the same test examples.
    """
    if len(a) != len(b) or not a:
        raise ValueError("paired_bootstrap needs the same number (>= 1) of seeds on both sides")
    diffs = []
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            raise ValueError(f"paired_bootstrap: {x.shape[0]} vs {y.shape[0]} test examples in one seed")
        diffs.append(x - y)
    point = float(np.mean([d.mean() for d in diffs]))
    rng = np.random.default_rng(seed)
    n_seeds = len(diffs)
    reps = np.empty(n_boot)
    for r in range(n_boot):
        chosen = rng.integers(0, n_seeds, n_seeds)
        total = 0.0
        for s in chosen:
            d = diffs[s]
            total += d[rng.integers(0, d.shape[0], d.shape[0])].mean()
        reps[r] = total / n_seeds
    alpha = (1 - level) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha])
    return point, float(lo), float(hi)


def _mean(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return float(np.mean(got)) if got else None


def summarize(
    jobs: Sequence[dict[str, Any]], *, reference: str = REFERENCE, n_boot: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """One summary row per (task, row name, k), in the order rows first appear in ``jobs``; with
    several k in ``jobs`` a row's name says its k (``optuna · k=16``), so seeds are never mixed with k."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for j in jobs:
        groups[(j["task"], j["name"], str(j["k"]))].append(j)
    several_k = len({str(j["k"]) for j in jobs}) > 1
    refs = {(j["task"], j["seed"], j["k"]): j for j in jobs if j["name"] == reference}
    out = []
    for (task, name, k), group in groups.items():
        group = sorted(group, key=lambda j: j["seed"])
        tests = np.array([j["test"] for j in group], dtype=np.float64)
        row: dict[str, Any] = {
            "task": task,
            "name": f"{name} · k={k}" if several_k else name,
            "k": group[0]["k"],
            "family": group[0]["family"],
            "oracle": bool(group[0].get("oracle")),
            "n_seeds": len(group),
            "mean": float(tests.mean()),
            "std": float(tests.std(ddof=1)) if len(group) > 1 else None,  # one seed: no spread to show
            "diff_mean": None,
            "diff_lo": None,
            "diff_hi": None,
            "wins": None,
            "ties": None,
            "losses": None,
        }
        paired = [(j, refs[(task, j["seed"], j["k"])]) for j in group if (task, j["seed"], j["k"]) in refs]
        if paired and name != reference:
            a = [correct_vector(j) for j, _ in paired]
            b = [correct_vector(r) for _, r in paired]
            row["diff_mean"], row["diff_lo"], row["diff_hi"] = paired_bootstrap(
                a, b, n_boot=n_boot, seed=seed
            )
            # by the number of test examples right (the same prompt twice is a tie, whatever rounding)
            signs = [np.sign(round(float(x.sum() - y.sum()), 6)) for x, y in zip(a, b, strict=True)]
            row["wins"] = sum(1 for s in signs if s > 0)
            row["ties"] = sum(1 for s in signs if s == 0)
            row["losses"] = sum(1 for s in signs if s < 0)
        gaps = [
            j["best_candidate_test"] - j["test"] for j in group if j.get("best_candidate_test") is not None
        ]
        row["gap_mean"] = float(np.mean(gaps)) if gaps else None
        for f in ("forward_passes", "backward_passes", "forward_equivalents", "seconds"):
            row[f] = _mean([j.get(f) for j in group])
        fe = row["forward_equivalents"]
        row["acc_per_100"] = 100 * row["mean"] * 100 / fe if fe else None
        out.append(row)
    return out
