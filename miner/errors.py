"""User-facing errors.

Every problem a user can cause (bad config, bad data, a model that cannot be
loaded) is raised as a :class:`MinerError` whose message is one line naming the
problem. The CLI prints it and exits non-zero; library users catch it.
"""

from __future__ import annotations


class MinerError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(MinerError):
    """Invalid configuration; the message names the key path."""


class DataError(MinerError):
    """Invalid or unreadable dataset."""


class PromptError(MinerError):
    """Invalid template or verbalizer."""


class ModelLoadError(MinerError):
    """A model or tokenizer could not be loaded."""


class BudgetExhausted(Exception):
    """Raised by ``evaluate`` when the next candidate would exceed the budget.

    Not a :class:`MinerError`: it is normal control flow that ends a search.
    """
