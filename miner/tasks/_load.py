"""``load_task``: turn a TaskSpec plus (k, seed) into one job's TaskData."""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from miner.errors import ConfigError, DataError
from miner.tasks._builtin import read_builtin
from miner.tasks._facts import load_facts
from miner.tasks._files import read_table
from miner.tasks._hub import read_hub
from miner.tasks._known import known_task
from miner.tasks._kshot import read_kshot
from miner.tasks._rows import RawSplit, infer_label_names, to_examples
from miner.tasks._sampling import fill_missing_splits, sample_k_per_class, subsample
from miner.tasks._spec import TaskSpec
from miner.tasks._types import Example, TaskData

logger = logging.getLogger(__name__)
_WARNED: set[str] = set()  # k-shot tasks already warned about (one warning per task, not per job)


def _read_raw(
    spec: TaskSpec, k: int | None, seed: int
) -> tuple[dict[str, RawSplit | None], tuple[str, ...] | None]:
    if spec.source == "kshot":
        return read_kshot(spec.root, spec.name, k, seed, spec.max_file_bytes), None
    if spec.source == "files":
        paths = {"train": spec.train, "dev": spec.dev, "test": spec.test}
        return {
            split: read_table(path, spec.max_file_bytes) if path else None for split, path in paths.items()
        }, None
    if spec.source == "hub":
        return read_hub(spec.name, spec.hub_config, spec.hub_splits, spec.label_column)
    return {"train": read_builtin(spec.name, spec.label_column), "dev": None, "test": None}, None


def load_task(
    spec: TaskSpec, k: int | None, seed: int, *, tokenize: Callable[[str], Sequence[int]] | None = None
) -> TaskData:
    """Materialise one job's data.

    ``k`` is shots per class for train and for dev (the LM-BFF convention);
    None means all data and 0 means zero-shot (no train, no dev). The test
    split depends only on the spec (``split_seed``), never on ``seed``.

    Fact tasks (source ``facts``) differ: ``k`` is the number of training pairs (and as many dev
    pairs), drawn with ``seed``, and the test split is every other pair of the relation.
    ``tokenize`` (the model's, e.g. ``Backend.tokenize``) is needed only by ``single_token``.
    """
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise ConfigError(f"k must be a non-negative integer or None, got {k!r}")
    if spec.source == "facts":
        return load_facts(spec, k, seed, tokenize)
    # The default name "rotten_tomatoes" belongs to the builtin source; a files or
    # hub spec only takes known-task defaults when it names the task on purpose.
    named = spec.source in ("builtin", "kshot") or "name" in spec.model_fields_set
    known = known_task(spec.name) if named else None
    name = spec.name if named or not spec.train else Path(spec.train).stem
    text_fields = (
        tuple(spec.text_fields) if spec.text_fields else (known.text_fields if known else ("sentence",))
    )
    label_base = known.label_base if known else 0

    raw, declared_names = _read_raw(spec, k, seed)
    present = [split for split in raw.values() if split is not None]
    if spec.label_names:
        label_names = tuple(spec.label_names)
    elif known:
        label_names = known.label_names
    elif declared_names:
        label_names = declared_names
    else:
        label_names = infer_label_names(present, spec.label_column)
        if (
            spec.source == "kshot"
            and all(n.lstrip("-").isdigit() for n in label_names)
            and name not in _WARNED
        ):
            _WARNED.add(name)
            # LM-BFF folders store class indices; outside the known-task table nothing says what they mean,
            # and verbalizers keyed by "0", "1", ... are easy to get wrong.
            logger.warning(
                "k-shot task '%s' is not in the known-task table: its labels are the bare integers %s; "
                "set task.label_names to name them",
                name,
                list(label_names),
            )
    if len(label_names) < 2:
        raise DataError(
            f"task '{name}' has a single label {list(label_names)}; classification needs two or more"
        )

    where = raw["train"].where if raw["train"] is not None else name
    if spec.source == "kshot":
        splits = _convert(raw, text_fields, spec.label_column, label_names, label_base)
        # The folder already is the seeded k-shot sample; nothing to draw.
        train, dev, test = splits["train"] or (), splits["dev"] or (), splits["test"]
        assert test is not None  # read_kshot always reads test.tsv
    else:
        if spec.source == "builtin":
            # The corpus and its seeded dev/test carving are the same for every job of a task: done once.
            train, dev, test = _builtin_splits(
                spec.name,
                where,  # the corpus file: part of the cache key
                text_fields,
                spec.label_column,
                tuple(label_names),
                label_base,
                spec.dev_fraction,
                spec.test_fraction,
                spec.split_seed,
            )
        else:
            splits = _convert(raw, text_fields, spec.label_column, label_names, label_base)
            assert splits["train"] is not None  # only a k-shot source can lack a train split
            train, dev, test = fill_missing_splits(
                splits["train"],
                splits["dev"],
                splits["test"],
                dev_fraction=spec.dev_fraction,
                test_fraction=spec.test_fraction,
                split_seed=spec.split_seed,
                where=where,
            )
        if k == 0:
            train, dev = (), ()
        elif k is not None:
            rng = random.Random(seed)
            train = sample_k_per_class(train, k, rng, label_names, f"the train split of task '{name}'")
            dev = sample_k_per_class(dev, k, rng, label_names, f"the dev split of task '{name}'")
    if spec.max_test is not None:
        test = subsample(test, spec.max_test, spec.split_seed, f"test of task '{name}'")
    if not test:
        raise DataError(f"task '{name}' has an empty test split")
    logger.debug(
        "task %s (k=%s, seed=%d): %d train, %d dev, %d test",
        name,
        k,
        seed,
        len(train),
        len(dev),
        len(test),
    )
    return TaskData(
        name=name,
        text_fields=text_fields,
        label_names=tuple(label_names),
        metric=spec.metric,
        train=tuple(train),
        dev=tuple(dev),
        test=tuple(test),
        k=k,
        seed=seed,
    )


def _convert(
    raw: dict[str, RawSplit | None],
    text_fields: Sequence[str],
    label_column: str,
    label_names: Sequence[str],
    label_base: int,
) -> dict[str, tuple[Example, ...] | None]:
    return {
        name: None
        if split is None
        else to_examples(split, text_fields, label_column, label_names, label_base)
        for name, split in raw.items()
    }


@functools.lru_cache(maxsize=4)
def _builtin_splits(
    name: str,
    corpus: str,
    text_fields: tuple[str, ...],
    label_column: str,
    label_names: tuple[str, ...],
    label_base: int,
    dev_fraction: float,
    test_fraction: float,
    split_seed: int,
) -> tuple[tuple[Example, ...], tuple[Example, ...], tuple[Example, ...]]:
    """A builtin corpus as examples, carved into train/dev/test with ``split_seed`` (cached: every job of
    a task, and every run in one process, shares it; the examples are never mutated)."""
    pool = read_builtin(name, label_column)
    assert pool.where == corpus
    train = to_examples(pool, text_fields, label_column, label_names, label_base)
    return fill_missing_splits(
        train,
        None,
        None,
        dev_fraction=dev_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        where=pool.where,
    )
