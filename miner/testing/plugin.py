"""A pytest plugin (entry point ``pytest11``) with the conformance kit's fixtures.

With miner installed, any test suite can subclass :class:`miner.testing.conformance.SearcherConformance`
and define only its ``searcher`` fixture: the tiny models and the small task come from here. The imports
are lazy, so that having miner installed costs other pytest runs nothing.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def conformance_data():
    """A small built-in task (Rotten Tomatoes, 4 examples per class, 16 test examples)."""
    from miner.tasks import TaskSpec, load_task

    return load_task(TaskSpec(source="builtin", name="rotten_tomatoes", max_test=16), 4, 13)


@pytest.fixture(scope="session", params=["causal", "masked"])
def conformance_backend(request):
    """The tiny causal LM, then the tiny masked LM (two layers, random weights, SmolLM2's tokenizer)."""
    from miner.testing.tiny import tiny_causal, tiny_masked

    return tiny_causal() if request.param == "causal" else tiny_masked()
