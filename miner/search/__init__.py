"""Searchers: the contract, the registry and the built-in plugins."""

import importlib

from miner.search._base import (
    BudgetView,
    Capabilities,
    Evaluate,
    Evaluation,
    SearchContext,
    Searcher,
    SplitScore,
    rank_key,
)
from miner.search._registry import Parameter, Registry, parameters, register_searcher, searchers

# Built-in plugins register themselves on import. Adding a searcher = one module + its name here;
# an installed package adds one through the "miner.searchers" entry-point group instead.
_BUILTIN = ("manual", "optuna_search", "autoprompt", "soft", "blackbox", "mining", "paraphrase")
for _name in _BUILTIN:
    importlib.import_module(f"miner.search.{_name}")

# Helpers of particular searchers that benchmarks and exports use, loaded on first use (they import
# optuna or torch-heavy code that ``import miner.search`` should not pay for).
_LAZY = {
    "default_prompts": "miner.search._defaults",
    "candidate_pool": "miner.search._labelwords",
    "decoded_vocab": "miner.search._labelwords",
    "search_verbalizers": "miner.search._labelwords",
    "word_mask": "miner.search._labelwords",
    "top_trials": "miner.search._optuna_run",
    "optuna_storage": "miner.search._optuna_study",
    "nearest_report": "miner.search._soft_common",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return getattr(module, "make_storage" if name == "optuna_storage" else name)
    raise AttributeError(f"module 'miner.search' has no attribute {name!r}")


__all__ = [
    "BudgetView",
    "Capabilities",
    "Evaluate",
    "Evaluation",
    "Parameter",
    "Registry",
    "SearchContext",
    "Searcher",
    "SplitScore",
    "candidate_pool",
    "decoded_vocab",
    "default_prompts",
    "nearest_report",
    "optuna_storage",
    "parameters",
    "rank_key",
    "register_searcher",
    "search_verbalizers",
    "searchers",
    "top_trials",
    "word_mask",
]
