"""Metrics, from scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

METRICS = ("accuracy", "macro_f1")


def compute_metrics(
    gold: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray, n_labels: int
) -> dict[str, float]:
    gold_a, pred_a = np.asarray(gold), np.asarray(pred)
    if len(gold_a) == 0:
        return {}
    return {
        "accuracy": float(accuracy_score(gold_a, pred_a)),
        "macro_f1": float(
            f1_score(gold_a, pred_a, labels=list(range(n_labels)), average="macro", zero_division=0)
        ),
    }
