"""Searchers: the contract, the registry and the built-in plugins."""

import importlib

from miner.search._base import BudgetView, Capabilities, Evaluate, Evaluation, SearchContext, Searcher, SplitScore, rank_key
from miner.search._registry import Parameter, Registry, parameters, register_searcher, searchers

# Built-in plugins register themselves on import. Adding a searcher = one module + its name here;
# an installed package adds one through the "miner.searchers" entry-point group instead.
_BUILTIN = ("manual", "optuna_search", "autoprompt", "soft", "blackbox")
for _name in _BUILTIN:
    importlib.import_module(f"miner.search.{_name}")

__all__ = [
    "BudgetView", "Capabilities", "Evaluate", "Evaluation", "Parameter", "Registry", "SearchContext", "Searcher",
    "SplitScore", "parameters", "rank_key", "register_searcher", "searchers",
]
