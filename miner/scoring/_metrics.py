"""Metrics, from scikit-learn; the ranking ones (LAMA's fact-probe protocol) from the label scores.

``p_at_1``: the share of examples whose gold label is ranked first (the prediction), which for a
single-answer task is accuracy under the name fact probes use. ``mrr``: the mean over examples of
1 / the gold label's rank among all labels by score; it needs the scores (``scores=``). Ties rank
by label index, as ``argmax`` does, so rank 1 and a correct prediction always agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METRICS = ("accuracy", "macro_f1", "p_at_1", "mrr")


def gold_ranks(gold: Sequence[int] | np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The 1-based rank of each example's gold label among the labels of ``scores`` ``[N, L]``."""
    gold_a = np.asarray(gold, dtype=int)
    s = np.asarray(scores, dtype=np.float64)
    g = s[np.arange(len(gold_a)), gold_a][:, None]
    before = np.arange(s.shape[1])[None, :] < gold_a[:, None]
    return 1 + ((s > g) | ((s == g) & before)).sum(axis=1)


def compute_metrics(
    gold: Sequence[int] | np.ndarray,
    pred: Sequence[int] | np.ndarray,
    n_labels: int,
    scores: np.ndarray | None = None,
) -> dict[str, float]:
    # Imported at first use: sklearn.metrics brings scipy.stats and pandas, 2.4 s on 2 cores, which
    # every `miner` command and test worker would otherwise pay at start-up, scoring or not.
    from sklearn.metrics import accuracy_score, f1_score

    gold_a, pred_a = np.asarray(gold), np.asarray(pred)
    if len(gold_a) == 0:
        return {}
    accuracy = float(accuracy_score(gold_a, pred_a))
    out = {
        "accuracy": accuracy,
        "macro_f1": float(
            f1_score(gold_a, pred_a, labels=list(range(n_labels)), average="macro", zero_division=0)
        ),
        "p_at_1": accuracy,
    }
    if scores is not None:
        out["mrr"] = float(np.mean(1.0 / gold_ranks(gold_a, scores)))
    return out
