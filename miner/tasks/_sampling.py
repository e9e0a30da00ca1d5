"""Seeded split creation, test subsampling and class-balanced k-shot sampling.

Two seeds with different jobs: ``split_seed`` fixes dev/test creation and the
test subsample (so every job of a task is scored on the same test set), and
the job ``seed`` only picks which k examples per class are drawn.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

from miner.errors import DataError
from miner.tasks._types import Example

logger = logging.getLogger(__name__)

Examples = tuple[Example, ...]


def carve(examples: Sequence[Example], n_take: int, seed: int, what: str) -> tuple[Examples, Examples]:
    """Split off ``n_take`` examples, stratified by label; both parts keep source order."""
    from sklearn.model_selection import train_test_split

    indices = list(range(len(examples)))
    labels = [ex.label for ex in examples]
    try:
        _, taken = train_test_split(indices, test_size=n_take, stratify=labels, random_state=seed)
    except ValueError as exc:
        # Stratification needs two examples per class and at least one slot per
        # class; tiny data sets still get a seeded (unstratified) split.
        logger.warning("cannot stratify %s (%s); splitting without stratification", what, exc)
        _, taken = train_test_split(indices, test_size=n_take, random_state=seed)
    chosen = set(taken)
    return (
        tuple(ex for i, ex in enumerate(examples) if i not in chosen),
        tuple(ex for i, ex in enumerate(examples) if i in chosen),
    )


def fill_missing_splits(
    train: Examples,
    dev: Examples | None,
    test: Examples | None,
    *,
    dev_fraction: float,
    test_fraction: float,
    split_seed: int,
    where: str,
) -> tuple[Examples, Examples, Examples]:
    """Create the dev and/or test split from train where the source lacks them.

    Fractions are of the original train pool, so the defaults give 70/10/20.
    """
    pool = len(train)
    n_test = max(1, round(test_fraction * pool)) if test is None else 0
    n_dev = max(1, round(dev_fraction * pool)) if dev is None else 0
    if pool - n_test - n_dev < 1:
        raise DataError(f"{where} has only {pool} examples: too few to create the missing dev/test splits")
    if test is None:
        train, test = carve(train, n_test, split_seed, f"{where} (test split)")
        logger.info("%s: created a test split of %d examples (split_seed=%d)", where, n_test, split_seed)
    if dev is None:
        train, dev = carve(train, n_dev, split_seed, f"{where} (dev split)")
        logger.info("%s: created a dev split of %d examples (split_seed=%d)", where, n_dev, split_seed)
    return train, dev, test


def subsample(examples: Examples, n: int, seed: int, what: str) -> Examples:
    """A seeded, stratified subsample of ``n`` examples (all of them when n >= len)."""
    if n >= len(examples):
        return examples
    _, taken = carve(examples, n, seed, what)
    return taken


def sample_k_per_class(
    examples: Examples, k: int, rng: random.Random, label_names: Sequence[str], what: str
) -> Examples:
    """Draw ``k`` examples of every class, then shuffle so classes interleave."""
    by_label: dict[int, list[int]] = {i: [] for i in range(len(label_names))}
    for i, ex in enumerate(examples):
        by_label[ex.label].append(i)
    chosen: list[int] = []
    for label, indices in by_label.items():
        if len(indices) < k:
            raise DataError(
                f"class '{label_names[label]}' has only {len(indices)} examples in {what}, fewer than k={k}"
            )
        chosen.extend(rng.sample(indices, k))
    rng.shuffle(chosen)
    return tuple(examples[i] for i in chosen)
