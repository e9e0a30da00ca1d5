"""Searchers: the contract, the registry and the built-in plugins."""

import importlib

from miner.search._base import Capabilities, Evaluate, Evaluation, SearchContext, Searcher, SplitScore
from miner.search._registry import Registry, register_searcher, searchers

# Built-in plugins register themselves on import. Adding a searcher = one module + its name here.
_BUILTIN = ("manual", "optuna_search", "autoprompt", "soft", "blackbox")
for _name in _BUILTIN:
    importlib.import_module(f"miner.search.{_name}")

__all__ = [
    "Capabilities", "Evaluate", "Evaluation", "Registry", "SearchContext", "Searcher", "SplitScore",
    "register_searcher", "searchers",
]
