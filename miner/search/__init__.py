"""Searchers: the contract, the registry and the built-in plugins."""

from miner.search._base import Capabilities, Evaluate, Evaluation, SearchContext, Searcher, SplitScore
from miner.search._registry import Registry, register_searcher, searchers
from miner.search import manual as _manual  # noqa: F401  (registers)

__all__ = [
    "Capabilities", "Evaluate", "Evaluation", "Registry", "SearchContext", "Searcher", "SplitScore",
    "register_searcher", "searchers",
]
