"""Selection: how the runner ranks a job's candidates, guards its pick and builds its ensemble.

Everything here works on per-example predictions and label distributions the runner already has
(from ``ScoreResult.preds`` / ``scores``, kept on each evaluation), so none of it runs the model.
The rules are documented in ``docs/selection.md``:

- ranking (``rank_score``): ``dev`` ranks by the dev metric; ``pooled`` by the Wilson lower bound
  of the metric on train ∪ dev; ``kfold`` by the held-out fold's score (the same bound);
- the guard (``paired_bootstrap``): a candidate replaces the best hand-written prompt only when the
  one-sided lower bound of its paired advantage on the ranking examples is above zero;
- the learned ensemble (``learn_weights``): softmax member weights that maximise the log-likelihood
  of the gold labels under the weighted mixture of the members' cached label distributions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from miner.prompts import Prompt, PromptEnsemble
from miner.scoring import Scorer, ScoreResult, compute_metrics

# One-sided z for the ranking bound (a 90% lower bound, the same level as the guard's default).
RANK_Z = 1.2816
BOOTSTRAP_SAMPLES = 2000


def wilson_lower(score: float, n: int, z: float = RANK_Z) -> float:
    """The Wilson score interval's lower end for a proportion ``score`` measured on ``n`` examples.

    Exact for accuracy; for macro F1 it is the same formula applied as an approximation.
    """
    if n <= 0:
        return float("-inf")
    p = min(max(score, 0.0), 1.0)
    denom = 1 + z * z / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / denom


def metric_of(preds: np.ndarray, gold: np.ndarray, metric: str, n_labels: int) -> float:
    if len(gold) == 0:
        return float("nan")
    # p_at_1 is accuracy; mrr needs each example's rank of the gold label, which the per-example
    # predictions kept for selection do not have: its ranking falls back to P@1 (docs/selection.md)
    if metric in ("accuracy", "p_at_1", "mrr"):
        return float(np.mean(preds == gold))
    return compute_metrics(gold, preds, n_labels)[metric]


@dataclass(frozen=True)
class GuardResult:
    """The paired comparison of a candidate with the best hand-written prompt on the ranking examples."""

    advantage: float  # candidate metric - baseline metric on the ranking examples
    lower: float  # one-sided lower bound of the advantage at ``level``
    level: float
    n: int  # ranking examples compared
    discordant: tuple[int, int]  # (candidate right & baseline wrong, baseline right & candidate wrong)

    @property
    def passed(self) -> bool:
        return self.lower > 0

    def to_dict(self) -> dict[str, float | int | list[int]]:
        return {
            "advantage": self.advantage,
            "lower": self.lower,
            "level": self.level,
            "n": self.n,
            "discordant": list(self.discordant),
        }

    def describe(self) -> str:
        sign = ">" if self.passed else "<="
        return (
            f"guard: {100 * self.advantage:+.1f} points on {self.n} examples, "
            f"{round(100 * self.level)}% bound {100 * self.lower:+.1f} {sign} 0"
        )


def paired_bootstrap(
    cand: np.ndarray,
    base: np.ndarray,
    gold: np.ndarray,
    *,
    metric: str = "accuracy",
    n_labels: int = 2,
    level: float = 0.9,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> GuardResult:
    """Paired bootstrap over examples of ``metric(cand) - metric(base)``: its one-sided lower bound.

    ``cand`` and ``base`` are the two prompts' predictions on the same examples (``gold``'s order).
    The resamples are drawn with ``numpy.random.default_rng(seed)``, so a job's decision is the same
    every time it is computed (``--resume`` included).
    """
    cand, base, gold = np.asarray(cand), np.asarray(base), np.asarray(gold)
    if not (len(cand) == len(base) == len(gold)):
        raise ValueError("paired_bootstrap: the two prompts must be compared on the same examples")
    n = len(gold)
    right_c, right_b = cand == gold, base == gold
    disc = (int(np.sum(right_c & ~right_b)), int(np.sum(right_b & ~right_c)))
    if n == 0:
        return GuardResult(0.0, float("-inf"), level, 0, disc)
    adv = metric_of(cand, gold, metric, n_labels) - metric_of(base, gold, metric, n_labels)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    if metric == "accuracy":
        diffs = (right_c[idx].astype(float) - right_b[idx].astype(float)).mean(axis=1)
    else:
        diffs = np.array(
            [
                metric_of(cand[i], gold[i], metric, n_labels) - metric_of(base[i], gold[i], metric, n_labels)
                for i in idx
            ]
        )
    lower = float(np.quantile(diffs, 1 - level))
    return GuardResult(float(adv), lower, level, n, disc)


def learn_weights(
    member_logprobs: Sequence[np.ndarray], gold: np.ndarray, *, steps: int = 300, lr: float = 0.1
) -> np.ndarray:
    """LPAQA's optimized ensemble: softmax weights over members fitted on their label distributions.

    ``member_logprobs[m]`` is member m's ``[N, L]`` label log-probabilities on the ranking examples (the
    scorer's cached ``ScoreResult.scores``); the weights maximise the mean log-probability of ``gold``
    under ``sum_m w_m p_m``. Plain gradient ascent on the softmax logits from uniform (no model call).
    """
    P = np.stack([np.exp(np.asarray(lp, dtype=np.float64)) for lp in member_logprobs])  # [M, N, L]
    gold = np.asarray(gold, dtype=int)
    M, N = P.shape[0], P.shape[1]
    if N == 0:
        return np.full(M, 1.0 / M)
    pg = P[:, np.arange(N), gold]  # [M, N] each member's probability of the gold label
    theta = np.zeros(M)
    m1, m2 = np.zeros(M), np.zeros(M)  # Adam moments
    for t in range(1, steps + 1):
        w = np.exp(theta - theta.max())
        w /= w.sum()
        mix = np.clip(w @ pg, 1e-30, None)  # [N]
        # d mean(log mix) / d w_m = mean(pg_m / mix); chain rule through the softmax
        gw = (pg / mix).mean(axis=1)
        g = w * (gw - w @ gw)
        m1 = 0.9 * m1 + 0.1 * g
        m2 = 0.999 * m2 + 0.001 * g * g
        theta += lr * (m1 / (1 - 0.9**t)) / (np.sqrt(m2 / (1 - 0.999**t)) + 1e-12)
    w = np.exp(theta - theta.max())
    return w / w.sum()


def stratified_folds(labels: Sequence[int], k: int, seed: int) -> list[np.ndarray]:
    """``k`` folds of example indices, each label dealt round-robin after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    folds: list[list[int]] = [[] for _ in range(k)]
    i = 0
    for c in sorted(set(y.tolist())):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        for j in idx:
            folds[i % k].append(int(j))
            i += 1
    return [np.array(sorted(f), dtype=int) for f in folds]


def score(
    scorer: Scorer, prompt: Prompt | PromptEnsemble, examples: Sequence, *, desc: str | None = None
) -> ScoreResult:
    """``scorer.score`` (a weighted ensemble's members mixed by its ``weights``, a uniform one averaged):
    kept as the runner's one entry point for scoring a pick."""
    return scorer.score(prompt, examples, desc=desc)


# ``selection: auto``: the ranking rule for searchers that fit their prompts on train (their train scores are
# optimistic) and for those that do not; chosen on validation data carved from the shared few-shot training
# splits, never on test (results/selection/defaults.md).
AUTO_RULE = {"fits": "dev", "no_fit": "pooled"}
